"""The pipeline as one table: every step's config sections, files, fan-out, resources and code.

Everything that wires a step is read from :data:`STEPS`: the ``maskpipe STEP`` options
(:mod:`maskpipe.cli`), the Snakemake rules' inputs, outputs, params and shell lines
(``workflow/rules/common.smk``), ``dvc.yaml`` (:mod:`maskpipe.dag.dvc`), the sections a step may
read (:func:`maskpipe.config.step_params`), the code files whose edits rerun it
(:mod:`maskpipe.dag.sources`) and the tests' in-process pipeline runner. Adding a step is one entry here,
one function in :mod:`maskpipe.steps` and one rule in ``workflow/rules/``. Each job's files and
command are resolved from it by :mod:`maskpipe.dag.jobs`.

Paths are named by :class:`maskpipe.layout.Layout` methods, never spelled out here. A step that
fans out runs once per model x fold; its per-job files take the job's model and fold, and a later
step reads ``every_job`` inputs as one path per model x fold.

Pseudo-label rounds (the ``pseudo`` config section): a step marked ``rounds`` runs once per round
2 .. ``pseudo.rounds`` + 1 (round 1 is the plain pipeline) and, if it fans out, for the models
``pseudo.models`` selects. A port's ``round`` says which round's :meth:`Layout.round` folder it
lives in: see :data:`maskpipe.dag.rounds.ROUND_KINDS`.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from maskpipe.dag.ports import Port, Step


_IN_ROUND = " (in the round's folder)"

def again(step: Step, name: str, help: str, moved: tuple[str, ...], extra: tuple[Port, ...] = ()
          ) -> Step:
    """``step`` as a pseudo-label round runs it: the same function on the round's files. Its
    outputs and options, and the inputs named in ``moved`` (what an earlier round step wrote),
    live in the round's folder; ``extra`` inputs are added."""
    def here(p: Port) -> Port:
        return replace(p, round="this", help=p.help + _IN_ROUND)

    return replace(step, name=name, help=help, function=step.runs, rounds=True,
                   inputs=tuple(here(p) if p.name in moved else p for p in step.inputs) + extra,
                   outputs=tuple(map(here, step.outputs)), options=tuple(map(here, step.options)))


def _p(name: str, layout: str, *args: str, help: str, **kw: Any) -> Port:
    return Port(name, help, layout=layout, args=args, **kw)


def _data(name: str, under: str) -> Port:
    return Port(name, f"data.root/{under}", config="data.root", under=under, cli=False)


_TRAIN_CROPS = (_p("crops", "crops", "train", help="training crops (.npy)"),
                _p("crop_index", "crop_index", "train", help="training crop index (.csv)"))
