"""Multi-threshold activation on a stream: ``y = out_bias + #{t : thresholds[c][t] <= x}``.

The FINN/QONNX MultiThreshold (:class:`softfloor.intmodel.MultiThreshold`, rule
:func:`softfloor.arith.multithreshold`): per lane, ``T`` comparators against the thresholds of
the element's channel (constants when shared by all channels, else selected by a transfer
counter, as :class:`~softfloor.hw.engine.RequantEngine` selects its multipliers), a registered
comparison vector, then its population count plus ``out_bias``. Stages: comparisons register,
count register, skid buffer (latency :data:`THRESHOLD_LATENCY` after the last input).
"""
from __future__ import annotations

import numpy as np
from amaranth.hdl import Cat, signed

from .. import arith
from ..intmodel import CodeType, MultiThreshold
from .engine import REQUANT_LATENCY, ElementwiseEngine, _pos, table_value

__all__ = ["ThresholdEngine", "THRESHOLD_LATENCY"]

#: Comparison register, count register, skid buffer (as every elementwise engine).
THRESHOLD_LATENCY = REQUANT_LATENCY


class ThresholdEngine(ElementwiseEngine):
    """Elementwise :class:`~softfloor.intmodel.MultiThreshold` on a stream.

    Parameters
    ----------
    layer : MultiThreshold
    in_type : CodeType
    elements : int
        Elements per sample.
    elements_per_transfer : int
        Lanes (divides ``elements``).
    channel_of : list of int or None
        Channel of each element of a sample in stream order (default: element ``e`` is channel
        ``e``; unused when the thresholds are shared).
    """

    def __init__(self, layer: MultiThreshold, in_type: CodeType, *, elements: int,
                 elements_per_transfer: int = 1, channel_of: list | None = None):
        self._MustUse__silence = True
        if not isinstance(layer, MultiThreshold):
            raise TypeError(f"layer must be a MultiThreshold, got {type(layer).__name__}")
        rows = layer.thresholds.shape[0]
        if rows == 1:
            channel_of = [0] * _pos("elements", elements)
        self.layer, self.requant = layer, None
        self._setup(layer, in_type, layer.out_type(in_type), elements, elements_per_transfer,
                    channel_of)
        if max(self.channel_of) >= rows:
            raise ValueError(f"{layer.name}: channel_of must give one of {rows} channels for "
                             f"each of the {self.elements} elements")
        self._MustUse__silence = False

    def model(self, x) -> np.ndarray:
        """Numpy twin on ``(N, elements)`` codes in stream order."""
        x = np.asarray(x, dtype=np.int64)
        thr = self.layer.thresholds[np.asarray(self.channel_of)]        # (elements, T)
        return arith.multithreshold(x, thr[None, :, :], self.layer.out_bias)

    @property
    def tail_latency(self) -> int:
        return THRESHOLD_LATENCY

    def stage1(self, m, j, x, channels, tc):
        """``T`` comparisons ``x >= threshold[c][t]`` (thresholds are constants or a mux)."""
        thr = self.layer.thresholds
        tshape = signed(max(int(abs(thr).max()).bit_length() + 1, self.in_shape.width + 1))
        return Cat(*[x >= table_value(m, [int(thr[c, s]) for c in channels], tc, tshape,
                                      f"thr{j}_{s}") for s in range(self.layer.steps)])

    def stage2(self, m, j, r):
        """``out_bias + popcount``."""
        return sum(r[s] for s in range(self.layer.steps)) + self.layer.out_bias
