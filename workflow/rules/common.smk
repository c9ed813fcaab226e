# Config validation and the small helpers every rule uses. Logic lives in the maskpipe package.
import os

import maskpipe.code as mcode
import maskpipe.config as mcfg
from maskpipe.layout import Layout
from snakemake.exceptions import WorkflowError
from snakemake.utils import validate

# The same schema file the Python loader uses (workflow/schemas/ links to it).
validate(config, str(mcfg.schema_path()))

# maskpipe steps read the same files Snakemake merged (later files win). Overrides given with
# `--config key=value` never reach them, so refuse a config the steps would not see.
CONFIG_FILES = list(
    dict.fromkeys(["config.yaml", *map(str, workflow.config_settings.configfiles)])
)
if mcfg.load_raw(CONFIG_FILES) != config:
    raise WorkflowError(
        "maskpipe steps read their settings from "
        + ", ".join(CONFIG_FILES)
        + "; put overrides in a YAML file and pass it with --configfile, not --config"
    )
CONFIG_ARGS = " ".join(f"--config {f}" for f in CONFIG_FILES)

L = Layout(config["results"])
DATA = config["data"]["root"].rstrip("/")
MODELS = list(config["models"])
FOLDS = list(range(config["folds"]["k"]))


wildcard_constraints:
    model="|".join(MODELS),
    fold=r"\d+",


def sections(step):
    """The config sections a step reads, as a rule's params (compared by Snakemake on reruns)."""
    return lambda wildcards: mcfg.step_params(config, step, **dict(wildcards.items()))


def corrections_input(wildcards):
    path = config["labels"]["corrections"]
    return [path] if path else []


def code(step):
    """A step's source files: editing one reruns that step and what follows (maskpipe.code)."""
    return mcode.step_sources(step)
