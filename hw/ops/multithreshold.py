"""``multithreshold``: ``y = out_bias + #{t : thresholds[c][t] <= x}`` on the stream.

Lowering: a :class:`~softfloor.intmodel.MultiThreshold` (the FINN/QONNX activation, rule
:func:`softfloor.arith.multithreshold`). Per lane, ``T`` comparators against the thresholds of
the element's channel (constants when one row is shared, else chosen by a transfer counter),
then a population count; the stream's width passes through.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from softfloor import arith
from softfloor.intmodel import MultiThreshold
from softfloor.hw.ops import cost
from softfloor.hw.ops.base import ElementwiseOp
from softfloor.hw.rtl.elementwise import ThresholdUnit

__all__ = ["MultiThresholdOp"]


@dataclass(frozen=True, kw_only=True, eq=False, repr=False)
class MultiThresholdOp(ElementwiseOp):
    """Elementwise multi-threshold activation of the stream."""
    kind = "threshold"
    layer_types = (MultiThreshold,)

    def __post_init__(self):
        if self.layer.thresholds.shape[0] == 1:          # one row shared by every element
            object.__setattr__(self, "channel_of", (0,) * len(self.channel_of))

    def model(self, x) -> np.ndarray:
        x = np.asarray(x, dtype=np.int64)
        thr = self.layer.thresholds[np.asarray(self.channel_of)]        # (elements, T)
        return arith.multithreshold(x, thr[None, :, :], self.layer.out_bias)

    def estimate(self, device: str = "up5k") -> dict:
        fam = cost.family(device)
        L, xb = self.layer, self.in_type.bits
        T, ob = L.steps, L.bits
        varying = L.thresholds.shape[0] > 1 and len(set(map(tuple, L.thresholds.tolist()))) > 1
        per_cmp = xb + 1 + (xb if varying else 0)           # comparator (+ threshold mux)
        luts = self.in_ept * (T * per_cmp + 2 * T + ob) + 10
        ffs = self.in_ept * (T + 2 * ob) + 6
        return {"lc": cost.logic_cells(luts, ffs, fam), "ff": int(ffs), "ram": 0, "dsp": 0}

    def build(self) -> ThresholdUnit:
        return ThresholdUnit(self.layer, self.in_type, elements=self.rows,
                             elements_per_transfer=self.in_ept,
                             channel_of=list(self.channel_of))
