import numpy as np

from maskpipe import classes


def test_encoding_matches_the_competition_table():
    # wear/male/<30 = 0, wear/female/>=60 = 5, incorrect/male/<30 = 6, not wear/female/>=60 = 17
    assert classes.encode(0, 0, 0) == 0
    assert classes.encode(0, 1, 2) == 5
    assert classes.encode(1, 0, 0) == 6
    assert classes.encode(2, 1, 2) == 17
    labels = np.arange(18)
    assert np.array_equal(classes.encode(*classes.decode(labels)), labels)


def test_official_age_bins():
    assert classes.age_bin(np.array([18, 29, 30, 59, 60, 75])).tolist() == [0, 0, 1, 1, 2, 2]


def test_stems_map_explicitly():
    assert classes.MASK_BY_STEM["incorrect_mask"] == 1
    assert classes.MASK_BY_STEM["normal"] == 2
    assert {classes.MASK_BY_STEM[f"mask{i}"] for i in range(1, 6)} == {0}
    assert classes.class_names()[7] == "incorrect/male/30-59"


def test_marginals_and_joint_follow_decode_on_numpy_and_torch():
    import torch

    rng = np.random.default_rng(0)
    p18 = rng.dirichlet(np.ones(classes.NUM_CLASSES), 5)
    parts = classes.marginals(p18)
    for i, (task, k) in enumerate(classes.TASKS.items()):
        of_class = classes.decode(np.arange(classes.NUM_CLASSES))[i]
        want = np.stack([p18[:, of_class == c].sum(1) for c in range(k)], axis=1)
        assert np.allclose(parts[task], want), task
        assert np.allclose(classes.marginals(torch.from_numpy(p18))[task].numpy(), want), task
    onehot = np.eye(classes.NUM_CLASSES)
    assert np.allclose(classes.joint(classes.marginals(onehot)), onehot)  # a sure class factorises
    assert np.allclose(classes.joint(parts).sum(1), 1.0)
    assert [len(classes.TASK_CLASS_NAMES[t]) for t in classes.TASKS] == list(classes.TASKS.values())
