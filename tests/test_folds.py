import re

import pandas as pd
import pytest

from maskpipe.data.manifest import build_train_manifest
from maskpipe.data.folds import assign_folds
from maskpipe.io import MaskpipeError


@pytest.fixture(scope="module")
def labels(demo_root):
    from maskpipe.data.labels import add_training_targets

    return add_training_targets(build_train_manifest(demo_root), (30, 60))


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


def test_training_age_bins_are_stratified_too():
    from maskpipe.data.labels import add_training_targets

    rows = []
    for p in range(40):
        age = [20, 40, 58, 60][p % 4]
        for stem in ("mask1", "normal"):
            rows.append({"person": f"p{p:02d}", "gender": ["male", "female"][(p // 4) % 2],
                         "age": age, "mask": 0 if stem == "mask1" else 2})
    df = pd.DataFrame(rows)
    df["age_group"] = df["age"].map(lambda a: 0 if a < 30 else 1 if a < 60 else 2)
    df = add_training_targets(df, (30, 58))
    out = assign_folds(df, 5, seed=1)
    ages = df.drop_duplicates("person").set_index("person").loc[out["person"], "age"].to_numpy()
    # the 58-year-olds (official middle, trained as old) are spread like any other class
    per_fold = pd.crosstab(out["fold"], ages)
    assert (per_fold.max() - per_fold.min() <= 1).all()
    assert set(out["stratum"]) <= set(range(6))


def test_more_folds_than_persons_in_a_stratum_is_one_warning_in_persons(labels, caplog):
    import warnings

    per_stratum = labels.drop_duplicates("person").groupby(["gender_id", "age_group"]).size()
    k = int(per_stratum.min()) + 1
    assert 3 <= k <= labels["person"].nunique()
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # sklearn's own warning (counted in images) stays quiet
        out = assign_folds(labels, k, seed=0)
    assert out["fold"].nunique() == k
    lines = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert len(lines) == 1
    assert f"folds.k = {k} but" in lines[0] and "fold" in lines[0]
    persons = labels.drop_duplicates("person").set_index(["gender_id", "age_group"])["person"]
    named = re.findall(r"(\d+) like (\S+?)[,)]", lines[0])
    assert len(named) == (per_stratum < k).sum() and all(int(n) == per_stratum.min() for n, _ in named)
    assert {p for _, p in named} <= set(persons.loc[per_stratum[per_stratum < k].index])
    caplog.clear()
    assign_folds(labels, k - 1, seed=0)  # as many folds as the smallest stratum has persons
    assert not [r for r in caplog.records if r.levelname == "WARNING"]
