"""validate: check the raw data's layout and write the image manifests."""

from __future__ import annotations

import argparse
import logging
from pathlib import Path
from typing import Any

from maskpipe.dag.ports import Job, Step, data_port, layout_port
from maskpipe.io import write_csv

log = logging.getLogger(__name__)

STEP = Step(
    "validate", "check the data layout; write the image manifests", ("data",),
    inputs=(data_port("train_csv", "train/train.csv"), data_port("train_images", "train/images"),
            data_port("eval_csv", "eval/info.csv"), data_port("eval_images", "eval/images")),
    outputs=(layout_port("train", "manifest", "train", help="training manifest (.csv)"),
             layout_port("eval", "manifest", "eval", help="eval manifest (.csv)")),
    modules=("maskpipe.data.manifest",), threads=2, threads_option=True)


def add_arguments(parser: argparse.ArgumentParser) -> list[argparse.Action]:
    """``--root``: the data folder, by hand."""
    return [parser.add_argument("--root", type=Path, help="data folder (default: data.root from the config)")]


def run(job: Job, cfg: dict[str, Any]) -> None:
    """Build the train and eval manifests of ``--root`` (default ``data.root``)."""
    from maskpipe.data.manifest import build_eval_manifest, build_train_manifest

    root = job.extra.get("root") or Path(cfg["data"]["root"])
    workers = max(2, (job.extra.get("threads") or 2) * 2)
    train = build_train_manifest(root, workers)
    evals = build_eval_manifest(root, workers)
    write_csv(train, job.outputs["train"])
    write_csv(evals, job.outputs["eval"])
    log.info("manifest: %d persons, %d training images, %d eval images",
             train["person"].nunique(), len(train), len(evals))
