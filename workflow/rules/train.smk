# Per model x fold: train (best checkpoint by validation macro F1), then predict OOF + test.
# Each rule's files, params and command come from the step table (maskpipe/pipeline.py).
# `maskpipe steps` prints that table: what each step reads and writes, its config sections,
# fan-out and GPU (docs/pipeline.md shows it too).


rule train:
    input:
        **step_inputs("train"),
    output:
        **step_outputs("train"),
    log:
        step_log("train"),
    localrule: step_local("train")
    conda:
        "../../envs/maskpipe.yaml"
    threads: step_threads("train")
    resources:
        **step_resources("train"),
    params:
        **step_params("train"),
    shell:
        step_shell("train")


rule predict:
    input:
        **step_inputs("predict"),
    output:
        **step_outputs("predict"),
    log:
        step_log("predict"),
    localrule: step_local("predict")
    conda:
        "../../envs/maskpipe.yaml"
    threads: step_threads("predict")
    resources:
        **step_resources("predict"),
    params:
        **step_params("predict"),
    shell:
        step_shell("predict")
