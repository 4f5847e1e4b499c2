"""What one evaluation computes (``EvalConfig``), and the checks of its knobs against a dataset."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from trainer.datasets.base import Dataset
from trainer.eval.protocol import WILCOXON
from trainer.eval.results import OBJECT_KEY_SEPARATOR, TableSpec, object_key
from trainer.shift.candidates import GridSpec

MODES = ("table1", "table2", "both")
TABLE2_POINTS = (2, 3, 5)


def table_specs(mode: str, n_points: int = 1, table2_points: Sequence[int] = TABLE2_POINTS) -> list[TableSpec]:
    if mode not in MODES:
        raise ValueError(f"unknown mode {mode!r}; expected one of {MODES}")
    if n_points < 1 or any(n < 1 for n in table2_points):
        raise ValueError("point counts must be >= 1")
    specs = []
    if mode in ("table1", "both"):
        word = "point" if n_points == 1 else "points"
        specs.append(TableSpec("table1", n_points, f"Table 1: {n_points} random positive {word} per object"))
    if mode in ("table2", "both"):
        for n in table2_points:
            specs.append(TableSpec(f"table2_{n}pt", n, f"Table 2: {n} random positive points per object"))
    return specs


@dataclass(frozen=True)
class EvalConfig:
    """What one evaluation computes and how; the defaults are the paper's Table 1 protocol (§3.3).

    Invalid seeds, modes or point counts raise ValueError here, before any image is encoded.
    """

    seeds: int | Sequence[int] = 10  # a count (seeds 0..N-1) or explicit seeds
    n_points: int = 1  # random positive points per object in Table 1
    mode: str = "table1"  # "table1", "table2" or "both" (one pass, one encode per image)
    table2_points: Sequence[int] = TABLE2_POINTS  # point counts of Table 2 (no shift vs shift first)
    heatmaps: int | Sequence[str] = 0  # the first N objects, or object keys / sample ids (``select_heatmaps``)
    heatmap_grid: GridSpec | None = None  # grid of the heatmaps; None: about 256 points per object
    test: str = WILCOXON  # paired test of each method vs the baseline
    batch_size: int = 64  # prompts per decoder call
    progress: bool = True

    def __post_init__(self) -> None:
        seeds = list(range(self.seeds)) if isinstance(self.seeds, int) else [int(s) for s in self.seeds]
        if not seeds or len(set(seeds)) != len(seeds):
            raise ValueError(f"need at least one seed and no duplicates, got {self.seeds!r}")
        # Lists become tuples: a frozen config should not change through a list the caller still holds.
        if not isinstance(self.seeds, int):
            object.__setattr__(self, "seeds", tuple(seeds))
        if not isinstance(self.heatmaps, int):
            object.__setattr__(self, "heatmaps", tuple(self.heatmaps))
        object.__setattr__(self, "table2_points", tuple(self.table2_points))
        self.table_specs()  # raises on an unknown mode or a point count < 1

    @property
    def seed_list(self) -> list[int]:
        return list(range(self.seeds)) if isinstance(self.seeds, int) else list(self.seeds)

    def table_specs(self) -> list[TableSpec]:
        return table_specs(self.mode, self.n_points, self.table2_points)

    def grid(self) -> GridSpec:
        return self.heatmap_grid or GridSpec(target_points=256)


def select_heatmaps(dataset: Dataset, heatmaps: int | Sequence[str]) -> set[str]:
    """``heatmaps``: the first N objects in dataset order, or object keys / sample ids."""
    if isinstance(heatmaps, int):
        keys = [object_key(s.sample_id, o.object_id) for s in dataset for o in s.objects]
        return set(keys[: max(0, heatmaps)])
    wanted = set(heatmaps)
    chosen = {
        object_key(s.sample_id, o.object_id)
        for s in dataset
        for o in s.objects
        if object_key(s.sample_id, o.object_id) in wanted or s.sample_id in wanted
    }
    found_samples = {s.sample_id for s in dataset}
    unknown = [w for w in wanted if w not in chosen and w not in found_samples]
    if unknown:
        raise ValueError(f"heatmap objects not in the dataset: {sorted(unknown)[:5]} "
                         f"(use SAMPLE_ID{OBJECT_KEY_SEPARATOR}OBJECT_ID or a sample id)")
    return chosen

