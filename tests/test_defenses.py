"""Defences against hand-made feature sets whose correct removals are known by hand,
against brute-force numpy references, and against reordering of their input."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from conftest import example_budget
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from poisonprobe.defenses import (
    DefenseInput,
    DefenseSpec,
    apply_defense,
    defense_names,
    parse_defense,
)
from poisonprobe.defenses import filters as filters_mod
from poisonprobe.errors import ConfigError, DataError
from poisonprobe.head.config import VictimConfig

VICTIM = VictimConfig()


def make_input(z, y, in_box=None, n_classes: int | None = None, seed: int = 0) -> DefenseInput:
    z = torch.as_tensor(np.asarray(z, dtype=np.float64))
    y = torch.as_tensor(np.asarray(y, dtype=np.int64))
    box = torch.ones(len(y), dtype=torch.bool) if in_box is None else torch.as_tensor(in_box)
    k = int(y.max()) + 1 if n_classes is None else n_classes
    return DefenseInput(z, y, box, k, VICTIM, seed)


def removed(spec, inp: DefenseInput, fraction: float = 0.1) -> set[int]:
    keep = apply_defense(parse_defense(spec), inp, default_fraction=fraction)
    assert keep.dtype == torch.bool and keep.shape == (len(inp),)
    return set(torch.nonzero(~keep).squeeze(1).tolist())


def per_class_removed(spec, inp: DefenseInput, fraction: float) -> list[int]:
    keep = apply_defense(parse_defense(spec), inp, default_fraction=fraction)
    return [int((~keep & (inp.y == c)).sum()) for c in range(inp.n_classes)]


# ----------------------------------------------------------------------------- registry


def test_registry_has_every_defence():
    names = defense_names()
    assert set(names) == {"none", "input-box", "sphere", "slab", "knn", "loss"}
    assert all(desc for desc in names.values())


# ----------------------------------------------------------------------------- hand-made sets

# class 0 is centred at the origin: two points far along the y-axis (perpendicular to the
# centroid line), two moderately far along the x-axis (the centroid line), two near the
# centre. Class 1 is a single point at (10, 0): round(1/3 * 1) = 0 removals there.
CROSS_Z = [(0, 4), (0, -4), (3, 0), (-3, 0), (0, 1), (0, -1), (10, 0)]
CROSS_Y = [0, 0, 0, 0, 0, 0, 1]


def test_sphere_removes_the_farthest_points_of_each_class():
    inp = make_input(CROSS_Z, CROSS_Y)
    # L2 distances to (0, 0): 4, 4, 3, 3, 1, 1 -> the two y-axis points go
    assert removed("sphere", inp, 1 / 3) == {0, 1}
    # a spec's fraction overrides the default; round(0.2 * 6) = 1 goes, round(0.2 * 1) = 0
    assert removed({"name": "sphere", "fraction": 0.2}, inp, 0.9) in ({0}, {1})


def test_slab_removes_the_points_farthest_along_the_centroid_line():
    inp = make_input(CROSS_Z, CROSS_Y)
    # line from (0,0) to (10,0) is the x-axis: |x| = 0, 0, 3, 3, 0, 0 -> the x-axis points go,
    # although the sphere ranks them below the y-axis points
    assert removed("slab", inp, 1 / 3) == {2, 3}


def test_slab_direction_rest_vs_nearest():
    # class 1 at (10, 0) is nearest to class 0; class 2 far up the y-axis at (0, 100)
    z = [(0, 4), (0, -4), (3, 0), (-3, 0), (10, 0), (0, 100)]
    inp = make_input(z, [0, 0, 0, 0, 1, 2])
    # nearest: the x-axis -> (±3, 0) go; rest: towards (5, 50), mostly the y-axis ->
    # |proj| of (0, ±4) is 4 * 50 / |(5, 50)| = 3.98 > 3 * 5 / |(5, 50)| = 0.30
    # fraction 0.49: round(1.96) = 2 of class 0, round(0.49) = 0 of the singletons
    assert removed({"name": "slab", "direction": "nearest"}, inp, 0.49) == {2, 3}
    assert removed({"name": "slab", "direction": "rest"}, inp, 0.49) == {0, 1}


def test_sphere_median_centroid_resists_a_poison_cluster():
    # five clean points around the origin and five identical poisons at (3, 3), all class 0
    clean = [(0, 0), (1, 0), (0, 1), (-1, 0), (0, -1)]
    z = clean + [(3, 3)] * 5 + [(10, 10)]
    inp = make_input(z, [0] * 10 + [1])
    # mean centre (1.5, 1.5): (-1,0) and (0,-1) are at 2.92, the poisons at 2.12
    assert removed("sphere", inp, 0.2) == {3, 4}
    # coordinate-wise (lower) median (1, 1): poisons at 2.83, the farthest clean at 2.24
    got = removed({"name": "sphere", "centroid": "median"}, inp, 0.2)
    assert len(got) == 2 and got <= set(range(5, 10))


def test_knn_removes_a_mislabelled_point_inside_the_other_cluster():
    class0 = [(0, 0), (1, 0), (0, 1), (1, 1)]
    class1 = [(10, 0), (11, 0), (10, 1), (11, 1), (10.5, 0.5), (10, 2), (11, 2)]
    z = class0 + class1 + [(0.5, 0.5)]  # labelled 1, sits in the middle of class 0
    y = [0] * 4 + [1] * 7 + [1]
    inp = make_input(z, y)
    # fraction 0.12: class 0 (4 points) -> 0 removals, class 1 (8 points) -> 1 removal;
    # the intruder's 3 nearest neighbours are all class 0 (score 1), every other class-1
    # point has only class-1 neighbours (score 0)
    assert removed({"name": "knn", "k": 3}, inp, 0.12) == {11}


def test_loss_removes_mislabelled_points():
    gen = torch.Generator().manual_seed(0)
    a = torch.randn(20, 2, generator=gen, dtype=torch.float64) * 0.5 + torch.tensor([-3.0, 0])
    b = torch.randn(20, 2, generator=gen, dtype=torch.float64) * 0.5 + torch.tensor([3.0, 0])
    flipped = torch.tensor([[-3.5, 0.2], [-3.0, -0.4], [-2.6, 0.1]], dtype=torch.float64)
    z = torch.cat([a, b, flipped])
    y = torch.tensor([0] * 20 + [1] * 20 + [1] * 3)
    inp = make_input(z, y)
    bad = {40, 41, 42}
    # globally: round(0.07 * 43) = 3 removals, exactly the flipped points
    assert removed({"name": "loss", "per_class": False}, inp, 0.07) == bad
    # per class: class 1 has 23 points -> round(0.13 * 23) = 3, again the flipped ones
    got = removed("loss", inp, 0.13)
    assert got & set(range(20, 43)) == bad


def test_input_box_removes_exactly_the_invalid_images():
    gen = torch.Generator().manual_seed(1)
    z = torch.randn(12, 3, generator=gen)
    box = torch.tensor([True] * 9 + [False] * 3)
    inp = DefenseInput(z, torch.arange(12) % 2, box, 2, VICTIM, 0)
    for fraction in (0.0, 0.5, 0.99):  # fraction is not used
        assert removed("input-box", inp, fraction) == {9, 10, 11}
    assert removed("none", inp, 0.5) == set()


# ----------------------------------------------------------------------------- references


def _ref_remove(score: np.ndarray, y: np.ndarray, fraction: float) -> set[int]:
    out: set[int] = set()
    for c in np.unique(y):
        idx = np.flatnonzero(y == c)
        m = int(math.floor(fraction * len(idx) + 0.5))
        out |= set(idx[np.argsort(-score[idx], kind="stable")[:m]].tolist())
    return out


def _random_set(n: int = 90, d: int = 6, k: int = 3, seed: int = 0):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, k, n)
    z = rng.normal(size=(n, d)) + 2.0 * np.eye(k, d)[y]
    return z, y


def test_sphere_and_slab_match_numpy_references():
    z, y = _random_set()
    inp = make_input(z, y)
    mu = {c: z[y == c].mean(0) for c in range(3)}
    sphere = np.array([np.linalg.norm(z[i] - mu[y[i]]) for i in range(len(y))])
    assert removed("sphere", inp, 0.2) == _ref_remove(sphere, y, 0.2)
    slab = np.empty(len(y))
    for i in range(len(y)):
        line = mu[y[i]] - z[y != y[i]].mean(0)
        slab[i] = abs((z[i] - mu[y[i]]) @ line) / np.linalg.norm(line)
    assert removed("slab", inp, 0.2) == _ref_remove(slab, y, 0.2)


def test_knn_matches_numpy_reference():
    z, y = _random_set(seed=3)
    inp = make_input(z, y)
    k = 5
    score = np.empty(len(y))
    for i in range(len(y)):
        dist = np.linalg.norm(z - z[i], axis=1)
        dist[i] = np.inf
        nn = np.argsort(dist)[:k]
        # disagreement first, mean neighbour distance breaks its ties (scaled below 1/k)
        score[i] = np.mean(y[nn] != y[i]) + 1e-6 * dist[nn].mean()
    assert removed("knn", inp, 0.15) == _ref_remove(score, y, 0.15)


# ----------------------------------------------------------------------------- fraction semantics


@pytest.mark.parametrize("name", ["sphere", "slab", "knn", "loss"])
def test_exact_per_class_counts(name):
    rng = np.random.default_rng(7)
    y = np.repeat([0, 1, 2], [10, 20, 31])
    z = rng.normal(size=(len(y), 4)) + np.eye(3, 4)[y]
    inp = make_input(z, y)
    assert per_class_removed(name, inp, 0.1) == [1, 2, 3]  # 3.1 -> 3
    assert per_class_removed(name, inp, 0.25) == [3, 5, 8]  # 2.5 -> 3 (halves up), 7.75 -> 8
    assert per_class_removed(name, inp, 0.0) == [0, 0, 0]
    assert len(removed({"name": name, "per_class": False}, inp, 0.1)) == 6  # round(6.1)
    # a spec's own fraction overrides the runner's default (eps)
    assert per_class_removed({"name": name, "fraction": 0.25}, inp, 0.1) == [3, 5, 8]


def test_default_fraction_is_validated():
    inp = make_input(*_random_set(n=20))
    with pytest.raises(ConfigError, match="fraction"):
        apply_defense(parse_defense("sphere"), inp, default_fraction=1.0)
    # defences that take no fraction ignore it
    assert apply_defense(parse_defense("input-box"), inp, default_fraction=1.0).all()


# ----------------------------------------------------------------------------- composition


def test_composition_applies_in_order_on_survivors_and_removes_the_union():
    z, y = _random_set(n=60, seed=5)
    box = torch.tensor(np.random.default_rng(5).random(60) > 0.2)
    inp = make_input(z, y, in_box=box)
    keep = apply_defense(parse_defense(["input-box", "sphere"]), inp, default_fraction=0.2)
    # by hand: drop invalid points, then the sphere (its fraction of the survivors) on the rest
    survivors = torch.nonzero(box).squeeze(1)
    sub = DefenseInput(inp.z[survivors], inp.y[survivors], inp.in_box[survivors], 3, VICTIM, 0)
    sub_keep = apply_defense(parse_defense("sphere"), sub, default_fraction=0.2)
    expected = torch.zeros(60, dtype=torch.bool)
    expected[survivors[sub_keep]] = True
    assert torch.equal(keep, expected)
    assert not (keep & ~box).any()
    n_sphere = sum(
        int(math.floor(0.2 * int((inp.y[survivors] == c).sum()) + 0.5)) for c in range(3)
    )
    assert int((~keep).sum()) == int((~box).sum()) + n_sphere
    # the "+" string form and a list are the same spec
    assert parse_defense("input-box+sphere") == parse_defense(["input-box", "sphere"])


def test_composition_of_two_filters_is_a_union():
    z, y = _random_set(n=80, seed=11)
    inp = make_input(z, y)
    both = removed(["sphere", {"name": "knn", "k": 3}], inp, 0.1)
    first = removed("sphere", inp, 0.1)
    assert first < both
    assert len(both) == len(first) + sum(
        int(
            math.floor(0.1 * int(((inp.y == c).sum()) - len([i for i in first if y[i] == c])) + 0.5)
        )
        for c in range(3)
    )


# ----------------------------------------------------------------------------- order independence

SPECS = [
    "sphere",
    {"name": "sphere", "centroid": "median"},
    "slab",
    {"name": "slab", "direction": "nearest"},
    {"name": "knn", "k": 3},
    "loss",
    "input-box",
    ["input-box", "knn", "sphere"],
]


@st.composite
def feature_sets(draw):
    n = draw(st.integers(2, 24))
    d = draw(st.integers(1, 3))
    n_classes = draw(st.integers(1, 3))
    # a coarse grid: ties in scores and exact duplicate points are common
    values = st.integers(-3, 3).map(float) | st.floats(-5, 5, allow_subnormal=False)
    z = draw(st.lists(st.lists(values, min_size=d, max_size=d), min_size=n, max_size=n))
    y = draw(st.lists(st.integers(0, n_classes - 1), min_size=n, max_size=n))
    box = draw(st.lists(st.booleans(), min_size=n, max_size=n))
    perm = draw(st.permutations(range(n)))
    spec = draw(st.sampled_from(SPECS))
    fraction = draw(st.sampled_from([0.1, 0.25, 0.5]))
    return np.array(z), np.array(y), np.array(box), n_classes, list(perm), spec, fraction


def _rows(inp: DefenseInput, mask: torch.Tensor) -> list[tuple]:
    return sorted(
        (*inp.z[i].tolist(), int(inp.y[i]), bool(inp.in_box[i]))
        for i in torch.nonzero(mask).squeeze(1).tolist()
    )


@settings(
    max_examples=example_budget(80), deadline=None, suppress_health_check=[HealthCheck.too_slow]
)
@given(feature_sets())
def test_shuffling_the_input_gives_the_same_removed_set(case):
    z, y, box, n_classes, perm, spec, fraction = case
    inp = make_input(z, y, in_box=torch.tensor(box), n_classes=n_classes)
    p = torch.tensor(perm)
    shuffled = DefenseInput(inp.z[p], inp.y[p], inp.in_box[p], n_classes, VICTIM, 0)
    keep = apply_defense(parse_defense(spec), inp, fraction)
    keep_shuffled = apply_defense(parse_defense(spec), shuffled, fraction)
    mapped_back = torch.empty_like(keep_shuffled)
    mapped_back[p] = keep_shuffled
    rows = {
        (*r.tolist(), int(c), bool(b)) for r, c, b in zip(inp.z, inp.y, inp.in_box, strict=True)
    }
    if len(rows) == len(y):  # distinct points: the very same indices
        assert torch.equal(keep, mapped_back)
    else:  # exact duplicates are interchangeable: the same points by value
        assert _rows(inp, ~keep) == _rows(shuffled, ~keep_shuffled)


# ----------------------------------------------------------------------------- parsing


def test_parse_labels_and_equality():
    assert parse_defense("none").label == "none"
    assert parse_defense(["none"]) == parse_defense("none") == DefenseSpec()
    assert parse_defense("sphere").label == "sphere"
    assert parse_defense(["sphere", "knn"]).label == "sphere+knn"
    assert parse_defense({"name": "knn", "k": 10}).label == "knn(k=10)"
    assert parse_defense({"name": "knn", "fraction": 0.1, "k": 5}).label == "knn(fraction=0.1)"
    assert parse_defense({"name": "knn", "params": {"k": 10}}) == parse_defense(
        {"name": "knn", "k": 10}
    )
    # an explicit default is the same defence (same label, same result rows)
    assert parse_defense({"name": "knn", "k": 5}) == parse_defense("knn")
    specs = {parse_defense("sphere"), parse_defense("sphere"), parse_defense("slab")}
    assert len(specs) == 2


@pytest.mark.parametrize(
    ("spec", "needle"),
    [
        ("no-such", "unknown defence 'no-such'; choose one of: input-box, knn, loss, none"),
        ({"name": "knn", "fraction": 1.0}, "outside [0, 1)"),
        ({"name": "knn", "fraction": -0.1}, "outside [0, 1)"),
        ({"name": "knn", "fraction": float("nan")}, "outside [0, 1)"),
        ({"name": "knn", "fraction": "0.1"}, "not a number"),
        ({"name": "knn", "fraction": True}, "not a number"),
        ({"name": "knn", "q": 3}, "no parameter 'q'; allowed: fraction, k, per_class"),
        ({"name": "knn", "k": 0}, "k=0"),
        ({"name": "knn", "k": 2.5}, "must be a int"),
        ({"name": "sphere", "centroid": "mode"}, "centroid='mode'"),
        ({"name": "slab", "direction": "up"}, "direction='up'"),
        ({"name": "input-box", "fraction": 0.1}, "takes no fraction"),
        ({"fraction": 0.1}, "no 'name'"),
        ({"name": 3}, "must be a string"),
        ([], "empty defence list"),
        ([["sphere"]], "inside a composition"),
        (None, "must be a name"),
        (0.1, "must be a name"),
        ("sphere+", "unknown defence ''"),
    ],
)
def test_parse_errors_are_one_line(spec, needle):
    with pytest.raises(ConfigError) as info:
        parse_defense(spec)
    msg = str(info.value)
    assert "\n" not in msg and needle in msg


def test_bad_inputs_raise_data_errors():
    inp = make_input([[0.0, float("nan")], [1.0, 1.0]], [0, 1])
    with pytest.raises(DataError, match="NaN"):
        apply_defense(parse_defense("sphere"), inp, 0.1)
    inp = make_input([[0.0, 0.0], [1.0, 1.0]], [0, 5], n_classes=2)
    with pytest.raises(DataError, match="labels"):
        apply_defense(parse_defense("sphere"), inp, 0.1)


# ----------------------------------------------------------------------------- scale


def test_knn_scales_without_a_full_distance_matrix(monkeypatch):
    n, d = 20_000, 128
    gen = torch.Generator().manual_seed(0)
    z = torch.rand(n, d, generator=gen)
    y = torch.randint(0, 10, (n,), generator=gen)
    blocks: list[tuple[int, int]] = []
    inner = filters_mod._block_sq_dists

    def spy(a, b, b_sq):
        out = inner(a, b, b_sq)
        blocks.append(tuple(out.shape))
        return out

    monkeypatch.setattr(filters_mod, "_block_sq_dists", spy)
    inp = DefenseInput(z, y, torch.ones(n, dtype=torch.bool), 10, VICTIM, 0)
    keep = apply_defense(parse_defense("knn"), inp, default_fraction=0.1)
    assert sum(r for r, _ in blocks) == n  # every point was scored, block by block
    assert max(r * c for r, c in blocks) <= filters_mod.KNN_BLOCK_ELEMENTS < n * n
    counts = torch.bincount(y, minlength=10)
    expected = sum(int(math.floor(0.1 * int(c) + 0.5)) for c in counts)
    assert int((~keep).sum()) == expected
