"""Run a job of the step table in this process: the one runner every caller shares.

The ``maskpipe STEP`` command (:mod:`maskpipe.cli`), the tests' in-process pipeline, the
benchmarks and the search's trials all run a step through :func:`run_step` or :func:`run_job`:
the step's config sections are read from the config files as its command would read them, and
its function gets the job's resolved files (:class:`maskpipe.dag.jobs.Job`). No argument list is
built and parsed again on the way.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import threading
from collections.abc import Iterator, Sequence
from pathlib import Path

from maskpipe.config import Config, step_params
from maskpipe.dag.jobs import ordered_jobs, resolve
from maskpipe.dag.ports import Job
from maskpipe.dag.table import STEPS, module_of

log = logging.getLogger(__name__)


def run_step(job: Job, config: Config) -> None:
    """Run ``job`` with its step's config sections from ``config`` (nothing else of it)."""
    step = STEPS[job.step]
    sections = step_params(config.raw, step.sections, model=job.model or "")
    module_of(step).run(job, sections)


def run_job(job: Job, config_files: Sequence[str | Path]) -> None:
    """Run ``job`` as its command would, with the config read from ``config_files`` (later ones
    win); this thread's log records also go to the job's log file.

    Raises:
        MaskpipeError: what the step raises (a one-line reason naming the file, row or key).
    """
    config = Config.load([Path(f) for f in config_files])
    with job_log(job.log):
        run_step(job, config)


def run_pipeline(raw: dict, config_files: Sequence[str | Path], until: str | None = None,
                 replace: dict[str, dict[str, Path]] | None = None) -> None:
    """Every job of config ``raw`` (read from ``config_files``) in an order that runs, stopping
    before step ``until`` when given; ``replace`` swaps option paths per step (e.g. the crop
    step's detection cache: ``{"crop": {"cache": folder}}``)."""
    for step, wildcards in ordered_jobs(raw):
        if step.name == until:
            break
        job = resolve(step, raw, **wildcards)
        if replace and step.name in replace:
            job = dataclasses.replace(job, options={**job.options, **replace[step.name]})
        log.info("running %s %s", step.name, wildcards or "")
        run_job(job, config_files)


_open_logs = 0  #: job logs open now (jobs of parallel search trials run in threads)
_open_logs_lock = threading.Lock()
_level_before: int = logging.WARNING


@contextlib.contextmanager
def job_log(path: Path | None) -> Iterator[None]:
    """This thread's log records of INFO and up also go to ``path`` (as ``--log`` does for a
    command), appended. The root logger lets INFO through while any job log is open, as the
    command's logging setup does; it is set back when the last one closes."""
    global _open_logs, _level_before
    if path is None:
        yield
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    handler = logging.FileHandler(path, mode="a")
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    handler.setLevel(logging.INFO)
    thread = threading.get_ident()
    handler.addFilter(lambda record: record.thread == thread)
    root = logging.getLogger()
    with _open_logs_lock:
        if _open_logs == 0:
            _level_before = root.level
            root.setLevel(min(root.level or logging.WARNING, logging.INFO))
        _open_logs += 1
    root.addHandler(handler)
    try:
        yield
    finally:
        root.removeHandler(handler)
        handler.close()
        with _open_logs_lock:
            _open_logs -= 1
            if _open_logs == 0:
                root.setLevel(_level_before)
