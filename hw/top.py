"""The whole network as one streaming dataflow component with AXI4-Stream ports.

::

    s_axis ─► BeatUnpacker ─► engine 0 ─► engine 1 ─► ... ─► BeatPacker ─► m_axis

(engine ``n`` is the Verilog instance ``engine{n}_{layer name}``).

One unit per op of :mod:`softfloor.hw.ops` (a dense or conv layer fused with the requant that
follows it), folded as the folding (usually the planner's plan) says, each built by its op's
``build()``. Units are joined by internal ``stream.Signature`` streams with valid/ready
everywhere, each carrying as many elements per transfer as the planner's
:class:`~softfloor.hw.pipeline.Pipeline` says (one, unless a folded layer finishes results
faster); nothing is dropped or duplicated. The top recomputes nothing: widths, timing and
estimates are the pipeline's. A layer without a hardware op raises
:class:`~softfloor.hw.ops.UnsupportedLayerError` naming the layer and the op.

Ports (exactly these names in the emitted Verilog; ``clk``/``rst`` come from the ``sync`` domain,
reset is active high and synchronous):

=================  =====  =====================================================================
``s_axis_tdata``   in     input beat, element ``i`` at bits ``[i*b, (i+1)*b)``
``s_axis_tvalid``  in
``s_axis_tlast``   in     ignored: a sample is always ``beats_per_sample`` beats (framing by count)
``s_axis_tready``  out
``m_axis_tdata``   out    output beat, unused high bits zero
``m_axis_tvalid``  out
``m_axis_tlast``   out    high on the last beat of every sample
``m_axis_tready``  in
=================  =====  =====================================================================

A design with weights in SPRAM (the UP5K's ``SB_SPRAM256KA`` has no initial contents, see
:mod:`softfloor.hw.rtl.spram`) has three more ports, the weight-load stream:

=================  =====  =====================================================================
``w_axis_tdata``   in     8 bits: one byte of the weight image
``w_axis_tvalid``  in
``w_axis_tready``  out    high until the whole image is loaded
=================  =====  =====================================================================

After every reset the image (:meth:`SoftfloorTop.weight_image`, the generator's
``weights_spram.hex``) is written through ``w_axis``, the SPRAM layers in stream order, each
its :meth:`~softfloor.hw.rtl.mvu.MatrixVectorUnit.load_words`; ``s_axis_tready`` stays low
until the last transfer is accepted, so an unloaded design never accepts a sample or produces
an output.
"""
from __future__ import annotations

import numpy as np
from amaranth.hdl import Cat, Module, Signal
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out

from softfloor import golden
from softfloor.intmodel import IntModel
from softfloor.hw.pipeline import (ADAPTER_LATENCY, IO_PINS_UP5K_SG48, beat_layouts,
                                   check_split_output, default_elements_per_beat,
                                   output_element_bits)
from softfloor.hw.planner import Plan, realize
from softfloor.hw.rtl import spram
from softfloor.hw.rtl.stream_io import BeatPacker, BeatUnpacker

__all__ = ["SoftfloorTop", "spram_ops", "weight_image", "weight_layout", "beat_layouts", "output_element_bits", "default_elements_per_beat",
           "check_split_output", "ADAPTER_LATENCY", "IO_PINS_UP5K_SG48"]


def spram_ops(ops) -> list:
    """The ops whose weights sit in SPRAM, in stream (= load) order."""
    return [op for op in ops if op.memory == "spram"]


def weight_image(ops) -> list[int]:
    """The ``w_axis`` transfers after reset: every SPRAM layer's load words, in stream order."""
    return [w for op in spram_ops(ops) for w in op.load_words()]


def weight_layout(ops) -> list[dict]:
    """Per SPRAM layer of the image: name, first transfer, transfers, blocks, words, word bits."""
    out, at = [], 0
    for op in spram_ops(ops):
        n = op.groups * op.folds * op.spram_blocks() * spram.PER_WORD
        out.append({"layer": op.name, "offset": at, "transfers": n,
                    "spram_blocks": op.spram_blocks(), "words": op.groups * op.folds,
                    "word_bits": op.weight_width})
        at += n
    return out


