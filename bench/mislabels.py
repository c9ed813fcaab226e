"""Benchmark `maskpipe mislabels` on demo data with planted label errors, against a naive ranking.

    python bench/mislabels.py --persons 150 --rate 0.1              # generate, run, measure
    python bench/mislabels.py --persons 150 --rate 0.1 --accept     # ... then accept and rerun
    python bench/mislabels.py --results R --planted D/planted_errors.csv   # measure a finished run

Generates a demo whose labels are wrong for `rate` of the persons (gender flips, age shifts,
incorrect/normal swaps; the photos keep the truth), runs the pipeline with Snakemake up to the
mislabels step and prints recall and precision of the first 2 x (number planted) suspects, the
same for the naive baseline (persons ranked by their surest wrong OOF prediction, without
cleanlab) measured on the same predictions, and their ratio; then the same at the stricter cut of
1 x (number planted). With --accept it accepts the first
(number planted) suspects through `maskpipe mislabels --accept`, reruns, and prints the ensemble's
OOF macro F1 before and after. Run by hand; tests/test_mislabels.py checks a small case.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import yaml

from maskpipe.demo.synthetic import PLANTED_FILE, generate_demo
from maskpipe.layout import Layout
from maskpipe.demo.truth import baseline_scores, ranking_scores

REPO = Path(__file__).resolve().parents[1]


def project(work: Path, data: Path, folds: int, epochs: int, image_size: int) -> Path:
    """A runnable copy of the workflow whose config is the shipped one, pointed at ``data``."""
    dest = work / "project"
    dest.mkdir(parents=True, exist_ok=True)
    shutil.copy(REPO / "Snakefile", dest / "Snakefile")
    for folder in ("workflow", "envs", "requirements"):
        shutil.copytree(REPO / folder, dest / folder, symlinks=True, dirs_exist_ok=True)
    cfg = yaml.safe_load((REPO / "config.yaml").read_text())
    cfg["data"]["root"] = str(data)
    cfg["results"] = "results/bench"
    cfg["folds"]["k"] = folds
    cfg["labels"]["corrections"] = "corrections.yaml"
    for model in cfg["models"].values():
        model.update(epochs=epochs, image_size=[image_size, image_size])
    (dest / "config.yaml").write_text(yaml.safe_dump(cfg, sort_keys=False))
    if not (dest / "corrections.yaml").exists():
        (dest / "corrections.yaml").write_text("fixes: []\n")
    return dest


def snakemake(dest: Path, target: str, cores: int) -> None:
    bin_dir = Path(sys.executable).parent
    cmd = [str(bin_dir / "snakemake"), target, "--cores", str(cores), "--resources", "gpu=1", "-q"]
    subprocess.run(cmd, cwd=dest, check=True)


def measure(results: Path, planted_path: Path) -> dict:
    """Scores at the issue's cut (2 x planted) and at the stricter cut of 1 x planted."""
    L = Layout(str(results))
    suspects = pd.read_csv(L.mislabels_suspects(), dtype={"person": str}, keep_default_na=False)
    oof = pd.read_csv(L.ensemble_oof(), dtype={"key": str, "person": str})
    planted = pd.read_csv(planted_path, dtype=str)
    cuts = (2 * len(planted), len(planted))
    f1 = json.loads(Path(L.mislabels_summary()).read_text())["oof_macro_f1"]
    return {"cuts": [(ranking_scores(suspects, planted, c), baseline_scores(oof, planted, c)) for c in cuts],
            "oof_macro_f1": f1, "suspects": suspects, "planted": len(planted)}


def report(m: dict) -> None:
    print(f"planted person-level errors: {m['planted']}; suspects listed: {len(m['suspects'])}")
    for ours, naive in m["cuts"]:
        print(f"first {ours['cut']} suspects:")
        for name, s in (("mislabels (cleanlab)", ours), ("naive baseline", naive)):
            print(f"  {name:22s} recall {s['recall']:.3f} ({s['found']}/{s['planted']})  "
                  f"precision {s['precision']:.3f}")
        ratio = ours["recall"] / naive["recall"] if naive["recall"] else float("inf")
        print(f"  recall ratio cleanlab / naive: {ratio:.2f}x")
    print(f"ensemble OOF macro F1 when ranked: {m['oof_macro_f1']:.4f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--work", type=Path, default=Path("results/bench-mislabels"))
    parser.add_argument("--persons", type=int, default=150)
    parser.add_argument("--rate", type=float, default=0.1)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--folds", type=int, default=5)
    parser.add_argument("--epochs", type=int, default=8)
    parser.add_argument("--image-size", type=int, default=64)
    parser.add_argument("--cores", type=int, default=2)
    parser.add_argument("--accept", action="store_true",
                        help="accept the first (number planted) suspects, rerun, print the F1 change")
    parser.add_argument("--results", type=Path, help="measure this finished run instead")
    parser.add_argument("--planted", type=Path, help="with --results: its planted_errors.csv")
    args = parser.parse_args()
    if args.results:
        report(measure(args.results, args.planted))
        return
    start = time.perf_counter()
    data = args.work / "data"
    generate_demo(data, persons=args.persons, eval_images=6, seed=args.seed, plant_errors=args.rate)
    dest = project(args.work, data.resolve(), args.folds, args.epochs, args.image_size)
    results = dest / "results" / "bench"
    snakemake(dest, str(Path("results/bench/mislabels/suspects.csv")), args.cores)
    m = measure(results, data / PLANTED_FILE)
    report(m)
    print(f"({time.perf_counter() - start:.0f} s)")
    if args.accept:
        chosen = m["suspects"]["suspect"].head(m["planted"]).tolist()
        subprocess.run([str(Path(sys.executable).parent / "maskpipe"), "mislabels", "--config", "config.yaml",
                        "--accept", *chosen], cwd=dest, check=True)
        snakemake(dest, "results/bench/report.html", args.cores)  # its "Suspected mislabels" shows the change
        after = json.loads((results / "ensemble" / "metrics.json").read_text())["oof_macro_f1"]
        print(f"accepted {len(chosen)} fixes; ensemble OOF macro F1 {m['oof_macro_f1']:.4f} -> {after:.4f} "
              f"(after: against the corrected labels)")


if __name__ == "__main__":
    main()
