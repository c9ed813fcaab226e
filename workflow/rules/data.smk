# Data steps: validate the layout, crop faces, apply label fixes, assign folds.
# Each rule's files, params and command come from the step table (maskpipe/pipeline.py).


rule validate:
    input:
        **inputs("validate"),
    output:
        **outputs("validate"),
    params:
        **params("validate"),
    log:
        log("validate"),
    threads: threads("validate")
    localrule: local("validate")
    conda:
        "../../envs/maskpipe.yaml"
    shell:
        shell("validate")


rule crop:
    input:
        **inputs("crop"),
    output:
        **outputs("crop"),
    params:
        **params("crop"),
    log:
        log("crop"),
    threads: threads("crop")
    resources:
        **resources("crop"),
    localrule: local("crop")
    conda:
        "../../envs/maskpipe.yaml"
    shell:
        shell("crop")


rule labels:
    input:
        **inputs("labels"),
    output:
        **outputs("labels"),
    params:
        **params("labels"),
    log:
        log("labels"),
    localrule: local("labels")
    conda:
        "../../envs/maskpipe.yaml"
    shell:
        shell("labels")


rule folds:
    input:
        **inputs("folds"),
    output:
        **outputs("folds"),
    params:
        **params("folds"),
    log:
        log("folds"),
    localrule: local("folds")
    conda:
        "../../envs/maskpipe.yaml"
    shell:
        shell("folds")
