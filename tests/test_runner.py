"""The in-process job runner (maskpipe.dag.runner): a job resolved from the table runs with only
its step's config sections, writes what the command would, and fails with the step's error."""

from __future__ import annotations

import dataclasses
import logging

import pytest

from maskpipe.config import load_raw
from maskpipe.dag.jobs import resolve
from maskpipe.dag.runner import job_log, run_job
from maskpipe.dag.table import STEPS
from maskpipe.io import MaskpipeError


def test_a_job_writes_what_the_pipelines_job_wrote(tiny_run, tmp_path):
    """The folds job again, its outputs and log under another folder: the same folds."""
    config_path, L = tiny_run
    raw = load_raw(config_path)
    job = resolve(STEPS["folds"], raw, root=lambda port: str(tmp_path) if port is None or port
                  in STEPS["folds"].outputs else L.results)
    assert str(job.inputs["labels"]) == L.labels()  # the shared input stays the pipeline's
    run_job(job, [config_path])
    assert (tmp_path / "folds" / "folds.csv").read_bytes() == open(L.folds(), "rb").read()
    assert job.log == tmp_path / "logs" / "folds.log"
    assert "folds: 12 persons in 2 folds" in job.log.read_text()  # the step's INFO line


def test_a_step_reads_only_its_own_sections(tiny_run, tmp_path, monkeypatch):
    """What a step's run gets: its declared sections by dotted name, nothing else of the config."""
    from maskpipe.steps import train

    config_path, _ = tiny_run
    seen = {}
    monkeypatch.setattr(train, "run", lambda job, cfg: seen.update(job=job, cfg=cfg))
    run_job(resolve(STEPS["retrain"], load_raw(config_path), model="b", fold=1, round=2), [config_path])
    assert set(seen["cfg"]) == {"train", "models.b"}  # retrain runs train's run with its sections
    assert (seen["job"].step, seen["job"].model, seen["job"].fold) == ("retrain", "b", 1)
    assert "pseudo_labels" in seen["job"].inputs and "round2" in str(seen["job"].outputs["checkpoint"])


def test_a_failing_step_raises_its_one_line_error(tiny_run, tmp_path):
    config_path, L = tiny_run
    job = resolve(STEPS["folds"], load_raw(config_path))
    job = dataclasses.replace(job, inputs={"labels": tmp_path / "missing.csv"},
                              outputs={"folds": tmp_path / "folds.csv"}, log=None)
    with pytest.raises(MaskpipeError, match=r"missing\.csv: file not found"):
        run_job(job, [config_path])
    assert not (tmp_path / "folds.csv").exists()


def test_the_job_log_takes_this_threads_records_only(tmp_path):
    log = logging.getLogger("maskpipe.test")
    with job_log(tmp_path / "job.log"):
        log.warning("this job's")
    log.warning("after the job")
    assert (tmp_path / "job.log").read_text().count("WARNING") == 1
    assert "this job's" in (tmp_path / "job.log").read_text()
