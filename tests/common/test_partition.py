import numpy as np
import pytest

from common.data.partition import PartitionScheme, label_histogram, partition_indices

LABELS = np.repeat(np.arange(4), 250)  # 1000 samples, 4 balanced classes


def _label_skew(parts: list[np.ndarray]) -> float:
    """Mean total-variation distance of each site's label mix from the global one."""
    hist = label_histogram(LABELS, parts, 4).astype(float)
    site_mix = hist / hist.sum(axis=1, keepdims=True)
    return float(np.mean(0.5 * np.abs(site_mix - 0.25).sum(axis=1)))


@pytest.mark.parametrize("text", ["iid", "dirichlet:0.5", "quantity:1.0"])
def test_partitions_are_disjoint_complete_and_seeded(text: str) -> None:
    scheme = PartitionScheme.parse(text)
    parts = partition_indices(LABELS, 5, scheme, seed=7)
    joined = np.concatenate(parts)
    assert len(joined) == len(LABELS) and len(np.unique(joined)) == len(LABELS)
    assert all(np.all(np.diff(p) > 0) for p in parts)  # sorted, no duplicates
    again = partition_indices(LABELS, 5, scheme, seed=7)
    assert all(np.array_equal(a, b) for a, b in zip(parts, again, strict=True))
    other = partition_indices(LABELS, 5, scheme, seed=8)
    assert not all(np.array_equal(a, b) for a, b in zip(parts, other, strict=True))


def test_iid_sites_have_equal_sizes_and_the_global_label_mix() -> None:
    parts = partition_indices(LABELS, 4, PartitionScheme.parse("iid"), seed=0)
    assert [len(p) for p in parts] == [250, 250, 250, 250]
    assert _label_skew(parts) < 0.1


def test_dirichlet_label_skew_grows_as_alpha_shrinks() -> None:
    skew = {
        alpha: np.mean(
            [
                _label_skew(partition_indices(LABELS, 5, PartitionScheme("dirichlet", alpha), s))
                for s in range(5)
            ]
        )
        for alpha in (0.1, 1.0, 100.0)
    }
    assert skew[0.1] > 0.45  # sites dominated by one or two classes
    assert skew[100.0] < 0.08  # close to IID
    assert skew[0.1] > skew[1.0] > skew[100.0]


def test_quantity_skew_changes_sizes_not_label_mix() -> None:
    parts = partition_indices(LABELS, 5, PartitionScheme("quantity", 0.5), seed=3)
    sizes = sorted(len(p) for p in parts)
    assert sizes[-1] > 3 * sizes[0]
    big = [p for p in parts if len(p) >= 100]
    assert big and _label_skew(big) < 0.1


def test_every_site_gets_the_minimum() -> None:
    for seed in range(10):
        parts = partition_indices(LABELS, 10, PartitionScheme("dirichlet", 0.1), seed, 5)
        assert min(len(p) for p in parts) >= 5


def test_impossible_requests_fail_clearly() -> None:
    with pytest.raises(ValueError, match="cannot give 600 sites"):
        partition_indices(LABELS, 600, PartitionScheme("iid"), seed=0)
    with pytest.raises(ValueError, match="num_sites"):
        partition_indices(LABELS, 0, PartitionScheme("iid"), seed=0)


@pytest.mark.parametrize(
    "text", ["dirichlet", "dirichlet:0", "dirichlet:-1", "quantity:x", "zipf:1"]
)
def test_bad_scheme_text_is_named_in_the_error(text: str) -> None:
    with pytest.raises(ValueError, match=repr(text).replace("[", r"\[")):
        PartitionScheme.parse(text)


def test_scheme_text_round_trips() -> None:
    for text in ("iid", "dirichlet:0.5", "quantity:2"):
        assert str(PartitionScheme.parse(text)) == text


def test_quantity_skew_gives_every_site_the_minimum_however_small_alpha() -> None:
    labels = np.repeat(np.arange(2), 100)
    for seed in range(20):
        parts = partition_indices(labels, 20, PartitionScheme("quantity", 0.05), seed, 3)
        assert min(len(p) for p in parts) >= 3
        assert sum(len(p) for p in parts) == 200


def test_label_histogram_counts_per_site() -> None:
    labels = np.array([0, 0, 1, 2, 2, 2])
    hist = label_histogram(labels, [np.array([0, 2]), np.array([1, 3, 4, 5])], 4)
    assert hist.tolist() == [[1, 1, 0, 0], [1, 0, 3, 0]]


def test_hopeless_label_skew_fails_with_advice() -> None:
    labels = np.repeat(np.arange(2), 20)  # 2 classes cannot fill 10 sites at alpha 0.01
    with pytest.raises(ValueError, match="dirichlet:0.01 could not give each of 10 sites 3"):
        partition_indices(labels, 10, PartitionScheme("dirichlet", 0.01), seed=0, min_per_site=3)
