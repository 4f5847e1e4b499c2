"""Multi-label stratified two-way split: a subset holding ``fraction`` of the samples, and the rest.

A frame holds several instrument classes, so "stratify by class" has no single label per sample.
This is the iterative stratification of Sechidis et al. (2011, "On the stratification of
multi-label data"), for two parts, plus two guarantees the paper's use needs (fine-tune the shift
block on 5-60 % of the training frames, pseudo-label the rest):

- sizes are exact: the subset gets ``round(fraction · n)`` samples;
- every class seen in at least two samples ends up in both parts whenever the sizes allow it
  (rare classes first, a part that lacks a class gets its next sample; then a repair pass swaps
  pairs of samples, never removing a class from a part, to fix what the greedy pass missed);
  this is best effort: a pair swap cannot fix every tight case (tiny sets, tiny fractions);
- balance: the greedy pass decides common classes through the rare ones they share frames with,
  so a last pass swaps pairs while that lowers Σ_c (frames of c in subset - fraction · frames of
  c)², again never removing a class from a part.  Per-class counts typically end within ±1 frame
  of ``fraction`` times the total.

The stratification unit is *class presence per sample* (how many frames show the class), not the
object or pixel count.  Ties are broken by a generator seeded with ``seed``: the result is a
deterministic function of (label sets, fraction, seed).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence

import numpy as np

SUBSET, REST = 0, 1


def stratified_split(
    labels: Sequence[frozenset[str] | set[str]], fraction: float, seed: int = 0
) -> list[bool]:
    """For each sample (given by its set of class names): True if it goes to the subset."""
    if not 0.0 <= fraction <= 1.0:
        raise ValueError(f"fraction must be in [0, 1], got {fraction}")
    n = len(labels)
    n_subset = int(round(fraction * n))
    if n_subset == 0 or n_subset == n:
        return [n_subset == n] * n
    rng = np.random.default_rng(seed)
    order = [int(i) for i in rng.permutation(n)]
    tiebreak = rng.random(n)  # per-sample coin used when both parts are equally good

    totals = Counter(c for sample in labels for c in sample)
    want_class = [
        {c: fraction * k for c, k in totals.items()},
        {c: (1.0 - fraction) * k for c, k in totals.items()},
    ]
    want_size = [n_subset, n - n_subset]
    have = [Counter(), Counter()]
    part_of = [-1] * n

    def assign(index: int, part: int) -> None:
        part_of[index] = part
        want_size[part] -= 1
        for c in labels[index]:
            want_class[part][c] -= 1
            have[part][c] += 1

    def best_part(index: int, cls: str | None) -> int:
        def key(part: int) -> tuple:
            if cls is None:
                return (want_size[part] > 0, want_size[part], 0, 0)
            lacks = have[part][cls] == 0 and totals[cls] >= 2
            return (want_size[part] > 0, lacks, want_class[part][cls], want_size[part])

        k_sub, k_rest = key(SUBSET), key(REST)
        if k_sub == k_rest:
            return SUBSET if tiebreak[index] < fraction else REST
        return SUBSET if k_sub > k_rest else REST

    # Greedy pass: always serve the class with the fewest unassigned samples next.
    pending = {c: [i for i in order if c in labels[i]] for c in totals}
    while True:
        open_classes = [(sum(part_of[i] < 0 for i in idx), totals[c], c) for c, idx in pending.items()]
        open_classes = [t for t in open_classes if t[0] > 0]
        if not open_classes:
            break
        _, _, cls = min(open_classes)
        for index in pending.pop(cls):
            if part_of[index] < 0:
                assign(index, best_part(index, cls))
    for index in order:
        if part_of[index] < 0:
            assign(index, best_part(index, None))

    _repair_missing_classes(labels, part_of, have, totals, order)
    _balance(labels, part_of, have, totals, fraction, order)
    return [p == SUBSET for p in part_of]


def _keeps_presence(labels, have: list[Counter], s: int, t: int, s_part: int) -> bool:
    """Would swapping s (in s_part) with t (in the other part) leave every class in as many parts?"""
    other = 1 - s_part
    delta = Counter(labels[t])
    delta.subtract(labels[s])  # change of s_part; the other part changes by -delta
    return all(
        (have[s_part][c] + d > 0) + (have[other][c] - d > 0) >= (have[s_part][c] > 0) + (have[other][c] > 0)
        for c, d in delta.items()
    )


def _apply_swap(labels, part_of: list[int], have: list[Counter], s: int, t: int) -> None:
    s_part = part_of[s]
    for index, src, dst in ((s, s_part, 1 - s_part), (t, 1 - s_part, s_part)):
        part_of[index] = dst
        for c in labels[index]:
            have[src][c] -= 1
            have[dst][c] += 1


def _balance(
    labels: Sequence[frozenset[str] | set[str]],
    part_of: list[int],
    have: list[Counter],
    totals: Counter,
    fraction: float,
    order: list[int],
    max_swaps: int = 1000,
    candidates_per_step: int = 64,
) -> None:
    """Steepest-descent pair swaps on the squared per-class deviation of the subset."""
    classes = sorted(totals)
    if not classes:
        return
    column = {c: k for k, c in enumerate(classes)}
    onehot = np.zeros((len(labels), len(classes)))
    for i, sample in enumerate(labels):
        onehot[i, [column[c] for c in sample]] = 1.0
    target = fraction * np.array([totals[c] for c in classes], dtype=np.float64)
    ranked = np.asarray(order)  # candidate order follows the seeded permutation (tie-breaks)
    for _ in range(max_swaps):
        in_subset = np.asarray(part_of)[ranked] == SUBSET
        sub_idx, rest_idx = ranked[in_subset], ranked[~in_subset]
        ys, yt = onehot[sub_idx], onehot[rest_idx]
        deviation = ys.sum(axis=0) - target
        # Swapping s (subset) and t (rest) changes the subset's counts by δ = y_t - y_s, and the
        # objective by 2·dev·δ + |δ|²; evaluated for all pairs at once.
        change = (
            (-2.0 * ys @ deviation + ys.sum(axis=1))[:, None]
            + (2.0 * yt @ deviation + yt.sum(axis=1))[None, :]
            - 2.0 * ys @ yt.T
        )
        flat = change.ravel()
        k = min(candidates_per_step, flat.size)
        best = np.argpartition(flat, k - 1)[:k]
        best = best[np.argsort(flat[best], kind="stable")]
        for pick in best:
            if flat[pick] > -1e-9:
                return
            s, t = int(sub_idx[pick // len(rest_idx)]), int(rest_idx[pick % len(rest_idx)])
            if _keeps_presence(labels, have, s, t, SUBSET):
                _apply_swap(labels, part_of, have, s, t)
                break
        else:
            return


def _repair_missing_classes(
    labels: Sequence[frozenset[str] | set[str]],
    part_of: list[int],
    have: list[Counter],
    totals: Counter,
    order: list[int],
) -> None:
    """Swap sample pairs so that a class missing from one part appears there, sizes unchanged.

    A swap exchanges ``s`` (from the part that has the class) with ``t`` (from the part that lacks
    it) only if no class ends up in fewer parts than before.  The number of (class, part)
    presences grows with every swap, so the loop ends.
    """
    changed = True
    while changed:
        changed = False
        for cls in sorted(totals, key=lambda c: (totals[c], c)):
            if totals[cls] < 2:
                continue
            for lacking in (SUBSET, REST):
                if have[lacking][cls] > 0:
                    continue
                swap = _find_swap(labels, part_of, have, cls, lacking, order)
                if swap is None:
                    continue
                donor = 1 - lacking
                for index, src, dst in ((swap[0], donor, lacking), (swap[1], lacking, donor)):
                    part_of[index] = dst
                    for c in labels[index]:
                        have[src][c] -= 1
                        have[dst][c] += 1
                changed = True


def _find_swap(
    labels: Sequence[frozenset[str] | set[str]],
    part_of: list[int],
    have: list[Counter],
    cls: str,
    lacking: int,
    order: list[int],
) -> tuple[int, int] | None:
    donor = 1 - lacking
    givers = [i for i in order if part_of[i] == donor and cls in labels[i]]
    takers = [i for i in order if part_of[i] == lacking]
    for s in givers:
        for t in takers:
            delta = Counter(labels[s])
            delta.subtract(labels[t])  # change of the lacking part; the donor changes by -delta
            if all(
                (have[lacking][c] + d > 0) + (have[donor][c] - d > 0)
                >= (have[lacking][c] > 0) + (have[donor][c] > 0)
                for c, d in delta.items()
            ):
                return s, t
    return None
