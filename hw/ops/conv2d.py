"""``conv2d`` (+ the requant it fuses): a sliding window feeding a folded matrix-vector unit.

Lowering: a :class:`~softfloor.intmodel.Conv2d` layer on a ``(C, H, W)`` frame arriving in the
stream's order, fused with the requant right after it; the output frame leaves in ``"hwc"``
order (pixel by pixel, channels fastest). The MVU is the dense op of the conv's matrix
``weight.reshape(out_channels, C*kh*kw)``, run once per output pixel on the window's taps: the
same PE x SIMD folds, the same estimate, plus the window's frame memory and address logic.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

from softfloor.intmodel import ChannelRequant, Conv2d, Requant
from softfloor.hw.ops import cost
from softfloor.hw.ops.base import HwOp, Lowering
from softfloor.hw.ops.dense import DenseOp
from softfloor.hw.ops.sliding import MAX_TAP_LANES, SlidingWindowOp, divisors
from softfloor.hw.rtl.conv import ConvUnit, conv_as_dense
from softfloor.hw.rtl.window import WINDOW_LATENCY

__all__ = ["Conv2dOp"]


@dataclass(frozen=True, kw_only=True, eq=False, repr=False)
class Conv2dOp(SlidingWindowOp, DenseOp):
    """A conv layer: its matrix folded as a :class:`DenseOp`, its window over ``in_shape``."""
    kind = "conv"
    layer_types = (Conv2d,)

    #: Window lanes (frame-memory read ports); ``None``: the fewest that keep up (the default).
    tap_lanes: int | None = None
    #: Window memory, ``"frame"`` or ``"lines"``; ``None``: as :attr:`window_mode` chooses.
    window: str | None = None

    @classmethod
    def of(cls, conv: Conv2d, in_type, shape, *, order: str = "hwc", requant=None,
           pe: int = 1, simd: int = 1, in_elements_per_transfer: int = 1,
           tap_elements_per_transfer: int | None = None, out_elements_per_transfer: int = 1,
           dsp: bool = False, window: str | None = None) -> "Conv2dOp":
        """The op of one conv layer (and its fused requant) alone on a ``shape`` frame in
        ``order``, folded, with stream widths and window lanes as given (validated)."""
        op = cls(names=(conv.name,) + ((requant.name,) if requant else ()), in_type=in_type,
                 in_shape=tuple(shape), in_order=order, layer=conv, dense=conv_as_dense(conv),
                 requant=requant, pe=pe, simd=simd, in_ept=in_elements_per_transfer,
                 out_ept=out_elements_per_transfer, use_dsp=dsp,
                 tap_lanes=tap_elements_per_transfer, window=window)
        return op.check_widths()

    @classmethod
    def lower(cls, lw: Lowering) -> list[HwOp]:
        rq = lw.next_layer if isinstance(lw.next_layer, (Requant, ChannelRequant)) else None
        op = cls.at(lw, dense=conv_as_dense(lw.layer), requant=rq,
                    names=(lw.layer.name,) + ((rq.name,) if rq else ()))
        lw.advance(2 if rq else 1, "hwc")
        return [op]

    @property
    def tap_ept(self) -> int:
        """Window lanes: divides ``simd`` and ``cols``, the fewest that keep up with the MVU."""
        if self.tap_lanes is not None:
            return self.tap_lanes
        ds = divisors(math.gcd(self.simd, self.cols))
        ds = [d for d in ds if d <= MAX_TAP_LANES] or [1]
        keep = [d for d in ds if self.cols // d <= self.groups * self.folds]
        return keep[0] if keep else ds[-1]

    @property
    def mvu_in_ept(self) -> int:
        return self.tap_ept

    def model(self, x):
        taps = self.taps(x, self.layer.pad_value)
        return super().model(taps.reshape(-1, self.cols)).reshape(taps.shape[0], -1)

    @property
    def plan_cycles(self) -> int:
        return self.pixels * max(self.mvu_cycles, self.cols // self.tap_ept)

    @property
    def cycles(self) -> int:
        return self.pixels * self.mvu_cycles

    @property
    def initiation_interval(self) -> int:
        return max(self.window_initiation_interval, self.pixels * self.mvu_initiation_interval)

    @property
    def tail_latency(self) -> int:
        """Whole frames: the window's pixels one MVU interval apart after the frame. Line
        buffer: the window's own tail (input at full rate) and the MVU's; exact when the MVU
        keeps up with the window, a lower bound otherwise."""
        if self.window_mode == "lines":
            return self.window_tail_latency + self.mvu_tail_latency
        return (WINDOW_LATENCY + self.cols // self.tap_ept - 1
                + (self.pixels - 1) * self.mvu_initiation_interval + self.mvu_tail_latency)

    @property
    def macs(self) -> int:
        return int(self.dense.macs()) * self.pixels

    def estimate(self, device: str = "up5k") -> dict:
        return cost.add(self.estimate_mvu(device), self.estimate_window(device))

    def build(self) -> ConvUnit:
        return ConvUnit(self.layer, self.in_type, self.in_shape, order=self.in_order,
                        requant=self.requant, pe=self.pe, simd=self.simd,
                        in_elements_per_transfer=self.in_ept,
                        tap_elements_per_transfer=self.tap_ept,
                        out_elements_per_transfer=self.out_ept, dsp=self.dsp,
                        window=self.window_mode)

    def manifest_entry(self, index: int, device: str) -> dict:
        return super().manifest_entry(index, device) | self.window_manifest()

    def plan_entry(self) -> dict:
        return super().plan_entry() | {"window": self.window_mode}

    def apply_plan_entry(self, entry: dict, where: str, device: str = "up5k") -> "Conv2dOp":
        return super().apply_plan_entry(entry, where, device).apply_window_entry(entry, where)
