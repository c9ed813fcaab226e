# Per model x fold: train (best checkpoint by validation macro F1), then predict OOF + test.


rule train:
    input:
        crops=L.crops("train"),
        crop_index=L.crop_index("train"),
        labels=L.labels(),
        folds=L.folds(),
        code=code("train"),
    output:
        checkpoint=L.checkpoint(),
        metrics=L.train_metrics(),
        tensorboard=directory(L.tensorboard()),
    log:
        L.log("train", "{model}", "{fold}"),
    conda:
        "../../envs/maskpipe.yaml"
    threads: 4
    resources:
        gpu=1,
    params:
        sections=sections("train"),
        config=CONFIG_ARGS,
    shell:
        "maskpipe train {params.config} --model {wildcards.model} --fold {wildcards.fold}"
        " --crops {input.crops} --crop-index {input.crop_index} --labels {input.labels}"
        " --folds {input.folds} --out-checkpoint {output.checkpoint}"
        " --out-metrics {output.metrics} --out-tensorboard {output.tensorboard} --log {log}"


rule predict:
    input:
        checkpoint=L.checkpoint(),
        train_crops=L.crops("train"),
        train_index=L.crop_index("train"),
        eval_crops=L.crops("eval"),
        eval_index=L.crop_index("eval"),
        labels=L.labels(),
        folds=L.folds(),
        code=code("predict"),
    output:
        oof=L.oof(),
        test=L.test_probs(),
    log:
        L.log("predict", "{model}", "{fold}"),
    conda:
        "../../envs/maskpipe.yaml"
    threads: 4
    resources:
        gpu=1,
    params:
        sections=sections("predict"),
        config=CONFIG_ARGS,
    shell:
        "maskpipe predict {params.config} --model {wildcards.model} --fold {wildcards.fold}"
        " --checkpoint {input.checkpoint} --train-crops {input.train_crops}"
        " --train-index {input.train_index} --eval-crops {input.eval_crops}"
        " --eval-index {input.eval_index} --labels {input.labels} --folds {input.folds}"
        " --out-oof {output.oof} --out-test {output.test} --log {log}"
