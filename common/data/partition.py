"""Seeded partitioning of a labelled dataset across simulated sites: IID, label skew, size skew."""

from dataclasses import dataclass
from typing import Literal

import numpy as np

__all__ = [
    "PartitionScheme",
    "expand_groups",
    "group_labels",
    "label_histogram",
    "partition_indices",
]

_MAX_TRIES = 1000


@dataclass(frozen=True)
class PartitionScheme:
    """How samples are spread across sites.

    ``iid``, ``dirichlet:ALPHA`` (label skew), ``quantity:ALPHA`` (size skew), or ``site``:
    keep the sites the data already comes from (one cache per hospital).
    """

    kind: Literal["iid", "dirichlet", "quantity", "site"]
    alpha: float | None = None

    @classmethod
    def parse(cls, text: str) -> "PartitionScheme":
        """Parse 'iid', 'site', 'dirichlet:0.5' or 'quantity:1.0'; ValueError naming ``text``."""
        kind, _, alpha_text = text.strip().partition(":")
        match kind:
            case "iid" | "site" if not alpha_text:
                return cls(kind)
            case "dirichlet" | "quantity":
                try:
                    alpha = float(alpha_text)
                except ValueError:
                    alpha = float("nan")
                if np.isfinite(alpha) and alpha > 0:
                    return cls(kind, alpha)
        raise ValueError(
            f"partition {text!r} is not one of 'iid', 'site', 'dirichlet:ALPHA', "
            "'quantity:ALPHA' with ALPHA a positive number"
        )

    def __str__(self) -> str:
        return self.kind if self.alpha is None else f"{self.kind}:{self.alpha:g}"


def partition_indices(
    labels: np.ndarray,
    num_sites: int,
    scheme: PartitionScheme,
    seed: int,
    min_per_site: int = 2,
    sites: np.ndarray | None = None,
    groups: np.ndarray | None = None,
) -> list[np.ndarray]:
    """Disjoint, sorted index arrays, one per site, covering every sample.

    With ``groups`` (a patient id per sample) whole patients are partitioned, never their
    images: each patient counts as one unit labelled by its most frequent label, and
    ``min_per_site`` counts patients.

    ``site``: the samples of site k (``sites == k``); needs ``sites`` with ``num_sites`` values.
    ``dirichlet``: each class is split across sites by proportions drawn from Dir(alpha)
    (Hsu et al., "Measuring the Effects of Non-Identical Data Distribution", arXiv:1909.06335).
    ``quantity``: each site gets ``min_per_site`` samples plus a share of the rest drawn from
    Dir(alpha) over sites; samples are assigned at random, so label mixes stay close to global.
    ``dirichlet`` draws are repeated (a bounded number of times) until every site has
    ``min_per_site`` samples; a ValueError says when that fails.
    """
    labels = np.asarray(labels)
    if num_sites < 1:
        raise ValueError(f"num_sites must be at least 1, got {num_sites}")
    if min_per_site < 0:
        raise ValueError(f"min_per_site must not be negative, got {min_per_site}")
    if scheme.kind == "site":
        return _natural_sites(num_sites, sites)
    if groups is not None:
        inverse, unit_labels = group_labels(labels, groups)
        units = partition_indices(unit_labels, num_sites, scheme, seed, min_per_site)
        return expand_groups(inverse, units)
    if len(labels) < num_sites * min_per_site:
        raise ValueError(
            f"{len(labels)} samples cannot give {num_sites} sites {min_per_site} samples each"
        )
    rng = np.random.default_rng(seed)
    for _ in range(_MAX_TRIES):
        parts = _draw(labels, num_sites, scheme, min_per_site, rng)
        if min(len(p) for p in parts) >= min_per_site:
            return [np.sort(p).astype(np.int64) for p in parts]
    raise ValueError(
        f"partition {scheme} could not give each of {num_sites} sites {min_per_site} samples "
        f"in {_MAX_TRIES} draws; use fewer sites or a larger alpha"
    )


def group_labels(labels: np.ndarray, groups: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(group index 0..G-1 of each sample, most frequent label of each group)."""
    _, inverse = np.unique(np.asarray(groups), return_inverse=True)
    labels = np.asarray(labels, dtype=np.int64)
    counts = np.zeros(
        (int(inverse.max()) + 1 if inverse.size else 0, int(labels.max()) + 1 if labels.size else 1)
    )
    np.add.at(counts, (inverse, labels), 1)
    return inverse.astype(np.int64), counts.argmax(axis=1).astype(np.int64)


def expand_groups(inverse: np.ndarray, group_parts: list[np.ndarray]) -> list[np.ndarray]:
    """Sample indices of each part of groups, given each sample's group index ``inverse``."""
    return [np.flatnonzero(np.isin(inverse, part)).astype(np.int64) for part in group_parts]


def _natural_sites(num_sites: int, sites: np.ndarray | None) -> list[np.ndarray]:
    if sites is None:
        raise ValueError("partition 'site' needs multi-site data (a folder of site caches)")
    found = int(sites.max()) + 1 if sites.size else 0
    if found != num_sites:
        raise ValueError(f"the data comes from {found} sites, but {num_sites} sites were asked for")
    return [np.flatnonzero(sites == k).astype(np.int64) for k in range(num_sites)]


def _split_by_proportions(indices: np.ndarray, proportions: np.ndarray) -> list[np.ndarray]:
    bounds = (np.cumsum(proportions)[:-1] * len(indices)).astype(int)
    return np.split(indices, bounds)


def _draw(
    labels: np.ndarray,
    num_sites: int,
    scheme: PartitionScheme,
    min_per_site: int,
    rng: np.random.Generator,
) -> list[np.ndarray]:
    shuffled = rng.permutation(len(labels))
    if scheme.kind == "iid":
        return list(np.array_split(shuffled, num_sites))
    alpha = float(scheme.alpha or 1.0)
    if scheme.kind == "quantity":
        # Each site gets min_per_site samples first and a Dir(alpha) share of the rest, so
        # one draw always suffices, however small alpha is.
        spare = len(labels) - num_sites * min_per_site
        proportions = rng.dirichlet(np.full(num_sites, alpha))
        bounds = np.minimum(np.floor(np.cumsum(proportions)[:-1] * spare), spare).astype(int)
        sizes = min_per_site + np.diff(np.concatenate([[0], bounds, [spare]]))
        return np.split(shuffled, np.cumsum(sizes)[:-1])
    parts: list[list[np.ndarray]] = [[] for _ in range(num_sites)]
    for cls in np.unique(labels):
        members = rng.permutation(np.flatnonzero(labels == cls))
        for site, chunk in enumerate(
            _split_by_proportions(members, rng.dirichlet(np.full(num_sites, alpha)))
        ):
            parts[site].append(chunk)
    return [np.concatenate(chunks) for chunks in parts]


def label_histogram(
    labels: np.ndarray, indices_per_site: list[np.ndarray], num_classes: int
) -> np.ndarray:
    """Label counts [sites, classes]."""
    labels = np.asarray(labels)
    return np.stack(
        [np.bincount(labels[idx], minlength=num_classes)[:num_classes] for idx in indices_per_site]
    )