_ROUND1: dict[str, Step] = {s.name: s for s in (
    Step("validate", "check the data layout; write the image manifests", ("data",),
         inputs=(_data("train_csv", "train/train.csv"), _data("train_images", "train/images"),
                 _data("eval_csv", "eval/info.csv"), _data("eval_images", "eval/images")),
         outputs=(_p("train", "manifest", "train", help="training manifest (.csv)"),
                  _p("eval", "manifest", "eval", help="eval manifest (.csv)")),
         modules=("maskpipe.data.manifest",), threads=2),
    Step("crop", "detect faces (MTCNN, batched) and store face crops", ("crop",),
         inputs=(_p("train_manifest", "manifest", "train", help="training manifest"),
                 _p("eval_manifest", "manifest", "eval", help="eval manifest")),
         outputs=(_p("train", "crops", "train", help="training crops (.npy)"),
                  _p("train_index", "crop_index", "train", help="training crop index (.csv)"),
                  _p("eval", "crops", "eval", help="eval crops (.npy)"),
                  _p("eval_index", "crop_index", "eval", help="eval crop index (.csv)"),
                  _p("sample_sheet", "crop_sheet", "sample", help="contact sheet of a random sample"),
                  _p("fallback_sheet", "crop_sheet", "fallbacks",
                     help="contact sheet of every crop without its own detection")),
         options=(Port("root", "data folder the manifest paths start from (default: data.root)",
                       config="data.root"),
                  _p("cache", "crop_cache", help="detection cache folder (default: cache/boxes under "
                                                 "results)")),
         modules=("maskpipe.crop.step",), local=False, threads=4, gpu=True),
    Step("persons", "group the eval photos into persons by shoot and face", ("persons",),
         inputs=(_p("eval_manifest", "manifest", "eval", help="eval manifest"),
                 _p("eval_crops", "crops", "eval", help="eval crops"),
                 # The photos themselves are read below the root option, not declared: the
                 # manifest holds each one's SHA-256, so an edited photo reruns this step anyway
                 # (and `snakemake --lint` refuses a param that prefixes an input).
                 _p("eval_index", "crop_index", "eval", help="eval crop index")),
         outputs=(_p("groups", "persons_groups",
                     help="per eval photo: its group, the group's size, a confidence (.csv)"),),
         options=(Port("root", "data folder the manifest paths start from (default: data.root)",
                       config="data.root"),),
         modules=("maskpipe.persons.step",)),
    Step("labels", "apply person-level label corrections", ("labels",),
         inputs=(_p("manifest", "manifest", "train", help="training manifest"),
                 Port("corrections", "labels.corrections", config="labels.corrections", cli=False)),
         outputs=(_p("labels", "labels", help="corrected labels (.csv)"),
                  _p("applied", "corrections_applied", help="the fixes applied (.csv)")),
         modules=("maskpipe.labels",)),
    Step("folds", "person-grouped, stratified K folds", ("folds",),
         inputs=(_p("labels", "labels", help="corrected labels"),),
         outputs=(_p("folds", "folds", help="person -> fold (.csv)"),),
         modules=("maskpipe.folds",)),
    Step("train", "train one model on one fold", ("train", "models.{model}"),
         inputs=(*_TRAIN_CROPS, _p("labels", "labels", help="corrected labels"),
                 _p("folds", "folds", help="person -> fold")),
         outputs=(_p("checkpoint", "checkpoint", per_job=True, help="best weights (.pt)"),
                  _p("metrics", "train_metrics", per_job=True, help="history and best epoch (.json)"),
                  _p("tensorboard", "tensorboard", per_job=True, folder=True,
                     help="TensorBoard log folder")),
         options=(_p("resume", "resume", per_job=True,
                     help="state after each epoch, for a killed job to resume from "
                          "(default: none, no resuming)", fill=False),),
         modules=("maskpipe.train.loop",), fan_out=True, local=False, threads=4, gpu=True),
    Step("predict", "out-of-fold and test probabilities with TTA", ("predict",),
         inputs=(_p("checkpoint", "checkpoint", per_job=True, help="the job's trained weights"),
                 _p("train_crops", "crops", "train", help="training crops"),
                 _p("train_index", "crop_index", "train", help="training crop index"),
                 _p("eval_crops", "crops", "eval", help="eval crops"),
                 _p("eval_index", "crop_index", "eval", help="eval crop index"),
                 _p("labels", "labels", help="corrected labels"),
                 _p("folds", "folds", help="person -> fold")),
         outputs=(_p("oof", "oof", per_job=True, help="out-of-fold probabilities (.csv)"),
                  _p("test", "test_probs", per_job=True, help="eval probabilities (.csv)")),
         modules=("maskpipe.predict",), fan_out=True, local=False, threads=4, gpu=True),
    Step("ensemble", "soft vote over models and folds, scored OOF", ("ensemble",),
         inputs=(_p("oof", "oof", every_job=True, help="every model x fold's OOF file"),
                 _p("test", "test_probs", every_job=True, help="every model x fold's test file"),
                 _p("labels", "labels", help="corrected labels"),
                 _p("persons", "persons_groups", help="eval photo groups (used where "
                                                      "ensemble.persons enables them)")),
         outputs=(_p("oof", "ensemble_oof", help="ensemble OOF probabilities"),
                  _p("test", "ensemble_test", help="ensemble eval probabilities"),
                  _p("scores", "ensemble_scores", help="per model x fold scores"),
                  # Cached like every output: results/ is not in git, so metrics must travel
                  # with `dvc push` / `dvc pull` (cache: false would leave them behind).
                  _p("metrics", "metrics", help="ensemble metrics (.json)", dvc="metrics")),
         modules=("maskpipe.ensemble",)),
    Step("mislabels", "rank suspected label errors with cleanlab; accept fixes", ("mislabels",),
         inputs=(_p("oof", "ensemble_oof", help="ensemble OOF probabilities"),
                 _p("labels", "labels", help="corrected labels"), *_TRAIN_CROPS),
         outputs=(_p("suspects", "mislabels_suspects", help="ranked suspects (.csv)"),
                  _p("review", "mislabels_review", help="review page (.html)"),
                  _p("summary", "mislabels_summary", help="summary (.json)")),
         modules=("maskpipe.mislabels.step",)),
)}

