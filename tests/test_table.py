"""The step table drives everything: the Snakemake rules, dvc.yaml and the CLI agree with it,
checked without running an engine (Snakemake plans its jobs in-process, dry)."""

from __future__ import annotations

import shlex
from pathlib import Path

import pytest
import yaml

from maskpipe.dag import sources
from maskpipe.cli import build_parser
from maskpipe.config import Config, step_params, validate
from maskpipe.dag.dvc import stages
from maskpipe.dag.jobs import argv, files, final_outputs, jobs, jobs_for, log_path, ordered_jobs
from maskpipe.dag.ports import Plot, Port, switched_on
from maskpipe.dag.table import STEPS, local_steps

from conftest import REPO, make_project, shrink, snakemake_jobs


@pytest.fixture(scope="module")
def planned(tmp_path_factory, shipped_config, demo_root):
    """The tiny config (2 models x 2 folds, a corrections file, two pseudo-label rounds that
    train model a again) and Snakemake's plan for it."""
    cfg = shrink(shipped_config, demo_root, results="results/tiny")
    cfg["labels"]["corrections"] = "corrections.yaml"
    cfg["pseudo"] = {**cfg["pseudo"], "rounds": 2, "models": ["a"]}
    project = make_project(tmp_path_factory.mktemp("plan"), cfg)
    (project / "corrections.yaml").write_text("fixes: []\n")
    jobs_, workflow = snakemake_jobs(project)
    return validate(cfg), project, jobs_, workflow


def _wildcards(job) -> dict:
    w = dict(job.wildcards_dict)
    return {k: w[k] for k in ("round", "model", "fold") if k in w}


def test_every_rule_is_a_step_of_the_table(planned):
    raw, _, jobs_, workflow = planned
    assert {r.name for r in workflow.rules} == set(STEPS) | {"all", "submission"}
    counts = {name: sum(j.rule.name == name for j in jobs_) for name in STEPS}
    assert counts == {name: len(jobs(step, raw)) for name, step in STEPS.items()}
    assert counts["train"] == 4
    assert counts["pseudo"] == counts["reensemble"] == 2  # rounds 2 and 3
    assert counts["retrain"] == counts["repredict"] == 2 * 2  # model a's 2 folds, twice
    assert workflow._localrules == set(local_steps()) | {"all", "submission"}
    assert set(local_steps()) == {"validate", "labels", "folds", "persons", "ensemble", "mislabels",
                                  "pseudo", "reensemble", "submit", "report"}


def test_pseudo_label_rounds_chain_and_feed_the_submission(planned):
    """Round 2 reads round 1's ensemble, round 3 round 2's; model b, never trained again, votes
    with its round-1 predictions; the submission is the last round's."""
    raw, _, jobs_, _ = planned
    by = {(j.rule.name, j.wildcards_dict.get("round")): j for j in jobs_}
    results = raw["results"]
    assert by["pseudo", "2"].input["probs"] == f"{results}/ensemble/test.csv"
    assert by["pseudo", "3"].input["probs"] == f"{results}/round2/ensemble/test.csv"
    assert set(by["reensemble", "3"].input["oof"]) == {
        f"{results}/round3/predictions/a/fold0/oof.csv", f"{results}/round3/predictions/a/fold1/oof.csv",
        f"{results}/predictions/b/fold0/oof.csv", f"{results}/predictions/b/fold1/oof.csv"}
    assert by["submit", None].input["probs"] == f"{results}/round3/ensemble/test.csv"
    assert list(by["report", None].input["pseudo_summaries"]) == [
        f"{results}/round2/pseudo/summary.json", f"{results}/round3/pseudo/summary.json"]


def test_without_rounds_no_round_step_runs_and_commands_stay_as_before(planned):
    raw, _, _, _ = planned
    raw = {**raw, "pseudo": {**raw["pseudo"], "rounds": 0}}
    assert all(jobs(s, raw) == [] for s in STEPS.values() if s.rounds)
    assert files(STEPS["submit"], "inputs", raw)["probs"] == [f"{raw['results']}/ensemble/test.csv"]
    assert not any(a.startswith(("--round", "--pseudo")) for a in argv(STEPS["report"], raw, ["c.yaml"]))


