"""The ensemble: soft (or hard) vote over folds and models, scored out of fold."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from maskpipe.ensemble import teacher as teaching
from maskpipe.ensemble import fitting
from maskpipe.classes import MASK_STATES, PROB_COLUMNS, TASK_COLUMNS, TASKS, joint
from maskpipe.io import MaskpipeError, read_csv, write_csv, write_json
from maskpipe.metrics import F1_DEFINITION, head_score, macro_f1, per_class_f1, task_f1
from maskpipe.persons.adjust import adjust_eval

log = logging.getLogger(__name__)


@dataclass
class Member:
    """One model's (or the combined task models') probabilities and vote weight.

    ``oof`` is in label order, one row per labelled image; ``test`` is indexed by eval key.
    ``for_mask`` is the mask state an age model was trained on ("" for all states).
    """

    name: str
    oof: np.ndarray
    test: pd.DataFrame
    weight: float
    for_mask: str = ""


def vote(probs: list[np.ndarray], weights: list[float], method: str) -> np.ndarray:
    """Weighted mean of probabilities (soft) or of one-hot argmaxes (hard), renormalised."""
    w = np.asarray(weights, dtype=np.float64)
    if w.sum() <= 0:
        raise MaskpipeError("ensemble.weights: the weights of the models in use sum to 0")
    stack = np.stack(probs).astype(np.float64)
    if method == "hard":
        stack = np.eye(stack.shape[2])[stack.argmax(axis=2)]
    return np.tensordot(w / w.sum(), stack, axes=1)


def _score(y: np.ndarray, p: np.ndarray) -> dict:
    pred = p.argmax(1)
    tasks = task_f1(y, pred)
    return {"n": len(y), "macro_f1": macro_f1(y, pred), "accuracy": float((pred == y).mean()),
            **{f"{k}_f1": v for k, v in tasks.items()}}


def _task_score(task: str, y: np.ndarray, p: np.ndarray) -> dict:
    """A single-task model's score: its task's macro F1 (no 18-class figures)."""
    _, _, per_task = head_score(task, y, p.argmax(1))
    return {"n": len(y), "macro_f1": np.nan, "accuracy": np.nan,
            **{f"{t}_f1": per_task.get(t, np.nan) for t in TASKS}}


def _model_rows(m: str, mo: pd.DataFrame, lab: pd.DataFrame, tta: str) -> tuple[list[dict], pd.DataFrame]:
    """Score rows (per fold and overall) of one model at one TTA setting; its OOF in label order."""
    counts = mo["key"].value_counts()
    if (counts > 1).any() or set(mo["key"]) != set(lab.index):
        raise MaskpipeError(f"ensemble: model {m!r} does not predict every labelled image "
                            f"exactly once out of fold (tta {tta}); are all its folds listed?")
    mo = mo.set_index("key").loc[lab.index]
    head = mo["head"].iloc[0]
    cols = PROB_COLUMNS if head not in TASKS else TASK_COLUMNS[head]

    def score(yy, pp):
        return _score(yy, pp) if head not in TASKS else _task_score(head, yy, pp)

    rows = [{"model": m, "fold": str(f), "tta": tta,
             **score(lab.loc[part.index, "label"].to_numpy(), part[cols].to_numpy())}
            for f, part in mo.groupby("fold")]
    rows.append({"model": m, "fold": "all", "tta": tta, **score(lab["label"].to_numpy(), mo[cols].to_numpy())})
    return rows, mo


@dataclass(frozen=True)
class EnsembleJob:
    """An ensemble's files: every model x fold's out-of-fold and eval predictions and the labels
    in (``persons``: the persons step's eval photo groups, if any; ``teacher_train`` and
    ``teacher_eval``: the teacher step's estimates, if it is on), the ensemble's files out."""

    oof: list[Path]
    test: list[Path]
    labels: Path
    out_oof: Path
    out_test: Path
    out_scores: Path
    out_metrics: Path
    persons: Path | None = None
    teacher_train: Path | None = None
    teacher_eval: Path | None = None


@dataclass(frozen=True)
class EnsembleConfig:
    """The ``ensemble`` config section (its keys; the defaults are the schema's)."""

    method: str = "soft"
    weights: dict[str, float] = field(default_factory=dict)
    search_weights: bool = False
    age_bias: bool = False
    seed: int = 0
    persons: dict = field(default_factory=dict)
    prior_shift: bool = False


def ensemble_folds(job: EnsembleJob, cfg: EnsembleConfig) -> dict:
    """Combine every model × fold prediction; write ensemble OOF, test, scores and metrics.

    Models with an 18-class output vote directly. Single-task models (head mask / gender / age)
    are first combined into one member, ``tasks``: per task the weighted mean of its models'
    probabilities, then the product of the three (see :mod:`maskpipe.train.heads`); the member
    votes with the mean weight of its models. Each model is scored with its TTA setting and,
    where the OOF file has them, without TTA. ``search_weights`` and ``age_bias`` fit on half
    the persons and report on the other half (:mod:`maskpipe.ensemble.fitting`). With the
    teacher step's estimates, the teacher votes on gender and age with a weight fitted on the
    same half (:mod:`maskpipe.ensemble.teacher`), before the age bias. ``prior_shift``
    and ``persons`` (with the ``persons`` step's groups) then adjust the eval probabilities
    only (:func:`maskpipe.persons.adjust.adjust_eval`).

    Raises:
        MaskpipeError: ``weights`` names a model that is not in the predictions, or a model
            does not predict every labelled image exactly once out of fold.
    """
    method, weights = cfg.method, cfg.weights
    lab = read_csv(job.labels, required=["key", "label"], dtype={"key": str}).set_index("key")
    oof, test = _read_predictions(job.oof), _read_predictions(job.test)
    y, models = lab["label"].to_numpy(), sorted(oof["model"].unique())
    unknown = sorted(set(weights) - set(models))
    if unknown:
        raise MaskpipeError(f"ensemble.weights: {', '.join(map(repr, unknown))} is not a model of this "
                            f"run (models: {', '.join(models)})")
    rows, members, tta_gain, configured = _members(oof, test, lab, models, weights)
    if "tasks" in configured:
        rows.append({"model": "tasks", "fold": "all", "tta": "-", **_score(y, members[-1].oof)})
    w = np.array([m.weight for m in members])
    keys = members[0].test.index
    teacher = _read_teacher(job, lab.index, keys)
    fit, holdout = fitting.person_halves(lab["person"].to_numpy(), cfg.seed)
    fitted = _fit_choices(members, y, lab["person"].to_numpy(), fit, holdout, w, method,
                          cfg.search_weights, cfg.age_bias, teacher and teacher[0])
    w = fitted["weights"]
    ens_oof = vote([m.oof for m in members], w, method)
    ens_test = vote([m.test.loc[keys].to_numpy() for m in members], w, method)
    if teacher:
        tw, by_method = fitted["teacher"]["weight"], _method_vote(method)
        ens_oof = teaching.with_teacher(ens_oof, teacher[0], tw, by_method)
        ens_test = teaching.with_teacher(ens_test, teacher[1], tw, by_method)
    if cfg.age_bias:
        ens_oof = fitting.apply_age_bias(ens_oof, fitted["bias"])
        ens_test = fitting.apply_age_bias(ens_test, fitted["bias"])
    ens_test, eval_info = adjust_eval(ens_test, keys, y, job.persons, cfg.persons, cfg.prior_shift,
                                      oof=ens_oof)
    score = _score(y, ens_oof)
    rows.append({"model": "ensemble", "fold": "all", "tta": "-", **score})
    metrics = {
        "oof_macro_f1": score["macro_f1"], "oof_accuracy": score["accuracy"],
        "f1_definition": F1_DEFINITION, "method": method,
        "weights": {m.name: float(x) for m, x in zip(members, w, strict=True)},
        "per_class_f1": per_class_f1(y, ens_oof.argmax(1)),
        "tasks": {k: score[f"{k}_f1"] for k in TASKS},
        "models": {r["model"]: {"oof_macro_f1": _num(r["macro_f1"]), "oof_accuracy": _num(r["accuracy"])}
                   for r in rows if r["fold"] == "all" and r["tta"] == configured.get(r["model"])},
        "tta_gain": tta_gain, "weight_search": fitted["search"], "age_bias": fitted["age_bias"],
        **eval_info,
    }
    if teacher:  # only then: without the teacher, the metrics are what they were before it
        taught = metrics["teacher"] = {**fitted["teacher"], "eval_photos": len(keys),
                                       "eval_photos_with_estimate": int(teacher[1].has.sum())}
        log.info("teacher: weight %.3f fitted on half the persons (holdout half macro F1 %.4f without, "
                 "%.4f with); %d of %d OOF and %d of %d eval photos have an estimate, the rest keep "
                 "the models' prediction", taught["weight"], taught["holdout_half_f1_without"],
                 taught["holdout_half_f1_with"], taught["oof_photos_with_estimate"], len(y),
                 taught["eval_photos_with_estimate"], len(keys))
    _write(lab, y, ens_oof, keys, ens_test, pd.DataFrame(rows), metrics, job.out_oof, job.out_test,
           job.out_scores, job.out_metrics)
    log.info("ensemble of %d member(s) from %d model(s): out-of-fold macro F1 %.4f, accuracy %.4f",
             len(members), len(models), score["macro_f1"], score["accuracy"])
    return metrics


def _read_predictions(paths: list[Path]) -> pd.DataFrame:
    df = pd.concat([read_csv(p, dtype={"key": str}) for p in paths], ignore_index=True)
    if "head" not in df:
        df["head"] = "single"
    df["for_mask"] = df["for_mask"].astype(object).fillna("") if "for_mask" in df else ""
    return df


def _members(oof: pd.DataFrame, test: pd.DataFrame, lab: pd.DataFrame, models: list[str],
             weights: dict[str, float]) -> tuple[list[dict], list[Member], dict, dict]:
    """(score rows, voting members, TTA gains, each model's TTA setting) of every model.

    Single-task models become one member, ``tasks``, appended last.
    """
    rows, members, tta_gain, configured = [], [], {}, {}
    task_parts: dict[str, list[Member]] = {t: [] for t in TASKS}
    for m in models:
        mt_all, mo_all = test[test["model"] == m], oof[oof["model"] == m]
        tta = configured[m] = mt_all["tta"].iloc[0]
        model_rows, mo = _model_rows(m, mo_all[mo_all["tta"] == tta], lab, tta)
        rows += model_rows
        if tta != "none" and (mo_all["tta"] == "none").any():
            plain_rows, _ = _model_rows(m, mo_all[mo_all["tta"] == "none"], lab, "none")
            rows += plain_rows
            tta_gain[m] = {"tta": tta, "with": _num(model_rows[-1]["macro_f1"]),
                           "without": _num(plain_rows[-1]["macro_f1"])}
        head = mo["head"].iloc[0]
        cols = PROB_COLUMNS if head not in TASKS else TASK_COLUMNS[head]
        member = Member(m, mo[cols].to_numpy(), mt_all.groupby("key", sort=False)[cols].mean(),
                        float(weights.get(m, 1.0)), mo["for_mask"].iloc[0])
        (task_parts[head] if head in TASKS else members).append(member)
    if any(task_parts.values()):
        members.append(_combine_tasks(task_parts))
        configured["tasks"] = "-"
    return rows, members, tta_gain, configured


def _method_vote(method: str) -> teaching.Vote:
    return lambda ps, ww: vote(ps, ww, method)


def _read_teacher(job: EnsembleJob, train_keys: pd.Index,
                  eval_keys: pd.Index) -> tuple[teaching.Estimates, teaching.Estimates] | None:
    """The teacher's (OOF, eval) estimates in label and eval order, or None without the teacher."""
    if job.teacher_train is None and job.teacher_eval is None:
        return None
    if job.teacher_train is None or job.teacher_eval is None:
        raise MaskpipeError("ensemble: the teacher's estimates need both files (--teacher-train and "
                            "--teacher-eval)")
    return (teaching.read_estimates(job.teacher_train, train_keys),
            teaching.read_estimates(job.teacher_eval, eval_keys))


def _fit_choices(members: list[Member], y: np.ndarray, persons: np.ndarray, fit: np.ndarray,
                 holdout: np.ndarray, w: np.ndarray, method: str, search_weights: bool,
                 age_bias: bool, teacher: teaching.Estimates | None = None) -> dict:
    """Vote weights, the teacher's weight (given its OOF estimates) and age bias, each fitted
    on the ``fit`` half if asked (the teacher's always), with their report."""
    member_oof = [m.oof for m in members]
    by_method, tw = _method_vote(method), 0.0

    def ens_f1(ww, rows_mask, bias=0.0, teacher_weight=None):
        p = vote([o[rows_mask] for o in member_oof], ww, method)
        if teacher is not None:
            p = teaching.with_teacher(p, teacher.rows(rows_mask),
                                      tw if teacher_weight is None else teacher_weight, by_method)
        p = fitting.apply_age_bias(p, bias)
        return macro_f1(y[rows_mask], p.argmax(1))

    search = {"enabled": search_weights}
    if search_weights:
        found = fitting.search_weights(member_oof, y, fit, lambda ps, ww: vote(ps, ww, method))
        search.update(weights={m.name: float(x) for m, x in zip(members, found, strict=True)},
                      fit_half_f1=ens_f1(found, fit), holdout_half_f1=ens_f1(found, holdout),
                      equal_weights_holdout_f1=ens_f1(w, holdout),
                      fit_persons=int(len(np.unique(persons[fit]))),
                      holdout_persons=int(len(np.unique(persons[holdout]))))
        w = found
    taught = {}
    if teacher is not None:
        tw = teaching.fit_teacher_weight(vote(member_oof, w, method), teacher, y, fit, by_method)
        taught = {"enabled": True, "weight": tw,
                  "oof_photos_with_estimate": int(teacher.has.sum()), "oof_photos": len(y),
                  "fit_half_f1_without": ens_f1(w, fit, teacher_weight=0.0), "fit_half_f1_with": ens_f1(w, fit),
                  "holdout_half_f1_without": ens_f1(w, holdout, teacher_weight=0.0),
                  "holdout_half_f1_with": ens_f1(w, holdout)}
    bias, b = {"enabled": age_bias}, 0.0
    if age_bias:
        p = vote(member_oof, w, method)
        if teacher is not None:
            p = teaching.with_teacher(p, teacher, tw, by_method)
        b = fitting.fit_age_bias(p, y, fit)
        bias.update(bias=b, fit_half_f1_without=ens_f1(w, fit), fit_half_f1_with=ens_f1(w, fit, b),
                    holdout_half_f1_without=ens_f1(w, holdout), holdout_half_f1_with=ens_f1(w, holdout, b))
    return {"weights": w, "bias": b, "search": search, "age_bias": bias, "teacher": taught}


def _write(lab: pd.DataFrame, y: np.ndarray, ens_oof: np.ndarray, keys: pd.Index, ens_test: np.ndarray,
           scores: pd.DataFrame, metrics: dict, out_oof: Path, out_test: Path, out_scores: Path,
           out_metrics: Path) -> None:
    oof_table = pd.DataFrame({"key": lab.index, "person": lab["person"].to_numpy(), "label": y,
                              "pred": ens_oof.argmax(1)})
    oof_table = pd.concat([oof_table, pd.DataFrame(np.round(ens_oof, 6), columns=PROB_COLUMNS)], axis=1)
    test_table = pd.concat([pd.DataFrame({"key": keys}),
                            pd.DataFrame(np.round(ens_test, 6), columns=PROB_COLUMNS)], axis=1)
    write_csv(oof_table, out_oof)
    write_csv(test_table, out_test)
    write_csv(scores.round(6), out_scores)
    write_json(metrics, out_metrics)


def _num(value: float) -> float | None:
    return None if value is None or np.isnan(value) else float(value)


def _combine_tasks(parts: dict[str, list[Member]]) -> Member:
    """One 18-class member from single-task models: weighted mean per task, then the product."""
    missing = [t for t, p in parts.items() if not p]
    if missing:
        raise MaskpipeError(f"ensemble: the task models cover {', '.join(t for t in TASKS if parts[t])} "
                            f"but not {', '.join(missing)}; add a model with head: {missing[0]}")
    keys = parts["mask"][0].test.index
    oof, test = {}, {}
    for task in ("mask", "gender"):
        oof[task], test[task] = _task_mean(parts[task], keys, task)
    general = [m for m in parts["age"] if not m.for_mask]
    by_state = {s: [m for m in parts["age"] if m.for_mask == s] for s in MASK_STATES}
    if not any(by_state.values()):
        oof["age"], test["age"] = _task_mean(general, keys, "age")
    else:
        # One age model per mask state: P(age) = sum over states s of P(mask = s) * P_s(age).
        oof["age"], test["age"] = 0, 0
        for i, state in enumerate(MASK_STATES):
            models = by_state[state] or general
            if not models:
                raise MaskpipeError(f"ensemble: age models exist for some mask states but none for "
                                    f"{state!r} (and no age model for all states)")
            o, t = _task_mean(models, keys, f"age ({state})")
            oof["age"] = oof["age"] + oof["mask"][:, i:i + 1] * o
            test["age"] = test["age"] + test["mask"][:, i:i + 1] * t
    weight = float(np.mean([m.weight for p in parts.values() for m in p]))
    return Member("tasks", joint(oof), pd.DataFrame(joint(test), index=keys, columns=PROB_COLUMNS), weight)


def _task_mean(models: list[Member], keys: pd.Index, what: str) -> tuple[np.ndarray, np.ndarray]:
    """Weighted mean OOF and test probabilities of the models of one task."""
    w = np.array([m.weight for m in models], dtype=np.float64)
    if w.sum() <= 0:
        raise MaskpipeError(f"ensemble.weights: the {what} models' weights sum to 0")
    w = w / w.sum()
    oof = np.tensordot(w, np.stack([m.oof for m in models]), axes=1)
    test = np.tensordot(w, np.stack([m.test.loc[keys].to_numpy() for m in models]), axes=1)
    return oof, test
