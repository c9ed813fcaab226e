# Per model x fold: train (best checkpoint by validation macro F1), then predict OOF + test.
# Each rule's files, params and command come from the step table (maskpipe/pipeline.py).


rule train:
    input:
        **inputs("train"),
    output:
        **outputs("train"),
    log:
        log("train"),
    localrule: local("train")
    conda:
        "../../envs/maskpipe.yaml"
    threads: threads("train")
    resources:
        **resources("train"),
    params:
        **params("train"),
    shell:
        shell("train")


rule predict:
    input:
        **inputs("predict"),
    output:
        **outputs("predict"),
    log:
        log("predict"),
    localrule: local("predict")
    conda:
        "../../envs/maskpipe.yaml"
    threads: threads("predict")
    resources:
        **resources("predict"),
    params:
        **params("predict"),
    shell:
        shell("predict")
