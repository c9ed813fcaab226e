import copy

import yaml

from maskpipe.cli import main as cli_main
from maskpipe.config import Config, load_raw
from maskpipe.dvcgen import render_dvc_yaml, stages

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
    cfg["folds"]["k"] = 3
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