class SoftfloorTop(wiring.Component):
    """The accelerator: AXI4-Stream in, AXI4-Stream out, one unit per op.

    Parameters
    ----------
    model : IntModel
    elements_per_beat : int, (int, int), {"input": int, "output": int, "output_bits": int} or None
        Elements per beat of the input and output streams (an int applies to both). ``None``
        chooses the narrowest whole-byte beat (see :func:`default_elements_per_beat`). The
        dict's optional ``output_bits`` narrows (or widens) the output elements: raw logits are
        sign-extended to 8/16/32 bits by default, ``output_bits`` (at least the output codes'
        width, e.g. ``acc_bits``) sends them that wide (whole-byte beats: 19-bit logits take
        a 24-bit beat). ``output_tdata_width`` sets the output beat (whole bytes); narrower
        than an element, it carries one element in ``beats_per_element`` beats, low part
        first (a w8a8 MLP's 32-bit logits in two 16-bit beats: 32 pins, within the UP5K
        SG48's 39; ``cycles_per_inference`` grows by ``beats_per_element - 1``).
    folding : None, Plan, dict or Pipeline
        A :class:`~softfloor.hw.planner.Plan` (its pipeline is used as is), per dense/conv
        layer ``{name: (pe, simd[, dsp])}``, ``None`` (fully folded, ``1 x 1``, one MAC lane per
        layer) or a :class:`~softfloor.hw.pipeline.Pipeline`
        (:func:`softfloor.hw.planner.realize`'s result). :func:`softfloor.hw.generate.generate`
        passes the planner's plan.
    """

    def __init__(self, model: IntModel, *, elements_per_beat=None, folding=None):
        if not isinstance(model, IntModel):
            raise TypeError(f"model must be an IntModel, got {type(model).__name__}")
        self.model = model
        self.plan = folding if isinstance(folding, Plan) else None
        self.pipeline = realize(model, folding, elements_per_beat)
        self.ops = self.pipeline.ops
        self.in_layout, self.out_layout = self.pipeline.in_layout, self.pipeline.out_layout
        iw, ow = self.in_layout.tdata_width, self.out_layout.tdata_width
        ports = {
            "s_axis_tdata": In(iw), "s_axis_tvalid": In(1), "s_axis_tlast": In(1),
            "s_axis_tready": Out(1),
            "m_axis_tdata": Out(ow), "m_axis_tvalid": Out(1), "m_axis_tlast": Out(1),
            "m_axis_tready": In(1),
        }
        if self.spram_ops:
            ports |= {"w_axis_tdata": In(spram.LOAD_BITS), "w_axis_tvalid": In(1),
                      "w_axis_tready": Out(1)}
        super().__init__(ports)

    # -- run-time weights (SPRAM) -------------------------------------------------------------
    @property
    def spram_ops(self) -> list:
        """The ops whose weights sit in SPRAM, in stream (= load) order."""
        return spram_ops(self.ops)

    def weight_image(self) -> list[int]:
        """The ``w_axis`` transfers after reset (:func:`weight_image`)."""
        return weight_image(self.ops)

    # -- the FINN-style faces ---------------------------------------------------------------
    def model_run(self, codes) -> np.ndarray:
        """Numpy twin of the whole top: :func:`softfloor.golden.run`."""
        return golden.run(self.model, codes)

    @property
    def in_elements_per_transfer(self) -> int:
        return self.pipeline.in_elements_per_transfer

    @property
    def out_elements_per_transfer(self) -> int:
        return self.pipeline.out_elements_per_transfer

    @property
    def initiation_interval(self) -> int:
        """Cycles between successive samples when streaming back to back (output always ready).

        The slowest stage sets the pace: an op's compute cycles or stream transfers, the input
        unpacker's transfers or beats, the output packer's transfers or beats.
        """
        return self.pipeline.initiation_interval

    @property
    def cycles_per_inference(self) -> int:
        """First input beat accepted -> last output beat accepted (isolated sample, output ready).

        Cycle difference between the two handshakes, input beats presented back to back. Each
        op starts computing only when its whole input vector has arrived, so latencies add
        up: 1 (unpacker) + ``input transfers - 1`` + per op, from its last input accepted to
        its last output accepted, its ``tail_latency`` (a dense op: ``cycles + tree levels +
        MVU_LATENCY + last group transfers - 1``, ``MVU_CONST_LATENCY`` when fully unrolled;
        an elementwise op: ``ELEMENTWISE_LATENCY``) + 1 (packer).
        """
        return self.pipeline.cycles_per_inference

    @property
    def mac_units(self) -> int:
        return self.pipeline.mac_units

    @property
    def io_pins(self) -> int:
        return self.pipeline.io_pins

    def resources(self, device: str = "up5k") -> dict:
        """Planner estimate of the whole top on ``device`` (ops + adapters)."""
        return self.pipeline.resources(device)

    # -- hardware ---------------------------------------------------------------------------
    def elaborate(self, platform):
        m = Module()
        m.submodules.unpack = unpack = BeatUnpacker(self.in_layout, self.in_elements_per_transfer)
        m.d.comb += [unpack.i.payload.data.eq(self.s_axis_tdata),
                     unpack.i.payload.last.eq(self.s_axis_tlast)]
        if not self.spram_ops:
            m.d.comb += [unpack.i.valid.eq(self.s_axis_tvalid),
                         self.s_axis_tready.eq(unpack.i.ready)]
        else:                       # nothing enters before the weight image is loaded
            ready_all = Signal(name="weights_loaded")
            m.d.comb += [unpack.i.valid.eq(self.s_axis_tvalid & ready_all),
                         self.s_axis_tready.eq(unpack.i.ready & ready_all)]
        prev = unpack.o
        loaded = None                   # every SPRAM layer before this one is loaded
        readies = []
        for n, op in enumerate(self.ops):
            eng = op.build()
            m.submodules[f"engine{n}_{op.name}"] = eng
            wiring.connect(m, prev, eng.i)
            prev = eng.o
            if "w" in eng.signature.members:          # the load stream, layer after layer
                turn = Signal(name=f"wload{n}")
                m.d.comb += turn.eq(eng.w.ready if loaded is None else loaded & eng.w.ready)
                m.d.comb += [eng.w.payload.eq(self.w_axis_tdata),
                             eng.w.valid.eq(self.w_axis_tvalid & turn)]
                readies.append(turn)
                done = Signal(name=f"wloaded{n}")
                m.d.comb += done.eq(~eng.w.ready if loaded is None else loaded & ~eng.w.ready)
                loaded = done
        if loaded is not None:
            m.d.comb += [self.w_axis_tready.eq(Cat(*readies).any()), ready_all.eq(loaded)]
        m.submodules.pack = pack = BeatPacker(self.out_layout, self.ops[-1].out_element_shape,
                                              self.out_elements_per_transfer)
        wiring.connect(m, prev, pack.i)
        m.d.comb += [self.m_axis_tdata.eq(pack.o.payload.data),
                     self.m_axis_tlast.eq(pack.o.payload.last),
                     self.m_axis_tvalid.eq(pack.o.valid),
                     pack.o.ready.eq(self.m_axis_tready)]
        return m
