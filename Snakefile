# maskpipe: the face-mask-status competition as one cached, re-runnable DAG.
#
#   snakemake submission --cores 8 --resources gpu=1
#
# (the target first: Snakemake 9 reads every word after --resources as a resource)
#
# raw data -> validate -> crop -> labels -> folds -> train (model x fold) -> predict -> ensemble
#   -> mislabels, submit -> report; README.md draws it whole (the eval persons, and the optional
#   external faces, teacher and pseudo-label rounds). Each rule runs one `maskpipe` subcommand;
#   what each step reads, writes and runs is one table, the step table (`maskpipe steps` prints
#   it; docs/pipeline.md), from which workflow/rules/steps.smk makes every rule
#   (docs/architecture.md).
from snakemake.utils import min_version

min_version("9.0")


configfile: "config.yaml"


include: "workflow/rules/common.smk"
include: "workflow/rules/steps.smk"


# Cheap steps stay on the submitting machine when an executor (e.g. Slurm) sends jobs away: each
# step's rule says so with `localrule:` from the step table; the two target rules run nothing.
localrules:
    all,
    submission,


# Both targets ask for TARGETS (common.smk): the submission and every file no step reads.
rule all:
    default_target: True
    input:
        TARGETS,


rule submission:
    input:
        TARGETS,