def test_the_jobs_for_a_step_are_what_snakemake_runs_for_its_outputs(planned):
    """jobs_for (bench/gpu_check.py times crop to submission with it) against Snakemake's own
    plan for the submission file: the persons step and the rounds, not mislabels or the report."""
    raw, project, _, _ = planned
    target = files(STEPS["submit"], "outputs", raw)["submission"][0]
    engine, _ = snakemake_jobs(project, target=target)
    ours = jobs_for("submit", raw)
    assert sorted((j.rule.name, tuple(sorted(_wildcards(j).items()))) for j in engine) == sorted(
        (s.name, tuple(sorted((k, str(v)) for k, v in job.items()))) for s, job in ours)
    names = {s.name for s, _ in ours}
    assert {"persons", "pseudo", "retrain"} <= names and not {"mislabels", "report"} & names
    assert [s.name for s, _ in jobs_for("folds", raw)] == ["validate", "labels", "folds"]


def test_every_job_has_the_tables_files_params_and_command(planned):
    raw, project, jobs_, _ = planned
    for job in jobs_:
        if job.rule.name not in STEPS:
            continue
        step, wc = STEPS[job.rule.name], _wildcards(job)
        where = f"{step.name} {wc}"
        expected_in = {k: v for k, v in files(step, "inputs", raw, **wc).items() if v}
        got_in = {k: list(job.input[k]) if isinstance(job.input[k], list) else [job.input[k]]
                  for k in job.input.keys()}
        assert got_in.pop("code") == sources.step_sources(step.name, start=project / "src" / ".."), where
        assert got_in == expected_in, where
        got_out = {k: [job.output[k]] for k in job.output.keys()}
        assert got_out == files(step, "outputs", raw, **wc), where
        params = dict(job.params.items())
        if step.sections:
            assert params.pop("sections") == step_params(raw, step.sections, **wc), where
            assert params.pop("config") == "--config config.yaml", where
        assert {k: [v] for k, v in params.items()} == files(step, "options", raw, **wc), where
        assert list(job.log) == [log_path(step, raw, **wc)], where
        assert shlex.split(job.shellcmd) == ["maskpipe", *argv(step, raw, ["config.yaml"], **wc)], where
        assert job.rule.resources["_cores"] == step.threads, where
        assert dict(job.resources).get("gpu", 0) == int(step.gpu), where


@pytest.fixture(scope="module")
def rounds_raw(shipped_config) -> dict:
    """The tiny config with two pseudo-label rounds that train model a again (no data needed)."""
    cfg = shrink(shipped_config, Path("data/nowhere"), results="results/tiny")
    cfg["pseudo"] = {**cfg["pseudo"], "rounds": 2, "models": ["a"]}
    return validate(cfg)


@pytest.mark.parametrize("pseudo_rounds", [False, True])
def test_final_outputs_are_what_no_job_reads(shipped_config, rounds_raw, pseudo_rounds):
    """Snakemake's targets: every output no job reads (the report's, each round's scores), and
    only outputs some job writes."""
    raw = rounds_raw if pseudo_rounds else validate(shrink(shipped_config, "data"))
    written, read = set(), set()
    for step, job in ordered_jobs(raw):
        written |= {p for ps in files(step, "outputs", raw, **job).values() for p in ps}
        read |= {p for ps in files(step, "inputs", raw, **job).values() for p in ps}
    final = final_outputs(raw)
    assert set(final) == written - read and len(final) == len(set(final))
    assert files(STEPS["report"], "outputs", raw)["report"][0] in final
    assert files(STEPS["submit"], "outputs", raw)["submission"][0] not in final  # the report reads it


def test_the_slurm_profile_asks_a_gpu_for_every_gpu_step():
    """A GPU step that leaves the submitting machine without its set-resources entry in the Slurm
    profile would get the cluster's defaults: no GPU."""
    gpu_jobs = [name for name, step in STEPS.items() if step.gpu and not step.local]
    profile = yaml.safe_load((REPO / "workflow" / "profiles" / "slurm" / "config.yaml").read_text())["set-resources"]
    assert {"crop", "external", "train", "retrain"} <= set(gpu_jobs)
    missing = [name for name in gpu_jobs if profile.get(name, {}).get("gpu") != 1]
    assert not missing, f"workflow/profiles/slurm/config.yaml: set-resources gives no gpu: 1 to {missing}"
    assert set(profile) <= set(STEPS), "set-resources names a step the table does not have"


