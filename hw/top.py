"""The whole network as one streaming dataflow component with AXI4-Stream ports.

::

    s_axis ─► BeatUnpacker ─► engine 0 ─► engine 1 ─► ... ─► BeatPacker ─► m_axis

One :class:`~softfloor.hw.engine.DenseEngine` per Dense layer (fused with the Requant that follows
it, if any); a Requant that does not follow a Dense becomes a
:class:`~softfloor.hw.engine.RequantEngine`. Engines are joined by internal
``stream.Signature`` streams with valid/ready everywhere; nothing is dropped or duplicated.

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
"""
from __future__ import annotations

import math

import numpy as np
from amaranth.hdl import Module
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out

from .. import golden
from ..intmodel import Dense, IntModel, Requant
from . import primitives as P
from .engine import ENGINE_LATENCY, REQUANT_LATENCY, DenseEngine, RequantEngine
from .stream_io import BeatLayout, BeatPacker, BeatUnpacker

__all__ = ["SoftfloorTop", "plan_engines", "output_element_bits", "default_elements_per_beat",
           "IO_PINS_UP5K_SG48"]

#: User I/O pins of the iCE40 UP5K in the SG48 package.
IO_PINS_UP5K_SG48 = 39
#: Extra cycles of the stream adapters in the latency formula: the unpacker (1) and packer (1).
ADAPTER_LATENCY = 2


def output_element_bits(model: IntModel) -> tuple[int, bool]:
    """Element width and signedness of the output codes.

    A final Requant gives its own ``bits``/``signed``; a final Dense (raw accumulator logits) gives
    the smallest of 8/16/32 holding ``acc_bits``, signed (sign-extended).
    """
    last = model.layers[-1]
    if isinstance(last, Requant):
        return last.bits, last.signed
    for w in (8, 16, 32):
        if last.acc_bits <= w:
            return w, True
    return 64, True


