import pandas as pd
import pytest

from maskpipe.data.manifest import build_train_manifest
from maskpipe.folds import assign_folds
from maskpipe.io import MaskpipeError


@pytest.fixture(scope="module")
def labels(demo_root):
    return build_train_manifest(demo_root)


def test_person_grouped_and_deterministic(labels):
    a = assign_folds(labels, 3, seed=7)
    b = assign_folds(labels, 3, seed=7)
    pd.testing.assert_frame_equal(a, b)
    assert a["person"].is_unique and set(a["person"]) == set(labels["person"])
    assert set(a["fold"]) == {0, 1, 2}
    # every image of a person gets its person's fold: no person straddles two folds
    per_image = labels.merge(a, on="person")
    assert per_image.groupby("person")["fold"].nunique().max() == 1


def test_seed_changes_the_split(labels):
    folds = {tuple(assign_folds(labels, 3, seed=s)["fold"]) for s in range(5)}
    assert len(folds) > 1


def test_strata_are_spread_over_folds(labels):
    out = assign_folds(labels, 2, seed=0)
    counts = out.groupby(["stratum", "fold"]).size().unstack(fill_value=0)
    # within a stratum the folds differ by at most one person
    assert ((counts.max(axis=1) - counts.min(axis=1)) <= 1).all()


def test_more_folds_than_persons(labels):
    with pytest.raises(MaskpipeError, match="folds.k = 99"):
        assign_folds(labels, 99, seed=0)
