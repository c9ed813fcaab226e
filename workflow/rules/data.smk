# Data steps: validate the layout, crop faces, apply label fixes, assign folds.
# Each rule's files, params and command come from the step table (maskpipe/pipeline.py).


rule validate:
    input:
        **inputs("validate"),
    output:
        **outputs("validate"),
    log:
        log("validate"),
    localrule: local("validate")
    conda:
        "../../envs/maskpipe.yaml"
    threads: threads("validate")
    params:
        **params("validate"),
    shell:
        shell("validate")


rule crop:
    input:
        **inputs("crop"),
    output:
        **outputs("crop"),
    log:
        log("crop"),
    localrule: local("crop")
    conda:
        "../../envs/maskpipe.yaml"
    threads: threads("crop")
    resources:
        **resources("crop"),
    params:
        **params("crop"),
    shell:
        shell("crop")


rule labels:
    input:
        **inputs("labels"),
    output:
        **outputs("labels"),
    log:
        log("labels"),
    localrule: local("labels")
    conda:
        "../../envs/maskpipe.yaml"
    params:
        **params("labels"),
    shell:
        shell("labels")


rule folds:
    input:
        **inputs("folds"),
    output:
        **outputs("folds"),
    log:
        log("folds"),
    localrule: local("folds")
    conda:
        "../../envs/maskpipe.yaml"
    params:
        **params("folds"),
    shell:
        shell("folds")
