import pytest
import yaml

from maskpipe.config import Config, load_raw, merge, schema_path, step_params
from maskpipe.dag.table import STEPS
from maskpipe.io import MaskpipeError

from conftest import REPO


def write(tmp_path, data, name="c.yaml"):
    p = tmp_path / name
    p.write_text(yaml.safe_dump(data))
    return p


def test_shipped_config_validates_and_defaults_are_filled():
    raw = load_raw(REPO / "config.yaml")
    assert raw["predict"]["tta"] == {"hflip": True, "zooms": []}
    assert raw["models"]["demo"]["pretrained_file"] is None  # filled from the schema's default


def test_minimal_config_gets_every_default(tmp_path):
    raw = load_raw(write(tmp_path, {"data": {"root": "d"}, "results": "r", "models": {"m": {"arch": "resnet18"}}}))
    assert raw["folds"] == {"k": 5, "seed": 42}
    assert raw["models"]["m"]["augment"] == [{"name": "HorizontalFlip", "p": 0.5}]
    assert raw["models"]["m"]["loss"] == [{"name": "ce", "weight": 1.0, "label_smoothing": 0.0,
                                           "class_weights": "none", "gamma": 2.0}]
    assert raw["crop"]["fallback"]["center_y"] == 0.45


def test_workflow_schema_is_the_package_schema():
    assert (REPO / "workflow" / "schemas" / "config.schema.yaml").resolve() == schema_path().resolve()


@pytest.mark.parametrize(
    "edit, message",
    [
        (lambda c: c["models"]["demo"]["optimizer"].update(lrr=0.1),
         "unknown key models.demo.optimizer.'lrr' (did you mean 'lr'?)"),
        (lambda c: c.update(fold={"k": 3}), "unknown key 'fold' (did you mean 'folds'?)"),
        (lambda c: c["folds"].update(k="five"), "folds.k: 'five' is not of type 'integer'"),
        (lambda c: c["folds"].update(k=1), "folds.k: 1 is less than the minimum of 2"),
        (lambda c: c["models"]["demo"]["optimizer"].update(name="lamb"),
         "models.demo.optimizer.name: 'lamb' is not one of"),
        (lambda c: c.pop("results"), "'results' is a required property"),
    ],
)
def test_invalid_config_names_the_key(tmp_path, shipped_config, edit, message):
    import copy

    cfg = copy.deepcopy(shipped_config)
    edit(cfg)
    with pytest.raises(MaskpipeError) as err:
        load_raw(write(tmp_path, cfg))
    assert message in str(err.value)
    assert "\n" not in str(err.value)


def test_later_files_override_earlier_ones(tmp_path, shipped_config):
    base = write(tmp_path, shipped_config, "base.yaml")
    over = write(tmp_path, {"folds": {"k": 3}}, "over.yaml")
    raw = load_raw([base, over])
    assert raw["folds"] == {"k": 3, "seed": 42}
    assert merge({"a": {"b": 1, "c": 2}}, {"a": {"b": 3}}) == {"a": {"b": 3, "c": 2}}


def test_step_params_are_exactly_the_declared_sections(shipped_config):
    raw = load_raw(REPO / "config.yaml")
    assert set(step_params(raw, STEPS["train"].sections, model="demo")) == {"train", "models.demo"}
    assert step_params(raw, STEPS["submit"].sections) == {}
    assert step_params(raw, STEPS["external"].sections) == {
        "external": {"folders": [], "masks": "none"}, "crop": raw["crop"], "labels.train_age_bounds": [30, 60]}
    assert set(STEPS) == {"external", "validate", "crop", "persons", "labels", "folds", "train", "predict",
                          "ensemble", "mislabels", "pseudo", "retrain", "repredict", "reensemble",
                          "submit", "report", "teacher"}
    assert step_params(raw, STEPS["pseudo"].sections) == {"pseudo.threshold": 0.9, "pseudo.task_thresholds": None}
    assert step_params(raw, STEPS["mislabels"].sections) == {"mislabels": raw["mislabels"]}
    with pytest.raises(MaskpipeError, match="no model 'nope'"):
        Config(raw).model("nope")


def test_missing_or_broken_file(tmp_path):
    with pytest.raises(MaskpipeError, match="config file not found"):
        load_raw(tmp_path / "none.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("data: [unclosed\n")
    with pytest.raises(MaskpipeError, match="not valid YAML"):
        load_raw(bad)


def test_ensemble_weights_naming_an_unknown_model_is_one_line(tmp_path, shipped_config):
    import copy

    cfg = copy.deepcopy(shipped_config)
    cfg["ensemble"]["weights"] = {"demo": 1.0, "demoo": 2.0}
    with pytest.raises(MaskpipeError) as err:
        load_raw(write(tmp_path, cfg))
    assert str(err.value) == (f"{tmp_path / 'c.yaml'}: ensemble.weights: unknown model 'demoo' "
                              "(models: demo)")


def test_a_file_may_replace_a_section_instead_of_merging(tmp_path, shipped_config):
    base = write(tmp_path, shipped_config, "base.yaml")
    only = {"arch": "resnet18"}
    merged = load_raw([base, write(tmp_path, {"models": {"r": only}}, "add.yaml")])
    assert list(merged["models"]) == ["demo", "r"]
    alone = load_raw([base, write(tmp_path, {"replace": ["models"], "models": {"r": only}}, "r.yaml")])
    assert list(alone["models"]) == ["r"] and "replace" not in alone
    assert alone["folds"] == merged["folds"]  # other sections still merge
    with pytest.raises(MaskpipeError, match=r"bad.yaml: replace: must list top-level sections"):
        load_raw([base, write(tmp_path, {"replace": ["folds"], "models": {"r": only}}, "bad.yaml")])


def test_real_data_page_example_validates(tmp_path):
    """The config for the real data in docs/real-data.md is valid as written."""
    import re

    text = (REPO / "docs" / "real-data.md").read_text()
    section = text[text.index("# Real competition data"):]
    block = re.search(r"```yaml\n(.*?)```", section, re.S).group(1)
    example = yaml.safe_load(block)
    assert example["data"] == {"root": "/data/mask"}
    raw = load_raw([REPO / "config.yaml", write(tmp_path, example, "competition.yaml")])
    assert list(raw["models"]) == list(example["models"])
