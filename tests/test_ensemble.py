import json

import numpy as np
import pandas as pd
import pytest

from maskpipe.ensemble import vote as ensemble
from maskpipe.ensemble.vote import EnsembleConfig, EnsembleJob, ensemble_folds
from maskpipe.io import MaskpipeError
from maskpipe.metrics import macro_f1
from maskpipe.train.predict import PROB_COLUMNS


def test_soft_and_hard_vote_arithmetic():
    a = np.array([[0.6, 0.4], [0.2, 0.8]])
    b = np.array([[0.0, 1.0], [0.4, 0.6]])
    soft = ensemble.vote([a, b], [3, 1], "soft")
    assert np.allclose(soft, [[0.45, 0.55], [0.25, 0.75]])
    hard = ensemble.vote([a, b], [3, 1], "hard")
    assert np.allclose(hard, [[0.75, 0.25], [0.0, 1.0]])
    with pytest.raises(MaskpipeError, match="sum to 0"):
        ensemble.vote([a], [0], "soft")


def test_macro_f1_counts_absent_classes_as_zero():
    y = np.array([0, 0, 1, 1])
    assert macro_f1(y, y, n_classes=2) == 1.0
    assert macro_f1(y, y, n_classes=4) == 0.5


def _pred(keys, model, fold, probs):
    df = pd.DataFrame({"key": keys, "person": keys, "model": model, "fold": fold, "tta": "none"})
    return pd.concat([df, pd.DataFrame(probs, columns=PROB_COLUMNS)], axis=1)


def test_run_scores_models_and_ensemble(tmp_path):
    keys = [f"k{i}" for i in range(4)]
    labels = pd.DataFrame({"key": keys, "person": keys, "label": [0, 5, 17, 6]})
    labels.to_csv(tmp_path / "labels.csv", index=False)
    eye = np.eye(18)
    good = eye[[0, 5, 17, 6]]
    bad = eye[[1, 5, 17, 6]] * 0.6 + 0.4 / 18
    paths = {}
    for m, probs in (("good", good), ("bad", bad)):
        for f, rows in ((0, [0, 1]), (1, [2, 3])):
            p = tmp_path / f"{m}{f}.csv"
            _pred([keys[r] for r in rows], m, f, probs[rows]).to_csv(p, index=False)
            paths[m, f] = p
            t = tmp_path / f"{m}{f}_test.csv"
            _pred(["e1", "e2"], m, f, eye[[3, 4]]).to_csv(t, index=False)
            paths[m, f, "test"] = t
    out = {n: tmp_path / f"ens_{n}" for n in ("oof.csv", "test.csv", "scores.csv", "metrics.json")}
    metrics = ensemble_folds(EnsembleJob([paths[k] for k in paths if len(k) == 2],
                                         [paths[k] for k in paths if len(k) == 3],
                                         tmp_path / "labels.csv", *out.values()),
                             EnsembleConfig(weights={"bad": 0.5}))
    assert metrics["models"]["good"]["oof_accuracy"] == 1.0
    assert metrics["models"]["bad"]["oof_accuracy"] == 0.75
    assert metrics["weights"] == {"bad": 0.5, "good": 1.0}
    # weighted soft vote: good (weight 1) outvotes bad (0.5) on the one disagreement
    assert metrics["oof_accuracy"] == 1.0
    scores = pd.read_csv(out["scores.csv"])
    assert set(scores["model"]) == {"good", "bad", "ensemble"}
    assert len(scores) == 2 * 3 + 1  # per fold and overall for each model, plus the ensemble
    test = pd.read_csv(out["test.csv"])
    assert list(test["key"]) == ["e1", "e2"]
    assert json.loads(out["metrics.json"].read_text())["per_class_f1"][0] == 1.0


def test_missing_fold_is_refused(tmp_path):
    keys = ["k0", "k1"]
    pd.DataFrame({"key": keys, "person": keys, "label": [0, 1]}).to_csv(tmp_path / "l.csv", index=False)
    _pred(["k0"], "m", 0, np.eye(18)[[0]]).to_csv(tmp_path / "o.csv", index=False)
    _pred(["e"], "m", 0, np.eye(18)[[0]]).to_csv(tmp_path / "t.csv", index=False)
    with pytest.raises(MaskpipeError, match="does not predict every labelled image"):
        ensemble_folds(EnsembleJob([tmp_path / "o.csv"], [tmp_path / "t.csv"], tmp_path / "l.csv",
                                   *(tmp_path / n for n in ("a", "b", "c", "d"))), EnsembleConfig())


