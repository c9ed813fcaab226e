# One rule per step of the step table (`maskpipe steps` prints it; docs/architecture.md says why
# the rules are generated here rather than written out). Each rule runs one `maskpipe STEP`
# command; its name, files, params (the config sections the step reads), log, threads, GPU
# resource and whether it stays local all come from the step's module (src/maskpipe/steps/).
# Pseudo-label rounds' steps (pseudo, retrain, repredict, reensemble) name the round's folder
# with the {round} wildcard; with `pseudo.rounds: 0` nothing asks for them.


def step_rule(step):
    """The rule of ``step``. Made in a function so that every directive, the shell command too
    (Snakemake evaluates it again when the job runs), sees this step: a rule made directly in
    the loop below would run the loop's last step's command."""

    rule:
        name:
            step.name
        input:
            **step_inputs(step.name),
        output:
            **step_outputs(step.name),
        log:
            step_log(step.name),
        localrule: step.local
        conda:
            "../../envs/maskpipe.yaml"
        threads: step.threads
        resources:
            **step_resources(step.name),
        params:
            **step_params(step.name),
        shell:
            step_shell(step.name)


for step in STEPS.values():
    step_rule(step)
