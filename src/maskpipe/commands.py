"""The ``maskpipe`` subcommands that are not pipeline steps: demo data, ``dvc.yaml``, the step
table, the search and the summary of a run.

Each takes the parsed arguments and a ``load_config`` callable; what it returns the CLI prints.
The library modules are imported when a command runs, so ``maskpipe --help`` and a step's
command do not pay for importing what they do not use.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
from collections.abc import Callable
from pathlib import Path

from maskpipe.config import Config
from maskpipe.dag.dvc import render_dvc_yaml, render_params
from maskpipe.dag.render import page_with_table, table
from maskpipe.dag.rounds import last_round
from maskpipe.io import MaskpipeError, write_bytes_if_changed
from maskpipe.layout import Layout

log = logging.getLogger(__name__)
Loader = Callable[[argparse.Namespace], Config]


_REAL_ONLY = ("eval_persons", "landmark_cache", "face_region", "female_share", "old_share", "old_ages",
              "eval_male_share", "eval_old_share", "min_age")


def demo_data(args: argparse.Namespace, load_config: Loader) -> None:
    from maskpipe.demo.synthetic import generate_demo
    from maskpipe.demo.realfaces import Priors, generate_realfaces

    if args.faces is None:
        real_only = [k for k in _REAL_ONLY if getattr(args, k) is not None]
        if real_only:
            raise MaskpipeError(f"demo-data: --{real_only[0].replace('_', '-')} needs --faces "
                                "(the embedded demo has fixed statistics and counts --eval-images)")
        kwargs = {k: v for k, v in (("persons", args.persons), ("eval_images", args.eval_images))
                  if v is not None}
        summary = generate_demo(args.out, seed=args.seed, plant_errors=args.plant_errors, **kwargs)
        log.info("demo data in %s: %s", args.out, summary)
        return
    if args.eval_images is not None:
        raise MaskpipeError("demo-data: with --faces, eval is counted in persons: use --eval-persons")
    given = {k: getattr(args, k) for k in _REAL_ONLY[3:] if getattr(args, k) is not None}
    priors = Priors(**{k: tuple(v) if isinstance(v, list) else v for k, v in given.items()})
    kwargs = {k: v for k, v in (("persons", args.persons), ("eval_persons", args.eval_persons),
                                ("face_region", args.face_region)) if v is not None}
    summary = generate_realfaces(args.out, args.faces, seed=args.seed, plant_errors=args.plant_errors,
                                 priors=priors, landmark_cache=args.landmark_cache, **kwargs)
    log.info("real-faces data in %s: %s", args.out, summary)


def dvc_yaml(args: argparse.Namespace, load_config: Loader) -> None:

    files = [str(f) for f in args.config or [Path("config.yaml")]]
    cfg = load_config(args)
    start = args.out.parent
    texts = {}
    if len(files) == 1:
        params_file = files[0]
    else:  # DVC compares params in one file: write the merged config for it
        params = args.params or start / "params.yaml"
        params_file = os.path.relpath(params, start)
        texts[params] = render_params(cfg, files)
    texts[args.out] = render_dvc_yaml(cfg, params_file, str(start))
    for path, text in texts.items():
        if args.check:
            if (path.read_text() if path.is_file() else "") != text:
                raise MaskpipeError(f"{path} is out of date with the config; run `maskpipe dvc-yaml`")
            continue
        changed = write_bytes_if_changed(path, text.encode())
        log.info("%s %s", path, "written" if changed else "already up to date")


def step_table(args: argparse.Namespace, load_config: Loader) -> str:
    """``maskpipe steps``: the step table of :mod:`maskpipe.dag.table` (the CLI prints it), or
    ``--write PAGE``: the page with its table replaced."""
    if args.write is None:
        return table(args.format)
    if args.format != "markdown":
        raise MaskpipeError("steps: --write puts the Markdown table into a page; leave out --format")
    try:
        page = page_with_table(args.write.read_text(encoding="utf-8"), str(args.write))
    except (OSError, ValueError) as e:
        raise MaskpipeError(f"steps --write: {e}") from None
    changed = write_bytes_if_changed(args.write, page.encode("utf-8"))
    return f"{args.write}: step table {'written' if changed else 'already up to date'}"


def search(args: argparse.Namespace, load_config: Loader) -> str:
    """``maskpipe search``: run or continue the hyperparameter search (not a pipeline step)."""
    from maskpipe.search import run_search

    files = args.config or [Path("config.yaml")]
    for name, value in (("--trials", args.trials), ("--parallel", args.parallel)):
        if value is not None and value < 1:
            raise MaskpipeError(f"search: {name} must be at least 1, got {value}")
    done = run_search(files, args.trials, args.parallel, args.write_recipe, args.out)
    if done.best_score is None:
        return f"search: no completed trial yet; see {done.folder / 'trials.csv'}"
    return (f"best out-of-fold macro F1 {done.best_score:.4f} ({done.completed} trials): "
            f"{done.folder / 'best.yaml'}, {done.folder / 'report.html'}")


def summary(args: argparse.Namespace, load_config: Loader) -> str:
    """The lines `make demo` ends with (the CLI prints them to stdout): the submission, the
    report and the OOF score of the ensemble submitted, the last pseudo-label round's (beside
    round 1's when there are rounds)."""
    if args.results is None:
        config = load_config(args)
        layout, last = Layout(str(config.results)), last_round(config.raw)
    else:  # no config: the last round whose ensemble is in the folder
        layout, last = Layout(str(args.results)), 1
        while Path(layout.round(last + 1).metrics()).is_file():
            last += 1

    def scores(number: int) -> dict:
        path = Path(layout.round(number).metrics())
        if not path.is_file():
            raise MaskpipeError(f"{path}: no finished run here yet")
        return json.loads(path.read_text())

    metrics = scores(last)
    which = f" of round {last}, the last pseudo-label round," if last != 1 else ""
    line = (f"ensemble{which} out-of-fold macro F1: {metrics['oof_macro_f1']:.4f} "
            f"(accuracy {metrics['oof_accuracy']:.4f})")
    if last != 1:
        line += f"; round 1: {scores(1)['oof_macro_f1']:.4f}"
    return (f"submission: {layout.submission()}\n"
            f"report:     {layout.report()}\n"
            f"{line}")
