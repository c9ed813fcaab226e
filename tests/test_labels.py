import textwrap

import pandas as pd
import pytest

from maskpipe.data.manifest import build_train_manifest
from maskpipe.io import MaskpipeError
from maskpipe.data.labels import apply_corrections, read_corrections


@pytest.fixture(scope="module")
def manifest(demo_root):
    return build_train_manifest(demo_root)


def fixes(tmp_path, text):
    p = tmp_path / "fixes.yaml"
    p.write_text(textwrap.dedent(text))
    return read_corrections(p), str(p)


def person_of(manifest, gender):
    return manifest.loc[manifest["gender"] == gender, "person"].iloc[0]


def test_gender_age_swap_and_drops(tmp_path, manifest):
    male = person_of(manifest, "male")
    female = person_of(manifest, "female")
    others = [p for p in manifest["person"].unique() if p not in (male, female)]
    fx, src = fixes(tmp_path, f"""
        fixes:
          - person: {male}
            gender: female
            reason: photos show a woman
          - person: {female}
            age: 61
            swap_incorrect_normal: true
            reason: swapped files, wrong age
          - person: {others[0]}
            drop_person: true
            reason: not a person
          - person: {others[1]}
            drop_image: [mask2, mask3]
            reason: blurred
    """)
    out, applied = apply_corrections(manifest, fx, src)
    m = out[out["person"] == male]
    assert set(m["gender"]) == {"female"} and set(m["orig_gender"]) == {"male"}
    assert (m["label"] == m["orig_label"] + 3).all()  # gender is worth 3 in the class index
    f = out[out["person"] == female].set_index("stem")
    assert f.loc["incorrect_mask", "mask"] == 2 and f.loc["normal", "mask"] == 1
    assert f.loc["mask1", "age"] == 61 and f.loc["mask1", "age_group"] == 2
    assert others[0] not in set(out["person"])
    assert set(out.loc[out["person"] == others[1], "stem"]) == {"mask1", "mask4", "mask5",
                                                                  "incorrect_mask", "normal"}
    assert len(out) == len(manifest) - 7 - 2
    assert list(applied["fix"]) == ["gender", "age", "swap_incorrect_normal", "drop_person", "drop_image"]
    assert applied["line"].tolist()[0] == 3  # the line of the fix in the YAML file
    # the manifest itself is untouched
    assert set(manifest.loc[manifest["person"] == male, "gender"]) == {"male"}


def test_unique_id_resolves_to_its_folder(tmp_path, manifest):
    person = manifest["person"].iloc[0]
    pid = manifest["id"].iloc[0]
    gender = "female" if manifest["gender"].iloc[0] == "male" else "male"
    fx, src = fixes(tmp_path, f"""
        fixes:
          - person: "{pid}"
            gender: {gender}
            reason: by id
    """)
    out, applied = apply_corrections(manifest, fx, src)
    assert applied["person"].tolist() == [person]


@pytest.mark.parametrize("body, message", [
    ("- person: nobody_male_Asian_20\n  gender: female\n  reason: x", "unknown person 'nobody_male_Asian_20'"),
    ("- person: {male}\n  gender: male\n  reason: x", "changes nothing"),
    ("- person: {male}\n  gender: female", "needs a 'reason'"),
    ("- person: {male}\n  colour: blue\n  reason: x", "unknown key(s) colour"),
    ("- person: {male}\n  drop_image: mask9\n  reason: x", "has no image 'mask9'"),
])
def test_errors_name_the_line(tmp_path, manifest, body, message):
    male = person_of(manifest, "male")
    text = "fixes:\n" + "\n".join("  " + line for line in body.format(male=male).splitlines())
    p = tmp_path / "f.yaml"
    p.write_text(text + "\n")
    with pytest.raises(MaskpipeError) as err:
        apply_corrections(manifest, read_corrections(p), str(p))
    assert message in str(err.value)
    assert f"{p}:2" in str(err.value)


