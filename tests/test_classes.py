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
