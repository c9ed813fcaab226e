# Data steps: validate the layout, crop faces, apply label fixes, assign folds.


rule validate:
    input:
        train_csv=f"{DATA}/train/train.csv",
        train_images=f"{DATA}/train/images",
        eval_csv=f"{DATA}/eval/info.csv",
        eval_images=f"{DATA}/eval/images",
    output:
        train=L.manifest("train"),
        eval=L.manifest("eval"),
    params:
        sections=sections("validate"),
        config=CONFIG_ARGS,
    log:
        L.log("validate"),
    threads: 2
    conda:
        "../../envs/maskpipe.yaml"
    shell:
        "maskpipe validate {params.config} --out-train {output.train} --out-eval {output.eval}"
        " --log {log}"


rule crop:
    input:
        train=L.manifest("train"),
        eval=L.manifest("eval"),
    output:
        train=L.crops("train"),
        train_index=L.crop_index("train"),
        eval=L.crops("eval"),
        eval_index=L.crop_index("eval"),
    params:
        sections=sections("crop"),
        config=CONFIG_ARGS,
        root=DATA,
        out_dir=L.crop_dir(),
        cache=L.crop_cache(),
    log:
        L.log("crop"),
    threads: 4
    resources:
        gpu=1,
    conda:
        "../../envs/maskpipe.yaml"
    shell:
        "maskpipe crop {params.config} --root {params.root} --train-manifest {input.train}"
        " --eval-manifest {input.eval} --out-dir {params.out_dir} --cache {params.cache}"
        " --log {log}"


rule labels:
    input:
        manifest=L.manifest("train"),
        corrections=corrections_input,
    output:
        labels=L.labels(),
        applied=L.corrections_applied(),
    params:
        sections=sections("labels"),
        config=CONFIG_ARGS,
    log:
        L.log("labels"),
    conda:
        "../../envs/maskpipe.yaml"
    shell:
        "maskpipe labels {params.config} --manifest {input.manifest} --out {output.labels}"
        " --out-applied {output.applied} --log {log}"


rule folds:
    input:
        labels=L.labels(),
    output:
        folds=L.folds(),
    params:
        sections=sections("folds"),
        config=CONFIG_ARGS,
    log:
        L.log("folds"),
    conda:
        "../../envs/maskpipe.yaml"
    shell:
        "maskpipe folds {params.config} --labels {input.labels} --out {output.folds} --log {log}"