def test_a_port_refuses_marks_it_cannot_carry():
    with pytest.raises(ValueError, match="plot= needs dvc='plots'"):
        Port("h", "history", layout="report_history", plot=Plot("epoch", "f1", "scatter", "t"))
    with pytest.raises(ValueError, match="figures=True marks a folder"):
        Port("f", "figures", layout="report", figures=True)


@pytest.mark.parametrize("rounds", [2, 0])
def test_argv_with_every_port_under_one_folder_is_argv_with_that_results_folder(rounds_raw, rounds):
    raw = {**rounds_raw, "pseudo": {**rounds_raw["pseudo"], "rounds": rounds},
           "external": {"folders": ["faces/fairface"]}}  # every step has jobs
    moved = {**raw, "results": "elsewhere/x"}
    seen = set()
    for step in STEPS.values():
        for job in jobs(step, raw):
            got = argv(step, raw, ["c.yaml"], **job, root=lambda port: "elsewhere/x")
            assert got == argv(step, moved, ["c.yaml"], **job), (step.name, job)
            assert got != argv(step, raw, ["c.yaml"], **job), (step.name, job)
            seen.add(step.name)
    assert seen == {s.name for s in STEPS.values() if (not s.rounds or rounds) and switched_on(raw, s.when)}


def test_argv_puts_the_ports_a_root_chooses_elsewhere(rounds_raw):
    """A round's checkpoint and the log elsewhere, the rest of the job where it was."""
    step, job = STEPS["repredict"], {"model": "a", "fold": 1, "round": 3}

    def root(port):
        return {"checkpoint": "models", None: "logs"}.get(port and port.name, "results/tiny")

    plain, moved = argv(step, rounds_raw, ["c.yaml"], **job), argv(step, rounds_raw, ["c.yaml"], **job, root=root)
    changed = {plain[i - 1]: (plain[i], moved[i]) for i in range(len(plain)) if plain[i] != moved[i]}
    assert changed == {
        "--checkpoint": ("results/tiny/round3/models/a/fold1/checkpoint.pt",
                         "models/round3/models/a/fold1/checkpoint.pt"),
        "--log": ("results/tiny/logs/repredict-3-a-1.log", "logs/logs/repredict-3-a-1.log")}
    # a path from the config (crop's data root) is where the config says, whatever the root
    crop = argv(STEPS["crop"], rounds_raw, ["c.yaml"], root=lambda port: "x")
    assert crop[crop.index("--root") + 1] == "data/nowhere"
    assert crop[crop.index("--cache") + 1] == "x/cache/boxes"


@pytest.mark.parametrize("rounds", [0, 2])
def test_summary_scores_the_last_rounds_ensemble(tmp_path, shipped_config, capsys, rounds):
    """`maskpipe summary` (make demo's last lines) gives the submitted ensemble's OOF score: the
    last pseudo-label round's, naming it, beside round 1's."""
    import json

    import yaml

    from maskpipe.cli import main as cli_main
    from maskpipe.layout import Layout

    cfg = shrink(shipped_config, tmp_path / "data", results=str(tmp_path / "results"))
    cfg["pseudo"] = {**cfg["pseudo"], "rounds": rounds}
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(cfg))
    L = Layout(cfg["results"])
    for number, f1 in ((1, 0.5), (2, 0.6), (3, 0.7)):
        path = Path(L.round(number).metrics())
        path.parent.mkdir(parents=True)
        path.write_text(json.dumps({"oof_macro_f1": f1, "oof_accuracy": f1 + 0.25}))
    assert cli_main(["summary", "--config", str(tmp_path / "config.yaml")]) == 0
    last = capsys.readouterr().out.splitlines()[-1]
    assert last == ("ensemble of round 3, the last pseudo-label round, out-of-fold macro F1: "
                    "0.7000 (accuracy 0.9500); round 1: 0.5000" if rounds else
                    "ensemble out-of-fold macro F1: 0.5000 (accuracy 0.7500)")
    # given only the folder, no config: the last round it holds
    assert cli_main(["summary", "--results", L.results, "--config", str(tmp_path / "nowhere.yaml")]) == 0
    assert capsys.readouterr().out.splitlines()[-1].startswith("ensemble of round 3,")
    Path(L.round(3).metrics()).unlink()
    assert cli_main(["summary", "--config", str(tmp_path / "config.yaml")]) == (1 if rounds else 0)


