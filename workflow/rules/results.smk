# Group the eval photos into persons, ensemble every model x fold, rank suspected mislabels, write the checked submission, build the
# report. Each rule's files, params and command come from the step table (maskpipe/pipeline.py).
# `maskpipe steps` prints that table: what each step reads and writes, its config sections,
# fan-out and GPU (docs/pipeline.md shows it too).


rule persons:
    input:
        **step_inputs("persons"),
    output:
        **step_outputs("persons"),
    log:
        step_log("persons"),
    localrule: step_local("persons")
    conda:
        "../../envs/maskpipe.yaml"
    params:
        **step_params("persons"),
    shell:
        step_shell("persons")


rule ensemble:
    input:
        **step_inputs("ensemble"),
    output:
        **step_outputs("ensemble"),
    log:
        step_log("ensemble"),
    localrule: step_local("ensemble")
    conda:
        "../../envs/maskpipe.yaml"
    params:
        **step_params("ensemble"),
    shell:
        step_shell("ensemble")


rule mislabels:
    input:
        **step_inputs("mislabels"),
    output:
        **step_outputs("mislabels"),
    log:
        step_log("mislabels"),
    localrule: step_local("mislabels")
    conda:
        "../../envs/maskpipe.yaml"
    params:
        **step_params("mislabels"),
    shell:
        step_shell("mislabels")


rule submit:
    input:
        **step_inputs("submit"),
    output:
        **step_outputs("submit"),
    log:
        step_log("submit"),
    localrule: step_local("submit")
    conda:
        "../../envs/maskpipe.yaml"
    params:
        **step_params("submit"),
    shell:
        step_shell("submit")


rule report:
    input:
        **step_inputs("report"),
    output:
        # The figures also go into `snakemake --report`, one entry per PNG.
        **step_outputs(
            "report",
            figures=lambda path: report(
                path,
                patterns=["{name}.png"],
                caption="../report/figures.rst",
                category="maskpipe",
                labels={"figure": "{name}"},
            ),
        ),
    log:
        step_log("report"),
    localrule: step_local("report")
    conda:
        "../../envs/maskpipe.yaml"
    params:
        **step_params("report"),
    shell:
        step_shell("report")
