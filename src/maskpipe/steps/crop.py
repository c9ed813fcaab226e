"""crop: detect faces (MTCNN, batched) and store the face crops of train and eval."""

from __future__ import annotations

import argparse
from typing import Any

from maskpipe.dag.ports import Job, Port, Step, layout_port

STEP = Step(
    "crop", "detect faces (MTCNN, batched) and store face crops", ("crop",),
    inputs=(layout_port("train_manifest", "manifest", "train", help="training manifest"),
            layout_port("eval_manifest", "manifest", "eval", help="eval manifest")),
    outputs=(layout_port("train", "crops", "train", help="training crops (.npy)"),
             layout_port("train_index", "crop_index", "train", help="training crop index (.csv)"),
             layout_port("eval", "crops", "eval", help="eval crops (.npy)"),
             layout_port("eval_index", "crop_index", "eval", help="eval crop index (.csv)"),
             layout_port("sample_sheet", "crop_sheet", "sample", help="contact sheet of a random sample"),
             layout_port("fallback_sheet", "crop_sheet", "fallbacks",
                         help="contact sheet of every crop without its own detection")),
    options=(Port("root", "data folder the manifest paths start from (default: data.root)",
                  config="data.root"),
             layout_port("cache", "crop_cache", help="detection cache folder (default: cache/boxes "
                                                     "under results)")),
    modules=("maskpipe.crop.splits",), local=False, threads=4, gpu=True)


def add_arguments(parser: argparse.ArgumentParser) -> list[argparse.Action]:
    """``--workers``: how many chunks are cropped at once, by hand."""
    return [parser.add_argument(
        "--workers", type=int, default=None,
        help="chunks of crop.batch_size images cropped at once, in threads with one torch thread "
             "each (default: usable cores, capped by OMP_NUM_THREADS, plus 1); the crops are the "
             "same for any number")]


def run(job: Job, cfg: dict[str, Any]) -> None:
    """Crop train and eval on a device of its own (a GPU where there is one, like train)."""
    from maskpipe import crop as crop_step
    from maskpipe import devices

    settings = cfg["crop"]
    with devices.claim_device(settings["device"]) as device:
        crop_step.crop_splits(job.inputs["train_manifest"], job.inputs["eval_manifest"], job.options["root"],
                      job.outputs, job.options["cache"], settings, str(device),
                      workers=job.extra.get("workers"))
