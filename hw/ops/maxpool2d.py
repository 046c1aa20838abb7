"""``maxpool2d``: a sliding window feeding a running maximum.

Lowering: a :class:`~softfloor.intmodel.MaxPool2d` on a ``(C, H, W)`` frame in the stream's
order; the output frame leaves in ``"hwc"`` order, one element per transfer. The window reads
``tap_ept`` taps per cycle (the largest divisor of ``kh*kw`` up to
:data:`~softfloor.hw.ops.conv2d.MAX_TAP_LANES`); no fold to choose.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from softfloor.intmodel import CodeType, MaxPool2d
from softfloor.hw.ops import cost
from softfloor.hw.ops.base import HwOp, Lowering
from softfloor.hw.ops.conv2d import MAX_TAP_LANES, divisors
from softfloor.hw.rtl.conv import POOL_LATENCY, MaxPoolUnit
from softfloor.hw.rtl.window import (RELEASE_DELAY, WINDOW_LATENCY, im2col, release_hazard,
                                     window_taps)

__all__ = ["MaxPool2dOp"]


@dataclass(frozen=True, kw_only=True, eq=False, repr=False)
class MaxPool2dOp(HwOp):
    """Max-pool over ``layer.kernel`` windows of the ``in_shape`` frame."""
    kind = "pool"
    layer_types = (MaxPool2d,)

    layer: MaxPool2d
    #: Window lanes (divides ``kh*kw``); ``None``: as many as MAX_TAP_LANES allows.
    tap_lanes: int | None = None

    @classmethod
    def of(cls, pool: MaxPool2d, in_type: CodeType, shape, *, order: str = "hwc",
           in_elements_per_transfer: int = 1,
           tap_elements_per_transfer: int | None = None) -> "MaxPool2dOp":
        """The op of one max-pool alone on a ``shape`` frame in ``order`` (validated)."""
        return cls(names=(pool.name,), in_type=in_type, in_shape=tuple(shape), in_order=order,
                   layer=pool, in_ept=in_elements_per_transfer,
                   tap_lanes=tap_elements_per_transfer).check_widths()

    @classmethod
    def lower(cls, lw: Lowering) -> list[HwOp]:
        op = cls(names=(lw.layer.name,), in_type=lw.in_type, in_shape=lw.shape,
                 in_order=lw.order, layer=lw.layer)
        lw.advance(1, "hwc")
        return [op]

    @property
    def out_type(self) -> CodeType:
        return self.layer.out_type(self.in_type)

    @property
    def rows(self) -> int:
        return self.in_shape[0]

    @property
    def cols(self) -> int:
        kh, kw = self.layer.kernel
        return kh * kw

    @property
    def out_hw(self) -> tuple[int, int]:
        L = self.layer
        return window_taps(self.in_shape, L.kernel, L.stride, (0, 0, 0, 0))[0]

    @property
    def pixels(self) -> int:
        oh, ow = self.out_hw
        return oh * ow

    @property
    def out_elements(self) -> int:
        return self.pixels * self.rows

    @property
    def out_order(self) -> str:
        return "hwc"

    @property
    def raw_output(self) -> None:
        return None                  # the maximum of its input's codes

    @property
    def tap_ept(self) -> int:
        if self.tap_lanes is not None:
            return self.tap_lanes
        return max(d for d in divisors(self.cols) if d <= MAX_TAP_LANES)

    def model(self, x) -> np.ndarray:
        L = self.layer
        taps = im2col(x, self.in_shape, self.in_order, L.kernel, L.stride, (0, 0, 0, 0), 0)
        return taps.reshape(taps.shape[0], -1, self.cols).max(axis=2)

    # -- widths and timing ------------------------------------------------------------------
    def in_width_ok(self, d: int) -> bool:
        return self.in_elements % d == 0 and d & (d - 1) == 0

    def out_width_ok(self, d: int) -> bool:
        return d == 1

    @property
    def window_out_transfers(self) -> int:
        return self.pixels * self.rows * self.cols // self.tap_ept

    @property
    def plan_cycles(self) -> int:
        return self.window_out_transfers

    @property
    def cycles(self) -> int:
        return self.window_out_transfers

    @property
    def late_release(self) -> bool:
        L = self.layer
        return release_hazard(self.in_shape, self.in_order, L.kernel, L.stride, (0, 0, 0, 0),
                              self.in_ept, self.tap_ept)

    @property
    def initiation_interval(self) -> int:
        return max(self.in_transfers,
                   self.window_out_transfers + (RELEASE_DELAY if self.late_release else 0))

    @property
    def tail_latency(self) -> int:
        return self.window_out_transfers - 1 + WINDOW_LATENCY + POOL_LATENCY

    # -- resources and hardware -------------------------------------------------------------
    def estimate(self, device: str = "up5k") -> dict:
        fam = cost.family(device)
        n, xb = self.tap_ept, self.in_type.bits
        win = cost.estimate_window(self.in_shape, xb, self.in_ept, n, device)
        luts = (n - 1 + (1 if self.cols > n else 0)) * 2 * xb + 2 * xb + 12
        ffs = 3 * xb + 8
        return {"lc": cost.logic_cells(luts, ffs, fam) + win["lc"], "ff": int(ffs) + win["ff"],
                "ram": win["ram"], "dsp": 0}

    def build(self) -> MaxPoolUnit:
        return MaxPoolUnit(self.layer, self.in_type, self.in_shape, order=self.in_order,
                           in_elements_per_transfer=self.in_ept,
                           tap_elements_per_transfer=self.tap_ept)

    def manifest_entry(self, index: int, device: str) -> dict:
        entry = super().manifest_entry(index, device)
        L = self.layer
        entry.update(frame=list(self.in_shape), pixels=self.pixels,
                     out_frame=[self.rows, *self.out_hw], tap_elements_per_transfer=self.tap_ept,
                     kernel=list(L.kernel), stride=list(L.stride))
        return entry
