"""The report's figures: plain arrays and tables in, PNG bytes out.

Every figure has a fixed size and dpi, uses the DejaVu font that ships with matplotlib and is
saved without the "Software" PNG chunk, so the same numbers give byte-identical PNGs on any
machine and an unchanged rerun leaves the report file untouched.
"""

from __future__ import annotations

import contextlib
import io
from collections.abc import Iterator, Sequence
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402

from maskpipe import classes  # noqa: E402

DPI = 100
#: One colour per mask status, reused wherever classes are grouped by mask.
MASK_COLOURS = ("#4c72b0", "#dd8452", "#c44e52")
_RC = {
    "font.family": "DejaVu Sans",
    "font.size": 9,
    "axes.titlesize": 10,
    "axes.titleweight": "bold",
    "axes.spines.top": False,
    "axes.spines.right": False,
    "axes.grid": True,
    "grid.alpha": 0.3,
    "legend.frameon": False,
    "figure.facecolor": "white",
}


@contextlib.contextmanager
def _subplots(*args, **kwargs) -> Iterator[tuple[Figure, Any]]:
    """``plt.subplots`` under the report's rc settings; the figure is closed on leaving."""
    with matplotlib.rc_context(_RC):
        fig, axes = plt.subplots(*args, layout="constrained", **kwargs)
        try:
            yield fig, axes
        finally:
            plt.close(fig)


def _png(fig: Figure) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=DPI, metadata={"Software": None})
    return buf.getvalue()


def _class_bar_colours() -> list[str]:
    return [MASK_COLOURS[m] for m in classes.decode(np.arange(classes.NUM_CLASSES))[0]]


def class_balance(counts: np.ndarray) -> bytes:
    """Horizontal bars of image counts for the 18 classes, coloured by mask status."""
    names = classes.class_names()
    with _subplots(figsize=(8, 5.2)) as (fig, ax):
        y = np.arange(classes.NUM_CLASSES)
        ax.barh(y, counts, color=_class_bar_colours())
        total = max(int(np.sum(counts)), 1)
        for yi, c in zip(y, counts, strict=True):
            ax.text(c, yi, f" {int(c)} ({100 * c / total:.1f}%)", va="center", fontsize=8)
        ax.set_yticks(y, [f"{i:2d}  {n}" for i, n in enumerate(names)])
        ax.invert_yaxis()
        ax.set_xlim(0, max(int(np.max(counts)), 1) * 1.22)
        ax.set_xlabel("images")
        ax.set_title("Class balance of the corrected training labels")
        ax.grid(axis="y", visible=False)
        return _png(fig)


