"""``maskpipe search``: an Optuna study over the declared space, kept in SQLite, resumable.

The study lives in ``search/study.db`` under the results folder, named for the base model, the
space and the folds (a changed space starts a new study in the same file; unchanged trial
configs are still read from the trial cache). One search runs per folder at a time (a lock
file), so trials a killed search left RUNNING are dead: they are marked failed and enqueued
again with the same params, as are trials stopped by Ctrl-C; their training resumes from the
train step's ``resume.pt``.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import logging
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from maskpipe.config import Config
from maskpipe.io import MaskpipeError
from maskpipe.search import results
from maskpipe.search.space import Dimension, apply, extremes, parse_space
from maskpipe.search.trial import Setup, check_inputs, inputs_digest, model_config, run_trial

log = logging.getLogger(__name__)

#: How often a trial stopped by a kill or Ctrl-C is run again.
MAX_RETRY = 3


@dataclass(frozen=True)
class Search:
    """A search ready to run: the shared setup, the base model, the parsed space."""

    setup: Setup
    base: dict
    space: dict
    dims: list[Dimension]
    trials: int
    seed: int
    parallel: int
    folder: Path


def prepare(config_files: list[str | Path], trials: int | None = None,
            parallel: int | None = None, folder: Path | None = None) -> Search:
    """Load the config, check the space (each choice applied to the model must validate) and
    the pipeline outputs trials read. ``trials``/``parallel`` override the config's."""
    files = tuple(str(f) for f in config_files)
    cfg = Config.load(files)
    sc = cfg.search
    dims = parse_space(sc.space)
    base = cfg.model(sc.model)
    for params in extremes(dims):  # the schema's one-line error, after the choice it is about
        (key, value), = params.items()
        model_config(cfg.raw, sc.model, apply(base, params, sc.space), f"search.space.{key} = {value!r}")
    check_inputs(cfg.raw)
    folder = folder or cfg.results / "search"
    setup = Setup(cfg.raw, files, sc.model, sc.folds, folder / "trials", inputs_digest(cfg.raw))
    return Search(setup, base, sc.space, dims, trials or sc.trials, sc.seed,
                  _parallel(parallel or sc.parallel, cfg.raw["train"]["device"], base["compile"]),
                  folder)


def _parallel(n: int, device: str, compiled: bool = False) -> int:
    """Trials at once: ``n``, at most one per GPU, and one where the model is compiled."""
    import torch

    if compiled and n > 1:  # trials are threads, and torch.compile is not thread-safe (pytorch#118260)
        log.warning("search.parallel: %d trials at once, but the model is compiled (compile: true) "
                    "and torch.compile is not thread-safe: running 1", n)
        return 1
    gpus = torch.cuda.device_count() if device != "cpu" else 0
    if gpus and n > gpus:  # each job claims a GPU of its own (train.devices); more would wait
        log.warning("search.parallel: %d trials at once, but %d GPU(s): running %d", n, gpus, gpus)
        return gpus
    return n


def study_name(s: Search) -> str:
    """The study's name: the base model, its config, the space and the folds."""
    blob = json.dumps([s.setup.model, s.base, s.space, list(s.setup.folds)], sort_keys=True)
    return f"{s.setup.model}-{hashlib.sha256(blob.encode()).hexdigest()[:12]}"


@contextlib.contextmanager
def _exclusive(folder: Path) -> Iterator[None]:
    folder.mkdir(parents=True, exist_ok=True)
    with open(folder / "lock", "w") as f:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise MaskpipeError(f"{folder}: another `maskpipe search` is running here") from None
        yield


def open_study(s: Search):
    """The study in ``study.db`` (created or loaded), its sampler seeded from ``search.seed``
    and the trials it holds (a resumed search draws new values, not the first run's again)."""
    import optuna

    optuna.logging.disable_default_handler()  # Optuna's lines go through our logging
    optuna.logging.enable_propagation()
    storage = optuna.storages.RDBStorage(f"sqlite:///{(s.folder / 'study.db').resolve()}")
    study = optuna.create_study(storage=storage, study_name=study_name(s), direction="maximize",
                                load_if_exists=True)
    study.sampler = optuna.samplers.TPESampler(seed=s.seed + len(study.trials))
    return study


