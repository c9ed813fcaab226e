# Config loading and the small helpers the step rules (steps.smk) use. Each rule's files,
# params, resources and shell line come from the step table (maskpipe.dag.table); logic lives
# in the maskpipe package.
import maskpipe.config as mcfg
from maskpipe.dag import jobs, sources
from maskpipe.dag.table import STEPS
from maskpipe.layout import Layout
from snakemake.exceptions import WorkflowError

# maskpipe steps read the same files Snakemake read (later files win). Overrides given with
# `--config key=value` never reach them, so refuse them.
if workflow.config_settings.config:
    raise WorkflowError(
        "maskpipe steps read their settings from the config files; put overrides in a YAML "
        "file and pass it with --configfile, not --config"
    )
CONFIG_FILES = list(
    dict.fromkeys(["config.yaml", *map(str, workflow.config_settings.configfiles)])
)
# The steps' own loader: the shared schema (workflow/schemas/ links to it), its defaults, and a
# recipe's `replace: [models]` (Snakemake's own merge would add the recipe's models to ours).
config.clear()
config.update(mcfg.load_raw(CONFIG_FILES))
CONFIG_ARGS = " ".join(f"--config {f}" for f in CONFIG_FILES)

# Under `--software-deployment-method conda` the env (envs/maskpipe.yaml) holds the pinned
# dependencies but not maskpipe (an env file cannot name this checkout portably): every job
# imports it from this workflow's src/. Cluster jobs parse this file again, so they get it too.
CONDA = {
    str(m.item_to_choice()) for m in workflow.deployment_settings.deployment_method
}
if "conda" in CONDA:
    shell.prefix(f"set -euo pipefail; export PYTHONPATH={workflow.basedir}/src; ")

L = Layout(config["results"])
# What both targets ask for: the submission and every file no step reads (the report's, the
# mislabels review, the last file of a step added at the end): the jobs `dvc repro` runs.
TARGETS = [L.submission(), *jobs.final_outputs(config)]
MODELS = list(config["models"])
FOLDS = list(range(config["folds"]["k"]))


wildcard_constraints:
    model="|".join(MODELS),
    fold=r"\d+",
    round=r"[2-9]|[1-9]\d+",  # pseudo-label rounds; round 1 has no folder of its own


def _paths(step, side):
    """A step's files by name: patterns with {model}/{fold}/{round}; a list for every model x
    fold's (or every round's) files and for a path the config leaves empty (null); a function
    of the job's round for the previous round's file. A port whose ``when`` key the config
    leaves empty is not there at all (the rule is what it was without the port)."""
    out = {}
    for port in getattr(STEPS[step], side):
        if port.round == "previous":
            out[port.name] = lambda wildcards, port=port: port.paths(
                config, round=wildcards.round
            )[0]
            continue
        found = port.paths(config)
        if port.when and not found:
            continue  # switched off
        out[port.name] = found if port.many or not found else found[0]
    return out


def step_inputs(step):
    """The step's input files, and its source files (editing one reruns it; maskpipe.dag.sources)."""
    return {**_paths(step, "inputs"), "code": sources.step_sources(step)}


def report_figures(path):
    """The report's figures also go into `snakemake --report`, one entry per PNG."""
    return report(
        path,
        patterns=["{name}.png"],
        caption="../report/figures.rst",
        category="maskpipe",
        labels={"figure": "{name}"},
    )


def step_outputs(step):
    """The step's output files; folders marked as such, and a folder of figures marked for
    `snakemake --report` (report_figures)."""
    out = _paths(step, "outputs")
    for port in STEPS[step].outputs:
        if port.folder:
            out[port.name] = directory(out[port.name])
        if port.figures:
            out[port.name] = report_figures(out[port.name])
    return out


def step_params(step):
    """The config sections a step reads (compared by Snakemake on reruns), the config files and
    the paths it is given that are neither inputs nor outputs."""
    if not STEPS[step].sections:
        return _paths(step, "options")
    sections = lambda wildcards: mcfg.step_params(
        config, STEPS[step].sections, **dict(wildcards.items())
    )
    return {"sections": sections, "config": CONFIG_ARGS, **_paths(step, "options")}


def step_log(step):
    return jobs.log_path(STEPS[step], config)


def step_resources(step):
    return {"gpu": 1} if STEPS[step].gpu else {}


def step_shell(step):
    """The step's `maskpipe` command, with Snakemake placeholders for its files and log."""

    def value(arg):
        if arg.kind == "config":
            return "{params.config}"
        if arg.kind == "log":
            return "{log}"
        return f"{{{arg.kind}.{arg.name}}}"

    return jobs.command(STEPS[step], value, config)
