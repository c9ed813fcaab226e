"""The persons step and the ensemble options that use its groups (tiny generated data)."""

import itertools
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from maskpipe import submission
from maskpipe.ensemble.vote import EnsembleConfig, EnsembleJob, ensemble_folds
from maskpipe.classes import PROB_COLUMNS, TASKS, encode, joint
from maskpipe.io import MaskpipeError
from maskpipe.persons import eval_photos as step
from maskpipe.persons.group import Grouping, group_persons
from maskpipe.persons.prior import em_priors, shift_priors, task_marginals
from maskpipe.demo.truth import score_groups
from maskpipe.persons.vote import PATTERN, apply_persons, assign_masks
from maskpipe.report.persons import section


def _shoots(tmp_path, persons=12, seed=0, twins=()):
    """``persons`` shoots of 7 photos (a room colour, a framed figure, a face pattern; each photo
    shifted and noisy), shuffled; ``twins`` pairs share a room but not a face."""
    rng = np.random.default_rng(seed)
    rooms = rng.integers(30, 226, size=(persons, 2, 3))
    faces = rng.integers(0, 256, size=(persons, 4, 4, 3)).astype(np.uint8)
    for a, b in twins:
        rooms[b] = rooms[a]
    (tmp_path / "eval" / "images").mkdir(parents=True)
    rows, crops = [], []
    order = rng.permutation(persons * 7)
    for i in order:
        p = int(i // 7)
        img = np.empty((128, 96, 3), np.float32)
        img[:90], img[90:] = rooms[p, 0], rooms[p, 1]
        dx, dy = rng.integers(-4, 5, size=2)
        img[30 + dy:110 + dy, 28 + dx:68 + dx] = faces[p].mean((0, 1))  # the person in the frame
        img += rng.normal(0, 4, size=img.shape)
        key = f"{i:03d}{p:02d}x.jpg"
        Image.fromarray(np.clip(img, 0, 255).astype(np.uint8)).save(tmp_path / "eval" / "images" / key)
        face = np.kron(faces[p], np.ones((8, 8, 1), np.uint8)).astype(np.float32)
        face[16:] = rng.integers(0, 256, size=3)  # a mask of any colour over the lower half
        crops.append(np.clip(face + rng.normal(0, 6, size=face.shape), 0, 255).astype(np.uint8))
        rows.append({"key": key, "path": f"eval/images/{key}", "person": p})
    manifest = pd.DataFrame(rows)
    manifest[["key", "path"]].to_csv(tmp_path / "eval.csv", index=False)
    np.save(tmp_path / "crops.npy", np.stack(crops))
    pd.DataFrame({"key": manifest["key"], "row": range(len(manifest))}).to_csv(tmp_path / "index.csv", index=False)
    return manifest


def test_step_recovers_planted_persons(tmp_path):
    truth = _shoots(tmp_path, persons=12, twins=[(0, 1), (2, 3)])
    args = (tmp_path / "eval.csv", tmp_path, tmp_path / "crops.npy", tmp_path / "index.csv")
    out = step.group_eval_photos(*args, Grouping(), tmp_path / "groups.csv")
    assert list(out["key"]) == list(truth["key"])  # manifest order
    assert list(pd.read_csv(tmp_path / "groups.csv").columns) == step.COLUMNS
    scores = score_groups(out["group"].to_numpy(), truth["person"].to_numpy())
    assert scores["whole"] == 1.0 and scores["f1"] == 1.0
    assert (out["size"] == 7).all() and out["confidence"].between(0, 1).all()
    # The twins share a room: by the look alone they are not told apart, the face does it.
    looks, faces = step.read_features(truth, tmp_path, np.load(tmp_path / "crops.npy"),
                                      pd.read_csv(tmp_path / "index.csv"))
    blind, _ = group_persons(looks, faces, Grouping(face_weight=0.0))
    assert score_groups(blind, truth["person"].to_numpy())["precision"] < 1.0


def test_a_photos_look_read_at_reduced_scale_is_its_full_size_look(tmp_path):
    """read_features decodes JPEGs at 1/8 scale (Image.draft): a real portrait's look stays
    within 0.01 RMS of the one from the full decode, and a PNG (no draft) is read as it is."""
    import matplotlib

    from maskpipe.images import look

    portrait = Image.open(matplotlib.get_data_path() + "/sample_data/grace_hopper.jpg")
    portrait.convert("RGB").resize((384, 512)).save(tmp_path / "a.jpg", quality=90)
    portrait.convert("RGB").resize((384, 512)).save(tmp_path / "b.png")
    manifest = pd.DataFrame({"key": ["a", "b"], "path": ["a.jpg", "b.png"]})
    index = pd.DataFrame({"key": ["a", "b"], "row": [0, 1]})
    looks, _ = step.read_features(manifest, tmp_path, np.zeros((2, 8, 8, 3), np.uint8), index)
    full = []
    for name in ("a.jpg", "b.png"):
        with Image.open(tmp_path / name) as image:
            full.append(look(image))
    assert 0 < np.sqrt(np.mean((looks[0] - full[0]) ** 2)) < 0.01  # decoded otherwise, alike
    np.testing.assert_array_equal(looks[1], full[1])
    (tmp_path / "a.jpg").write_text("not a photo")
    with pytest.raises(MaskpipeError, match=r"a\.jpg: unreadable image"):
        step.read_features(manifest, tmp_path, np.zeros((2, 8, 8, 3), np.uint8), index)


def test_step_names_a_photo_without_a_crop(tmp_path):
    _shoots(tmp_path, persons=2)
    pd.read_csv(tmp_path / "index.csv").iloc[1:].to_csv(tmp_path / "index.csv", index=False)
    with pytest.raises(MaskpipeError, match="has no crop"):
        step.group_eval_photos(tmp_path / "eval.csv", tmp_path, tmp_path / "crops.npy", tmp_path / "index.csv",
                 Grouping(), tmp_path / "groups.csv")


def test_pairwise_scores_and_persons_found_whole():
    persons = np.array([0, 0, 0, 1, 1])
    s = score_groups(np.array([0, 0, 1, 1, 1]), persons)
    # true pairs: 3 + 1; predicted: 1 + 3; in both: (0,1) and (3,4)
    assert (s["precision"], s["recall"], s["f1"], s["whole"]) == (0.5, 0.5, 0.5, 0.0)
    s = score_groups(np.array([5, 5, 5, 2, 2]), persons)  # group numbers do not matter
    assert (s["f1"], s["whole"]) == (1.0, 1.0)
    s = score_groups(np.array([0, 0, 0, 1, 2]), persons)
    assert (s["precision"], s["recall"], s["whole"]) == (1.0, 0.75, 0.5)


def test_mask_assignment_is_5_1_1_and_optimal():
    rng = np.random.default_rng(3)
    for _ in range(20):
        probs = rng.dirichlet([1, 1, 1], size=7)
        states = assign_masks(probs)
        assert sorted(states) == sorted(PATTERN)
        best = max(set(itertools.permutations(PATTERN)),
                   key=lambda s: np.log(probs[np.arange(7), list(s)]).sum())
        assert np.isclose(np.log(probs[np.arange(7), states]).sum(),
                          np.log(probs[np.arange(7), list(best)]).sum())


def _group_table(keys, groups, conf=1.0):
    groups = np.asarray(groups)
    return pd.DataFrame({"key": keys, "group": groups, "size": np.bincount(groups)[groups],
                         "confidence": conf})


def test_clean_groups_pool_and_assign_others_keep_their_prediction():
    rng = np.random.default_rng(0)
    truth = encode(np.array(PATTERN * 2), 1, 2)  # two women >=60, then one group of 6 below
    probs = np.full((14, 18), 0.02)
    probs[np.arange(14), truth] = 0.6
    probs[1, encode(0, 0, 2)] = 0.7  # one photo looks male
    probs[5, encode(2, 1, 2)] = 0.65  # the incorrect-mask photo looks unmasked...
    probs[6, encode(2, 1, 2)] = 0.9  # ...less so than the real unmasked one
    probs /= probs.sum(1, keepdims=True)
    keys = pd.Index([f"e{i}" for i in rng.permutation(14)])
    groups = _group_table(keys, [0] * 7 + [1] * 6 + [2])[::-1]  # any row order
    out, info = apply_persons(probs, keys, groups, pool=True, masks=True)
    assert list(out[:7].argmax(1)) == list(truth[:7])
    assert info["clean_groups"] == 1 and info["changed"] == 2 and info["changed_gender"] == 1
    assert np.allclose(out[7:], probs[7:])  # a group of 6 is not a clean person
    assert np.allclose(out.sum(1), 1.0)
    low = _group_table(keys, [0] * 7 + [1] * 7, conf=np.r_[np.full(13, 0.9), 0.1])
    out, info = apply_persons(probs, keys, low, pool=True, masks=True, min_confidence=0.5)
    assert info["clean_groups"] == 1 and np.allclose(out[7:], probs[7:])


def test_em_recovers_a_shifted_prior():
    rng = np.random.default_rng(0)
    means, train = np.array([-1.0, 0.0, 1.5]), np.array([0.5, 0.3, 0.2])
    true_eval = np.array([0.15, 0.25, 0.6])
    y = rng.choice(3, size=20000, p=true_eval)
    x = rng.normal(means[y], 1.0)
    lik = np.exp(-0.5 * (x[:, None] - means) ** 2)
    posterior = lik * train / (lik * train).sum(1, keepdims=True)  # a model calibrated on train
    prior, adjusted = em_priors(posterior, train)
    assert np.abs(prior - true_eval).max() < 0.02
    assert np.abs(posterior.mean(0) - true_eval).max() > 0.05  # the unadjusted mean is off
    assert (adjusted.argmax(1) == y).mean() > (posterior.argmax(1) == y).mean()


def test_prior_shift_self_check_on_oof_refuses_uncalibrated_tasks():
    rng = np.random.default_rng(4)
    marg = {t: rng.dirichlet(np.ones(k), size=60) for t, k in TASKS.items()}
    labels = encode(rng.integers(0, 3, 60), rng.integers(0, 2, 60), rng.integers(0, 3, 60))
    calibrated = np.eye(18)[labels] * 0.9 + 0.1 / 18  # OOF that give back the train priors
    out, info = shift_priors(joint(marg), labels, oof=calibrated)
    assert info["gender"]["applied"] and info["age"]["applied"]
    skewed = joint({**task_marginals(calibrated), "age": np.tile([0.05, 0.05, 0.9], (60, 1))})  # >=60 for all
    out, info = shift_priors(joint(marg), labels, oof=skewed)
    assert info["gender"]["applied"] and not info["age"]["applied"]
    assert np.allclose(task_marginals(out)["age"], marg["age"])  # age left as it was


def test_shift_priors_per_task_keeps_rows_and_reports_priors():
    rng = np.random.default_rng(1)
    # Tasks independent given the photo: then each task's adjusted marginal is its own EM's.
    probs = joint({t: rng.dirichlet(np.ones(k), size=50) for t, k in TASKS.items()})
    labels = np.repeat(np.arange(18), 3)
    out, info = shift_priors(probs, labels)
    assert out.shape == probs.shape and np.allclose(out.sum(1), 1)
    assert set(info) == {"gender", "age"}  # the mask prior is 5/1/1 by design
    assert np.allclose(info["gender"]["train"], [0.5, 0.5])
    assert np.allclose(task_marginals(out)["age"].mean(0), info["age"]["eval"], atol=1e-3)


def test_ensemble_options_keep_the_submissions_rows_and_order(tmp_path):
    keys = [f"k{i}" for i in range(4)]
    pd.DataFrame({"key": keys, "person": keys, "label": [0, 5, 17, 6]}).to_csv(tmp_path / "l.csv", index=False)
    oof = pd.DataFrame({"key": keys, "person": keys, "model": "m", "fold": 0, "tta": "none"})
    pd.concat([oof, pd.DataFrame(np.eye(18)[[0, 5, 17, 6]], columns=PROB_COLUMNS)], axis=1).to_csv(
        tmp_path / "o.csv", index=False)
    ev = [f"e{i:02d}.jpg" for i in range(14)][::-1]
    probs = np.random.default_rng(2).dirichlet(np.ones(18), size=14)
    test = pd.DataFrame({"key": ev, "person": "", "model": "m", "fold": 0, "tta": "none"})
    pd.concat([test, pd.DataFrame(probs, columns=PROB_COLUMNS)], axis=1).to_csv(tmp_path / "t.csv", index=False)
    _group_table(sorted(ev), [0] * 7 + [1] * 7).to_csv(tmp_path / "g.csv", index=False)
    pd.DataFrame({"key": ev, "path": [f"eval/images/{k}" for k in ev]}).to_csv(tmp_path / "m.csv", index=False)
    subs = {}
    for name, opts, shift in (("plain", {}, False), ("all", {"pool": True, "assign_masks": True}, True)):
        out = [tmp_path / f"{name}_{n}" for n in ("oof.csv", "test.csv", "scores.csv", "metrics.json")]
        metrics = ensemble_folds(EnsembleJob([tmp_path / "o.csv"], [tmp_path / "t.csv"], tmp_path / "l.csv",
                                             *out, persons=tmp_path / "g.csv"),
                                 EnsembleConfig(persons=opts, prior_shift=shift))
        subs[name] = submission.write_submission(out[1], tmp_path / "m.csv", tmp_path / f"{name}_sub.csv")
    assert list(subs["all"]["ImageID"]) == list(subs["plain"]["ImageID"]) == ev
    assert metrics["persons"]["clean_groups"] == 2 and metrics["prior_shift"]["enabled"]
    masks = subs["all"].set_index("ImageID")["ans"] // 6
    for group in (sorted(ev)[:7], sorted(ev)[7:]):
        assert sorted(masks[group]) == sorted(PATTERN)
    with pytest.raises(MaskpipeError, match="needs the persons step"):
        ensemble_folds(EnsembleJob([tmp_path / "o.csv"], [tmp_path / "t.csv"], tmp_path / "l.csv", *out),
                       EnsembleConfig(persons={"pool": True}))


def test_report_section_shows_groups_changes_and_priors():
    groups = _group_table([f"e{i}" for i in range(16)], [0] * 7 + [1] * 7 + [2, 3])
    off = section(SimpleNamespace(persons=groups, metrics={}), None)
    assert "4</div>" in off.replace(" ", "") and "is off" in off  # 4 groups; options off
    priors = {"mask": {"train": [0.7, 0.15, 0.15], "eval": [0.6, 0.25, 0.15]},
              "gender": {"train": [0.4, 0.6], "eval": [0.55, 0.45]},
              "age": {"train": [0.5, 0.4, 0.1], "eval": [0.4, 0.35, 0.25]}}
    metrics = {"persons": {"enabled": True, "pool": True, "assign_masks": True, "clean_groups": 2,
                           "photos_in_clean_groups": 14, "min_confidence": 0.0, "changed": 5,
                           "changed_mask": 3, "changed_gender": 2, "changed_age": 0},
               "prior_shift": {"enabled": True, "priors": priors, "changed": 9}}
    on = section(SimpleNamespace(persons=groups, metrics=metrics), None)
    assert "2 clean groups (14 photos" in on and "mask states assigned 5/1/1" in on
    assert "<td class=\"num\">5</td>" in on and "55.0%" in on and "40.0%" in on