def test_the_labels_step_reads_the_configured_corrections_file(planned):
    raw, _, jobs_, _ = planned
    labels = next(j for j in jobs_ if j.rule.name == "labels")
    assert labels.input["corrections"] == "corrections.yaml"
    raw = {**raw, "labels": {**raw["labels"], "corrections": None}}
    assert files(STEPS["labels"], "inputs", raw)["corrections"] == []


def test_dvc_stages_run_the_same_commands_as_the_rules(planned):
    raw, _, _, _ = planned
    st = stages(Config(raw), "config.yaml")
    rounds = [s for s in STEPS.values() if s.rounds]
    assert list(st) == [*(s for s in STEPS if s in ("validate", "crop", "persons", "labels", "folds",
                                                      "train", "predict", "ensemble", "mislabels")),
                        *(f"{s.name}-round{r}" for r in (2, 3) for s in rounds), "submit", "report"]
    assert st["retrain-round2"]["matrix"] == {"model": ["a"], "fold": [0, 1]}
    for name, step in STEPS.items():
        for job in jobs(step, raw):
            stage = f"{name}-round{job['round']}" if step.rounds else name
            cmd = st[stage]["cmd"]
            for k, v in job.items():
                cmd = cmd.replace(f"${{item.{k}}}", str(v))
            assert shlex.split(cmd) == ["maskpipe", *argv(step, raw, ["config.yaml"], **job)], name
            deps = set(st[stage]["deps"])
            inputs = {p for paths in files(step, "inputs", raw, "${item.model}", "${item.fold}",
                                           round=job.get("round", 1)).values() for p in paths}
            assert inputs <= deps and set(sources.step_sources(name)) == deps - inputs, name


def test_cli_takes_every_file_of_the_table():
    sub = next(a for a in build_parser()._actions if a.dest == "command")
    for name, step in STEPS.items():
        flags = {o for a in sub.choices[name]._actions for o in a.option_strings}
        wanted = {p.flag() for p in step.inputs if p.cli} | {p.flag(True) for p in step.outputs}
        wanted |= {p.flag() for p in step.options}
        assert wanted <= flags, name
        assert ("--config" in flags) == bool(step.sections), name
        assert ({"--model", "--fold"} <= flags) == step.fan_out, name


def test_each_step_run_imports_only_what_its_declaration_tracks():
    """A step's ``modules`` are its code: a module its ``run`` (in maskpipe/steps/) uses directly
    must be tracked by that step (or be plumbing)."""
    import ast

    root = sources.package_dir()
    for name, step in STEPS.items():
        tree = ast.parse((root / "steps" / f"{step.runs}.py").read_text())
        run = next(n for n in tree.body if isinstance(n, ast.FunctionDef) and n.name == "run")
        used = {m for m in sources.imports(run, root) if not sources.is_plumbing(m)}
        assert used <= set(sources.code_modules(name)), (name, used - set(sources.code_modules(name)))


def test_report_inputs_are_the_report_steps_inputs():
    """steps.report builds ReportInputs from the table's names: the two must list the same files."""
    from dataclasses import fields

    from maskpipe.report import ReportInputs

    assert [f.name for f in fields(ReportInputs)] == [p.name for p in STEPS["report"].inputs]
    many = {f.name for f in fields(ReportInputs) if "tuple" in str(f.type)}
    assert many == {p.name for p in STEPS["report"].inputs if p.many}


