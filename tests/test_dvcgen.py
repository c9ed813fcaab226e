import copy

import yaml

from maskpipe.cli import main as cli_main
from maskpipe.config import Config, load_raw
from maskpipe.dvcgen import render_dvc_yaml, stages

from conftest import REPO


def test_shipped_dvc_yaml_is_up_to_date():
    expected = render_dvc_yaml(Config.load(REPO / "config.yaml"), ["config.yaml"])
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
