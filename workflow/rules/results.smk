# Ensemble every model x fold, rank suspected mislabels, write the checked submission, build the
# report.


rule ensemble:
    input:
        oof=expand(L.oof(), model=MODELS, fold=FOLDS),
        test=expand(L.test_probs(), model=MODELS, fold=FOLDS),
        labels=L.labels(),
        code=code("ensemble"),
    output:
        oof=L.ensemble_oof(),
        test=L.ensemble_test(),
        scores=L.ensemble_scores(),
        metrics=L.metrics(),
    log:
        L.log("ensemble"),
    conda:
        "../../envs/maskpipe.yaml"
    params:
        sections=sections("ensemble"),
        config=CONFIG_ARGS,
    shell:
        "maskpipe ensemble {params.config} --oof {input.oof} --test {input.test}"
        " --labels {input.labels} --out-oof {output.oof} --out-test {output.test}"
        " --out-scores {output.scores} --out-metrics {output.metrics} --log {log}"


rule mislabels:
    input:
        oof=L.ensemble_oof(),
        labels=L.labels(),
        crops=L.crops("train"),
        crop_index=L.crop_index("train"),
        code=code("mislabels"),
    output:
        suspects=L.mislabels_suspects(),
        review=L.mislabels_review(),
        summary=L.mislabels_summary(),
    log:
        L.log("mislabels"),
    conda:
        "../../envs/maskpipe.yaml"
    params:
        sections=sections("mislabels"),
        config=CONFIG_ARGS,
    shell:
        "maskpipe mislabels {params.config} --oof {input.oof} --labels {input.labels}"
        " --crops {input.crops} --crop-index {input.crop_index}"
        " --out-suspects {output.suspects} --out-review {output.review}"
        " --out-summary {output.summary} --log {log}"


rule submit:
    input:
        probs=L.ensemble_test(),
        eval_manifest=L.manifest("eval"),
        code=code("submit"),
    output:
        submission=L.submission(),
    log:
        L.log("submit"),
    conda:
        "../../envs/maskpipe.yaml"
    shell:
        "maskpipe submit --probs {input.probs} --eval-manifest {input.eval_manifest}"
        " --out {output.submission} --log {log}"


rule report:
    input:
        train_manifest=L.manifest("train"),
        labels=L.labels(),
        corrections=L.corrections_applied(),
        crop_index_train=L.crop_index("train"),
        crops_train=L.crops("train"),
        crop_index_eval=L.crop_index("eval"),
        crop_sample=L.crop_sheet("sample"),
        crop_fallbacks=L.crop_sheet("fallbacks"),
        folds=L.folds(),
        train_metrics=expand(L.train_metrics(), model=MODELS, fold=FOLDS),
        tensorboard=expand(L.tensorboard(), model=MODELS, fold=FOLDS),
        scores=L.ensemble_scores(),
        ensemble_oof=L.ensemble_oof(),
        metrics=L.metrics(),
        submission=L.submission(),
        mislabels=L.mislabels_suspects(),
        mislabels_summary=L.mislabels_summary(),
        code=code("report"),
    output:
        report=L.report(),
        figures=report(
            directory(L.report_figures()),
            patterns=["{name}.png"],
            caption="../report/figures.rst",
            category="maskpipe",
            labels={"figure": "{name}"},
        ),
        history=L.report_history(),
    log:
        L.log("report"),
    conda:
        "../../envs/maskpipe.yaml"
    params:
        sections=sections("report"),
        config=CONFIG_ARGS,
    shell:
        "maskpipe report {params.config} --train-manifest {input.train_manifest}"
        " --labels {input.labels} --corrections {input.corrections}"
        " --crop-index-train {input.crop_index_train} --crops-train {input.crops_train}"
        " --crop-index-eval {input.crop_index_eval}"
        " --crop-sample {input.crop_sample} --crop-fallbacks {input.crop_fallbacks}"
        " --folds {input.folds} --train-metrics {input.train_metrics}"
        " --tensorboard {input.tensorboard} --scores {input.scores}"
        " --ensemble-oof {input.ensemble_oof} --metrics {input.metrics}"
        " --submission {input.submission} --mislabels {input.mislabels}"
        " --mislabels-summary {input.mislabels_summary} --out {output.report}"
        " --out-figures {output.figures} --out-history {output.history} --log {log}"
