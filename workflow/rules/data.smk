# Data steps: validate the layout, crop faces, apply label fixes, assign folds.


rule validate:
    input:
        train_csv=f"{DATA}/train/train.csv",
        train_images=f"{DATA}/train/images",
        eval_csv=f"{DATA}/eval/info.csv",
        eval_images=f"{DATA}/eval/images",
        code=code("validate"),
    output:
        train=L.manifest("train"),
        eval=L.manifest("eval"),
    log:
        L.log("validate"),
    conda:
        "../../envs/maskpipe.yaml"
    threads: 2
    params:
        sections=sections("validate"),
        config=CONFIG_ARGS,
    shell:
        "maskpipe validate {params.config} --out-train {output.train} --out-eval {output.eval}"
        " --log {log}"


rule crop:
    input:
        train=L.manifest("train"),
        eval=L.manifest("eval"),
        code=code("crop"),
    output:
        train=L.crops("train"),
        train_index=L.crop_index("train"),
        eval=L.crops("eval"),
        eval_index=L.crop_index("eval"),
        sample_sheet=L.crop_sheet("sample"),
        fallback_sheet=L.crop_sheet("fallbacks"),
    log:
        L.log("crop"),
    conda:
        "../../envs/maskpipe.yaml"
    threads: 4
    resources:
        gpu=1,
    params:
        sections=sections("crop"),
        config=CONFIG_ARGS,
        root=DATA,
        out_dir=lambda wildcards, output: os.path.dirname(output.train),
        cache=L.crop_cache(),
    shell:
        "maskpipe crop {params.config} --root {params.root} --train-manifest {input.train}"
        " --eval-manifest {input.eval} --out-dir {params.out_dir} --cache {params.cache}"
        " --log {log}"


rule labels:
    input:
        manifest=L.manifest("train"),
        corrections=corrections_input,
        code=code("labels"),
    output:
        labels=L.labels(),
        applied=L.corrections_applied(),
    log:
        L.log("labels"),
    conda:
        "../../envs/maskpipe.yaml"
    params:
        sections=sections("labels"),
        config=CONFIG_ARGS,
    shell:
        "maskpipe labels {params.config} --manifest {input.manifest} --out {output.labels}"
        " --out-applied {output.applied} --log {log}"


rule folds:
    input:
        labels=L.labels(),
        code=code("folds"),
    output:
        folds=L.folds(),
    log:
        L.log("folds"),
    conda:
        "../../envs/maskpipe.yaml"
    params:
        sections=sections("folds"),
        config=CONFIG_ARGS,
    shell:
        "maskpipe folds {params.config} --labels {input.labels} --out {output.folds} --log {log}"
