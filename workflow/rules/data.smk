# Data steps: validate the layout, crop faces, apply label fixes, assign folds.
# Each rule's files, params and command come from the step table (maskpipe/pipeline.py).
# `maskpipe steps` prints that table: what each step reads and writes, its config sections,
# fan-out and GPU (docs/pipeline.md shows it too).


rule validate:
    input:
        **step_inputs("validate"),
    output:
        **step_outputs("validate"),
    log:
        step_log("validate"),
    localrule: step_local("validate")
    conda:
        "../../envs/maskpipe.yaml"
    threads: step_threads("validate")
    params:
        **step_params("validate"),
    shell:
        step_shell("validate")


rule crop:
    input:
        **step_inputs("crop"),
    output:
        **step_outputs("crop"),
    log:
        step_log("crop"),
    localrule: step_local("crop")
    conda:
        "../../envs/maskpipe.yaml"
    threads: step_threads("crop")
    resources:
        **step_resources("crop"),
    params:
        **step_params("crop"),
    shell:
        step_shell("crop")


rule labels:
    input:
        **step_inputs("labels"),
    output:
        **step_outputs("labels"),
    log:
        step_log("labels"),
    localrule: step_local("labels")
    conda:
        "../../envs/maskpipe.yaml"
    params:
        **step_params("labels"),
    shell:
        step_shell("labels")


rule folds:
    input:
        **step_inputs("folds"),
    output:
        **step_outputs("folds"),
    log:
        step_log("folds"),
    localrule: step_local("folds")
    conda:
        "../../envs/maskpipe.yaml"
    params:
        **step_params("folds"),
    shell:
        step_shell("folds")
