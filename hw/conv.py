"""Convolution and max-pool engines: a sliding window feeding a matrix-vector unit or a max tree.

::

    ConvEngine:     i ─► SlidingWindow ─(cols taps per pixel)─► DenseEngine (rows = out channels) ─► o
    MaxPoolEngine:  i ─► SlidingWindow ─(kh*kw taps per channel)─► max (running, n lanes) ─► skid ─► o

Both consume a ``(C, H, W)`` frame in ``order`` (``"chw"`` for the model's input, ``"hwc"``
after another conv/pool engine) and emit their output frame in ``"hwc"`` order (pixel by pixel,
channels fastest). A :class:`ConvEngine` is the :class:`~softfloor.hw.engine.DenseEngine` of the
conv's weights reshaped to ``(out_channels, in_channels*kh*kw)``, run once per output pixel on
the window's taps: the same PE x SIMD folding, the same fused (per-channel) requantization.

Faces (FINN style): ``model(x)`` (numpy twin on ``(N, C*H*W)`` frames in ``order``, output
``(N, OH*OW*C')`` in ``"hwc"``), ``cycles``, ``initiation_interval``, ``tail_latency``,
``latency``, ``resources(device)``.
"""
from __future__ import annotations

import numpy as np
from amaranth.hdl import Module, Mux, Signal, Value
from amaranth.lib import stream, wiring
from amaranth.lib.wiring import In, Out

from ..intmodel import CodeType, Conv2d, Dense, MaxPool2d
from . import primitives as P
from .engine import DenseEngine, EngineFaces, _pos, payload_shape
from .window import WINDOW_LATENCY, SlidingWindow

__all__ = ["ConvEngine", "MaxPoolEngine", "POOL_LATENCY", "conv_as_dense"]

#: MaxPoolEngine cycles after the window's last transfer: result register (1), skid buffer (1).
POOL_LATENCY = 2


def conv_as_dense(conv: Conv2d) -> Dense:
    """The conv's matrix: ``weight.reshape(out_channels, in_channels*kh*kw)``, same bias/widths."""
    return Dense(conv.name, conv.weight.reshape(conv.out_channels, -1), conv.bias,
                 conv.weight_bits, conv.bias_bits, conv.acc_bits)


class ConvEngine(EngineFaces, wiring.Component):
    """Conv2d (+ fused Requant/ChannelRequant) as a sliding window and a folded MVU.

    Parameters
    ----------
    conv : Conv2d
    in_type : CodeType
        Input code type.
    shape : (C, H, W)
        Input frame shape.
    order : "chw" or "hwc"
        Input element order.
    requant : Requant, ChannelRequant or None
    pe, simd, dsp :
        Folding of the matrix-vector unit (see :class:`~softfloor.hw.engine.DenseEngine`).
    in_elements_per_transfer : int
        Input stream width (power of two dividing the frame).
    tap_elements_per_transfer : int
        Window -> MVU width (divides ``simd`` and ``C*kh*kw``; one frame read port each).
    out_elements_per_transfer : int
        Output stream width (as the DenseEngine's).
    """

    def __init__(self, conv: Conv2d, in_type: CodeType, shape, *, order: str = "hwc",
                 requant=None, pe: int = 1, simd: int = 1, in_elements_per_transfer: int = 1,
                 tap_elements_per_transfer: int = 1, out_elements_per_transfer: int = 1,
                 dsp: bool = False):
        self._MustUse__silence = True
        if not isinstance(conv, Conv2d):
            raise TypeError(f"conv must be a Conv2d layer, got {type(conv).__name__}")
        self.conv = conv
        self.dense = conv_as_dense(conv)
        self.core = DenseEngine(self.dense, in_type, requant, pe=pe, simd=simd,
                                in_elements_per_transfer=tap_elements_per_transfer,
                                out_elements_per_transfer=out_elements_per_transfer, dsp=dsp)
        self.window = SlidingWindow(shape, self.core.in_shape, order=order, kernel=conv.kernel,
                                    stride=conv.stride, padding=conv.padding,
                                    pad_value=conv.pad_value,
                                    in_elements_per_transfer=in_elements_per_transfer,
                                    out_elements_per_transfer=tap_elements_per_transfer,
                                    name=conv.name)
        c = self.core
        self.requant, self.in_type, self.out_type = requant, in_type, c.out_type
        self.in_shape, self.out_shape, self.acc_type = c.in_shape, c.out_shape, c.acc_type
        self.rows, self.cols, self.pe, self.simd, self.dsp = c.rows, c.cols, pe, simd, c.dsp
        self.pixels = self.window.pixels
        self.in_ept, self.tap_ept, self.out_ept = (in_elements_per_transfer,
                                                   tap_elements_per_transfer, c.out_ept)
        self.out_frame = (c.rows, self.window.oh, self.window.ow)
        super().__init__({"i": In(stream.Signature(payload_shape(self.in_shape, self.in_ept))),
                          "o": Out(stream.Signature(payload_shape(self.out_shape,
                                                                  self.out_ept)))})
        self.window._MustUse__silence = self.core._MustUse__silence = True
        self._MustUse__silence = False

    def model(self, x) -> np.ndarray:
        x = np.asarray(x, dtype=np.int64)
        taps = self.window.model(x).reshape(-1, self.cols)
        return self.core.model(taps).reshape(x.shape[0], -1)

    @property
    def cycles(self) -> int:
        """Compute cycles per frame: ``pixels * ceil(rows/pe) * ceil(cols/simd)``."""
        return self.pixels * self.core.cycles

    @property
    def in_transfers(self) -> int:
        return self.window.in_transfers

    @property
    def out_transfers(self) -> int:
        return self.pixels * self.core.out_transfers

    @property
    def out_elements(self) -> int:
        return self.pixels * self.rows

    @property
    def initiation_interval(self) -> int:
        return max(self.window.initiation_interval, self.pixels * self.core.initiation_interval)

    @property
    def tail_latency(self) -> int:
        c = self.core
        return (WINDOW_LATENCY + c.in_transfers - 1 + (self.pixels - 1) * c.initiation_interval
                + c.tail_latency)

    @property
    def mac_units(self) -> int:
        return self.core.mac_units

    @property
    def dsp_blocks(self) -> int:
        return self.core.dsp_blocks

    @property
    def tree_levels(self) -> int:
        return self.core.tree_levels

    def elaborate(self, platform):
        m = Module()
        m.submodules.window = self.window
        m.submodules.mvu = self.core
        wiring.connect(m, wiring.flipped(self.i), self.window.i)
        wiring.connect(m, self.window.o, self.core.i)
        wiring.connect(m, self.core.o, wiring.flipped(self.o))
        return m


