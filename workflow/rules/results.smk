# Ensemble every model x fold, rank suspected mislabels, write the checked submission, build the
# report. Each rule's files, params and command come from the step table (maskpipe/pipeline.py).


rule ensemble:
    input:
        **inputs("ensemble"),
    output:
        **outputs("ensemble"),
    log:
        log("ensemble"),
    localrule: local("ensemble")
    conda:
        "../../envs/maskpipe.yaml"
    params:
        **params("ensemble"),
    shell:
        shell("ensemble")


rule mislabels:
    input:
        **inputs("mislabels"),
    output:
        **outputs("mislabels"),
    log:
        log("mislabels"),
    localrule: local("mislabels")
    conda:
        "../../envs/maskpipe.yaml"
    params:
        **params("mislabels"),
    shell:
        shell("mislabels")


rule submit:
    input:
        **inputs("submit"),
    output:
        **outputs("submit"),
    log:
        log("submit"),
    localrule: local("submit")
    conda:
        "../../envs/maskpipe.yaml"
    params:
        **params("submit"),
    shell:
        shell("submit")


rule report:
    input:
        **inputs("report"),
    output:
        # The figures also go into `snakemake --report`, one entry per PNG.
        **outputs(
            "report",
            figures=lambda path: report(
                path,
                patterns=["{name}.png"],
                caption="../report/figures.rst",
                category="maskpipe",
                labels={"figure": "{name}"},
            ),
        ),
    log:
        log("report"),
    localrule: local("report")
    conda:
        "../../envs/maskpipe.yaml"
    params:
        **params("report"),
    shell:
        shell("report")
