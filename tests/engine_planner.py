"""Snakemake's plan for a workflow folder, asked many times of one process.

The engine tests ask "which jobs would ``snakemake TARGET -n`` run?" after each config or
source edit, some 45 times per module. A ``snakemake -n`` subprocess spends most of its 3-5 s
importing Snakemake and maskpipe; this process imports them once and answers each request with
a fresh workflow and DAG, as ``snakemake -n`` does (the same default rerun triggers, the same
persistence under ``.snakemake/``). It runs with the workflow's own ``src`` on ``PYTHONPATH``
(tests/conftest.py starts it as it runs the engines), so the plan tracks the workflow's copy of
the sources, the files a test edits.

Protocol: one JSON request per line on stdin, ``{"target": "submission"}``; one JSON line per
answer on the original stdout, ``{"jobs": [[rule, wildcards], ...]}`` (``wildcards`` as the
dry run prints them, "" for a job without) or ``{"error": "..."}``. Whatever Snakemake prints
goes to stderr.
"""

from __future__ import annotations

import contextlib
import json
import os
import sys
import traceback
from pathlib import Path

from snakemake.api import SnakemakeApi
from snakemake.logging import format_wildcards
from snakemake.settings.types import DAGSettings, OutputSettings, Quietness, ResourceSettings


def plan(workdir: Path, target: str) -> list[list[str]]:
    """Every job ``snakemake TARGET -n`` would run in ``workdir``: [rule, wildcards]."""
    with SnakemakeApi(OutputSettings(quiet={Quietness.ALL})) as api:
        wf = api.workflow(ResourceSettings(cores=2), snakefile=workdir / "Snakefile", workdir=workdir)
        wf.dag(DAGSettings(targets={target})).execute_workflow(executor="dryrun")
        jobs = wf._workflow.dag.needrun_jobs(exclude_finished=False)
        return sorted([job.rule.name, format_wildcards(job.wildcards) if len(job.wildcards) else ""]
                      for job in jobs)


def main() -> None:
    answers = sys.stdout
    sys.stdout = sys.stderr  # Snakemake's own output must not mix with the answers
    workdir = Path.cwd()
    for line in sys.stdin:
        try:
            answer = {"jobs": plan(workdir, json.loads(line)["target"])}
        except Exception:  # noqa: BLE001 - the test shows it
            answer = {"error": traceback.format_exc()}
        finally:
            with contextlib.suppress(OSError):
                os.chdir(workdir)
        answers.write(json.dumps(answer) + "\n")
        answers.flush()


if __name__ == "__main__":
    main()
