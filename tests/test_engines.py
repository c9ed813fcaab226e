"""End to end: Snakemake and DVC run the tiny config; reruns schedule exactly what changed.

That both engines declare the same files, params and commands as the step table is checked
without an engine run (tests/test_table.py); these tests need the engines themselves."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest
import yaml

from conftest import dvc_changed, dvc_init, make_project, scheduled, sh, shrink, write_face_folder

pytestmark = pytest.mark.slow

RESULTS = "results/tiny"


def edit_config(project, edit) -> str:
    path = project / "config.yaml"
    before = path.read_text()
    cfg = yaml.safe_load(before)
    edit(cfg)
    path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    return before


@pytest.fixture(scope="module")
def config(shipped_config, demo_root):
    cfg = shrink(shipped_config, demo_root, results=RESULTS)
    cfg["labels"]["corrections"] = CORRECTIONS  # an input of the labels step, for the table's last row
    return cfg


CORRECTIONS = "corrections.yaml"


def engine_project(dest, config):
    project = make_project(dest, config)
    (project / CORRECTIONS).write_text("fixes: []\n")
    return project


@pytest.fixture(scope="module")
def snakemake_project(tmp_path_factory, config):
    project = engine_project(tmp_path_factory.mktemp("smk"), config)
    sh(["snakemake", "submission", "--cores", "2", "--resources", "gpu=1"], project)
    return project


@pytest.fixture(scope="module")
def dvc_project(tmp_path_factory, config):
    project = engine_project(tmp_path_factory.mktemp("dvc"), config)
    dvc_init(project)
    sh(["dvc", "repro"], project)
    return project


def test_snakemake_makes_a_valid_submission_and_report(snakemake_project, config):
    sub = pd.read_csv(snakemake_project / RESULTS / "submission.csv")
    info = pd.read_csv(f"{config['data']['root']}/eval/info.csv")
    assert list(sub["ImageID"]) == list(info["ImageID"])
    assert sub["ans"].between(0, 17).all()
    html = (snakemake_project / RESULTS / "report.html").read_text()
    assert "data:image/png;base64," in html


def test_second_snakemake_run_schedules_nothing(snakemake_project):
    assert scheduled(snakemake_project) == set()


def test_lr_edit_reruns_only_that_model(snakemake_project):
    before = edit_config(snakemake_project, lambda c: c["models"]["a"]["optimizer"].update(lr=0.0123))
    try:
        jobs = scheduled(snakemake_project)
    finally:
        (snakemake_project / "config.yaml").write_text(before)
    assert jobs == {
        ("train", "model=a, fold=0"), ("train", "model=a, fold=1"),
        ("predict", "model=a, fold=0"), ("predict", "model=a, fold=1"),
        ("ensemble", ""), ("mislabels", ""), ("submit", ""), ("report", ""), ("submission", ""),
    }


def test_ensemble_edit_reruns_nothing_upstream(snakemake_project):
    before = edit_config(snakemake_project, lambda c: c["ensemble"].update(method="hard"))
    try:
        jobs = scheduled(snakemake_project)
    finally:
        (snakemake_project / "config.yaml").write_text(before)
    assert jobs == {("ensemble", ""), ("mislabels", ""), ("submit", ""), ("report", ""), ("submission", "")}


def test_command_line_overrides_are_refused(snakemake_project):
    proc = sh(["snakemake", "-n", "--cores", "1", "--config", "results=elsewhere"],
              snakemake_project, check=False)
    assert proc.returncode != 0
    assert "pass it with --configfile, not --config" in proc.stdout + proc.stderr


def test_dvc_repro_makes_the_same_files(dvc_project, snakemake_project):
    for rel in ("manifest/train.csv", "manifest/eval.csv", "crops/train.csv", "labels/train.csv",
                "folds/folds.csv", "predictions/a/fold0/oof.csv", "ensemble/scores.csv",
                "submission.csv"):
        assert (dvc_project / RESULTS / rel).read_bytes() == (snakemake_project / RESULTS / rel).read_bytes(), rel


def test_dvc_status_clean_then_marks_the_edited_stages(dvc_project):
    assert dvc_changed(dvc_project) == set()
    before = edit_config(dvc_project, lambda c: c["models"]["a"]["optimizer"].update(lr=0.0123))
    try:
        # DVC marks the stages whose own params changed; their downstream runs when repro
        # finds the changed outputs (Snakemake lists the downstream jobs up front).
        assert dvc_changed(dvc_project) == {"train@a-0", "train@a-1"}
    finally:
        (dvc_project / "config.yaml").write_text(before)
    before = edit_config(dvc_project, lambda c: c["ensemble"].update(method="hard"))
    try:
        assert dvc_changed(dvc_project) == {"ensemble"}
    finally:
        (dvc_project / "config.yaml").write_text(before)
    assert dvc_changed(dvc_project) == set()


def test_workflow_is_formatted_and_lint_clean(snakemake_project):
    from conftest import REPO

    sh(["snakefmt", "--check", "Snakefile", "workflow/rules"], REPO)
    out = sh(["snakemake", "--lint"], snakemake_project)
    assert "Congratulations, your workflow is in a good condition!" in out.stdout + out.stderr


def test_snakemake_report_holds_the_reports_figures(snakemake_project, tmp_path):
    """The report step's figures port (``figures=True``) puts each PNG into `snakemake --report`."""
    import zipfile

    sh(["snakemake", "--report", str(tmp_path / "report.zip")], snakemake_project)
    names = zipfile.ZipFile(tmp_path / "report.zip").namelist()
    figures = sorted(p.name for p in (snakemake_project / RESULTS / "report" / "figures").glob("*.png"))
    assert figures and all(any(n.endswith("/" + f) for n in names) for f in figures), (figures, names)


