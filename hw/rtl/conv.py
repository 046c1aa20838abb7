"""Convolution and max-pool units: a sliding window feeding a matrix-vector unit or a max tree.

::

    ConvUnit:     i ─► SlidingWindow ─(cols taps per pixel)─► MatrixVectorUnit (rows = out channels) ─► o
    MaxPoolUnit:  i ─► SlidingWindow ─(kh*kw taps per channel)─► max (running, n lanes) ─► skid ─► o

Both consume a ``(C, H, W)`` frame in ``order`` (``"chw"`` for the model's input, ``"hwc"``
after another conv/pool unit) and emit their output frame in ``"hwc"`` order (pixel by pixel,
channels fastest). A :class:`ConvUnit` is the :class:`~softfloor.hw.rtl.mvu.MatrixVectorUnit` of
the conv's weights reshaped to ``(out_channels, in_channels*kh*kw)`` (:func:`conv_as_dense`),
run once per output pixel on the window's taps: the same PE x SIMD folding, the same fused
(per-channel) requantization. They are the Amaranth faces of the ``conv2d`` and ``maxpool2d``
ops of :mod:`softfloor.hw.ops`.
"""
from __future__ import annotations

from amaranth.hdl import Module, Mux, Signal, Value
from amaranth.lib import stream, wiring
from amaranth.lib.wiring import In, Out

from softfloor.intmodel import CodeType, Conv2d, Dense, MaxPool2d
from softfloor.hw.rtl import primitives as P
from softfloor.hw.rtl.mvu import MatrixVectorUnit
from softfloor.hw.rtl.stream_io import transfer_shape
from softfloor.hw.rtl.tables import positive_int
from softfloor.hw.rtl.window import SlidingWindow

__all__ = ["ConvUnit", "MaxPoolUnit", "POOL_LATENCY", "conv_as_dense"]

#: MaxPoolUnit cycles after the window's last transfer: result register (1), skid buffer (1).
POOL_LATENCY = 2


def conv_as_dense(conv: Conv2d) -> Dense:
    """The conv's matrix: ``weight.reshape(out_channels, in_channels*kh*kw)``, same bias/widths."""
    return Dense(conv.name, conv.weight.reshape(conv.out_channels, -1), conv.bias,
                 conv.weight_bits, conv.bias_bits, conv.acc_bits)


class ConvUnit(wiring.Component):
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
        Folding of the matrix-vector unit (see :class:`~softfloor.hw.rtl.mvu.MatrixVectorUnit`).
    in_elements_per_transfer : int
        Input stream width (power of two dividing the frame).
    tap_elements_per_transfer : int
        Window -> MVU width (divides ``simd`` and ``C*kh*kw``; one frame read port each).
    window : "frame" or "lines"
        The window's memory (see :class:`~softfloor.hw.rtl.window.SlidingWindow`).
    out_elements_per_transfer : int
        Output stream width (as the MVU's).
    """

    def __init__(self, conv: Conv2d, in_type: CodeType, shape, *, order: str = "hwc",
                 requant=None, pe: int = 1, simd: int = 1, in_elements_per_transfer: int = 1,
                 tap_elements_per_transfer: int = 1, out_elements_per_transfer: int = 1,
                 dsp: bool = False, window: str = "frame"):
        self.conv = conv
        self.core = MatrixVectorUnit(conv_as_dense(conv), in_type, requant, pe=pe, simd=simd,
                                     in_elements_per_transfer=tap_elements_per_transfer,
                                     out_elements_per_transfer=out_elements_per_transfer,
                                     dsp=dsp)
        self.window = SlidingWindow(shape, self.core.in_shape, order=order, kernel=conv.kernel,
                                    stride=conv.stride, padding=conv.padding,
                                    pad_value=conv.pad_value,
                                    in_elements_per_transfer=in_elements_per_transfer,
                                    out_elements_per_transfer=tap_elements_per_transfer,
                                    mode=window, name=conv.name)
        self.in_shape, self.out_shape = self.core.in_shape, self.core.out_shape
        self.in_ept, self.out_ept = in_elements_per_transfer, out_elements_per_transfer
        super().__init__({"i": In(stream.Signature(transfer_shape(self.in_shape, self.in_ept))),
                          "o": Out(stream.Signature(transfer_shape(self.out_shape,
                                                                   self.out_ept)))})

    def elaborate(self, platform):
        m = Module()
        m.submodules.window = self.window
        m.submodules.mvu = self.core
        wiring.connect(m, wiring.flipped(self.i), self.window.i)
        wiring.connect(m, self.window.o, self.core.i)
        wiring.connect(m, self.core.o, wiring.flipped(self.o))
        return m



class MaxPoolUnit(wiring.Component):
    """MaxPool2d as a sliding window and a running maximum over ``tap_elements_per_transfer``
    lanes (which divides ``kh*kw``): one output element per ``kh*kw / lanes`` window transfers.

    Output: one element per transfer, ``"hwc"`` order.
    """

    def __init__(self, pool: MaxPool2d, in_type: CodeType, shape, *, order: str = "hwc",
                 in_elements_per_transfer: int = 1, tap_elements_per_transfer: int = 1,
                 window: str = "frame"):
        kk = pool.kernel[0] * pool.kernel[1]
        n = positive_int("tap_elements_per_transfer", tap_elements_per_transfer)
        if kk % n:
            raise ValueError(f"{pool.name}: tap_elements_per_transfer={n} must divide the "
                             f"{kk} taps of a {pool.kernel[0]}x{pool.kernel[1]} window")
        self.pool = pool
        self.in_shape = self.out_shape = P.code_shape(in_type.bits, in_type.signed)
        self.window = SlidingWindow(shape, self.in_shape, order=order, kernel=pool.kernel,
                                    stride=pool.stride, pad_value=0,
                                    in_elements_per_transfer=in_elements_per_transfer,
                                    out_elements_per_transfer=n, mode=window, name=pool.name)
        self.group = kk // n
        self.in_ept, self.tap_ept, self.out_ept = in_elements_per_transfer, n, 1
        super().__init__({"i": In(stream.Signature(transfer_shape(self.in_shape, self.in_ept))),
                          "o": Out(stream.Signature(self.out_shape))})

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