def test_the_docs_step_table_is_what_maskpipe_steps_prints(capsys):
    """The step table in docs/pipeline.md is generated (`maskpipe steps --write`), so it cannot
    go stale; the printed table is the same."""
    from maskpipe.cli import main as cli_main
    from maskpipe.dag.render import page_with_table

    page = (REPO / "docs" / "pipeline.md").read_text()
    assert page == page_with_table(page), "docs/pipeline.md is stale: run `maskpipe steps --write docs/pipeline.md`"
    assert cli_main(["steps"]) == 0
    assert capsys.readouterr().out.strip() in page


def test_steps_write_replaces_only_the_table(tmp_path, capsys):
    from maskpipe.cli import main as cli_main

    page = tmp_path / "page.md"
    page.write_text("# Steps\n\n<!-- `maskpipe steps` prints this table from the step table; kept -->\n\n"
                    "| old |\n\n<!-- end of `maskpipe steps` -->\n\nAfter.\n")
    assert cli_main(["steps", "--write", str(page)]) == 0
    text = page.read_text()
    assert "| old |" not in text and text.startswith("# Steps\n") and text.endswith("-->\n\nAfter.\n")
    assert "| validate |" in text and "step table written" in capsys.readouterr().out
    assert cli_main(["steps", "--write", str(page)]) == 0 and "already up to date" in capsys.readouterr().out
    assert cli_main(["steps", "--write", str(page), "--format", "tsv"]) != 0
    assert "leave out --format" in capsys.readouterr().err
    (tmp_path / "bare.md").write_text("no markers\n")
    assert cli_main(["steps", "--write", str(tmp_path / "bare.md")]) != 0
    assert "steps --write:" in capsys.readouterr().err and (tmp_path / "bare.md").read_text() == "no markers\n"


def test_maskpipe_steps_lists_every_step_with_its_files(capsys):
    from maskpipe.cli import main as cli_main
    from maskpipe.dag.render import TABLE_COLUMNS

    assert cli_main(["steps", "--format", "tsv"]) == 0
    header, *rows = [line.split("\t") for line in capsys.readouterr().out.splitlines()]
    assert tuple(header) == TABLE_COLUMNS
    by_step = {row[0]: dict(zip(header, row)) for row in rows}
    assert list(by_step) == list(STEPS)
    train = by_step["train"]
    assert train["config"] == "train, models.{model}" and train["fan-out"] == "model x fold"
    assert "models/{model}/fold{fold}/checkpoint.pt" in train["writes (under results)"].split(", ")
    assert train["other paths"] == "models/{model}/fold{fold}/resume.pt" and train["gpu"] == "yes"
    assert "predictions/{model}/fold{fold}/oof.csv (each model x fold)" in by_step["ensemble"]["reads"]
    assert by_step["submit"]["config"] == "" and by_step["labels"]["gpu"] == ""


def test_option_names_are_never_abbreviated(capsys):
    """`--out` was `labels`' old flag: a prefix of `--out-labels` / `--out-applied` must not pass."""
    args = ["labels", "--manifest", "m.csv", "--out", "a.csv", "--out-applied", "b.csv"]
    with pytest.raises(SystemExit):
        build_parser().parse_args(args)
    assert "--out-labels" in capsys.readouterr().err
    full = build_parser().parse_args(["labels", "--manifest", "m.csv", "--out-labels", "a.csv",
                                      "--out-applied", "b.csv"])
    assert str(full.out_labels) == "a.csv"


def test_a_reader_that_stops_early_is_not_an_error():
    """`maskpipe steps | head -1`: no BrokenPipeError traceback, exit status 0."""
    import subprocess
    import sys

    proc = subprocess.run([sys.executable, "-c", "import sys; from maskpipe.cli import main; "
                           "sys.exit(main(['steps']))"], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert proc.returncode == 0 and proc.stderr == b""
    head = subprocess.Popen([sys.executable, "-c", "import sys; from maskpipe.cli import main; "
                             "sys.exit(main(['steps']))"], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            bufsize=0)
    head.stdout.close()  # the reader is gone before the table is written
    _, err = head.communicate()
    assert head.returncode == 0, err
    assert b"BrokenPipe" not in err and b"Traceback" not in err, err
