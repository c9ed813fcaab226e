# Per model x fold: train (best checkpoint by validation macro F1), then predict OOF + test.
# Each rule's files, params and command come from the step table (maskpipe/pipeline.py).


rule train:
    input:
        **inputs("train"),
    output:
        **outputs("train"),
    params:
        **params("train"),
    log:
        log("train"),
    threads: threads("train")
    resources:
        **resources("train"),
    localrule: local("train")
    conda:
        "../../envs/maskpipe.yaml"
    shell:
        shell("train")


rule predict:
    input:
        **inputs("predict"),
    output:
        **outputs("predict"),
    params:
        **params("predict"),
    log:
        log("predict"),
    threads: threads("predict")
    resources:
        **resources("predict"),
    localrule: local("predict")
    conda:
        "../../envs/maskpipe.yaml"
    shell:
        shell("predict")
