"""What a search leaves in its folder: trials.csv, importance.png, best.yaml and report.html.

- ``trials.csv``: one row per trial of the study, best first (score, state, seconds, whether it
  came from the trial cache, its trial folder, what it retried, its params);
- ``importance.png``: Optuna's parameter importance plot (fANOVA, seeded), drawn with matplotlib;
  skipped, saying why in the log, with fewer than 2 completed trials or nothing that varied;
- ``best.yaml``: the best trial as a recipe (``replace: [models]``) that runs alone:
  ``snakemake submission --configfile best.yaml``;
- ``report.html``: the table and the plot on one self-contained page.
"""

from __future__ import annotations

import io
import logging
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import pandas as pd
import yaml

from maskpipe.io import write_bytes_if_changed, write_csv
from maskpipe.search.space import apply
from maskpipe.search.trial import model_config

if TYPE_CHECKING:
    from maskpipe.search.study import Search

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Summary:
    """A finished search: its best score and params, and the files written."""

    completed: int
    best_score: float | None
    best_params: dict
    best_model: dict | None
    table: pd.DataFrame
    folder: Path


def trials_table(study) -> pd.DataFrame:
    """One row per trial, best score first (failed and waiting trials last)."""
    df = study.trials_dataframe(attrs=("number", "value", "state", "params", "user_attrs"))
    if df.empty:
        return pd.DataFrame(columns=["number", "score", "state"])
    df = df.rename(columns={"value": "score", "user_attrs_trial": "trial",
                            "user_attrs_seconds": "seconds", "user_attrs_cached": "cached",
                            "user_attrs_retry_of": "retry_of"})
    params = [c for c in df.columns if c.startswith("params_")]
    keep = [c for c in ("number", "score", "state", "seconds", "cached", "trial", "retry_of") if c in df]
    df = df[keep + params].rename(columns={c: c.removeprefix("params_") for c in params})
    return df.sort_values(["score", "number"], ascending=[False, True], na_position="last",
                          ignore_index=True)


def importance_png(study, seed: int) -> bytes | None:
    """Optuna's importance plot as PNG bytes, or None (the log says why)."""
    import optuna
    from optuna.importance import FanovaImportanceEvaluator
    from optuna.trial import TrialState

    complete = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    if len(complete) < 2:
        log.info("importance plot skipped: %d completed trial(s), it needs 2", len(complete))
        return None
    varied = [k for k in complete[0].params if len({repr(t.params.get(k)) for t in complete}) > 1]
    if not varied:
        log.info("importance plot skipped: no parameter took two values in the completed trials")
        return None
    try:
        import matplotlib

        matplotlib.use("Agg")
        with warnings.catch_warnings():  # the matplotlib plots are marked experimental
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            ax = optuna.visualization.matplotlib.plot_param_importances(
                study, evaluator=FanovaImportanceEvaluator(seed=seed), params=varied)
    except (RuntimeError, ValueError) as e:
        log.info("importance plot skipped: %s", e)
        return None
    buf = io.BytesIO()
    fig = ax.figure
    fig.tight_layout()
    fig.savefig(buf, format="png", dpi=100, metadata={"Software": None})
    import matplotlib.pyplot as plt

    plt.close(fig)
    return buf.getvalue()


def recipe_text(s: Search, study, best) -> str:
    """The best trial as a recipe file, with a header saying where it came from."""
    cfg = model_config(s.setup.raw, s.setup.model, apply(s.base, best.params, s.space))
    folds = ",".join(map(str, s.setup.folds))
    header = [
        f"# Found by `maskpipe search` (study {study.study_name} in {s.folder}/study.db):",
        f"# trial {best.number}, out-of-fold macro F1 {best.value:.4f} on fold(s) {folds} of "
        f"{s.setup.raw['folds']['k']},",
        f"# the model {s.setup.model!r} of {' + '.join(s.setup.config_files)} with "
        + ", ".join(f"{k}={v}" for k, v in best.params.items()) + ".",
        "# Runs alone: `snakemake submission --configfile THIS_FILE`; `replace: [models]` makes",
        "# this the only model (the other sections come from config.yaml).",
    ]
    recipe: dict = {"replace": ["models"], "models": {s.setup.model: cfg}}
    ensemble = s.setup.raw["ensemble"]
    if set(ensemble["weights"]) - {s.setup.model}:  # weights of dropped models would not validate
        recipe = {"replace": ["models", "ensemble"], "models": recipe["models"],
                  "ensemble": {**ensemble, "weights": {k: v for k, v in ensemble["weights"].items()
                                                       if k == s.setup.model}}}
        header.append("# It replaces `ensemble` too: the config's weights name models it drops.")
    return "\n".join(header) + "\n" + yaml.safe_dump(recipe, sort_keys=False)


def write(study, s: Search, recipe: Path | None = None) -> Summary:
    """Write the search folder's files (each left untouched when unchanged); ``recipe``: where
    to copy best.yaml as well."""
    from maskpipe.search.page import page

    table = trials_table(study)
    write_csv(table, s.folder / "trials.csv")
    png = importance_png(study, s.seed)
    if png is None:
        (s.folder / "importance.png").unlink(missing_ok=True)
    else:
        write_bytes_if_changed(s.folder / "importance.png", png)
    complete = [t for t in study.trials if t.value is not None]
    best = max(complete, key=lambda t: (t.value, -t.number)) if complete else None
    text = recipe_text(s, study, best) if best else None
    for path in [s.folder / "best.yaml", *([recipe] if recipe else [])]:
        if text is None:
            log.warning("no completed trial: %s not written", path)
            continue
        write_bytes_if_changed(path, text.encode())
        log.info("best trial as a recipe: %s", path)
    write_bytes_if_changed(s.folder / "report.html", page(study.study_name, table, png, best).encode())
    log.info("search results: %s (trials.csv, best.yaml, report.html)", s.folder)
    model = yaml.safe_load(text)["models"][s.setup.model] if text else None
    return Summary(len(complete), best.value if best else None, dict(best.params) if best else {},
                   model, table, s.folder)
