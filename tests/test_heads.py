import numpy as np
import pandas as pd
import pytest
import torch

from maskpipe import classes
from maskpipe.ensemble.vote import EnsembleConfig, EnsembleJob, ensemble_folds
from maskpipe.io import MaskpipeError
from maskpipe.train.predict import PROB_COLUMNS, TASK_COLUMNS
from maskpipe.train.heads import HeadLoss, joint, marginals, probabilities, split_logits
from maskpipe.train.model import create_model

LOSS = [{"name": "ce", "weight": 1.0, "label_smoothing": 0.0, "class_weights": "none", "gamma": 2.0}]


def test_marginals_and_joint_follow_the_class_encoding():
    p = torch.softmax(torch.randn(4, 18), 1)
    m = marginals(p)
    labels = torch.arange(18)
    mask, gender, age = classes.decode(labels.numpy())
    for k in range(18):
        one = torch.zeros(1, 18)
        one[0, k] = 1
        mk = marginals(one)
        assert mk["mask"].argmax().item() == mask[k]
        assert mk["gender"].argmax().item() == gender[k]
        assert mk["age"].argmax().item() == age[k]
    assert torch.allclose(sum(m["mask"].T), torch.ones(4))
    # joint of independent marginals gives back the marginals
    j = joint(m)
    assert torch.allclose(j.sum(1), torch.ones(4))
    for t, v in marginals(j).items():
        assert torch.allclose(v, m[t], atol=1e-6)


def test_multitask_model_and_probabilities():
    model = create_model("test_resnet", head="multitask")
    logits = model(torch.randn(2, 3, 32, 32))
    assert logits.shape == (2, 8)
    assert set(split_logits(logits, "multitask")) == {"mask", "gender", "age"}
    p18, tasks = probabilities(logits, "multitask")
    assert p18.shape == (2, 18) and torch.allclose(p18.sum(1), torch.ones(2), atol=1e-5)
    assert create_model("test_resnet", head="gender").eval()(torch.randn(1, 3, 32, 32)).shape == (1, 2)
    p18, tasks = probabilities(torch.randn(3, 3), "mask")
    assert p18 is None and set(tasks) == {"mask"}


def test_head_loss_learns_the_marginal_targets():
    counts = np.ones(18)
    loss = HeadLoss("multitask", LOSS, counts, {"mask": 1.0, "gender": 0.0, "age": 0.0}, "x")
    target = torch.tensor([7])  # incorrect / male / 30-59
    good = torch.full((1, 8), -9.0)
    good[0, 1] = 9.0  # mask head says incorrect
    bad = torch.full((1, 8), -9.0)
    bad[0, 0] = 9.0
    assert loss(good, target) < 0.01 < loss(bad, target)
    soft = torch.nn.functional.one_hot(target, 18).float()
    assert torch.isclose(loss(good, soft), loss(good, target))
    age = HeadLoss("age", LOSS, counts, {}, "x")
    assert age(torch.tensor([[0.0, 9.0, 0.0]]), target) < 0.01


def _write(tmp_path, model, head, keys, folds, probs_by_col, name, for_mask=""):
    df = pd.DataFrame({"key": keys, "person": keys, "model": model, "fold": folds, "tta": "none",
                       "head": head, "for_mask": for_mask})
    cols = PROB_COLUMNS + [c for cs in TASK_COLUMNS.values() for c in cs]
    table = pd.DataFrame(np.nan, index=range(len(keys)), columns=cols)
    for col, values in probs_by_col.items():
        table[col] = values
    path = tmp_path / f"{name}.csv"
    pd.concat([df, table], axis=1).to_csv(path, index=False)
    return path


def test_ensemble_combines_task_models_into_one_member(tmp_path):
    keys = ["k0", "k1"]
    y = [7, 16]  # (incorrect, male, 30-59), (not wear, female, 30-59)
    pd.DataFrame({"key": keys, "person": keys, "label": y}).to_csv(tmp_path / "l.csv", index=False)
    mask, gender, age = (np.eye(k)[v] for k, v in zip((3, 2, 3), classes.decode(np.array(y)), strict=True))
    oofs, tests = [], []
    for task, probs in (("mask", mask), ("gender", gender), ("age", age)):
        cols = {c: probs[:, i] for i, c in enumerate(TASK_COLUMNS[task])}
        oofs.append(_write(tmp_path, f"m_{task}", task, keys, [0, 1], cols, f"o_{task}"))
        tests.append(_write(tmp_path, f"m_{task}", task, ["e"], [0], {c: v[:1] for c, v in cols.items()}, f"t_{task}"))
    out = [tmp_path / n for n in ("a.csv", "b.csv", "c.csv", "d.json")]
    metrics = ensemble_folds(EnsembleJob(oofs, tests, tmp_path / "l.csv", *out), EnsembleConfig())
    assert metrics["oof_macro_f1"] == pytest.approx(classes.NUM_CLASSES and 2 / 18)  # 2 classes, both right
    assert metrics["oof_accuracy"] == 1.0
    assert pd.read_csv(out[0])["pred"].tolist() == y
    scores = pd.read_csv(out[2])
    row = scores[(scores["model"] == "m_age") & (scores["fold"] == "all")].iloc[0]
    assert row["age_f1"] > 0 and np.isnan(row["macro_f1"])
    with pytest.raises(MaskpipeError, match="not age; add a model with head: age"):
        ensemble_folds(EnsembleJob(oofs[:2], tests[:2], tmp_path / "l.csv", *out), EnsembleConfig())


def test_age_models_per_mask_state_are_weighted_by_the_mask_probability(tmp_path):
    keys = ["k0", "k1", "k2"]
    y = [0 * 6 + 0 * 3 + 2, 1 * 6 + 1 * 3 + 0, 2 * 6 + 0 * 3 + 1]  # wear/old, incorrect/young, normal/mid
    pd.DataFrame({"key": keys, "person": keys, "label": y}).to_csv(tmp_path / "l.csv", index=False)
    mask, gender, _ = (np.eye(k)[v] for k, v in zip((3, 2, 3), classes.decode(np.array(y)), strict=True))
    oofs, tests = [], []

    def add(model, head, probs, for_mask=""):
        cols = {c: probs[:, i] for i, c in enumerate(TASK_COLUMNS[head])}
        oofs.append(_write(tmp_path, model, head, keys, [0, 0, 1], cols, f"o_{model}", for_mask))
        tests.append(_write(tmp_path, model, head, keys[:1], [0], {c: v[:1] for c, v in cols.items()},
                            f"t_{model}", for_mask))

    add("mask", "mask", mask)
    add("gender", "gender", gender)
    # each state's age model always says one age group: old for wear, young for incorrect, mid for normal
    for state, group in (("wear", 2), ("incorrect", 0), ("not_wear", 1)):
        add(f"age_{state}", "age", np.tile(np.eye(3)[group], (3, 1)), state)
    out = [tmp_path / n for n in ("a.csv", "b.csv", "c.csv", "d.json")]
    metrics = ensemble_folds(EnsembleJob(oofs, tests, tmp_path / "l.csv", *out), EnsembleConfig())
    assert pd.read_csv(out[0])["pred"].tolist() == y  # each photo took its own mask state's age
    assert metrics["oof_accuracy"] == 1.0
    with pytest.raises(MaskpipeError, match="none for 'not_wear'"):
        ensemble_folds(EnsembleJob(oofs[:-1], tests[:-1], tmp_path / "l.csv", *out), EnsembleConfig())
