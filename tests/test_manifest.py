import shutil

import numpy as np
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
    persons = len(list((data / "train" / "images").iterdir()))
    for beside in (data / "train" / "images", data / "eval" / "images"):
        (beside / ".DS_Store").write_bytes(b"\0\1")
        (beside / f"._{next(beside.iterdir()).name}").write_bytes(b"apple double")
    assert len(build_train_manifest(data)) == 7 * persons
    assert len(build_eval_manifest(data)) == len(pd.read_csv(data / "eval" / "info.csv"))


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


def edit_csv(root, edit, name="train/train.csv"):
    csv = root / name
    df = pd.read_csv(csv, dtype=str, keep_default_na=False)
    edit(df)
    df.to_csv(csv, index=False)
    return csv


def break_extra_image(root):
    """A person folder with 8 images: the eighth is no known photo name."""
    folder = first_person(root)
    shutil.copy(image_of(folder, "mask1"), folder / "mask6.jpg")
    return "mask6.jpg: unexpected file in a person folder"


def break_folder_listed_twice(root):
    edit_csv(root, lambda df: df.loc.__setitem__((1, "path"), df.loc[0, "path"]))
    return "is listed more than once"


def set_cell(row, column, value, expected, name="train/train.csv"):
    """A breaker that puts ``value`` into one cell of a CSV (row 0 is CSV line 2)."""
    def breaker(root):
        edit_csv(root, lambda df: df.loc.__setitem__((row, column), value), name)
        return expected
    breaker.__name__ = f"break_{column}_{value}"
    return breaker


break_path_escapes_root = set_cell(
    0, "path", "../../outside", "row 2: path '../../outside' is not a folder name inside train/images")
break_path_dotdot = set_cell(2, "path", "..", "row 4: path '..' is not a folder name")
break_age_too_high = set_cell(0, "age", "150", "row 2: age '150' is not a whole number 0-120")
break_age_negative = set_cell(1, "age", "-3", "row 3: age '-3' is not a whole number 0-120")
break_bad_gender = set_cell(0, "gender", "unknown", "row 2: gender 'unknown'")
break_eval_escapes_root = set_cell(0, "ImageID", "../../train/train.csv",
                                   "row 2: ImageID '../../train/train.csv' is not a file name",
                                   "eval/info.csv")


def break_train_csv_not_utf8(root):
    csv = root / "train" / "train.csv"
    lines = csv.read_bytes().split(b"\n")
    lines[3] = lines[3].replace(b"Asian", b"Asi\xe2n")  # Latin-1, as old Excel exports save it
    csv.write_bytes(b"\n".join(lines))
    return "train.csv: line 4: byte 0xe2 is not UTF-8 text"


def break_eval_csv_not_utf8(root):
    csv = root / "eval" / "info.csv"
    csv.write_bytes(csv.read_bytes() + b"caf\xe9.jpg,0\n")
    return "info.csv: line"


@pytest.mark.parametrize("breaker", [
    break_missing_image, break_duplicate_image, break_zero_byte, break_text_as_jpg,
    break_truncated_jpeg, break_missing_column, break_extra_column, break_row_without_folder,
    break_eval_absent, break_eval_twice, break_bad_gender, break_extra_image,
    break_folder_listed_twice, break_path_escapes_root, break_path_dotdot, break_age_too_high,
    break_age_negative, break_train_csv_not_utf8, break_eval_csv_not_utf8, break_eval_escapes_root,
])
def test_bad_input_stops_with_one_line_and_keeps_previous_output(data, tmp_path, capsys, breaker):
    expected = breaker(data)
    out_train, out_eval = tmp_path / "out" / "train.csv", tmp_path / "out" / "eval.csv"
    out_train.parent.mkdir()
    out_train.write_text("previous train manifest\n")
    out_eval.write_text("previous eval manifest\n")
    code = cli_main(["validate", "--root", str(data), "--out-train", str(out_train),
                     "--out-eval", str(out_eval)])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 1
    assert err[-1].startswith("maskpipe validate: error: ")
    assert expected in err[-1]
    assert out_train.read_text() == "previous train manifest\n"
    assert out_eval.read_text() == "previous eval manifest\n"
    assert sorted(p.name for p in out_train.parent.iterdir()) == ["eval.csv", "train.csv"]


def test_bom_spaces_and_odd_image_modes_are_accepted(data):
    """A BOM, spaces around names and values, a 16-bit PNG, a grayscale and a CMYK JPEG pass."""
    for csv in (data / "train" / "train.csv", data / "eval" / "info.csv"):
        text = csv.read_text()
        header, *rows = text.splitlines()
        spaced = [", ".join(header.split(","))] + [" , ".join(r.split(",")) + "  " for r in rows]
        csv.write_bytes(b"\xef\xbb\xbf" + "\r\n".join(spaced).encode() + b"\r\n")
    folder = first_person(data)
    for stem, convert in (("mask1", "I;16"), ("mask2", "L"), ("mask3", "CMYK")):
        f = image_of(folder, stem)
        im = Image.open(f).convert("L" if convert == "I;16" else "RGB")
        f.unlink()
        if convert == "I;16":
            im = Image.fromarray(np.asarray(im, dtype=np.uint16) * 257)
            im.save(folder / f"{stem}.png")
        else:
            im.convert(convert).save(folder / f"{stem}.jpg")
    expected_train = build_train_manifest(data)
    people = pd.read_csv(data / "train" / "train.csv", dtype=str, encoding="utf-8-sig")
    assert len(expected_train) == 7 * len(people)
    assert expected_train["id"].str.len().eq(6).all()  # " 000001 " was stripped
    assert not expected_train["path"].str.contains(" ").any()
    ev = build_eval_manifest(data)
    assert ev["path"].map(lambda p: (data / p).is_file()).all()


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


def test_a_folder_train_csv_does_not_list_is_one_warning(data, caplog):
    extra = data / "train" / "images" / "009999_male_Asian_33"
    shutil.copytree(first_person(data), extra)
    df = build_train_manifest(data)
    assert "009999_male_Asian_33" not in set(df["person"])
    warnings = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert len(warnings) == 1 and "not in train.csv" in warnings[0] and extra.name in warnings[0]
