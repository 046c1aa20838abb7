"""``maxpool2d``: a sliding window feeding a running maximum.

Lowering: a :class:`~softfloor.intmodel.MaxPool2d` on a ``(C, H, W)`` frame in the stream's
order; the output frame leaves in ``"hwc"`` order, one element per transfer. The window reads
``tap_ept`` taps per cycle (the largest divisor of ``kh*kw`` up to
:data:`~softfloor.hw.ops.sliding.MAX_TAP_LANES`); no fold to choose.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from softfloor.intmodel import CodeType, MaxPool2d
from softfloor.hw.ops import cost
from softfloor.hw.ops.base import HwOp, Lowering
from softfloor.hw.ops.sliding import MAX_TAP_LANES, SlidingWindowOp, divisors
from softfloor.hw.rtl.conv import POOL_LATENCY, MaxPoolUnit

__all__ = ["MaxPool2dOp"]


@dataclass(frozen=True, kw_only=True, eq=False, repr=False)
class MaxPool2dOp(SlidingWindowOp, HwOp):
    """Max-pool over ``layer.kernel`` windows of the ``in_shape`` frame."""
    kind = "pool"
    layer_types = (MaxPool2d,)

    #: Window lanes (divides ``kh*kw``); ``None``: as many as MAX_TAP_LANES allows.
    tap_lanes: int | None = None
    #: Window memory, ``"frame"`` or ``"lines"``; ``None``: as :attr:`window_mode` chooses.
    window: str | None = None

    @classmethod
    def of(cls, pool: MaxPool2d, in_type: CodeType, shape, *, order: str = "hwc",
           in_elements_per_transfer: int = 1,
           tap_elements_per_transfer: int | None = None,
           window: str | None = None) -> "MaxPool2dOp":
        """The op of one max-pool alone on a ``shape`` frame in ``order`` (validated)."""
        return cls(names=(pool.name,), in_type=in_type, in_shape=tuple(shape), in_order=order,
                   layer=pool, in_ept=in_elements_per_transfer,
                   tap_lanes=tap_elements_per_transfer, window=window).check_widths()

    @classmethod
    def lower(cls, lw: Lowering) -> list[HwOp]:
        op = cls.at(lw)
        lw.advance(1, "hwc")
        return [op]

    @property
    def rows(self) -> int:
        return self.in_shape[0]

    @property
    def cols(self) -> int:
        kh, kw = self.layer.kernel
        return kh * kw

    @property
    def raw_output(self) -> None:
        return None                  # the maximum of its input's codes

    @property
    def tap_ept(self) -> int:
        if self.tap_lanes is not None:
            return self.tap_lanes
        return max(d for d in divisors(self.cols) if d <= MAX_TAP_LANES)

    def model(self, x) -> np.ndarray:
        taps = self.taps(x)
        return taps.reshape(taps.shape[0], -1, self.cols).max(axis=2)

    def out_width_ok(self, d: int) -> bool:
        return d == 1

    @property
    def plan_cycles(self) -> int:
        return self.window_out_transfers

    @property
    def cycles(self) -> int:
        return self.window_out_transfers

    @property
    def initiation_interval(self) -> int:
        return self.window_initiation_interval

    @property
    def tail_latency(self) -> int:
        return self.window_tail_latency + POOL_LATENCY

    def estimate(self, device: str = "up5k") -> dict:
        fam = cost.family(device)
        n, xb = self.tap_ept, self.in_type.bits
        win = self.estimate_window(device)
        luts = (n - 1 + (1 if self.cols > n else 0)) * 2 * xb + 2 * xb + 12
        ffs = 3 * xb + 8
        return {"lc": cost.logic_cells(luts, ffs, fam) + win["lc"], "ff": int(ffs) + win["ff"],
                "ram": win["ram"], "dsp": 0}

    def build(self) -> MaxPoolUnit:
        return MaxPoolUnit(self.layer, self.in_type, self.in_shape, order=self.in_order,
                           in_elements_per_transfer=self.in_ept,
                           tap_elements_per_transfer=self.tap_ept, window=self.window_mode)

    def manifest_entry(self, index: int, device: str) -> dict:
        return super().manifest_entry(index, device) | self.window_manifest()

    def plan_entry(self) -> dict:
        return super().plan_entry() | {"window": self.window_mode}

    def apply_plan_entry(self, entry: dict, where: str, device: str = "up5k") -> "MaxPool2dOp":
        return super().apply_plan_entry(entry, where, device).apply_window_entry(entry, where)
