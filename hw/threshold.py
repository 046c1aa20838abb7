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
from amaranth.hdl import Cat, Module, Mux, Signal, Value, signed
from amaranth.lib import stream, wiring
from amaranth.lib.wiring import In, Out

from .. import arith
from ..intmodel import CodeType, MultiThreshold
from . import primitives as P
from .engine import _pos, channel_tables, payload_shape, table_value

__all__ = ["ThresholdEngine", "THRESHOLD_LATENCY"]

#: Comparison register, count register, skid buffer.
THRESHOLD_LATENCY = 3


class ThresholdEngine(wiring.Component):
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
        elements = _pos("elements", elements)
        n = _pos("elements_per_transfer", elements_per_transfer)
        if elements % n:
            raise ValueError(f"{layer.name}: elements_per_transfer={n} must divide the "
                             f"{elements} elements")
        rows = layer.thresholds.shape[0]
        self.channel_of = ([0] * elements if rows == 1 else
                           list(range(elements)) if channel_of is None else list(channel_of))
        if len(self.channel_of) != elements or max(self.channel_of) >= rows:
            raise ValueError(f"{layer.name}: channel_of must give one of {rows} channels for "
                             f"each of the {elements} elements")
        self.layer, self.requant, self.in_type, self.elements = layer, None, in_type, elements
        self.in_ept = self.out_ept = n
        self.out_type = layer.out_type(in_type)
        self.in_shape = P.code_shape(in_type.bits, in_type.signed)
        self.out_shape = P.code_shape(self.out_type.bits, self.out_type.signed)
        self.rows, self.cols, self.pe, self.simd = elements, 1, n, 1
        super().__init__({"i": In(stream.Signature(payload_shape(self.in_shape, n))),
                          "o": Out(stream.Signature(payload_shape(self.out_shape, n)))})
        self._MustUse__silence = False

    # -- faces ------------------------------------------------------------------------------
    def model(self, x) -> np.ndarray:
        """Numpy twin on ``(N, elements)`` codes in stream order."""
        x = np.asarray(x, dtype=np.int64)
        thr = self.layer.thresholds[np.asarray(self.channel_of)]        # (elements, T)
        return arith.multithreshold(x, thr[None, :, :], self.layer.out_bias)

    @property
    def cycles(self) -> int:
        return self.elements // self.in_ept

    in_transfers = out_transfers = initiation_interval = cycles
    mac_units = 0
    dsp_blocks = 0

    @property
    def tail_latency(self) -> int:
        return THRESHOLD_LATENCY

    @property
    def latency(self) -> int:
        return self.cycles - 1 + THRESHOLD_LATENCY

    def resources(self, device: str = "up5k") -> dict:
        from .planner import estimate_engine
        return estimate_engine(self, device)

    # -- hardware ---------------------------------------------------------------------------
    def elaborate(self, platform):
        m = Module()
        L = self.layer
        n, b, T = self.in_ept, self.in_shape.width, L.steps
        period, tables = channel_tables(self.channel_of, n)
        thr = L.thresholds
        tshape = signed(max(int(abs(thr).max()).bit_length() + 1, b + 1))
        res = stream.Signature(payload_shape(self.out_shape, n)).create()
        advance = Signal()
        m.d.comb += [advance.eq(~res.valid | res.ready), self.i.ready.eq(advance)]
        tc = Signal(range(max(2, period)))
        if period > 1:
            with m.If(self.i.valid & advance):
                m.d.sync += tc.eq(Mux(tc == period - 1, 0, tc + 1))
        data = Value.cast(self.i.payload)
        v1 = Signal()
        outs = []
        for j in range(n):
            x = data[j * b:(j + 1) * b]
            x = x.as_signed() if self.in_shape.signed else x
            bits = Signal(T, name=f"ge{j}")
            cmp = [x >= table_value(m, [int(thr[c, s]) for c in tables[j]], tc, tshape,
                                    f"thr{j}_{s}") for s in range(T)]
            with m.If(advance):
                m.d.sync += bits.eq(Cat(*cmp))
            y = Signal(self.out_shape, name=f"y{j}")
            m.d.comb += y.eq(sum(bits[s] for s in range(T)) + L.out_bias)
            outs.append(y)
        with m.If(advance):
            m.d.sync += [v1.eq(self.i.valid), res.valid.eq(v1), res.payload.eq(Cat(*outs))]
        out = P.skid_buffer(m, "skid", res, payload_shape(self.out_shape, n))
        m.d.comb += [self.o.payload.eq(out.payload), self.o.valid.eq(out.valid),
                     out.ready.eq(self.o.ready)]
        return m