#: Pseudo-label rounds 2, 3, ...: label the eval photos the previous round's ensemble is sure of,
#: then train, predict and ensemble again as round 1 did, with those photos added to training.
_ROUNDS: dict[str, Step] = {s.name: s for s in (
    # Only the keys that change its labels: adding a round or choosing other models to train
    # again reruns no round that exists already.
    Step("pseudo", "label the eval photos the previous round's ensemble is sure of",
         ("pseudo.threshold", "pseudo.task_thresholds"),
         inputs=(_p("probs", "ensemble_test", round="previous",
                    help="the previous round's ensemble eval probabilities (person-consistent "
                         "where ensemble.persons is on)"),),
         outputs=(_p("labels", "pseudo_labels", round="this",
                     help="eval photos that passed: key, label 0..17, confidences (.csv)"),
                  _p("summary", "pseudo_summary", round="this", dvc="metrics",
                     help="how many passed, per class and per task (.json)")),
         modules=("maskpipe.pseudo",), rounds=True),
    again(_ROUND1["train"], "retrain", "train one model on one fold again, its training set "
                                       "plus the round's pseudo-labelled eval photos", (),
          (_p("pseudo_labels", "pseudo_labels", round="this", help="the round's pseudo-labels"),
           _p("eval_crops", "crops", "eval", help="eval crops"),
           _p("eval_index", "crop_index", "eval", help="eval crop index"))),
    again(_ROUND1["predict"], "repredict", "out-of-fold and test probabilities of a round's "
                                           "model x fold", ("checkpoint",)),
    again(_ROUND1["ensemble"], "reensemble", "a round's soft vote (models not trained again "
                                             "vote with their round-1 predictions)",
          ("oof", "test")),
)}

_LAST: dict[str, Step] = {s.name: s for s in (
    Step("submit", "write the checked ImageID,ans file", (),
         inputs=(_p("probs", "ensemble_test", round="last",
                    help="the last round's ensemble eval probabilities"),
                 _p("eval_manifest", "manifest", "eval", help="eval manifest")),
         outputs=(_p("submission", "submission", help="ImageID,ans in info.csv order"),),
         modules=("maskpipe.submission",)),
    Step("report", "one self-contained HTML report, its figures as PNGs and the learning curves "
                   "as CSV", ("report",),
         inputs=(_p("train_manifest", "manifest", "train", help="training manifest"),
                 _p("labels", "labels", help="corrected labels"),
                 _p("corrections", "corrections_applied", help="applied fixes"),
                 _p("crop_index_train", "crop_index", "train", help="training crop index"),
                 _p("crops_train", "crops", "train", help="training crops"),
                 _p("crop_index_eval", "crop_index", "eval", help="eval crop index"),
                 _p("crop_sample", "crop_sheet", "sample", help="sample contact sheet"),
                 _p("crop_fallbacks", "crop_sheet", "fallbacks", help="fallback contact sheet"),
                 _p("folds", "folds", help="person -> fold"),
                 _p("train_metrics", "train_metrics", every_job=True, help="every metrics.json"),
                 _p("tensorboard", "tensorboard", every_job=True, help="every TensorBoard folder"),
                 _p("scores", "ensemble_scores", help="per model x fold scores"),
                 _p("ensemble_oof", "ensemble_oof", help="ensemble OOF probabilities"),
                 _p("metrics", "metrics", help="ensemble metrics"),
                 _p("submission", "submission", help="the submission"),
                 _p("mislabels", "mislabels_suspects", help="ranked suspects"),
                 _p("mislabels_summary", "mislabels_summary", help="mislabels summary"),
                 _p("persons", "persons_groups", help="eval photo groups"),
                 _p("round_metrics", "metrics", round="rounds",
                    help="every round's ensemble metrics (pseudo-label rounds only)"),
                 _p("round_tests", "ensemble_test", round="rounds",
                    help="every round's ensemble eval probabilities (pseudo-label rounds only)"),
                 _p("pseudo_summaries", "pseudo_summary", round="extra",
                    help="every pseudo-label round's summary")),
         outputs=(_p("report", "report", help="the report (.html)"),
                  _p("figures", "report_figures", folder=True, help="its figures as PNG files"),
                  _p("history", "report_history", dvc="plots",
                     help="every model x fold x epoch's scalars (.csv)")),
         modules=("maskpipe.report",)),
)}

#: Every step, in pipeline order.
STEPS: dict[str, Step] = {**_ROUND1, **_ROUNDS, **_LAST}
#: The steps of a pseudo-label round, in the order a round runs them.
ROUND_STEPS: tuple[Step, ...] = tuple(_ROUNDS.values())


def local_steps() -> list[str]:
    """The cheap steps, which stay on the submitting machine under a cluster executor."""
    return [s.name for s in STEPS.values() if s.local]
