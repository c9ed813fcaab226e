"""The step table is collected from the step modules (maskpipe/steps/, maskpipe.dag.table): a
step added as a module alone reaches the CLI, Snakemake's plan and dvc.yaml; the order comes
from the data each step reads and writes."""

from __future__ import annotations

import pandas as pd
import pytest
import yaml

from conftest import make_project, scheduled, sh, shrink
from maskpipe.dag.ports import Step, layout_port
from maskpipe.dag.table import STEPS, collect, run_order

TOY = '''"""toy: each person's photo count (a test's step: this module is all it adds)."""

from maskpipe.dag.ports import Job, Step, layout_port
from maskpipe.io import read_csv, write_csv

STEP = Step("toy", "count each person's training photos", ("folds",),
            inputs=(layout_port("labels", "labels", help="corrected labels"),),
            outputs=(layout_port("counts", "file", "toy", "counts.csv", help="photos per person"),),
            modules=("maskpipe.classes",))


def run(job: Job, cfg: dict) -> None:
    table = read_csv(job.inputs["labels"], dtype={"person": str})
    counts = table.groupby("person").size().rename("photos").reset_index()
    counts["folds"] = cfg["folds"]["k"]
    write_csv(counts, job.outputs["counts"])
'''


@pytest.fixture(scope="module")
def toy_project(tmp_path_factory, shipped_config, demo_root):
    project = make_project(tmp_path_factory.mktemp("toy"), shrink(shipped_config, demo_root))
    (project / "src" / "maskpipe" / "steps" / "toy.py").write_text(TOY)
    return project


def test_a_step_module_alone_is_a_subcommand(toy_project):
    out = sh(["maskpipe", "toy", "--help"], toy_project).stdout
    assert "--labels PATH" in out and "--out-counts PATH" in out and "--config" in out
    rows = sh(["maskpipe", "steps", "--format", "tsv"], toy_project).stdout.splitlines()
    names = [r.split("\t")[0] for r in rows[1:]]
    assert names.index("labels") < names.index("toy")  # it reads the labels step's output
    assert "toy" not in STEPS  # this process's table: the module is only in the copy


def test_a_step_module_alone_is_a_snakemake_rule_that_runs(toy_project):
    assert "toy" in sh(["snakemake", "--list-rules"], toy_project).stdout.split()
    plan = sh(["snakemake", "toy", "-n", "-p", "--cores", "1"], toy_project).stdout
    assert "maskpipe toy --config config.yaml --labels results/tiny/labels/train.csv" in plan
    assert {"validate", "labels", "toy"} <= set(l.split()[0] for l in plan.split("Job stats:")[1]
                                                .splitlines()[3:] if l.strip() and not l.startswith("total"))
    # The documented target runs it too, as `dvc repro` does: nothing reads its output.
    assert ("toy", "") in scheduled(toy_project, "submission")
    sh(["snakemake", "toy", "--cores", "1"], toy_project)
    counts = pd.read_csv(toy_project / "results" / "tiny" / "toy" / "counts.csv")
    assert len(counts) == 12 and (counts["photos"] == 7).all() and (counts["folds"] == 2).all()


def test_a_step_module_alone_is_a_dvc_stage(toy_project):
    sh(["maskpipe", "dvc-yaml", "--config", "config.yaml"], toy_project)
    stage = yaml.safe_load((toy_project / "dvc.yaml").read_text())["stages"]["toy"]
    assert stage["cmd"].startswith("maskpipe toy --config config.yaml --labels results/tiny/labels/train.csv")
    assert stage["deps"] == ["results/tiny/labels/train.csv", "src/maskpipe/classes.py"]
    assert stage["params"] == [{"config.yaml": ["folds"]}] and stage["outs"] == ["results/tiny/toy/counts.csv"]


def test_the_order_follows_the_data_not_the_declarations():
    """Shuffled declarations sort the same; a round step follows the round-1 steps it reads and
    the steps reading every round's files follow the round steps."""
    names = list(STEPS)
    assert names == [s.name for s in run_order(reversed(list(STEPS.values())))]
    for step in STEPS.values():
        for port in step.inputs:
            writers = [s for s in STEPS.values() if any(
                (o.layout, o.args) == (port.layout, port.args) for o in s.outputs)]
            for w in writers:
                if port.round in ("", "previous") and w.rounds:
                    continue  # an earlier round's file, or round 1's
                if port.round == "this" and not w.rounds:
                    continue
                assert names.index(w.name) < names.index(step.name), (w.name, step.name, port.name)
    assert collect() == STEPS


def test_steps_reading_each_other_in_a_circle_are_refused():
    a = Step("a", "", (), inputs=(layout_port("x", "folds", help=""),),
             outputs=(layout_port("y", "labels", help=""),), modules=())
    b = Step("b", "", (), inputs=(layout_port("y", "labels", help=""),),
             outputs=(layout_port("x", "folds", help=""),), modules=())
    with pytest.raises(ValueError, match="in a circle: a, b"):
        run_order([a, b])
    with pytest.raises(ValueError, match="steps a and c both write labels"):
        run_order([a, Step("c", "", (), inputs=(), outputs=a.outputs, modules=())])
