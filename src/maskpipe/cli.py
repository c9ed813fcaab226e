"""The ``maskpipe`` command: one subcommand per pipeline step.

Snakemake rules and DVC stages run exactly these commands. A pipeline step's options are built
from the step table (:mod:`maskpipe.dag.table`): ``--NAME`` for each file it reads and
``--out-NAME`` for each file it writes; it reads only its own config sections.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from pathlib import Path

from maskpipe import commands
from maskpipe.config import Config
from maskpipe.dag.ports import Job, Step
from maskpipe.dag.runner import run_step
from maskpipe.dag.table import STEPS, module_of
from maskpipe.io import MaskpipeError

log = logging.getLogger("maskpipe")

DESCRIPTION = """\
maskpipe: face crops -> label fixes -> person-grouped folds -> timm models -> OOF + TTA ->
soft-vote ensemble -> submission.csv and an HTML report, for the face-mask-status competition.

Normally you do not call the steps yourself: `snakemake submission --cores 8 --resources gpu=1`
(or `dvc repro`) runs each one when, and only when, its inputs or config sections changed.
"""

EPILOG = "Run `maskpipe STEP --help` for a step's options. Docs: README.md and docs/."


def _config_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", action="extend", nargs="+", type=Path, metavar="FILE",
                   help="config file(s): `--config a.yaml b.yaml` or `--config a.yaml --config "
                        "b.yaml`; later ones override earlier ones (default: config.yaml)")


def _common(p: argparse.ArgumentParser, threads: bool = False) -> None:
    p.add_argument("--log", type=Path, metavar="FILE", help="also write the log to FILE")
    p.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    if threads:
        p.add_argument("--threads", type=int, default=None, help="CPU threads for torch")


#: Functions of maskpipe.commands that run a subcommand of another name.
_COMMANDS = {"steps": "step_table"}


def _step_parser(sub, step: Step) -> None:
    """A pipeline step's subcommand: its files and wildcards from the step table, and the options
    for people its module adds (``add_arguments``; their values reach its ``run`` in
    ``Job.extra``)."""
    module = module_of(step)
    sections = f" [{', '.join(s.replace('{model}', 'MODEL') for s in step.sections)}]" if step.sections else ""
    p = sub.add_parser(step.name, help=step.help + sections,
                       description=getattr(module, "DESCRIPTION", None))
    # a step with a mode of its own by hand (mislabels --accept) needs none of its files then
    required = not hasattr(module, "by_hand")
    if step.fan_out:
        p.add_argument("--model", required=True, help="a name under models: in the config")
        p.add_argument("--fold", type=int, required=True, help="the validation fold")
    groups = (("files the step reads", tuple(i for i in step.inputs if i.cli), False, required),
              ("files the step writes", step.outputs, False, required),
              ("other paths (the engines pass them; optional by hand)", step.options, True, False))
    for title, ports, option, needed in groups:
        group = p.add_argument_group(title)
        for port in ports:
            output = port in step.outputs
            help_text = (port.help + (" (one per model x fold)" if port.every_job else "")
                         + (f" (only with {port.when})" if port.when and not output else ""))
            group.add_argument(port.flag(output), dest=("out_" if output else "") + port.name,
                               # per round: none without pseudo-label rounds; an input only some
                               # configs have (``when``: the external crops) is not required
                               type=Path, required=needed and (port.every_job or not port.many)
                               and not (port.when and not output),
                               nargs="+" if port.every_job else "*" if port.many else None,
                               default=[] if port.many else None,
                               metavar="PATH", help=help_text)
    extra = module.add_arguments(p) if hasattr(module, "add_arguments") else []
    if step.sections:
        _config_arg(p)
    _common(p, threads=step.threads_option)
    p.set_defaults(extra=[a.dest for a in extra] + ["threads"] * step.threads_option)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="maskpipe", description=DESCRIPTION, epilog=EPILOG,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True, metavar="STEP")

    p = sub.add_parser("demo-data", help="generate a small, learnable demo dataset in the real layout "
                                    "(with --faces: one of real faces)")
    p.add_argument("--out", type=Path, default=Path("data/demo"), help="folder to create")
    p.add_argument("--persons", type=int, default=None, help="training persons (7 photos each)")
    p.add_argument("--eval-images", type=int, default=None, help="eval images")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--plant-errors", type=float, default=0.0, metavar="RATE",
                   help="share of the train persons (0..1) given a wrong label (gender flip, age "
                        "shift, incorrect/normal swap) while the photos show the truth; the list "
                        "goes to planted_errors.csv (default 0: a clean demo)")
    real = p.add_argument_group("real faces (docs/quality.md): each person is one face of DIR")
    real.add_argument("--faces", type=Path, metavar="DIR",
                      help="folder with labels.csv (file,age,gender) and the face photos; with it, "
                           "--persons and --eval-persons count persons of 7 photos each")
    real.add_argument("--eval-persons", type=int, default=None, help="eval persons (default 60)")
    real.add_argument("--landmark-cache", type=Path, metavar="CSV",
                      help="landmarks found on the faces, kept between runs (default <out>.landmarks.csv)")
    real.add_argument("--face-region", metavar="oval|square",
                      help="how much of each face photo a portrait keeps: its oval on a drawn head of "
                           "hair, or its whole square with its own hair (default oval; docs/quality.md)")
    real.add_argument("--female-share", type=float, help="train persons female (default 0.61)")
    real.add_argument("--old-share", type=float,
                      help="train persons in the >=60 group (default 192/2700, as the real train set)")
    real.add_argument("--old-ages", type=int, nargs=2, metavar=("LO", "HI"),
                      help="ages of the faces of train's >=60 persons, all labelled 60 (default 60 65)")
    real.add_argument("--min-age", type=int, help="youngest face used (default 18: adults, as the real data)")
    real.add_argument("--eval-male-share", type=float, help="eval persons male (default 0.6)")
    real.add_argument("--eval-old-share", type=float,
                      help="eval persons aged 60 or over, any age (default 0.25)")
    _common(p)

    for step in STEPS.values():
        _step_parser(sub, step)

    p = sub.add_parser("dvc-yaml", help="write dvc.yaml (the DVC twin of the Snakemake rules)")
    p.add_argument("--out", type=Path, default=Path("dvc.yaml"))
    p.add_argument("--params", type=Path, default=None, metavar="FILE",
                   help="with several --config files: where to write their merged config, the "
                        "one file DVC compares params in (default: params.yaml beside --out)")
    p.add_argument("--check", action="store_true", help="fail if the file is not up to date")
    _config_arg(p)
    _common(p)

    p = sub.add_parser("steps", help="print the step table: each step's config sections, files, "
                                     "fan-out and GPU (the map the Snakemake rules and dvc.yaml "
                                     "are generated from)")
    p.add_argument("--format", choices=("markdown", "tsv"), default="markdown",
                   help="a Markdown table, as in docs/pipeline.md (default), or tab-separated values")
    p.add_argument("--write", type=Path, metavar="PAGE",
                   help="instead of printing, put the Markdown table into PAGE between its markers "
                        "(after adding or changing a step: maskpipe steps --write docs/pipeline.md)")
    _common(p)

    _search_parser(sub)

    p = sub.add_parser("summary", help="print where a run's submission and report are, and its score")
    p.add_argument("--results", type=Path, default=None,
                   help="results folder (default: from config); without the config, the last "
                        "pseudo-label round is the last one the folder holds")
    _config_arg(p)
    _common(p)
    # Whole option names only: an abbreviation would keep accepting a renamed flag's old prefix
    # (e.g. ``--out`` for ``--out-labels``) and then silently mean another option.
    parser.allow_abbrev = False
    for p in sub.choices.values():
        p.allow_abbrev = False
    return parser


_SEARCH = """\
Hyperparameter search with Optuna (TPE) over the space declared in the config's `search` section
(learning rate, weight decay, optimizer, scheduler, loss mix, augmentation strength, image size,
epochs). Not a pipeline step: run the pipeline (at least crop, labels and folds) first.