def test_identical_rewrite_triggers_nothing_downstream(snakemake_project, dvc_project):
    # Rerun the folds step alone: it rewrites folds.csv with the same content.
    sh(["snakemake", "folds", "--forcerun", "folds", "--until", "folds", "--cores", "1"],
       snakemake_project)
    assert scheduled(snakemake_project) == set()  # Snakemake compares checksums of small files
    sh(["dvc", "repro", "--force", "--single-item", "folds"], dvc_project)
    assert dvc_changed(dvc_project) == set()  # DVC compares content hashes


def test_fold_seed_edit_refolds_and_retrains(snakemake_project, dvc_project):
    for project in (snakemake_project, dvc_project):
        before = edit_config(project, lambda c: c["folds"].update(seed=7))
        try:
            if project is snakemake_project:
                rules = {rule for rule, _ in scheduled(project)}
                assert rules == {"folds", "train", "predict", "ensemble", "mislabels", "submit", "report",
                                 "submission"}
                assert len(scheduled(project)) == 1 + 4 + 4 + 5
            else:
                assert dvc_changed(project) == {"folds"}
        finally:
            (project / "config.yaml").write_text(before)


@pytest.mark.parametrize("section, edit, first", [
    ("labels", lambda c: c["labels"].update(train_age_bounds=[30, 58]), "labels"),
    ("crop", lambda c: c["crop"].update(margin=0.3), "crop"),
])
def test_label_edits_never_recrop_and_crop_edits_do(snakemake_project, dvc_project, section, edit, first):
    before = edit_config(snakemake_project, edit)
    try:
        rules = {rule for rule, _ in scheduled(snakemake_project)}
    finally:
        (snakemake_project / "config.yaml").write_text(before)
    downstream = {"train", "predict", "ensemble", "mislabels", "submit", "report", "submission"}
    if section == "labels":
        assert rules == {"labels", "folds"} | downstream  # no validate, no crop
    else:
        assert rules == {"crop", "persons"} | downstream  # no validate, labels or folds
    before = edit_config(dvc_project, edit)
    try:
        assert dvc_changed(dvc_project) == {first}
    finally:
        (dvc_project / "config.yaml").write_text(before)


ALL_TRAIN = {("train", f"model={m}, fold={f}") for m in "ab" for f in (0, 1)}
ALL_PREDICT = {("predict", w) for _, w in ALL_TRAIN}
TAIL = {("ensemble", ""), ("mislabels", ""), ("submit", ""), ("report", ""), ("submission", "")}


