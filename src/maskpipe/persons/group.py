"""Eval photos grouped into persons by their shoot and their face.

A person's seven eval photos are one shoot: one background, framing, light and clothes, with the
face moved a little and the mask changed. A photo's *look* is a tiny colour thumbnail of the
whole photo (background, hair and clothes fill most of it; the mask covers a few cells); its
*face* is a small thumbnail of the upper half of its face crop (eyes, brows, forehead, hair: the
part a mask never covers). Both are scaled so that a Euclidean distance is an RMS difference in
0..1 (the look is :func:`maskpipe.images.look`, the one the crop step groups shoots by),
weighted and concatenated.

Photos are clustered by average linkage (scikit-learn) restricted to each photo's nearest
neighbours, so a large eval set never needs all pairwise distances. The known shape of a person
is then used on the tree: a group is a largest subtree of at most ``size`` photos merged below
``max_distance``; small groups left over are joined when together they still fit one person and
are close enough.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np
from PIL import Image

#: Thumbnail (width, height) of the upper half of a face crop.
FACE = (8, 4)


@dataclass(frozen=True)
class Grouping:
    """How eval photos are grouped (the ``persons`` config section)."""

    look_weight: float = 1.0
    face_weight: float = 0.5
    max_distance: float = 0.12  #: average-linkage distance above which photos are not one person
    join_distance: float = 0.2  #: small groups closer than this are joined if they fit one person
    size: int = 7  #: photos per person
    neighbours: int = 15  #: nearest photos each photo may be linked with


def face(crop: np.ndarray) -> np.ndarray:
    """A face crop's upper half (H x W x 3 uint8) as a ``FACE`` colour thumbnail in 0..1."""
    top = Image.fromarray(np.ascontiguousarray(crop[: crop.shape[0] // 2]))
    thumb = top.resize(FACE, Image.Resampling.BOX)
    return np.asarray(thumb, dtype=np.float32).reshape(-1) / 255.0


def features(looks: np.ndarray, faces: np.ndarray, grouping: Grouping) -> np.ndarray:
    """One row per photo whose Euclidean distances are the weighted RMS differences."""
    parts = [np.asarray(looks, np.float64) * grouping.look_weight / np.sqrt(looks.shape[1])]
    if grouping.face_weight and faces is not None and len(faces):
        parts.append(np.asarray(faces, np.float64) * grouping.face_weight / np.sqrt(faces.shape[1]))
    return np.concatenate(parts, axis=1)


def _tree(x: np.ndarray, neighbours: int) -> tuple[np.ndarray, np.ndarray]:
    """Average-linkage merge tree (children, heights) over the k-nearest-neighbour graph."""
    from sklearn.cluster import AgglomerativeClustering
    from sklearn.neighbors import kneighbors_graph

    graph = kneighbors_graph(x, n_neighbors=min(neighbours, len(x) - 1), include_self=False)
    model = AgglomerativeClustering(n_clusters=1, linkage="average", connectivity=graph,
                                    compute_full_tree=True, compute_distances=True)
    with warnings.catch_warnings():
        # Separate shoots make separate graph components: scikit-learn then links them itself.
        warnings.filterwarnings("ignore", message=".*connected components.*")
        model.fit(x)
    return model.children_, model.distances_


def _cut(children: np.ndarray, heights: np.ndarray, n: int, size: int, max_distance: float) -> np.ndarray:
    """Largest subtrees of at most ``size`` leaves merged below ``max_distance``."""
    counts = np.ones(n + len(children), dtype=np.int64)
    for i, (a, b) in enumerate(children):
        counts[n + i] = counts[a] + counts[b]
    labels = np.full(n, -1, dtype=np.int64)
    stack, group = [n + len(children) - 1], 0
    while stack:
        node = stack.pop()
        if node < n or (counts[node] <= size and heights[node - n] <= max_distance):
            leaves, todo = [], [node]
            while todo:  # the subtree's leaves
                m = todo.pop()
                if m < n:
                    leaves.append(m)
                else:
                    todo.extend(children[m - n])
            labels[leaves] = group
            group += 1
        else:
            stack.extend(children[node - n])
    return labels


def _join_small(x: np.ndarray, labels: np.ndarray, size: int, join_distance: float) -> np.ndarray:
    """Join groups smaller than ``size`` pairwise, closest first by average distance, while the
    union fits one person and the distance is under ``join_distance``.

    The distances between small groups are computed once; a join updates them by the
    Lance-Williams rule of average linkage, so the loop never revisits photos.
    """
    from scipy.spatial.distance import cdist

    labels = labels.copy()
    ids, counts = np.unique(labels, return_counts=True)
    small = ids[counts < size]
    if len(small) < 2:
        return labels
    rows = [np.flatnonzero(labels == g) for g in small]
    members = np.concatenate(rows)
    d = cdist(x[members], x[members])
    starts = np.cumsum([0] + [len(r) for r in rows])
    n = np.array([len(r) for r in rows], dtype=np.float64)
    dist = np.array([[d[starts[i]:starts[i + 1], starts[j]:starts[j + 1]].mean() for j in range(len(rows))]
                     for i in range(len(rows))])
    np.fill_diagonal(dist, np.inf)
    while True:
        fits = n[:, None] + n[None, :] <= size
        masked = np.where(fits, dist, np.inf)
        i, j = np.unravel_index(np.argmin(masked), masked.shape)
        if not masked[i, j] < join_distance:
            return labels
        labels[labels == small[j]] = small[i]
        dist[i] = dist[:, i] = (n[i] * dist[i] + n[j] * dist[j]) / (n[i] + n[j])
        dist[i, i] = np.inf
        dist[j] = dist[:, j] = np.inf
        n[i], n[j] = n[i] + n[j], size + 1  # j is gone: it fits nothing any more


def confidence(x: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """Per photo, how sure its grouping is, 0..1: 1 - (mean distance to its own group) / (distance
    to the nearest photo of another group); 0 for a photo alone."""
    from sklearn.neighbors import NearestNeighbors

    n = len(x)
    out = np.zeros(n)
    k = min(n, 32)
    dist, idx = NearestNeighbors(n_neighbors=k).fit(x).kneighbors(x)
    for g in np.unique(labels):
        rows = np.flatnonzero(labels == g)
        if len(rows) < 2:
            continue
        inner = np.sqrt(((x[rows, None] - x[None, rows]) ** 2).sum(-1)).sum(1) / (len(rows) - 1)
        for r, d_in in zip(rows, inner, strict=True):
            other = dist[r][labels[idx[r]] != g]
            d_out = other[0] if len(other) else np.inf
            out[r] = 0.0 if d_out <= 0 else max(0.0, 1.0 - d_in / d_out)
    return out


def group_persons(looks: np.ndarray, faces: np.ndarray | None, grouping: Grouping) -> tuple[np.ndarray, np.ndarray]:
    """Group number (in order of first photo) and confidence of each photo.

    Deterministic for the same features in the same order.
    """
    n = len(looks)
    if n < 2:
        return np.zeros(n, dtype=np.int64), np.zeros(n)
    x = features(looks, faces, grouping)
    children, heights = _tree(x, grouping.neighbours)
    labels = _cut(children, heights, n, grouping.size, grouping.max_distance)
    labels = _join_small(x, labels, grouping.size, grouping.join_distance)
    _, first = np.unique(labels, return_index=True)
    rank = np.empty(len(first), dtype=np.int64)
    rank[np.argsort(first)] = np.arange(len(first))
    labels = rank[np.searchsorted(np.unique(labels), labels)]
    return labels, confidence(x, labels)
