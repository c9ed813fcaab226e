"""File helpers under faults: odd images, undecodable CSVs, full disks, blocked output folders."""

from __future__ import annotations

import errno
import shutil
import struct
import subprocess
import zlib
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from maskpipe.cli import main as cli_main
from maskpipe.images import read_rgb
from maskpipe.io import (MaskpipeError, atomic_path, npy_writer, path_inside, read_csv, save_torch,
                         write_csv)


def _png16(path: Path, pixels: np.ndarray) -> None:
    """A 16-bit-per-channel PNG (Pillow cannot write RGB48): gray (h, w) or RGB (h, w, 3)."""
    h, w = pixels.shape[:2]
    color_type = 2 if pixels.ndim == 3 else 0
    raw = b"".join(b"\0" + pixels[y].astype(">u2").tobytes() for y in range(h))

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 16, color_type, 0, 0, 0))
                     + chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b""))


@pytest.mark.parametrize("shape", [(24, 32), (24, 32, 3)], ids=["gray16", "rgb48"])
def test_16_bit_pngs_keep_their_tones(tmp_path, shape):
    eight = np.random.default_rng(0).integers(0, 256, shape).astype(np.uint16)
    _png16(tmp_path / "x.png", eight * 257)  # 8-bit values spread over the 16-bit range
    rgb = np.asarray(read_rgb(tmp_path / "x.png"))
    expected = eight if eight.ndim == 3 else np.repeat(eight[..., None], 3, axis=2)
    assert rgb.shape == (24, 32, 3)
    assert np.abs(rgb.astype(int) - expected).max() <= 1  # not clipped to white


def test_unreadable_csv_names_line_and_byte(tmp_path):
    p = tmp_path / "t.csv"
    p.write_bytes("a,b\n1,2\n3,caf\xe9\n".encode("latin-1"))
    with pytest.raises(MaskpipeError, match=r"t.csv: line 3: byte 0xe9 is not UTF-8 text"):
        read_csv(p, encoding="utf-8-sig")


def _no_temp_files(folder: Path) -> bool:
    return not [p for p in folder.rglob("*") if p.name.endswith(".tmp")]


def _half_then_full(self, data):
    with open(self, "wb") as f:
        f.write(data[: len(data) // 2])
    raise OSError(errno.ENOSPC, "No space left on device", str(self))


def test_full_disk_during_a_write_keeps_the_previous_output(tmp_path, monkeypatch):
    out = tmp_path / "out.csv"
    out.write_text("previous\n")
    monkeypatch.setattr(Path, "write_bytes", _half_then_full)
    with pytest.raises(MaskpipeError, match="out.csv: no space left on the device while writing"):
        write_csv(pd.DataFrame({"a": range(1000)}), out)
    assert out.read_text() == "previous\n"
    assert _no_temp_files(tmp_path)


def test_full_disk_during_torch_save_and_npy_keeps_the_previous_output(tmp_path, monkeypatch):
    ckpt, arr = tmp_path / "checkpoint.pt", tmp_path / "crops.npy"
    torch.save({"old": 1}, ckpt)
    np.save(arr, np.zeros(3, np.uint8))

    def failing_save(obj, f):
        Path(f).write_bytes(b"PK partial")
        raise RuntimeError("[enforce fail at inline_container.cc:672] . file write failed")

    monkeypatch.setattr(torch, "save", failing_save)
    monkeypatch.setattr(shutil, "disk_usage", lambda p: shutil._ntuple_diskusage(10, 10, 0))
    with pytest.raises(MaskpipeError, match="checkpoint.pt: no space left on the device"):
        save_torch({"new": 2}, ckpt)
    monkeypatch.undo()
    assert torch.load(ckpt, weights_only=True) == {"old": 1}
    with pytest.raises(MaskpipeError, match="crops.npy: no space left"):
        with npy_writer(arr, (3,)) as a:
            a[:] = 7
            raise OSError(errno.ENOSPC, "No space left on device")
    assert np.load(arr).tolist() == [0, 0, 0]
    assert _no_temp_files(tmp_path)


@pytest.fixture
def tiny_disk(tmp_path):
    """A 2 MiB tmpfs (root only; skipped where mounting is not allowed)."""
    mnt = tmp_path / "disk"
    mnt.mkdir()
    proc = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(mnt)],
                          capture_output=True, text=True)
    if proc.returncode != 0:
        pytest.skip(f"cannot mount a small tmpfs here ({proc.stderr.strip() or proc.returncode})")
    yield mnt
    subprocess.run(["umount", "--lazy", str(mnt)], check=True)