@pytest.mark.parametrize("section, edit, jobs, stages", [
    ("train", lambda c: c["train"].update(seed=7), ALL_TRAIN | ALL_PREDICT | TAIL,
     {f"train@{m}-{f}" for m in "ab" for f in (0, 1)}),
    ("predict", lambda c: c["predict"].update(batch_size=5), ALL_PREDICT | TAIL,
     {f"predict@{m}-{f}" for m in "ab" for f in (0, 1)}),
    ("persons", lambda c: c["persons"].update(max_distance=0.3), {("persons", "")} | TAIL, {"persons"}),
    ("mislabels", lambda c: c["mislabels"].update(top=5),
     {("mislabels", ""), ("report", ""), ("submission", "")}, {"mislabels"}),
    ("report", lambda c: c["report"].update(title="another title"), {("report", ""), ("submission", "")},
     {"report"}),
    # without pseudo-label rounds no step reads the thresholds
    ("pseudo", lambda c: c["pseudo"].update(threshold=0.5, task_thresholds={"mask": 0.9}), set(), set()),
])
def test_rerun_table_rows(snakemake_project, dvc_project, section, edit, jobs, stages):
    """Rows of the rerun table (docs/engines.md) not covered above, for both engines."""
    before = edit_config(snakemake_project, edit)
    try:
        assert scheduled(snakemake_project) == jobs
    finally:
        (snakemake_project / "config.yaml").write_text(before)
    before = edit_config(dvc_project, edit)
    try:
        assert dvc_changed(dvc_project) == stages
    finally:
        (dvc_project / "config.yaml").write_text(before)


def test_external_folders_edit_adds_the_external_step_and_retrains(snakemake_project, dvc_project, tmp_path):
    """The `external` row: naming a folder of external faces runs the external step and every
    train job and what follows; for DVC the stages change (dvc.yaml is regenerated): the new
    external stage and every train stage (its command and deps now name the external crops)."""
    faces = str(write_face_folder(tmp_path / "faces"))
    edit = lambda c: c["external"].update(folders=[faces])  # noqa: E731
    before = edit_config(snakemake_project, edit)
    try:
        assert scheduled(snakemake_project) == {("external", "")} | ALL_TRAIN | ALL_PREDICT | TAIL
    finally:
        (snakemake_project / "config.yaml").write_text(before)
    before = edit_config(dvc_project, edit)
    sh(["maskpipe", "dvc-yaml", "--config", "config.yaml"], dvc_project)
    try:
        assert dvc_changed(dvc_project) == {"external"} | {f"train@{m}-{f}" for m in "ab" for f in (0, 1)}
    finally:
        (dvc_project / "config.yaml").write_text(before)
        sh(["maskpipe", "dvc-yaml", "--config", "config.yaml"], dvc_project)
    assert dvc_changed(dvc_project) == set()


def test_data_edit_reruns_everything(snakemake_project, dvc_project, config):
    """The `data` row: the same images under another folder name."""
    link = Path(config["data"]["root"]).with_name("demo-link")
    if not link.exists():
        link.symlink_to(config["data"]["root"], target_is_directory=True)
    edit = lambda c: c["data"].update(root=str(link))  # noqa: E731
    before = edit_config(snakemake_project, edit)
    try:
        assert {rule for rule, _ in scheduled(snakemake_project)} == {
            "validate", "crop", "persons", "labels", "folds", "train", "predict", "ensemble", "mislabels",
            "submit", "report", "submission"}
    finally:
        (snakemake_project / "config.yaml").write_text(before)
    before = edit_config(dvc_project, edit)
    sh(["maskpipe", "dvc-yaml", "--config", "config.yaml"], dvc_project)  # paths are in dvc.yaml
    try:
        assert dvc_changed(dvc_project) == {"validate", "crop", "persons"}  # their cmds name the root
    finally:
        (dvc_project / "config.yaml").write_text(before)
        sh(["maskpipe", "dvc-yaml", "--config", "config.yaml"], dvc_project)
    assert dvc_changed(dvc_project) == set()


DOWNSTREAM_OF_TRAIN = ALL_TRAIN | ALL_PREDICT | TAIL