def test_weights_naming_an_unknown_model_is_a_one_line_error(tmp_path):
    keys = ["k0", "k1"]
    pd.DataFrame({"key": keys, "person": keys, "label": [0, 1]}).to_csv(tmp_path / "l.csv", index=False)
    _pred(keys, "m", 0, np.eye(18)[[0, 1]]).to_csv(tmp_path / "o.csv", index=False)
    _pred(["e"], "m", 0, np.eye(18)[[0]]).to_csv(tmp_path / "t.csv", index=False)
    out = [tmp_path / n for n in ("a", "b", "c", "d")]
    with pytest.raises(MaskpipeError) as err:
        ensemble_folds(EnsembleJob([tmp_path / "o.csv"], [tmp_path / "t.csv"], tmp_path / "l.csv", *out),
                       EnsembleConfig(weights={"m": 1.0, "resnet": 2.0}))
    assert str(err.value) == "ensemble.weights: 'resnet' is not a model of this run (models: m)"
    assert not any(o.exists() for o in out)


def test_tta_rows_are_scored_with_and_without(tmp_path):
    keys = [f"k{i}" for i in range(4)]
    pd.DataFrame({"key": keys, "person": keys, "label": [0, 5, 17, 6]}).to_csv(tmp_path / "l.csv", index=False)
    eye = np.eye(18)
    with_tta = _pred(keys, "m", 0, eye[[0, 5, 17, 6]]).assign(tta="hflip")
    without = _pred(keys, "m", 0, eye[[0, 5, 17, 7]]).assign(tta="none")
    pd.concat([with_tta, without]).to_csv(tmp_path / "o.csv", index=False)
    _pred(["e"], "m", 0, eye[[1]]).assign(tta="hflip").to_csv(tmp_path / "t.csv", index=False)
    out = [tmp_path / n for n in ("a", "b", "c", "d")]
    metrics = ensemble_folds(EnsembleJob([tmp_path / "o.csv"], [tmp_path / "t.csv"], tmp_path / "l.csv", *out),
                             EnsembleConfig())
    assert metrics["oof_accuracy"] == 1.0  # the vote uses the TTA rows
    assert metrics["tta_gain"]["m"]["tta"] == "hflip"
    assert metrics["tta_gain"]["m"]["with"] > metrics["tta_gain"]["m"]["without"]
    scores = pd.read_csv(out[2])
    assert set(scores.loc[scores["model"] == "m", "tta"]) == {"hflip", "none"}


def test_weight_search_and_age_bias_fit_one_half_and_report_the_other():
    from maskpipe.ensemble import fitting as es

    rng = np.random.default_rng(0)
    n = 400
    persons = np.repeat(np.arange(n // 4), 4)
    y = rng.integers(0, 18, n)
    good = np.eye(18)[y] * 0.3 + rng.dirichlet(np.ones(18), n) * 0.7
    noise = np.eye(18)[rng.integers(0, 18, n)] * 0.9 + 0.1 / 18  # confidently wrong at random
    fit, hold = es.person_halves(persons, seed=3)
    assert not set(persons[fit]) & set(persons[hold])
    assert np.array_equal(es.person_halves(persons, seed=3)[0], fit)  # deterministic
    w = es.search_weights([noise, good], y, fit, lambda ps, ww: ensemble.vote(ps, ww, "soft"))
    assert w.sum() == pytest.approx(1) and w[1] > w[0]  # the informative member wins
    again = es.search_weights([noise, good], y, fit, lambda ps, ww: ensemble.vote(ps, ww, "soft"))
    assert np.array_equal(w, again)  # deterministic: no random start
    p = ensemble.vote([noise, good], w, "soft")
    assert macro_f1(y[hold], p[hold].argmax(1)) > macro_f1(y[hold], ensemble.vote([noise, good], [1, 1], "soft")[hold].argmax(1))
    # the bias is found where old classes were under-predicted
    damped = good.copy()
    damped[:, es.OLD] *= 0.2
    damped /= damped.sum(1, keepdims=True)
    b = es.fit_age_bias(damped, y, fit)
    assert b > 0
    assert macro_f1(y[hold], es.apply_age_bias(damped[hold], b).argmax(1)) >= \
        macro_f1(y[hold], damped[hold].argmax(1))