def default_elements_per_beat(element_bits: int, elements: int) -> int:
    """Elements filling the narrowest whole-byte beat (at least one, at most a sample)."""
    return max(1, min(elements, (8 * math.ceil(element_bits / 8)) // element_bits))


def plan_engines(model: IntModel) -> list:
    """The engines of ``model`` in order (not yet elaborated)."""
    if not isinstance(model, IntModel):
        raise TypeError(f"model must be an IntModel, got {type(model).__name__}")
    types = model.types()
    engines, i, width = [], 0, model.input.size
    layers = model.layers
    while i < len(layers):
        layer = layers[i]
        if isinstance(layer, Dense):
            rq = layers[i + 1] if i + 1 < len(layers) and isinstance(layers[i + 1], Requant) \
                else None
            eng = DenseEngine(layer, types[i], rq)
            eng.layer_names = [layer.name] + ([rq.name] if rq else [])
            width = layer.out_features
            i += 2 if rq else 1
        else:
            eng = RequantEngine(layer, types[i], elements=width)
            eng.layer_names = [layer.name]
            i += 1
        engines.append(eng)
    return engines


def _split_epb(elements_per_beat):
    if elements_per_beat is None:
        return None, None
    if isinstance(elements_per_beat, (tuple, list)) and len(elements_per_beat) == 2:
        a, b = elements_per_beat
        return a, b
    if isinstance(elements_per_beat, dict):
        extra = set(elements_per_beat) - {"input", "output"}
        if extra:
            raise ValueError(f"elements_per_beat: unknown key(s) {sorted(extra)}")
        return elements_per_beat.get("input"), elements_per_beat.get("output")
    return elements_per_beat, elements_per_beat


class SoftfloorTop(wiring.Component):
    """The accelerator: AXI4-Stream in, AXI4-Stream out, one engine per layer.

    Parameters
    ----------
    model : IntModel
    elements_per_beat : int, (int, int), {"input": int, "output": int} or None
        Elements per beat of the input and output streams (an int applies to both). ``None``
        chooses the narrowest whole-byte beat (see :func:`default_elements_per_beat`).
    """

    def __init__(self, model: IntModel, *, elements_per_beat=None):
        if not isinstance(model, IntModel):
            raise TypeError(f"model must be an IntModel, got {type(model).__name__}")
        self._MustUse__silence = True           # no "never used" warning if validation fails
        self.model = model
        self.engines = plan_engines(model)
        in_epb, out_epb = _split_epb(elements_per_beat)
        in_shape = P.code_shape(model.input.bits, model.input.signed)
        self.in_layout = BeatLayout(
            in_shape, elements=model.input.size,
            elements_per_beat=in_epb or default_elements_per_beat(in_shape.width,
                                                                  model.input.size))
        ob, osg = output_element_bits(model)
        n_out = model.output_size
        self.out_layout = BeatLayout(
            P.code_shape(ob, osg), elements=n_out,
            elements_per_beat=out_epb or default_elements_per_beat(ob, n_out))
        iw, ow = self.in_layout.tdata_width, self.out_layout.tdata_width
        super().__init__({
            "s_axis_tdata": In(iw), "s_axis_tvalid": In(1), "s_axis_tlast": In(1),
            "s_axis_tready": Out(1),
            "m_axis_tdata": Out(ow), "m_axis_tvalid": Out(1), "m_axis_tlast": Out(1),
            "m_axis_tready": In(1),
        })
        self._MustUse__silence = False

    # -- the FINN-style faces ---------------------------------------------------------------
    def model_run(self, codes) -> np.ndarray:
        """Numpy twin of the whole top: :func:`softfloor.golden.run`."""
        return golden.run(self.model, codes)

    @property
    def initiation_interval(self) -> int:
        """Cycles between successive samples when streaming back to back (output always ready).

        The slowest engine sets the pace; the input and output adapters move one element per
        cycle, so they only matter when a beat stream is slower than the engines.
        """
        return max([e.cycles for e in self.engines]
                   + [self.in_layout.elements, self.out_layout.beats_per_sample])

    @property
    def cycles_per_inference(self) -> int:
        """First input beat accepted -> last output beat accepted (isolated sample, output ready).

        Cycle difference between the two handshakes, input beats presented back to back. Each
        engine starts computing only when its whole input vector has arrived, so latencies add
        up: 1 (unpacker) + ``input_elements - 1`` + per engine, from its last input accepted to
        its last output accepted, ``rows * cols + ENGINE_LATENCY`` (``REQUANT_LATENCY`` for a
        standalone Requant) + 1 (packer).
        """
        total = self.in_layout.elements - 1 + ADAPTER_LATENCY
        for e in self.engines:
            n_in = e.cols if isinstance(e, DenseEngine) else e.elements
            total += e.latency - (n_in - 1)
        return total

    @property
    def mac_units(self) -> int:
        return sum(e.mac_units for e in self.engines)

    @property
    def io_pins(self) -> int:
        return self.in_layout.tdata_width + 3 + self.out_layout.tdata_width + 3 + 2

    def resources(self) -> dict:
        tot = {"lut4": 0, "dff": 0, "ebr": 0, "dsp": 0, "weight_bits": 0}
        for e in self.engines:
            for k, v in e.resources().items():
                tot[k] += v
        adapters = 2 * (self.in_layout.tdata_width + self.out_layout.tdata_width) + 16
        tot["lut4"] += adapters
        tot["dff"] += self.in_layout.tdata_width + self.out_layout.tdata_width + 16
        return tot

    # -- hardware ---------------------------------------------------------------------------
    def elaborate(self, platform):
        m = Module()
        m.submodules.unpack = unpack = BeatUnpacker(self.in_layout)
        m.d.comb += [unpack.i.payload.data.eq(self.s_axis_tdata),
                     unpack.i.payload.last.eq(self.s_axis_tlast),
                     unpack.i.valid.eq(self.s_axis_tvalid),
                     self.s_axis_tready.eq(unpack.i.ready)]
        prev = unpack.o
        for n, eng in enumerate(self.engines):
            m.submodules[f"engine{n}_{eng.layer_names[0]}"] = eng
            wiring.connect(m, prev, eng.i)
            prev = eng.o
        m.submodules.pack = pack = BeatPacker(self.out_layout, self.engines[-1].out_shape)
        wiring.connect(m, prev, pack.i)
        m.d.comb += [self.m_axis_tdata.eq(pack.o.payload.data),
                     self.m_axis_tlast.eq(pack.o.payload.last),
                     self.m_axis_tvalid.eq(pack.o.valid),
                     pack.o.ready.eq(self.m_axis_tready)]
        return m
