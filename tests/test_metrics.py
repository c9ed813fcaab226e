"""The competition metric and its bootstrap interval over eval persons."""

import numpy as np
import pytest

from maskpipe.metrics import _fast_macro_f1, macro_f1, person_interval


def _noisy(y: np.ndarray, right: float, rng: np.random.Generator) -> np.ndarray:
    return np.where(rng.random(len(y)) < right, y, rng.integers(0, 18, len(y)))


def test_fast_macro_f1_is_sklearns():
    """Absent classes, classes only predicted, only true: the same value as scikit-learn's."""
    rng = np.random.default_rng(0)
    for _ in range(20):
        y = rng.integers(0, 12, 300)
        p = np.where(rng.random(300) < 0.4, y, rng.integers(6, 18, 300))
        assert _fast_macro_f1(y, p) == pytest.approx(macro_f1(y, p), abs=1e-12)


def test_interval_resamples_persons_not_photos():
    """Seven photos of a person with one label and one prediction are one draw: the interval is
    the one-photo-a-person interval (macro F1 does not change when every photo is repeated),
    where a photo-level bootstrap would be narrower."""
    rng = np.random.default_rng(1)
    y1 = rng.integers(0, 18, 200)
    p1 = _noisy(y1, 0.5, rng)
    one = person_interval(y1, p1, np.arange(200), n_resamples=300)
    seven = person_interval(np.repeat(y1, 7), np.repeat(p1, 7), np.repeat(np.arange(200), 7),
                            n_resamples=300)
    assert seven == pytest.approx(one)
    photos = person_interval(np.repeat(y1, 7), np.repeat(p1, 7), np.arange(1400), n_resamples=300)
    assert photos[1] - photos[0] < 0.7 * (one[1] - one[0])
    assert one[0] < macro_f1(y1, p1) < one[1]


def test_paired_interval_tells_a_gain_from_noise():
    rng = np.random.default_rng(2)
    persons = np.repeat(np.arange(300), 7)
    y = np.repeat(rng.integers(0, 18, 300), 7)
    base = _noisy(y, 0.4, rng)
    better = np.where(rng.random(len(y)) < 0.3, y, base)  # a third of the photos set right
    lo, hi = person_interval(y, better, persons, baseline=base, n_resamples=300)
    assert 0 < lo < macro_f1(y, better) - macro_f1(y, base) < hi
    lo, hi = person_interval(y, base, persons, baseline=better, n_resamples=300)
    assert hi < 0
    same = _noisy(y, 0.4, np.random.default_rng(3))  # as good as base, other mistakes
    lo, hi = person_interval(y, same, persons, baseline=base, n_resamples=300)
    assert lo < 0 < hi
    assert person_interval(y, base, persons, baseline=base) == (0.0, 0.0)


def test_interval_on_a_tiny_set_is_a_number():
    """Two persons (the benches' smoke tests): BCa is undefined there; the percentile interval
    stands in, never NaN."""
    y = np.repeat([3, 9], 7)
    p = y.copy()
    p[:3] = 0
    lo, hi = person_interval(y, p, np.repeat([0, 1], 7), n_resamples=200)
    assert 0 <= lo <= hi <= 1
