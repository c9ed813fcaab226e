"""How often maskpipe's face detector finds a face: generated photos against real ones, and how the
crop step then crops each split.

    python bench/detect_rates.py --data data/real --real ../shared/realfaces/masked_photos [--crop]

Runs MTCNN with the crop step's settings (the config's ``crop`` section) on
- a generated set in the competition's layout (``--data``; e.g. ``maskpipe demo-data --faces``
  or the embedded demo): train and eval photos, by mask status (wear / incorrect / normal);
- real photos (``--real``, the research-only ``masked_photos/`` folder): ``with_mask``,
  ``incorrect_mask`` and ``without_mask`` crops whose face is at least ``--min-face`` px wide (a
  crop holds the face box plus 25% per side), each scaled to portrait width (384 px) and placed
  on a 384x512 canvas of its mean colour, as a portrait photo frames a face.
Prints the share of photos with a face found by the first pass (``crop.detect_scale``,
``min_face_size``, ``thresholds``) and by the first or the second (``crop.second_pass``, run on
what the first missed), per group. A group is sampled down to ``--limit`` photos (seeded).

``--crop`` also runs the crop step itself (in-process, as the engines do) on each ``--data`` set,
twice: "before", with the second pass and eval shoots off (eval photos without a face get the
fixed region), and "after", with the config's settings; it prints each split's share of crop
sources and the share of photos whose box was found on their own face or their shoot's. Where ``demo_truth.csv`` names each eval
photo's person, a shoot box counts only if its shoot holds that person alone. Run by hand;
tests/test_bench_realfaces.py checks that it runs and prints its tables (nothing timed).
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import re
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch
import yaml
from PIL import Image

from maskpipe.classes import MASK_BY_STEM, decode
from maskpipe.config import load_raw, validate
from maskpipe.crop import SOURCES, detect_boxes, detector_passes, make_detector
from maskpipe.images import read_rgb

WIDTH, HEIGHT = 384, 512
MASK_GROUPS = ("wear", "incorrect", "normal")
REAL_GROUPS = {"with_mask": "wear", "incorrect_mask": "incorrect", "without_mask": "normal"}


def generated_photos(root: Path) -> pd.DataFrame:
    """path, split and mask group of every photo of a generated set."""
    rows = []
    for path in sorted((root / "train" / "images").glob("*/*.*")):
        if path.stem in MASK_BY_STEM:
            rows.append({"path": path, "split": "train", "group": MASK_GROUPS[MASK_BY_STEM[path.stem]]})
    truth = root / "demo_truth.csv"
    if truth.is_file():
        table = pd.read_csv(truth)
        mask, _, _ = decode(table["ans"].to_numpy())
        rows += [{"path": root / "eval" / "images" / name, "split": "eval", "group": MASK_GROUPS[m]}
                 for name, m in zip(table["ImageID"], mask, strict=True)]
    return pd.DataFrame(rows)


def real_photos(folder: Path, min_face: int) -> pd.DataFrame:
    """path and mask group of the real crops whose face box is at least ``min_face`` px wide."""
    rows = []
    for sub, group in REAL_GROUPS.items():
        for path in sorted((folder / sub).glob("*.*")):
            size = re.search(r"_(\d+)x(\d+)\.\w+$", path.name)
            if size and int(size.group(1)) / 1.5 >= min_face:  # crop = box + 25% margin per side
                rows.append({"path": path, "split": "real", "group": group})
    return pd.DataFrame(rows)


def as_portrait(image: Image.Image) -> Image.Image:
    """A face crop scaled to portrait width, on a 384x512 canvas of its mean colour."""
    scale = min(WIDTH / image.width, HEIGHT / image.height)
    small = image.resize((round(image.width * scale), round(image.height * scale)), Image.Resampling.BICUBIC)
    canvas = Image.new("RGB", (WIDTH, HEIGHT), tuple(int(c) for c in np.asarray(image).mean((0, 1))))
    canvas.paste(small, ((WIDTH - small.width) // 2, (HEIGHT - small.height) // 3))
    return canvas


def found_shares(paths: list[Path], passes: list, detectors: list, portrait: bool,
                 batch: int = 16) -> list[float]:
    """Share of ``paths`` where pass 1, pass 1 or 2, ... finds a face (later passes run on what
    the earlier ones missed, as in the crop step)."""
    found = np.zeros(len(passes))
    for start in range(0, len(paths), batch):
        images = [read_rgb(p) for p in paths[start:start + batch]]
        if portrait:
            images = [as_portrait(im) for im in images]
        for k, (settings, detector) in enumerate(zip(passes, detectors, strict=True)):
            hits = detect_boxes(images, detector, settings.detect_scale) if images else []
            images = [im for im, (box, _) in zip(images, hits, strict=True) if box is None]
            found[k:] += sum(box is not None for box, _ in hits)
    return list(found / max(1, len(paths)))


def crop_step(data: Path, config: dict, work: Path, cache: Path) -> dict[str, pd.DataFrame]:
    """Run validate and crop in-process on ``data`` (results under ``work``): the crop indexes."""
    from maskpipe.dag.jobs import resolve
    from maskpipe.dag.runner import run_job
    from maskpipe.dag.table import STEPS
    from maskpipe.layout import Layout

    work.mkdir(parents=True, exist_ok=True)
    cfg = {**config, "data": {**config.get("data", {}), "root": str(data)}, "results": str(work / "results")}
    path = work / "config.yaml"
    path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    L, raw = Layout(cfg["results"]), validate(copy.deepcopy(cfg))
    for step in ("validate", "crop"):  # with the files the engines pass (the step table)
        job = resolve(STEPS[step], raw)
        if step == "crop":
            job = dataclasses.replace(job, options={**job.options, "cache": Path(cache)})
        elif Path(L.manifest("eval")).is_file():
            continue
        run_job(job, [path])
    return {split: pd.read_csv(L.crop_index(split), dtype={"key": str, "shoot": str}) for split in ("train", "eval")}


def crop_table(indexes: dict[str, pd.DataFrame], data: Path) -> pd.DataFrame:
    """Per split: the share of each crop source, and of photos whose box was found on their own
    face or their shoot's (eval, where the truth names persons: a shoot of that person only)."""
    rows = []
    truth_file = data / "demo_truth.csv"
    truth = pd.read_csv(truth_file, dtype=str).set_index("ImageID") if truth_file.is_file() else None
    for split, idx in indexes.items():
        shares = idx["source"].value_counts(normalize=True).reindex(list(SOURCES), fill_value=0.0)
        row = {"split": split, "photos": len(idx), **shares.to_dict()}
        own = idx["source"].isin(["detected", "second_pass", "person", "shoot"]).to_numpy()
        if split == "eval" and truth is not None and "person" in truth:
            person = truth["person"].reindex(idx["key"]).to_numpy()
            shoots = idx["shoot"].fillna("").to_numpy()
            pure = pd.Series(person).groupby(shoots).transform("nunique").to_numpy() == 1
            from_shoot = (idx["source"] == "shoot").to_numpy()
            own = own & ~(from_shoot & ~pure)
            row["shoot boxes pure"] = float(pure[from_shoot].mean()) if from_shoot.any() else np.nan
            # with crop.shoots off every shoot id is empty: no shoot at all, not one of all photos
            row["shoots (persons)"] = f"{len(set(shoots) - {''})} ({len(set(person))})"
        row["own or shoot box"] = float(own.mean())
        rows.append(row)
    return pd.DataFrame(rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, action="append", default=[],
                        help="generated set(s) in the competition layout (repeatable)")
    parser.add_argument("--real", type=Path, default=Path("../shared/realfaces/masked_photos"))
    parser.add_argument("--min-face", type=int, default=64, help="smallest real face box width, px")
    parser.add_argument("--limit", type=int, default=300, help="photos per group at most (seeded sample)")
    parser.add_argument("--config", type=Path, default=Path("config.yaml"))
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--crop", action="store_true", help="also run the crop step before/after on --data")
    parser.add_argument("--work", type=Path, default=Path("results/detect_rates"),
                        help="--crop: folder for its manifests, crops and detection cache")
    args = parser.parse_args()
    config = load_raw(args.config)
    passes = detector_passes(validate(config, str(args.config))["crop"])
    device = "cuda" if torch.cuda.is_available() else "cpu"
    detectors = [make_detector(s, device) for s in passes]

    sets = [(str(root), generated_photos(root), False) for root in args.data]
    if args.real.is_dir():
        sets.append((f"{args.real} (face >= {args.min_face} px)", real_photos(args.real, args.min_face), True))
    else:
        print(f"{args.real}: absent, real photos skipped")
    for k, s in enumerate(passes, start=1):
        print(f"pass {k}: {s}")
    heads = " ".join(f"{f'pass<={k}':>8}" for k in range(1, len(passes) + 1))
    print(f"{'set':<60} {'split':<6} {'group':<10} {'photos':>7} {heads}")
    for name, table, portrait in sets:
        for (split, group), part in table.groupby(["split", "group"], sort=False):
            paths = part["path"].tolist()
            if len(paths) > args.limit:
                rng = np.random.default_rng(args.seed)
                paths = [paths[i] for i in sorted(rng.choice(len(paths), args.limit, replace=False))]
            shares = found_shares(paths, passes, detectors, portrait)
            print(f"{name[-60:]:<60} {split:<6} {group:<10} {len(paths):>7} "
                  + " ".join(f"{s:>8.1%}" for s in shares), flush=True)
    if not args.crop:
        return
    before = {**config, "crop": {**config.get("crop", {}), "second_pass": {"enabled": False},
                                 "shoots": {"enabled": False}}}
    for root in args.data:
        work = args.work / re.sub(r"\W+", "_", str(root))
        for name, cfg in (("before (first pass; person box; eval: fixed region)", before),
                          ("after (second pass; person or shoot box)", config)):
            t = time.perf_counter()
            table = crop_table(crop_step(root, cfg, work / name.split()[0], args.work / "cache"), root)
            print(f"\n{root}: crop step {name}, {time.perf_counter() - t:.0f} s\n"
                  f"{table.to_string(index=False, float_format='{:.3f}'.format)}", flush=True)


if __name__ == "__main__":
    main()