def age_histogram(ages: np.ndarray, bounds: Sequence[int] = classes.OFFICIAL_AGE_BOUNDS) -> bytes:
    """Persons per year of age, one bar per year, with the official group edges marked."""
    ages = np.asarray(ages, dtype=int)
    lo = int(min(ages.min(initial=bounds[0]), bounds[0] - 5))
    hi = int(max(ages.max(initial=bounds[1]), bounds[1] + 5))
    with _subplots(figsize=(8, 3.2)) as (fig, ax):
        # Edges at whole years: the bar of age a spans [a, a+1), so a line at 30 is where "30-59" starts.
        counts, _, _ = ax.hist(ages, bins=np.arange(lo, hi + 2), color="#4c72b0", edgecolor="white",
                               linewidth=0.4)
        ax.set_ylim(0, max(counts.max(initial=0), 1) * 1.18)
        edges = [lo, *bounds, hi + 1]
        for g, (a, b) in enumerate(zip(edges[:-1], edges[1:], strict=True)):
            ax.axvspan(a, b, color=("#e8eef7", "#f3f3f3", "#fbeee6")[g], zorder=0)
            n = int(((ages >= a) & (ages < b)).sum())
            ax.text((a + b) / 2, 0.97, f"{classes.AGE_NAMES[g]}: {n}", transform=ax.get_xaxis_transform(),
                    ha="center", va="top", fontweight="bold")
        for b in bounds:
            ax.axvline(b, color="#c44e52", linestyle="--", linewidth=1.2)
        ax.set_xticks(sorted({*range(10 * (lo // 10 + 1), hi + 1, 10), *bounds}))
        ax.yaxis.get_major_locator().set_params(integer=True)
        ax.set_xlim(lo, hi + 1)
        ax.set_xlabel("age (years; dashed lines: official group edges, bar a covers [a, a+1))")
        ax.set_ylabel("persons")
        ax.set_title("Age of persons (corrected labels) with the official bin edges")
        return _png(fig)


def fold_strata(counts: pd.DataFrame) -> bytes:
    """Stacked bars: persons per fold (rows of ``counts``) split by stratum (its columns)."""
    with _subplots(figsize=(8, 3.4)) as (fig, ax):
        x = np.arange(len(counts))
        bottom = np.zeros(len(counts))
        colours = plt.get_cmap("tab20c")(np.array([0, 1, 2, 4, 5, 6]))
        for (name, col), colour in zip(counts.items(), colours, strict=False):
            ax.bar(x, col.to_numpy(), bottom=bottom, color=colour, label=str(name), width=0.6)
            bottom += col.to_numpy()
        for xi, total in zip(x, bottom, strict=True):
            ax.text(xi, total, f"{int(total)}", ha="center", va="bottom", fontweight="bold")
        ax.set_xticks(x, [f"fold {f}" for f in counts.index])
        ax.set_ylim(0, max(bottom.max(initial=0), 1) * 1.12)
        ax.yaxis.get_major_locator().set_params(integer=True)
        ax.set_ylabel("persons")
        ax.set_title("Persons per fold by stratum (gender / age group)")
        ax.legend(loc="center left", bbox_to_anchor=(1.0, 0.5), title="stratum")
        ax.grid(axis="x", visible=False)
        return _png(fig)


def learning_curves(model: str, histories: dict[int, pd.DataFrame], best_epochs: dict[int, int]) -> bytes:
    """Loss and macro F1 per epoch, train dashed and val solid, one colour per fold.

    Args:
        model: the model's name, for the titles.
        histories: per fold, a table with ``epoch``, ``train_loss``, ``val_loss``, ``val_f1`` and
            optionally ``train_f1``.
        best_epochs: per fold, the epoch whose weights were kept (starred on both panels).

    Returns:
        PNG bytes.
    """
    with _subplots(1, 2, figsize=(10, 3.6)) as (fig, (loss_ax, f1_ax)):
        cmap = plt.get_cmap("tab10")
        epochs: set[int] = set()
        for i, (fold, h) in enumerate(sorted(histories.items())):
            c = cmap(i % 10)
            # Markers keep a one-epoch run visible (a line needs two points).
            train = {"color": c, "linestyle": "--", "linewidth": 1.2, "marker": "x", "markersize": 4}
            val = {"color": c, "linewidth": 1.6, "marker": "o", "markersize": 3}
            loss_ax.plot(h["epoch"], h["train_loss"], **train)
            loss_ax.plot(h["epoch"], h["val_loss"], **val, label=f"fold {fold}")
            if "train_f1" in h:
                f1_ax.plot(h["epoch"], h["train_f1"], **train)
            f1_ax.plot(h["epoch"], h["val_f1"], **val, label=f"fold {fold}")
            epochs.update(int(e) for e in h["epoch"])
            best = h[h["epoch"] == best_epochs.get(fold)]
            for ax, col in ((loss_ax, "val_loss"), (f1_ax, "val_f1")):
                if len(best):
                    ax.plot(best["epoch"], best[col], marker="*", markersize=12, color=c,
                            markeredgecolor="black", linestyle="none")
        for ax in (loss_ax, f1_ax):
            ax.plot([], [], color="grey", linestyle="--", marker="x", markersize=4, label="train")
            ax.plot([], [], color="grey", marker="o", markersize=3, label="val")
            if len(epochs) <= 15:
                ax.set_xticks(sorted(epochs))
            else:
                ax.xaxis.get_major_locator().set_params(integer=True)
        loss_ax.set(title=f"{model}: loss (star = best epoch)", xlabel="epoch", ylabel="loss")
        f1_ax.set(title=f"{model}: macro F1 (star = best epoch)", xlabel="epoch", ylabel="macro F1")
        loss_ax.legend(fontsize=8, ncols=2)
        f1_ax.legend(fontsize=8, ncols=2, loc="lower right")
        return _png(fig)


def thumbnails(images: Sequence[np.ndarray], captions: Sequence[str], ncols: int = 6) -> bytes:
    """A grid of H x W x 3 uint8 images, each with its caption (may hold a line break) above it.

    Args:
        images: equally sized RGB images.
        captions: one per image.
        ncols: images per row.

    Returns:
        PNG bytes.
    """
    n = max(len(images), 1)
    ncols = min(ncols, n)
    nrows = -(-n // ncols)
    height, width = images[0].shape[:2] if len(images) else (1, 1)
    cell = 2.2  # inches per thumbnail's width: room for "→ pred not wear/female/30-59 (p=0.93)"
    with _subplots(nrows, ncols, figsize=(cell * ncols, nrows * (cell * height / width + 0.45)),
                   squeeze=False) as (fig, axes):
        for ax in axes.flat:
            ax.axis("off")
        for ax, image, caption in zip(axes.flat, images, captions, strict=False):
            ax.imshow(np.asarray(image), interpolation="antialiased")
            ax.set_title(caption, fontsize=7, fontweight="normal")
        return _png(fig)


def per_class_f1(f1: np.ndarray, support: np.ndarray, macro: float) -> bytes:
    """The ensemble's F1 per class as horizontal bars, with the macro mean as a line."""
    names = classes.class_names()
    with _subplots(figsize=(8, 5.2)) as (fig, ax):
        y = np.arange(classes.NUM_CLASSES)
        ax.barh(y, f1, color=_class_bar_colours())
        for yi, v in zip(y, f1, strict=True):
            ax.text(v, yi, f" {v:.3f}", va="center", fontsize=8)
        ax.axvline(macro, color="black", linestyle="--", linewidth=1)
        ax.text(macro, -0.6, f" macro {macro:.3f}", ha="left", va="bottom", fontsize=8)
        ax.set_yticks(y, [f"{n}  (n={int(s)})" for n, s in zip(names, support, strict=True)])
        ax.invert_yaxis()
        ax.set_xlim(0, 1.12)
        ax.set_xlabel("F1 (out of fold)")
        ax.set_title("Ensemble F1 per class", pad=14)
        ax.grid(axis="y", visible=False)
        return _png(fig)


def _confusion_axes(ax, cm: np.ndarray, names: Sequence[str], title: str, fontsize: float):
    rows = cm.sum(axis=1, keepdims=True)
    share = np.divide(cm, rows, out=np.zeros(cm.shape, dtype=float), where=rows > 0)
    image = ax.imshow(share, cmap="Blues", vmin=0, vmax=1)
    for (i, j), v in np.ndenumerate(cm):
        if v:
            ax.text(j, i, str(v), ha="center", va="center", fontsize=fontsize,
                    color="white" if share[i, j] > 0.6 else "black")
    ticks = np.arange(len(names))
    ax.set_xticks(ticks, names, rotation=90 if len(names) > 3 else 0)
    ax.set_yticks(ticks, names)
    ax.set(xlabel="predicted", ylabel="true", title=title)
    ax.grid(False)
    ax.tick_params(length=0)
    for spine in ax.spines.values():
        spine.set_visible(False)
    return image


def confusion(cm: np.ndarray, names: Sequence[str], title: str) -> bytes:
    """One large confusion matrix: counts written in, colour = share of the true class's row."""
    with _subplots(figsize=(10, 8.5)) as (fig, ax):
        image = _confusion_axes(ax, cm, names, title, fontsize=7)
        if len(names) == classes.NUM_CLASSES:
            # Thin lines between the mask-status blocks (6 classes each) guide the eye.
            for edge in (5.5, 11.5):
                ax.axhline(edge, color="#888888", linewidth=0.8)
                ax.axvline(edge, color="#888888", linewidth=0.8)
        fig.colorbar(image, ax=ax, shrink=0.6, label="share of the true class (row)")
        return _png(fig)


def task_confusions(panels: Sequence[tuple[str, np.ndarray, Sequence[str]]]) -> bytes:
    """Small confusion matrices side by side, one per (title, counts, names) panel."""
    with _subplots(1, len(panels), figsize=(3.3 * len(panels), 3.4)) as (fig, axes):
        for ax, (title, cm, names) in zip(np.atleast_1d(axes), panels, strict=True):
            _confusion_axes(ax, cm, names, title, fontsize=9)
        return _png(fig)


def class_proportions(series: dict[str, np.ndarray]) -> bytes:
    """Grouped horizontal bars: the share of each class in every named distribution."""
    names = classes.class_names()
    with _subplots(figsize=(8, 6)) as (fig, ax):
        y = np.arange(classes.NUM_CLASSES)
        height = 0.8 / max(len(series), 1)
        for i, ((label, prop), colour) in enumerate(zip(series.items(), ("#4c72b0", "#dd8452", "#55a868"),
                                                        strict=False)):
            ax.barh(y - 0.4 + height * (i + 0.5), 100 * prop, height=height, color=colour, label=label)
        ax.set_yticks(y, names)
        ax.invert_yaxis()
        ax.set_xlabel("share of images (%)")
        ax.set_title("Class distribution: submission vs training labels", pad=24)
        ax.legend(loc="lower center", bbox_to_anchor=(0.5, 1.0), ncols=len(series))
        ax.grid(axis="y", visible=False)
        return _png(fig)