def recover(study) -> int:
    """Mark trials left RUNNING (their search was killed) failed, and enqueue every trial that
    was interrupted, once, with the same params (at most :data:`MAX_RETRY` retries in a row).
    Returns how many. Optuna's public calls only: ``tell`` fails a trial by its number, and
    ``enqueue_trial`` queues its params, the retry naming it in its ``retry_of`` user attribute."""
    from optuna.trial import TrialState

    trials = study.get_trials(deepcopy=False)
    parent = {t.number: t.user_attrs["retry_of"] for t in trials if "retry_of" in t.user_attrs}
    again = 0
    for t in trials:
        if t.state == TrialState.RUNNING:
            study.tell(t.number, state=TrialState.FAIL)
            log.info("trial %d was left running by a stopped search: marked failed", t.number)
        elif not (t.state == TrialState.FAIL and t.user_attrs.get("interrupted")):
            continue
        depth, n = 0, t.number
        while n in parent:
            depth, n = depth + 1, parent[n]
        if t.number not in parent.values() and depth < MAX_RETRY:
            study.enqueue_trial(t.params, user_attrs={"retry_of": t.number})
            again += 1
    if again:
        log.info("%d interrupted trial(s) enqueued again with the same params", again)
    return again


def objective(s: Search, errors: list[BaseException] | None = None):
    """The function Optuna calls per trial: draw, apply, train and predict, score.

    ``errors`` collects what a trial raised besides a :class:`MaskpipeError` (a bug, a CUDA
    error): with parallel trials Optuna only marks the last trials failed and returns
    (optuna#6842), so :func:`run_search` raises the first one itself.
    """
    def run(trial) -> float:
        params = {d.name: d.suggest(trial) for d in s.dims}
        trial.set_user_attr("interrupted", False)
        cfg = model_config(s.setup.raw, s.setup.model, apply(s.base, params, s.space))
        log.info("trial %d: %s", trial.number, ", ".join(f"{k}={v}" for k, v in params.items()))
        try:
            result = run_trial(s.setup, cfg)
        except KeyboardInterrupt:
            trial.set_user_attr("interrupted", True)  # retried by the next search
            raise
        except MaskpipeError:
            raise
        except Exception as e:
            if errors is not None:
                errors.append(e)
            raise
        for name, value in (("trial", result.folder.name), ("seconds", result.seconds),
                            ("cached", result.cached), ("per_fold", result.per_fold)):
            trial.set_user_attr(name, value)
        log.info("trial %d: out-of-fold macro F1 %.4f on fold(s) %s (%s, %.0f s)", trial.number,
                 result.score, ",".join(map(str, s.setup.folds)),
                 "cached" if result.cached else "trained", result.seconds)
        return result.score
    return run


def run_search(config_files: list[str | Path], trials: int | None = None,
               parallel: int | None = None, recipe: Path | None = None,
               folder: Path | None = None) -> results.Summary:
    """Run (or continue) the search of a config until it holds ``trials`` completed trials, then
    write trials.csv, importance.png, best.yaml and report.html to the search folder.

    Args:
        config_files: the config files, in order (as ``--config``).
        trials: completed trials wanted (default: ``search.trials``).
        parallel: trials at once (default: ``search.parallel``).
        recipe: where to copy best.yaml as well (e.g. ``workflow/recipes/6_searched.yaml``).
        folder: the search folder (default: ``search/`` under the config's results).
    """
    import optuna
    from optuna.study import MaxTrialsCallback
    from optuna.trial import TrialState
    from tqdm import tqdm

    s = prepare(config_files, trials, parallel, folder)
    with _exclusive(s.folder):
        study = open_study(s)
        recover(study)
        done = len(study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)))
        log.info("study %s in %s: %d of %d trials completed", study.study_name,
                 s.folder / "study.db", done, s.trials)
        if done < s.trials:
            with tqdm(total=s.trials, initial=done, desc="search", unit="trial", disable=None) as bar:
                def tick(_study: optuna.Study, t: optuna.trial.FrozenTrial) -> None:
                    if t.state == TrialState.COMPLETE:
                        bar.update(1)
                errors: list[BaseException] = []
                study.optimize(objective(s, errors), n_trials=s.trials - done, n_jobs=s.parallel,
                               catch=(MaskpipeError,),
                               callbacks=[MaxTrialsCallback(s.trials, states=(TrialState.COMPLETE,)), tick])
                if errors:  # as one trial at a time would have ended (the trials are marked failed)
                    raise errors[0]
        return results.write(study, s, recipe)