def test_corrections_file_edit_reruns_labels_and_after(snakemake_project, dvc_project):
    """The table's last row: a fix appended to the corrections file (as `mislabels --accept`
    does) reruns labels and what follows it, not validate or crop."""
    for project in (snakemake_project, dvc_project):
        path = project / CORRECTIONS
        before = path.read_text()
        person = pd.read_csv(project / RESULTS / "labels" / "train.csv", dtype=str)["person"].iloc[0]
        path.write_text(f"fixes:\n  - person: {person}\n    gender: female\n    reason: a test\n")
        try:
            if project is snakemake_project:
                assert scheduled(project) == {("labels", ""), ("folds", "")} | DOWNSTREAM_OF_TRAIN
            else:
                assert dvc_changed(project) == {"labels"}
        finally:
            path.write_text(before)
        assert (scheduled(project) if project is snakemake_project else dvc_changed(project)) == set()


@pytest.mark.parametrize("module, jobs, stages", [
    ("crop/geometry.py", {("crop", ""), ("persons", "")} | DOWNSTREAM_OF_TRAIN, {"crop"}),
    ("data/folds.py", {("folds", "")} | DOWNSTREAM_OF_TRAIN, {"folds"}),
    ("train/optim.py", DOWNSTREAM_OF_TRAIN, {f"train@{m}-{f}" for m in "ab" for f in (0, 1)}),
    ("train/predict.py", ALL_PREDICT | TAIL, {f"predict@{m}-{f}" for m in "ab" for f in (0, 1)}),
    ("ensemble/fitting.py", TAIL, {"ensemble"}),
    ("submission.py", {("submit", ""), ("report", ""), ("submission", "")}, {"submit"}),
    ("mislabels/rank.py", {("mislabels", ""), ("report", ""), ("submission", "")}, {"mislabels"}),
    ("report/figures.py", {("report", ""), ("submission", "")}, {"report"}),
    ("cli.py", set(), set()),  # plumbing: argument parsing changes no result
])
def test_code_edit_reruns_that_step_and_what_follows(snakemake_project, dvc_project, module, jobs, stages):
    """Editing a step's source reruns that step and its downstream, in both engines; restoring
    the file's content makes both clean again (Snakemake compares the checksums of small inputs)."""
    for project in (snakemake_project, dvc_project):
        path = project / "src" / "maskpipe" / module
        before = path.read_text()
        path.write_text(before + "\n# an edit\n")
        try:
            if project is snakemake_project:
                assert scheduled(project) == jobs
            else:
                assert dvc_changed(project) == stages
        finally:
            path.write_text(before)
        assert (scheduled(project) if project is snakemake_project else dvc_changed(project)) == set()


def test_a_failed_step_under_each_engine_keeps_what_the_docs_say(snakemake_project, dvc_project):
    """docs/troubleshooting.md, `folds.k` above the persons: the engine deleted the step's
    output before running it, the step's error line ends its log, every other output stays, and
    after the fix the rerun rewrites the same file, so nothing downstream reruns."""
    folds, labels = Path(RESULTS) / "folds" / "folds.csv", Path(RESULTS) / "labels" / "train.csv"
    for project in (snakemake_project, dvc_project):
        kept = (project / labels).read_bytes()
        before = edit_config(project, lambda c: c["folds"].update(k=99))
        try:
            if project is snakemake_project:
                cmd = ["snakemake", "folds", "--forcerun", "folds", "--cores", "1"]
            else:
                cmd = ["dvc", "repro", "--single-item", "folds"]
            assert sh(cmd, project, check=False).returncode != 0
            assert not (project / folds).exists()
            assert (project / labels).read_bytes() == kept
            log = (project / RESULTS / "logs" / "folds.log").read_text().strip().splitlines()
            assert log[-1].startswith("maskpipe folds: error: folds.k = 99 but the labels hold only")
        finally:
            (project / "config.yaml").write_text(before)
        if project is snakemake_project:
            sh(["snakemake", "folds", "--cores", "1"], project)
            assert scheduled(project) == set()
        else:
            sh(["dvc", "repro", "--single-item", "folds"], project)
            assert dvc_changed(project) == set()


def test_dvc_commit_records_a_snakemake_run(snakemake_project, tmp_path):
    import shutil

    project = tmp_path / "recorded"
    shutil.copytree(snakemake_project, project, symlinks=True, ignore=shutil.ignore_patterns(".snakemake"))
    dvc_init(project)
    assert dvc_changed(project) != set()  # nothing recorded yet
    sh(["dvc", "commit", "--force", "-q"], project)  # hashes what Snakemake made; trains nothing
    assert dvc_changed(project) == set()
