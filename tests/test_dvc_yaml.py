import copy

import yaml

from maskpipe.cli import main as cli_main
from maskpipe.config import Config, load_raw
from maskpipe.dag.dvc import render_dvc_yaml, stages

from conftest import REPO


def test_shipped_dvc_yaml_is_up_to_date():
    expected = render_dvc_yaml(Config.load(REPO / "config.yaml"), "config.yaml")
    assert (REPO / "dvc.yaml").read_text() == expected, "run `make dvc.yaml`"


def test_stage_params_are_the_step_sections():
    cfg = Config(load_raw(REPO / "config.yaml"))
    st = stages(cfg, "config.yaml")
    assert st["train"]["params"] == [{"config.yaml": ["train", "models.${item.model}"]}]
    assert st["ensemble"]["params"] == [{"config.yaml": ["ensemble"]}]
    assert "params" not in st["submit"]
    assert st["train"]["matrix"] == {"model": cfg.models, "fold": cfg.folds}


def test_check_flags_a_stale_file(tmp_path, shipped_config):
    cfg = copy.deepcopy(shipped_config)
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(cfg))
    out = tmp_path / "dvc.yaml"
    assert cli_main(["dvc-yaml", "--config", str(tmp_path / "config.yaml"), "--out", str(out)]) == 0
    assert cli_main(["dvc-yaml", "--check", "--config", str(tmp_path / "config.yaml"), "--out", str(out)]) == 0
    cfg["folds"]["k"] += 1
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(cfg))
    assert cli_main(["dvc-yaml", "--check", "--config", str(tmp_path / "config.yaml"), "--out", str(out)]) == 1


def test_corrections_file_feeds_the_labels_stage_only(shipped_config):
    """Accepting a mislabels fix edits the corrections file: labels and what follows rerun, not crop."""
    cfg = copy.deepcopy(shipped_config)
    cfg["labels"]["corrections"] = "corrections.yaml"
    st = stages(Config(load_raw_dict(cfg)), "config.yaml")
    assert [name for name, stage in st.items() if "corrections.yaml" in stage["deps"]] == ["labels"]
    assert st["mislabels"]["params"] == [{"config.yaml": ["mislabels"]}]
    assert st["mislabels"]["outs"][0] in st["report"]["deps"]
    assert "results/demo/labels/train.csv" in st["mislabels"]["deps"]


def load_raw_dict(raw: dict) -> dict:
    from maskpipe.config import validate

    return validate(copy.deepcopy(raw))


def test_a_fresh_clone_is_a_dvc_repository(tmp_path):
    """`.dvc/` is committed: right after `git clone`, `dvc dag` and `dvc status` work, and with
    data in place `dvc repro` runs (its first stage here; the engine tests run them all)."""
    import json
    import shutil

    import pytest

    from conftest import TINY_EVAL, TINY_PERSONS, sh
    from maskpipe.demo.synthetic import generate_demo

    if not (REPO / ".git").exists() or not shutil.which("git"):
        pytest.skip("not a git checkout")
    clone = tmp_path / "clone"
    sh(["git", "clone", "-q", str(REPO), str(clone)], tmp_path)
    assert (clone / ".dvc" / "config").is_file()
    assert "train@demo-0" in sh(["dvc", "dag"], clone).stdout
    status = json.loads(sh(["dvc", "status", "--json"], clone).stdout)
    assert "data/demo/train/train.csv" in status["validate"][0]["changed deps"]  # no data yet
    generate_demo(clone / "data" / "demo", persons=TINY_PERSONS, eval_images=TINY_EVAL, seed=0)
    assert "Running stage 'validate'" in sh(["dvc", "repro", "validate"], clone).stdout
    assert (clone / "results" / "demo" / "manifest" / "train.csv").is_file()
    assert json.loads(sh(["dvc", "status", "--json", "validate"], clone).stdout or "{}") == {}