Each trial is the model `search.model` with the drawn values, trained and predicted by the train
and predict steps on the folds `search.folds`, and scored by the out-of-fold macro F1 on those
folds' validation persons. Under RESULTS/search/: trials/<key>/ (each trial's config, checkpoints,
predictions, logs and score; a trial whose config was trained before is not trained again),
study.db (the Optuna study: a stopped search continues where it stopped, and a trial it
interrupted runs again, resuming its training), trials.csv (best first), importance.png, best.yaml
(the best trial as a recipe: `snakemake submission --configfile RESULTS/search/best.yaml`) and
report.html. Rerunning with the same `search.trials` trains nothing; a larger number adds trials.
"""


def _search_parser(sub) -> None:
    p = sub.add_parser("search", help="hyperparameter search (Optuna) over the config's search "
                                      "space; not a pipeline step", description=_SEARCH,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--trials", type=int, default=None, metavar="N",
                   help="completed trials wanted (default: search.trials)")
    p.add_argument("--parallel", type=int, default=None, metavar="N",
                   help="trials at once (default: search.parallel; on CUDA at most one per GPU)")
    p.add_argument("--write-recipe", type=Path, default=None, metavar="FILE",
                   help="also write the best trial's recipe here, e.g. workflow/recipes/6_searched.yaml")
    p.add_argument("--out", type=Path, default=None, metavar="DIR",
                   help="the search folder (default: search/ under the config's results)")
    _config_arg(p)
    _common(p)


def _setup_logging(args: argparse.Namespace) -> None:
    handlers: list[logging.Handler] = [logging.StreamHandler(sys.stderr)]
    if getattr(args, "log", None):
        args.log.parent.mkdir(parents=True, exist_ok=True)
        handlers.append(logging.FileHandler(args.log, mode="w"))
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO, handlers=handlers,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s", force=True)


def _config(args: argparse.Namespace) -> Config:
    return Config.load(args.config or [Path("config.yaml")])


def _job(step: Step, args: argparse.Namespace, config: Config) -> Job:
    """The job the parsed arguments name. An option left out (by hand) is where the step table
    puts it for the config, unless the table says it stays out (train's --resume)."""
    def given(port, output: bool = False):
        return getattr(args, ("out_" if output else "") + port.name)

    options = {}
    for port in step.options:
        value = given(port)
        if value is None and port.fill:
            paths = port.paths(config.raw)
            value = Path(paths[0]) if paths else None
        options[port.name] = value
    return Job(step.name, {p.name: given(p) for p in step.inputs if p.cli},
               {p.name: given(p, True) for p in step.outputs}, options,
               args.model if step.fan_out else None, args.fold if step.fan_out else None,
               getattr(args, "log", None), {name: getattr(args, name) for name in args.extra})


def _run_step(step: Step, args: argparse.Namespace) -> None:
    module = module_of(step)
    if hasattr(module, "by_hand") and module.by_hand(args, _config(args)):
        return
    config = _config(args) if step.sections else Config({})  # a step without sections has no --config
    run_step(_job(step, args, config), config)


def _torch_setup(args: argparse.Namespace) -> None:
    if getattr(args, "threads", None):
        import torch

        torch.set_num_threads(max(1, args.threads))


def _print(text: str) -> None:
    """Print to stdout; a reader that stops early (``maskpipe steps | head``) is not an error."""
    try:
        print(text, flush=True)
    except BrokenPipeError:
        # Python's documented idiom: point stdout at devnull so the exit flush does not fail.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``maskpipe`` console script."""
    args = build_parser().parse_args(argv)
    try:
        _setup_logging(args)
    except OSError as e:  # e.g. the log's folder is a file
        print(f"maskpipe {args.command}: error: {args.log}: cannot write the log ({e.strerror})",
              file=sys.stderr)
        return 1
    try:
        _torch_setup(args)
        if args.command in STEPS:
            _run_step(STEPS[args.command], args)
        else:
            name = _COMMANDS.get(args.command, args.command.replace("-", "_"))
            output = getattr(commands, name)(args, _config)
            if output:
                _print(output)
    except (MaskpipeError, OSError) as e:
        reason = str(e)
        if isinstance(e, OSError):
            # A file system fault (permissions, a full disk, a vanished file): one line naming
            # the file; the traceback only with --verbose.
            log.debug("traceback", exc_info=True)
            if e.filename and e.strerror:
                reason = f"{e.filename}: {e.strerror}"
        message = f"maskpipe {args.command}: error: {reason}"
        print(message, file=sys.stderr)
        if getattr(args, "log", None):
            logging.shutdown()
            with open(args.log, "a") as f:
                f.write(message + "\n")
        return 1
    except KeyboardInterrupt:
        print(f"maskpipe {args.command}: interrupted", file=sys.stderr)
        return 130
    return 0
