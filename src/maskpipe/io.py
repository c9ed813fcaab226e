"""File helpers shared by every step: atomic writes, content hashes, image reading."""

from __future__ import annotations

import contextlib
import errno
import filecmp
import glob
import hashlib
import json
import os
import re
import shutil
import tempfile
from collections.abc import Iterator, Sequence
from pathlib import Path, PurePosixPath
from typing import Any

import numpy as np
import pandas as pd


class MaskpipeError(Exception):
    """An error a user can fix; the CLI prints its message as one line and exits 1."""


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; rename it over ``path`` only on success.

    A failed or killed writer leaves the previous file intact and at most a stray ``.tmp`` file,
    which the next write of the same output removes.
    """
    path = Path(path)
    tmp_path = _temp_beside(path)
    try:
        with _full_disk_named(path):
            yield tmp_path
            _default_mode(tmp_path)
            os.replace(tmp_path, path)
    finally:
        tmp_path.unlink(missing_ok=True)


@contextlib.contextmanager
def _full_disk_named(path: Path) -> Iterator[None]:
    """Turn a full disk (or quota) while writing ``path`` into one line naming it."""
    try:
        yield
    except OSError as e:
        if e.errno in (errno.ENOSPC, errno.EDQUOT):
            raise MaskpipeError(f"{path}: no space left on the device while writing it; "
                                "the previous file is kept") from e
        raise


def _temp_beside(path: Path) -> Path:
    """A new empty temporary file beside ``path``, after removing those a killed writer left.

    Each output has one writer (one job), so an older temporary file of the same output can only
    be the remains of a killed or crashed write: never read, and removed here so they do not pile
    up (a training job's resume state is rewritten every epoch).
    """
    _make_parent(path)
    for stale in path.parent.glob(f".{glob.escape(path.name)}.*.tmp"):
        stale.unlink(missing_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    return Path(tmp)


def _make_parent(path: Path) -> None:
    """Create the folder of an output, or fail naming what blocks it: a file, or a folder as the output."""
    if path.is_dir():
        raise MaskpipeError(f"{path}: is a folder; cannot write the output file there")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except (FileExistsError, NotADirectoryError) as e:
        blocker = next((p for p in (path.parent, *path.parent.parents)
                        if p.exists() and not p.is_dir()), path.parent)
        raise MaskpipeError(f"{path}: cannot create its folder, {blocker} is a file") from e


def save_torch(obj: Any, path: str | os.PathLike) -> None:
    """``torch.save`` atomically; a failed write (a full disk) names the file and keeps the old one.

    torch reports a full disk only as a RuntimeError ("file write failed"), so the free space is
    checked while the partial temporary file still holds it.
    """
    import torch

    path = Path(path)
    with atomic_path(path) as tmp:
        try:
            torch.save(obj, tmp)
        except RuntimeError as e:
            if shutil.disk_usage(tmp.parent).free < _NEARLY_FULL:
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path)) from e
            raise MaskpipeError(f"{path}: cannot write ({str(e).strip().splitlines()[0]}); "
                                "the previous file is kept") from e


_NEARLY_FULL = 64 << 20  # bytes free below which a failed write is taken for a full disk


def load_torch(path: str | os.PathLike) -> Any:
    """``torch.load(..., weights_only=True)``: tensors and plain containers only, no code runs.

    Raises:
        MaskpipeError: one line naming the file: unreadable, truncated, or refused because it
            asks for objects other than weights (what a malicious pickle does).
    """
    import pickle

    import torch

    if not Path(path).is_file():
        raise MaskpipeError(f"{path}: file not found")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, OSError, RuntimeError, EOFError, ValueError) as e:
        text = re.sub(r"\x1b\[[0-9;]*m", "", str(e))  # torch colours its advice
        found = re.search(r"Unsupported global: GLOBAL (\S+)", text)
        if found:
            raise MaskpipeError(f"{path}: refused, it asks to build {found.group(1)} and only "
                                "weights are loaded (weights_only=True)") from e
        detail = re.search(r"WeightsUnpickler error:\s*(.+)", text)
        first = detail.group(1) if detail else (text.strip().splitlines() or [type(e).__name__])[0]
        raise MaskpipeError(f"{path}: cannot load, not a complete torch file ({first.strip()})") from e


def _default_mode(path: Path) -> None:
    # mkstemp creates 0600 files; give outputs the permissions a plain open() would.
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(path, 0o666 & ~umask)


def replace_if_changed(tmp: str | os.PathLike, path: str | os.PathLike) -> bool:
    """Move a finished temporary file over ``path`` unless ``path`` already has its bytes.

    Leaving an identical file untouched keeps its mtime, so neither engine schedules the steps
    downstream of it again. The temporary file is removed either way. Returns whether ``path``
    changed.
    """
    tmp, path = Path(tmp), Path(path)
    if path.is_file() and filecmp.cmp(tmp, path, shallow=False):
        tmp.unlink()
        return False
    _default_mode(tmp)
    os.replace(tmp, path)
    return True


def write_bytes_if_changed(path: str | os.PathLike, data: bytes) -> bool:
    """Atomically write ``data`` unless ``path`` already holds exactly it (see above)."""
    path = Path(path)
    if path.is_file() and path.stat().st_size == len(data) and path.read_bytes() == data:
        return False
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)
    return True


def write_csv(df: pd.DataFrame, path: str | os.PathLike) -> bool:
    """Write a table as CSV (atomically, only if its content changed)."""
    return write_bytes_if_changed(path, df.to_csv(index=False, lineterminator="\n").encode())


class HashCache:
    """Rows by a photo's content hash (column ``sha256``), one CSV, kept between runs: what a step
    computed for a photo (its face box, its teacher estimate) is not computed again for the same
    bytes, whatever their path, run or config. The CSV's name carries the settings that decide the
    rows (another setting, another file). Not a declared output, so no engine deletes it."""

    def __init__(self, path: str | os.PathLike, columns: list[str]):
        self.path, self.columns = Path(path), list(columns)
        self.rows: dict[str, dict] = {}
        if self.path.is_file():
            table = read_csv(self.path, required=self.columns)[self.columns]
            self.rows = {r["sha256"]: r for r in table.to_dict("records")}

    def save(self) -> None:
        """Write every row, by hash (atomically; untouched when nothing changed)."""
        write_csv(pd.DataFrame([self.rows[h] for h in sorted(self.rows)], columns=self.columns), self.path)


def write_json(obj: Any, path: str | os.PathLike) -> bool:
    """Write JSON with sorted keys (atomically, only if its content changed)."""
    text = json.dumps(obj, indent=2, sort_keys=True, allow_nan=False) + "\n"
    return write_bytes_if_changed(path, text.encode())


@contextlib.contextmanager
def npy_writer(path: str | os.PathLike, shape: tuple[int, ...], dtype=np.uint8) -> Iterator[np.ndarray]:
    """Yield a writable memmap of ``shape``; on success it replaces ``path`` if its bytes differ.

    The array is filled on disk, never held whole in memory (31,500 crops at 256x192 are 4.6 GB).
    """
    path = Path(path)
    tmp = _temp_beside(path)
    try:
        with _full_disk_named(path):
            array = np.lib.format.open_memmap(tmp, mode="w+", dtype=dtype, shape=shape)
            _allocate(tmp)
            yield array
            array.flush()
            del array
            replace_if_changed(tmp, path)
    finally:
        Path(tmp).unlink(missing_ok=True)


def _allocate(path: Path) -> None:
    """Give a new sparse file its blocks now. Writing into a memory map of a sparse file on a full
    disk kills the process with SIGBUS; allocating first turns that into ENOSPC, here."""
    if not hasattr(os, "posix_fallocate"):  # macOS: no such call; a full disk stays a crash there
        return
    fd = os.open(path, os.O_RDWR)
    try:
        os.posix_fallocate(fd, 0, os.fstat(fd).st_size)
    finally:
        os.close(fd)


def read_csv(path: str | os.PathLike, required: list[str] | None = None, **kwargs) -> pd.DataFrame:
    """Read a CSV, failing with one line that names the file and the missing columns."""
    path = Path(path)
    if not path.is_file():
        raise MaskpipeError(f"{path}: file not found")
    try:
        df = pd.read_csv(path, **kwargs)
    except UnicodeDecodeError as e:
        raise MaskpipeError(f"{path}: {_undecodable(path, kwargs.get('encoding') or 'utf-8')}") from e
    except (pd.errors.ParserError, pd.errors.EmptyDataError) as e:
        raise MaskpipeError(f"{path}: cannot read as CSV ({str(e).splitlines()[0]})") from e
    if required:
        missing = [c for c in required if c not in df.columns]
        if missing:
            raise MaskpipeError(f"{path}: missing column(s) {', '.join(missing)}")
    return df


def read_json(path: str | os.PathLike, required: Sequence[str] = ()) -> dict:
    """A JSON object from ``path`` that holds the ``required`` keys; a one-line error naming the
    file otherwise."""
    try:
        obj = json.loads(Path(path).read_text())
    except FileNotFoundError as e:
        raise MaskpipeError(f"{path}: file not found") from e
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise MaskpipeError(f"{path}: not valid JSON ({e})") from e
    if not isinstance(obj, dict):
        raise MaskpipeError(f"{path}: expected a JSON object, found {type(obj).__name__}")
    missing = [k for k in required if k not in obj]
    if missing:
        raise MaskpipeError(f"{path}: missing key(s) {', '.join(missing)}")
    return obj


def _undecodable(path: Path, encoding: str) -> str:
    """Where a text file stops being ``encoding``: its line and the offending byte."""
    data = path.read_bytes()
    name = "UTF-8" if encoding.lower().replace("_", "-") in {"utf-8", "utf8", "utf-8-sig"} else encoding
    try:
        data.decode(encoding)
    except UnicodeDecodeError as e:
        line = data.count(b"\n", 0, e.start) + 1
        return f"line {line}: byte 0x{data[e.start]:02x} is not {name} text (save the file as {name})"
    return f"not {name} text"


def path_inside(root: str | os.PathLike, relative: str, where: str) -> Path:
    """``root / relative`` for a path read from a file, refusing one that would leave ``root``.

    Only the name is checked (no absolute path, drive or ``..``): symlinks inside the data folder
    stay allowed, as DVC's symlink cache makes them.

    Raises:
        MaskpipeError: naming ``where`` (file and row) and the path.
    """
    parts = PurePosixPath(str(relative).replace("\\", "/"))
    if not str(relative) or parts.is_absolute() or ".." in parts.parts or ":" in str(relative):
        raise MaskpipeError(f"{where}: path {relative!r} leaves the data folder {root}")
    return Path(root) / parts


def sha256_file(path: str | os.PathLike, chunk: int = 1 << 20) -> str:
    """Hex SHA-256 of a file's bytes."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()
