import shutil

import pandas as pd
import pytest
from PIL import Image

from maskpipe import classes
from maskpipe.cli import main as cli_main
from maskpipe.data.manifest import build_eval_manifest, build_train_manifest
from maskpipe.io import MaskpipeError


@pytest.fixture
def data(tmp_path, demo_root):
    root = tmp_path / "data"
    shutil.copytree(demo_root, root)
    return root


def first_person(root):
    return sorted((root / "train" / "images").iterdir())[0]


def image_of(folder, stem):
    return next(f for f in folder.iterdir() if f.stem == stem)


def test_manifest_rows_and_explicit_classes(demo_root):
    df = build_train_manifest(demo_root)
    people = pd.read_csv(demo_root / "train" / "train.csv", dtype=str)
    assert len(df) == 7 * len(people)
    assert df["key"].is_unique
    assert df["id"].str.len().eq(6).all()  # zero-padded ids stay strings
    for row in df.itertuples():
        g = classes.GENDER_BY_NAME[row.gender]
        a = 0 if row.age < 30 else 1 if row.age < 60 else 2
        assert row.label == classes.MASK_BY_STEM[row.stem] * 6 + g * 3 + a
    assert df["sha256"].str.len().eq(64).all()
    ev = build_eval_manifest(demo_root)
    info = pd.read_csv(demo_root / "eval" / "info.csv")
    assert list(ev["key"]) == list(info["ImageID"])


def test_junk_files_are_ignored(data):
    folder = first_person(data)
    (folder / ".DS_Store").write_bytes(b"\0\1")
    (folder / "._mask1.jpg").write_bytes(b"apple double")
    assert len(build_train_manifest(data)) == 7 * len(list((data / "train" / "images").iterdir()))


def break_missing_image(root):
    image_of(first_person(root), "mask3").unlink()
    return "missing image mask3"


def break_duplicate_image(root):
    src = image_of(first_person(root), "normal")
    Image.open(src).convert("RGB").save(src.with_suffix(".png" if src.suffix != ".png" else ".jpg"))
    return "image normal appears 2 times"


def break_zero_byte(root):
    image_of(first_person(root), "mask2").write_bytes(b"")
    return "unreadable image"


def break_text_as_jpg(root):
    image_of(first_person(root), "mask4").write_text("this is not a picture")
    return "unreadable image"


def break_truncated_jpeg(root):
    f = image_of(first_person(root), "mask1")
    img = Image.open(f).convert("RGB")
    jpg = f.with_suffix(".jpg")
    f.unlink()
    img.save(jpg, quality=95)
    jpg.write_bytes(jpg.read_bytes()[: jpg.stat().st_size // 3])
    return "unreadable image"


def break_missing_column(root):
    csv = root / "train" / "train.csv"
    pd.read_csv(csv, dtype=str).drop(columns=["race"]).to_csv(csv, index=False)
    return "missing column(s) race"


def break_extra_column(root):
    csv = root / "train" / "train.csv"
    pd.read_csv(csv, dtype=str).assign(mood="ok").to_csv(csv, index=False)
    return "unexpected column(s) mood"


def break_row_without_folder(root):
    shutil.rmtree(first_person(root))
    return "row 2: folder"


def break_eval_absent(root):
    next((root / "eval" / "images").iterdir()).unlink()
    return "not found"


def break_eval_twice(root):
    csv = root / "eval" / "info.csv"
    info = pd.read_csv(csv)
    pd.concat([info, info.head(1)]).to_csv(csv, index=False)
    return "listed more than once"


def break_bad_gender(root):
    csv = root / "train" / "train.csv"
    df = pd.read_csv(csv, dtype=str)
    df.loc[0, "gender"] = "unknown"
    df.to_csv(csv, index=False)
    return "row 2: gender 'unknown'"


@pytest.mark.parametrize("breaker", [
    break_missing_image, break_duplicate_image, break_zero_byte, break_text_as_jpg,
    break_truncated_jpeg, break_missing_column, break_extra_column, break_row_without_folder,
    break_eval_absent, break_eval_twice, break_bad_gender,
])
def test_bad_input_stops_with_one_line_and_writes_nothing(data, tmp_path, capsys, breaker):
    expected = breaker(data)
    out_train, out_eval = tmp_path / "out" / "train.csv", tmp_path / "out" / "eval.csv"
    code = cli_main(["validate", "--root", str(data), "--out-train", str(out_train),
                     "--out-eval", str(out_eval)])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 1
    assert err[-1].startswith("maskpipe validate: error: ")
    assert expected in err[-1]
    assert not out_train.exists() and not out_eval.exists()


def test_direct_call_raises_maskpipe_error(data):
    break_missing_image(data)
    with pytest.raises(MaskpipeError, match="missing image mask3"):
        build_train_manifest(data)


def test_duplicate_and_suffixed_ids_are_separate_persons(data):
    """Real data: id 003397 is two people and one id is 001498-1; persons are folders."""
    csv = data / "train" / "train.csv"
    people = pd.read_csv(csv, dtype=str)
    for row, new_id in ((0, "003397"), (1, "003397"), (2, "001498-1")):
        old = people.loc[row, "path"]
        new = f"{new_id}_{people.loc[row, 'gender']}_Asian_{people.loc[row, 'age']}"
        if row == 1 and new == people.loc[0, "path"]:
            new += "_b"
        shutil.move(data / "train" / "images" / old, data / "train" / "images" / new)
        people.loc[row, ["id", "path"]] = [new_id, new]
    people.to_csv(csv, index=False)
    df = build_train_manifest(data)
    assert df.loc[df["id"] == "003397", "person"].nunique() == 2
    assert (df["id"] == "001498-1").sum() == 7
