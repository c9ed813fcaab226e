"""Eval photos of one shoot, found by how alike they look.

Eval photos carry no person, but a person's seven photos are one shoot: one background, framing,
light and clothes, with the face moved a little and the mask changed. A photo in which MTCNN finds
no face (masked faces are often missed) then takes the median box of its shoot's detected photos,
as a train photo takes its person's: eval crops framed like train crops.

The look of a photo (:func:`maskpipe.images.look`) is a tiny colour thumbnail (the background,
hair and clothes fill most of it; the mask covers a few of its cells). Photos are grouped by
average-linkage clustering of these thumbnails (scikit-learn), cut at ``max_distance`` and
restricted to each photo's nearest neighbours, so a large eval set never needs all pairwise
distances.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np



@dataclass(frozen=True)
class ShootGrouping:
    """How eval photos are grouped into shoots (``crop.shoots``)."""

    max_distance: float = 0.1  # RMS colour difference of two thumbnails, 0..1
    neighbours: int = 10  # nearest photos each photo may be grouped with (a shoot has 7)


def group_shoots(looks: np.ndarray, grouping: ShootGrouping) -> np.ndarray:
    """Shoot number of each photo (``looks``: one row per photo), numbered in order of first
    appearance; photos unlike any other are shoots of their own.

    Deterministic for the same looks in the same order.
    """
    from sklearn.cluster import AgglomerativeClustering
    from sklearn.neighbors import kneighbors_graph

    n = len(looks)
    if n < 2:
        return np.zeros(n, dtype=np.int64)
    # RMS difference = Euclidean / sqrt(dims), so the threshold does not depend on LOOK.
    x = np.asarray(looks, dtype=np.float64) / np.sqrt(looks.shape[1])
    graph = kneighbors_graph(x, n_neighbors=min(grouping.neighbours, n - 1), include_self=False)
    model = AgglomerativeClustering(n_clusters=None, distance_threshold=grouping.max_distance,
                                    linkage="average", connectivity=graph)
    with warnings.catch_warnings():
        # Separate shoots make separate graph components: scikit-learn then links the components
        # itself (and says so); the distance threshold still keeps them apart.
        warnings.filterwarnings("ignore", message=".*connected components.*")
        labels = model.fit_predict(x)
    _, first = np.unique(labels, return_index=True)
    order = np.argsort(np.argsort(first))  # label -> rank of its first photo
    return order[labels]
