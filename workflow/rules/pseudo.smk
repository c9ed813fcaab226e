# Pseudo-label rounds 2, 3, ... (config `pseudo`, docs/pseudo.md): label the eval photos the
# previous round's ensemble is sure of, then train, predict and ensemble again with them.
# Each rule's files, params and command come from the step table (maskpipe/pipeline.py); the
# {round} wildcard names the round's folder, results/round{round}/. With `pseudo.rounds: 0`
# nothing asks for these files, so no job of them runs.


rule pseudo:
    input:
        **step_inputs("pseudo"),
    output:
        **step_outputs("pseudo"),
    log:
        step_log("pseudo"),
    localrule: step_local("pseudo")
    conda:
        "../../envs/maskpipe.yaml"
    params:
        **step_params("pseudo"),
    shell:
        step_shell("pseudo")


rule retrain:
    input:
        **step_inputs("retrain"),
    output:
        **step_outputs("retrain"),
    log:
        step_log("retrain"),
    localrule: step_local("retrain")
    conda:
        "../../envs/maskpipe.yaml"
    threads: step_threads("retrain")
    resources:
        **step_resources("retrain"),
    params:
        **step_params("retrain"),
    shell:
        step_shell("retrain")


rule repredict:
    input:
        **step_inputs("repredict"),
    output:
        **step_outputs("repredict"),
    log:
        step_log("repredict"),
    localrule: step_local("repredict")
    conda:
        "../../envs/maskpipe.yaml"
    threads: step_threads("repredict")
    resources:
        **step_resources("repredict"),
    params:
        **step_params("repredict"),
    shell:
        step_shell("repredict")


rule reensemble:
    input:
        **step_inputs("reensemble"),
    output:
        **step_outputs("reensemble"),
    log:
        step_log("reensemble"),
    localrule: step_local("reensemble")
    conda:
        "../../envs/maskpipe.yaml"
    params:
        **step_params("reensemble"),
    shell:
        step_shell("reensemble")
