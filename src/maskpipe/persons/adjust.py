"""The ensemble's eval-only options in one call: prior shift, then person-consistent predictions."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pandas as pd

from maskpipe.io import MaskpipeError, read_csv
from maskpipe.persons.prior import fit_temperature, shift_priors
from maskpipe.persons.vote import apply_persons, changes

log = logging.getLogger(__name__)


def adjust_eval(test: np.ndarray, keys: pd.Index, train_labels: np.ndarray, groups_path: Path | None,
                options: dict, prior_shift: bool, oof: np.ndarray | None = None) -> tuple[np.ndarray, dict]:
    """Adjusted 18-class eval probabilities and the metrics entries ``prior_shift`` and
    ``persons`` (what each option found and how many argmax predictions it changed).

    ``options``: the ``ensemble.persons`` section (``pool``, ``assign_masks``, ``min_confidence``).
    ``oof``: out-of-fold probabilities in ``train_labels`` order, to calibrate the prior shift's
    EM on (a temperature); without them the probabilities are taken as calibrated.
    """
    info: dict = {"prior_shift": {"enabled": prior_shift}}
    if prior_shift:
        temperature = 1.0 if oof is None else fit_temperature(oof, train_labels)
        shifted, priors = shift_priors(test, train_labels, temperature, oof=oof)
        info["prior_shift"].update(temperature=round(temperature, 4), priors=priors,
                                   **changes(test.argmax(1), shifted.argmax(1)))
        log.info("prior shift: eval priors %s (train %s); %d predictions changed",
                 {t: p["eval"] for t, p in priors.items()}, {t: p["train"] for t, p in priors.items()},
                 info["prior_shift"]["changed"])
        test = shifted
    pool, masks = bool(options.get("pool")), bool(options.get("assign_masks"))
    info["persons"] = {"enabled": pool or masks}
    if pool or masks:
        if groups_path is None:
            raise MaskpipeError("ensemble.persons: pool or assign_masks needs the persons step's "
                                "groups (--persons)")
        groups = read_csv(groups_path, required=["key", "group", "size", "confidence"], dtype={"key": str})
        test, found = apply_persons(test, keys, groups, pool, masks, float(options.get("min_confidence", 0.0)))
        info["persons"].update(found)
        log.info("persons: %d clean groups of %d; %d predictions changed", found["clean_groups"],
                 found["groups"], found["changed"])
    return test, info