class MaxPoolEngine(EngineFaces, wiring.Component):
    """MaxPool2d as a sliding window and a running maximum over ``tap_elements_per_transfer``
    lanes (which divides ``kh*kw``): one output element per ``kh*kw / lanes`` window transfers.

    Output: one element per transfer, ``"hwc"`` order.
    """

    def __init__(self, pool: MaxPool2d, in_type: CodeType, shape, *, order: str = "hwc",
                 in_elements_per_transfer: int = 1, tap_elements_per_transfer: int = 1):
        self._MustUse__silence = True
        if not isinstance(pool, MaxPool2d):
            raise TypeError(f"pool must be a MaxPool2d layer, got {type(pool).__name__}")
        kk = pool.kernel[0] * pool.kernel[1]
        n = _pos("tap_elements_per_transfer", tap_elements_per_transfer)
        if kk % n:
            raise ValueError(f"{pool.name}: tap_elements_per_transfer={n} must divide the "
                             f"{kk} taps of a {pool.kernel[0]}x{pool.kernel[1]} window")
        self.pool, self.requant, self.in_type = pool, None, in_type
        self.out_type = pool.out_type(in_type)
        self.in_shape = self.out_shape = P.code_shape(in_type.bits, in_type.signed)
        self.window = SlidingWindow(shape, self.in_shape, order=order, kernel=pool.kernel,
                                    stride=pool.stride, pad_value=0,
                                    in_elements_per_transfer=in_elements_per_transfer,
                                    out_elements_per_transfer=n, name=pool.name)
        self.group = kk // n
        C = shape[0]
        self.rows, self.cols, self.pe, self.simd = C, kk, n, 1
        self.pixels = self.window.pixels
        self.in_ept, self.tap_ept, self.out_ept = in_elements_per_transfer, n, 1
        self.out_frame = (C, self.window.oh, self.window.ow)
        super().__init__({"i": In(stream.Signature(payload_shape(self.in_shape, self.in_ept))),
                          "o": Out(stream.Signature(self.out_shape))})
        self.window._MustUse__silence = True
        self._MustUse__silence = False

    def model(self, x) -> np.ndarray:
        x = np.asarray(x, dtype=np.int64)
        taps = self.window.model(x).reshape(x.shape[0], -1, self.cols)
        return taps.max(axis=2)

    @property
    def cycles(self) -> int:
        return self.window.out_transfers

    @property
    def in_transfers(self) -> int:
        return self.window.in_transfers

    @property
    def out_transfers(self) -> int:
        return self.pixels * self.rows

    out_elements = out_transfers

    @property
    def initiation_interval(self) -> int:
        return self.window.initiation_interval

    @property
    def tail_latency(self) -> int:
        return self.window.tail_latency + POOL_LATENCY

    def elaborate(self, platform):
        m = Module()
        m.submodules.window = win = self.window
        wiring.connect(m, wiring.flipped(self.i), win.i)
        n, b, G = self.tap_ept, self.in_shape.width, self.group
        res = stream.Signature(self.out_shape).create()
        advance, take = Signal(), Signal()
        m.d.comb += [advance.eq(~res.valid | res.ready), win.o.ready.eq(advance),
                     take.eq(win.o.valid & advance)]
        data = Value.cast(win.o.payload)
        lanes = [data[j * b:(j + 1) * b] for j in range(n)]
        if self.in_shape.signed:
            lanes = [v.as_signed() for v in lanes]

        def vmax(a, c):
            return Mux(a > c, a, c)

        while len(lanes) > 1:
            lanes = [vmax(lanes[k], lanes[k + 1]) if k + 1 < len(lanes) else lanes[k]
                     for k in range(0, len(lanes), 2)]
        cur = Signal(self.in_shape)
        m.d.comb += cur.eq(lanes[0])
        if G > 1:
            run = Signal(self.in_shape)
            g = Signal(range(G))
            best = Mux(g == 0, cur, vmax(run, cur))
            last = g == G - 1
            with m.If(take):
                m.d.sync += [run.eq(best), g.eq(Mux(last, 0, g + 1))]
        else:
            best, last = cur, 1
        with m.If(advance):
            m.d.sync += res.valid.eq(take & last)
            with m.If(take):
                m.d.sync += res.payload.eq(best)
        out = P.skid_buffer(m, "skid", res, self.out_shape)
        wiring.connect(m, out, wiring.flipped(self.o))
        return m