def test_a_really_full_disk_keeps_previous_outputs(tiny_disk):
    csv, ckpt = tiny_disk / "table.csv", tiny_disk / "checkpoint.pt"
    write_csv(pd.DataFrame({"a": [1]}), csv)
    save_torch({"w": torch.ones(4)}, ckpt)
    before = csv.read_bytes(), ckpt.read_bytes()
    big = pd.DataFrame({"a": np.arange(400_000)})  # ~2.6 MB of CSV: more than the disk
    with pytest.raises(MaskpipeError, match="table.csv: no space left on the device"):
        write_csv(big, csv)
    with pytest.raises(MaskpipeError, match="checkpoint.pt: no space left on the device"):
        save_torch({"w": torch.ones(1_000_000)}, ckpt)  # 4 MB of weights
    # A memory-mapped array (the crops) would die of SIGBUS on a full disk unless allocated first.
    crops = tiny_disk / "crops.npy"
    with npy_writer(crops, (4, 8, 8, 3)) as a:
        a[:] = 7
    with pytest.raises(MaskpipeError, match="crops.npy: no space left on the device"):
        with npy_writer(crops, (200, 64, 64, 3)) as a:  # 2.4 MB
            a[:] = 1
    assert np.load(crops).tolist() == np.full((4, 8, 8, 3), 7, np.uint8).tolist()
    assert (csv.read_bytes(), ckpt.read_bytes()) == before
    assert torch.load(ckpt, weights_only=True)["w"].tolist() == [1.0] * 4
    assert _no_temp_files(tiny_disk)


def test_output_folder_that_is_a_file_or_output_that_is_a_folder(tmp_path):
    (tmp_path / "results").write_text("oops, a file")
    with pytest.raises(MaskpipeError, match=r"cannot create its folder, .*results is a file"):
        write_csv(pd.DataFrame({"a": [1]}), tmp_path / "results" / "folds" / "folds.csv")
    (tmp_path / "out.csv").mkdir()
    with pytest.raises(MaskpipeError, match="out.csv: is a folder"):
        with atomic_path(tmp_path / "out.csv") as tmp:
            tmp.write_text("x")


def test_cli_turns_file_system_errors_into_one_line(tmp_path, demo_root, monkeypatch, capsys):
    def denied(df, path):
        raise PermissionError(errno.EACCES, "Permission denied", str(path))

    monkeypatch.setattr("maskpipe.steps.validate.write_csv", denied)
    out = tmp_path / "m" / "train.csv"
    code = cli_main(["validate", "--root", str(demo_root), "--out-train", str(out),
                     "--out-eval", str(tmp_path / "m" / "eval.csv")])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 1
    assert err[-1] == f"maskpipe validate: error: {out}: Permission denied"


@pytest.mark.parametrize("bad", ["../x.jpg", "train/../../x.jpg", "/etc/passwd", "..\\x.jpg",
                                 "C:/x.jpg", ""])
def test_paths_from_files_never_leave_the_data_root(tmp_path, bad):
    assert path_inside(tmp_path, "train/images/p/mask1.jpg", "m.csv: row 2") == \
        tmp_path / "train" / "images" / "p" / "mask1.jpg"
    with pytest.raises(MaskpipeError, match=r"^m.csv: row 7: path .* leaves the data folder"):
        path_inside(tmp_path, bad, "m.csv: row 7")


def test_cli_log_in_a_folder_that_is_a_file_is_one_line(tmp_path, capsys):
    (tmp_path / "logs").write_text("a file")
    code = cli_main(["dvc-yaml", "--check", "--out", str(tmp_path / "dvc.yaml"),
                     "--log", str(tmp_path / "logs" / "x.log")])
    assert code == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [f"maskpipe dvc-yaml: error: {tmp_path}/logs/x.log: cannot write the log "
                   "(File exists)"]
