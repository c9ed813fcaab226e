"""mislabels: rank suspected label errors with cleanlab; by hand, accept fixes (``--accept``)."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from maskpipe.config import Config
from maskpipe.dag.ports import Job, Step, layout_port
from maskpipe.io import MaskpipeError
from maskpipe.layout import Layout
from maskpipe.steps.train import TRAIN_CROPS

STEP = Step(
    "mislabels", "rank suspected label errors with cleanlab; accept fixes", ("mislabels",),
    inputs=(layout_port("oof", "ensemble_oof", help="ensemble OOF probabilities"),
            layout_port("labels", "labels", help="corrected labels"), *TRAIN_CROPS),
    outputs=(layout_port("suspects", "mislabels_suspects", help="ranked suspects (.csv)"),
             layout_port("review", "mislabels_review", help="review page (.html)"),
             layout_port("summary", "mislabels_summary", help="summary (.json)")),
    modules=("maskpipe.mislabels.suspects",))

#: The subcommand's description (``maskpipe mislabels --help``): its two modes.
DESCRIPTION = ("Without --accept: rank every label the ensemble's out-of-fold probabilities "
               "disagree with (cleanlab, per task; gender and age per person, mask per photo, "
               "incorrect/normal swaps as pairs) into suspects.csv, review.html and summary.json. "
               "With --accept or --accept-marked: append the chosen suspects' fixes to the "
               "corrections file named by labels.corrections; the next pipeline run applies them "
               "(labels and everything after it rerun, validate and crop do not).")


def add_arguments(parser: argparse.ArgumentParser) -> list[argparse.Action]:
    """The accepting mode's options."""
    return [parser.add_argument("--accept", nargs="+", default=[], metavar="SUSPECT",
                                help="accept these suspects: a suspect id (PERSON:TASK, from "
                                     "suspects.csv) or a person with a single suspect"),
            parser.add_argument("--accept-marked", action="store_true",
                                help="accept the rows whose accept column in suspects.csv says yes"),
            parser.add_argument("--suspects", type=Path, metavar="PATH",
                                help="accepting: suspects.csv (default: the one under the "
                                     "config's results)")]


def by_hand(args: argparse.Namespace, config: Config) -> bool:
    """``--accept`` / ``--accept-marked``: append the chosen suspects' fixes to the corrections
    file. Not the pipeline step: it writes the labels step's input, so it reads where that lives
    (the whole config). False (nothing done) without those options."""
    if not (args.accept or args.accept_marked):
        return False
    from maskpipe.mislabels import suspects as ranking

    layout = Layout(str(config.results))
    suspects = args.suspects or Path(layout.mislabels_suspects())
    ranking.accept(suspects, suspects.parent / Path(layout.mislabels_summary()).name,
                config.raw["labels"]["corrections"], args.accept, args.accept_marked)
    return True


def run(job: Job, cfg: dict[str, Any]) -> None:
    """Rank the suspects of the ensemble's out-of-fold probabilities."""
    from maskpipe.mislabels import suspects as ranking

    # By hand, the ranking's files are optional (--accept needs none of them).
    missing = [f"--{prefix}{name.replace('_', '-')}" for prefix, side in (("", job.inputs), ("out-", job.outputs))
               for name, path in side.items() if path is None]
    if missing:
        raise MaskpipeError(f"ranking needs {', '.join(missing)} (or pass --accept to accept fixes)")
    settings, i, o = cfg["mislabels"], job.inputs, job.outputs
    ranking.rank_mislabels(oof_path=i["oof"], labels_path=i["labels"], crops_path=i["crops"],
                           crop_index_path=i["crop_index"], method=settings["method"], top=settings["top"],
                           thumbnail=settings["thumbnail"], out_suspects=o["suspects"], out_review=o["review"],
                           out_summary=o["summary"])
