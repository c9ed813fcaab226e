"""report: one self-contained HTML report, its figures as PNGs and the learning curves as CSV."""

from __future__ import annotations

import logging
from typing import Any

from maskpipe.dag.ports import Job, Plot, Port, Step, layout_port

log = logging.getLogger(__name__)

# ReportInputs' fields are these inputs, by name (tests/test_table.py keeps them the same).
STEP = Step(
    "report", "one self-contained HTML report, its figures as PNGs and the learning curves as CSV",
    ("report",),
    inputs=(layout_port("train_manifest", "manifest", "train", help="training manifest"),
            layout_port("labels", "labels", help="corrected labels"),
            layout_port("corrections", "corrections_applied", help="applied fixes"),
            layout_port("crop_index_train", "crop_index", "train", help="training crop index"),
            layout_port("crops_train", "crops", "train", help="training crops"),
            layout_port("crop_index_eval", "crop_index", "eval", help="eval crop index"),
            layout_port("crop_sample", "crop_sheet", "sample", help="sample contact sheet"),
            layout_port("crop_fallbacks", "crop_sheet", "fallbacks", help="fallback contact sheet"),
            layout_port("folds", "folds", help="person -> fold"),
            layout_port("train_metrics", "train_metrics", every_job=True, help="every metrics.json"),
            layout_port("tensorboard", "tensorboard", every_job=True, help="every TensorBoard folder"),
            layout_port("scores", "ensemble_scores", help="per model x fold scores"),
            layout_port("ensemble_oof", "ensemble_oof", help="ensemble OOF probabilities"),
            layout_port("metrics", "metrics", help="ensemble metrics"),
            layout_port("submission", "submission", help="the submission"),
            layout_port("mislabels", "mislabels_suspects", help="ranked suspects"),
            layout_port("mislabels_summary", "mislabels_summary", help="mislabels summary"),
            layout_port("persons", "persons_groups", help="eval photo groups"),
            layout_port("round_metrics", "metrics", round="rounds",
                        help="every round's ensemble metrics (pseudo-label rounds only)"),
            layout_port("round_tests", "ensemble_test", round="rounds",
                        help="every round's ensemble eval probabilities (pseudo-label rounds only)"),
            layout_port("pseudo_summaries", "pseudo_summary", round="extra",
                        help="every pseudo-label round's summary"),
            Port("eval_truth", "the eval photos' true classes (report.eval_truth; none: not scored on eval)",
                 config="report.eval_truth", when="report.eval_truth")),
    outputs=(layout_port("report", "report", help="the report (.html)"),
             layout_port("figures", "report_figures", folder=True, figures=True, help="its figures as PNG files"),
             # One row per model x fold x epoch: points, not a line (a line would join the runs).
             layout_port("history", "report_history", dvc="plots", help="every model x fold x epoch's scalars (.csv)",
                         plot=Plot("epoch", "val_f1", "scatter",
                                   "Validation macro F1 per epoch (every model x fold)"))),
    modules=("maskpipe.report",))


def run(job: Job, cfg: dict[str, Any]) -> None:
    """Build the report from every file the run made."""
    from maskpipe.report import ReportInputs, build_report

    o = job.outputs
    build_report(ReportInputs(**job.inputs), cfg["report"]["title"], o["report"], o["figures"], o["history"])
    log.info("report written to %s", o["report"])