def test_duplicate_ids_must_use_folder_names(tmp_path, manifest):
    dup = manifest.copy()
    first, second = dup["person"].unique()[:2]
    dup.loc[dup["person"] == second, "id"] = dup.loc[dup["person"] == first, "id"].iloc[0]
    fx, src = fixes(tmp_path, f"""
        fixes:
          - person: "{dup['id'].iloc[0]}"
            age: 99
            reason: x
    """)
    with pytest.raises(MaskpipeError, match="ambiguous"):
        apply_corrections(dup, fx, src)


def test_no_corrections_keeps_everything(manifest):
    out, applied = apply_corrections(manifest, [], "none")
    assert len(out) == len(manifest) and applied.empty
    pd.testing.assert_series_equal(out["label"], out["orig_label"], check_names=False)


def test_training_age_bins_leave_official_labels_alone():
    from maskpipe.data.labels import add_training_targets

    df = pd.DataFrame({"gender": ["male", "female", "male", "female"], "age": [29, 57, 58, 60],
                       "mask": [0, 1, 2, 0]})
    df["age_group"] = [0, 1, 1, 2]
    df["label"] = df["mask"] * 6 + df["gender"].map({"male": 0, "female": 1}) * 3 + df["age_group"]
    out = add_training_targets(df, (30, 58))
    assert out["train_age_group"].tolist() == [0, 1, 2, 2]
    assert out["age_group"].tolist() == [0, 1, 1, 2]  # official bins untouched
    assert out["train_label"].tolist() == [0, 10, 14, 5]
    assert out["label"].tolist() == [0, 10, 13, 5]
    assert out["gender_id"].tolist() == [0, 1, 0, 1]
    with pytest.raises(MaskpipeError, match="train_age_bounds"):
        add_training_targets(df, (60, 30))


COMPETITION = {
    "to_male": ["006359", "006360", "006361", "006362", "006363", "006364", "001720"],
    "to_female": ["001498-1", "004432", "005223"],
    "swap": ["000020", "004418", "005227"],
}


def test_shipped_competition_corrections(tmp_path, demo_root):
    """The shipped file applies cleanly to data whose persons carry the competition's ids."""
    import shutil

    from conftest import REPO
    from maskpipe.demo.synthetic import generate_demo

    root = tmp_path / "data"
    generate_demo(root, persons=18, eval_images=1, seed=3)
    csv = root / "train" / "train.csv"
    people = pd.read_csv(csv, dtype=str)
    females = iter(people.index[people["gender"] == "female"])
    males = iter(people.index[people["gender"] == "male"])
    wanted = [(i, next(females)) for i in COMPETITION["to_male"]]
    wanted += [(i, next(males)) for i in COMPETITION["to_female"]]
    wanted += [(i, next(males)) for i in COMPETITION["swap"]]
    for new_id, row in wanted:
        old = people.loc[row, "path"]
        new = f"{new_id}_{people.loc[row, 'gender']}_Asian_{people.loc[row, 'age']}"
        shutil.move(root / "train" / "images" / old, root / "train" / "images" / new)
        people.loc[row, ["id", "path"]] = [new_id, new]
    people.to_csv(csv, index=False)

    manifest = build_train_manifest(root)
    path = REPO / "workflow" / "resources" / "corrections" / "competition.yaml"
    out, applied = apply_corrections(manifest, read_corrections(path), str(path))
    assert len(applied) == 13
    by_id = out.drop_duplicates("person").set_index("id")
    assert set(by_id.loc[COMPETITION["to_male"], "gender"]) == {"male"}
    assert set(by_id.loc[COMPETITION["to_female"], "gender"]) == {"female"}
    for pid in COMPETITION["swap"]:
        rows = out[out["id"] == pid].set_index("stem")
        assert rows.loc["incorrect_mask", "mask"] == 2 and rows.loc["normal", "mask"] == 1
        assert rows.loc["incorrect_mask", "orig_mask"] == 1
    assert applied["reason"].str.startswith("published fix").all()
