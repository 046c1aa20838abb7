"""The whole network as one streaming dataflow component with AXI4-Stream ports.

::

    s_axis ─► BeatUnpacker ─► engine 0 ─► engine 1 ─► ... ─► BeatPacker ─► m_axis

One :class:`~softfloor.hw.engine.DenseEngine` per Dense layer (fused with the Requant that follows
it, if any), folded ``pe x simd`` as the folding (usually the planner's plan) says; a Requant that
does not follow a Dense becomes a :class:`~softfloor.hw.engine.RequantEngine`. Engines are joined
by internal ``stream.Signature`` streams with valid/ready everywhere, each carrying as many
elements per transfer as :func:`softfloor.hw.planner.link_widths` chooses (one, unless a folded
engine finishes results faster); nothing is dropped or duplicated. Any other op raises
:class:`~softfloor.hw.planner.UnsupportedLayerError` naming the layer and the op.

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
from ..intmodel import Conv2d, Dense, Flatten, IntModel, MaxPool2d, Requant
from . import primitives as P
from .conv import ConvEngine, MaxPoolEngine
from .engine import DenseEngine, RequantEngine
from .threshold import ThresholdEngine
from .planner import Plan, engine_specs, link_widths
from .stream_io import BeatLayout, BeatPacker, BeatUnpacker

__all__ = ["SoftfloorTop", "plan_engines", "build_engines", "top_latency", "silence",
           "check_split_output", "beat_layouts", "output_element_bits",
           "default_elements_per_beat", "IO_PINS_UP5K_SG48"]

#: User I/O pins of the iCE40 UP5K in the SG48 package.
IO_PINS_UP5K_SG48 = 39
#: Extra cycles of the stream adapters in the latency formula: the unpacker (1) and packer (1).
ADAPTER_LATENCY = 2


def output_element_bits(model: IntModel) -> tuple[int, bool]:
    """Element width and signedness of the output codes.

    A final Requant gives its own ``bits``/``signed``; a final Dense (raw accumulator logits) gives
    the smallest of 8/16/32 holding ``acc_bits``, signed (sign-extended).
    """
    last = next((l for l in reversed(model.layers) if not isinstance(l, (Flatten, MaxPool2d))),
                model.layers[-1])
    t = model.output_type
    if not isinstance(last, (Dense, Conv2d)):
        return t.bits, t.signed
    for w in (8, 16, 32):
        if t.bits <= w:
            return w, True
    return 64, True


def default_elements_per_beat(element_bits: int, elements: int) -> int:
    """Elements filling the narrowest whole-byte beat (at least one, at most a sample)."""
    return max(1, min(elements, (8 * math.ceil(element_bits / 8)) // element_bits))


def _split_epb(elements_per_beat):
    if elements_per_beat is None:
        return None, None
    if isinstance(elements_per_beat, (tuple, list)) and len(elements_per_beat) == 2:
        a, b = elements_per_beat
        return a, b
    if isinstance(elements_per_beat, dict):
        extra = set(elements_per_beat) - {"input", "output", "output_bits",
                                          "output_tdata_width"}
        if extra:
            raise ValueError(f"elements_per_beat: unknown key(s) {sorted(extra)}")
        return elements_per_beat.get("input"), elements_per_beat.get("output")
    return elements_per_beat, elements_per_beat


def _output_bits_override(model: IntModel, elements_per_beat):
    """``elements_per_beat["output_bits"]``: output elements this wide instead of the whole-byte
    default (raw logits of ``acc_bits`` then need no 32-bit beat: fewer pins)."""
    if not isinstance(elements_per_beat, dict) or elements_per_beat.get("output_bits") is None:
        return None
    ob = elements_per_beat["output_bits"]
    need = model.output_type.bits
    if isinstance(ob, bool) or not isinstance(ob, int) or ob < need:
        raise ValueError(f"elements_per_beat: output_bits={ob!r} must be an integer >= {need}, "
                         f"the width of the output codes")
    return ob


def beat_layouts(model: IntModel, elements_per_beat=None) -> tuple[BeatLayout, BeatLayout]:
    """Input and output :class:`BeatLayout` of the top (see :class:`SoftfloorTop`)."""
    in_epb, out_epb = _split_epb(elements_per_beat)
    in_shape = P.code_shape(model.input.bits, model.input.signed)
    in_layout = BeatLayout(
        in_shape, elements=model.input.size,
        elements_per_beat=in_epb or default_elements_per_beat(in_shape.width, model.input.size))
    ob, osg = output_element_bits(model)
    ob = _output_bits_override(model, elements_per_beat) or ob
    n_out = model.output_size
    otw = elements_per_beat.get("output_tdata_width") if isinstance(elements_per_beat, dict) \
        else None
    if otw is not None and otw < ob and (out_epb or 1) != 1:
        raise ValueError(f"elements_per_beat: a {otw}-bit output beat splits each {ob}-bit "
                         f"element over beats, so it carries one element, not {out_epb}")
    out_layout = BeatLayout(P.code_shape(ob, osg), elements=n_out,
                            elements_per_beat=out_epb or (1 if otw is not None and otw < ob
                                                          else default_elements_per_beat(ob,
                                                                                         n_out)),
                            tdata_width=otw)
    return in_layout, out_layout


def _folding_dict(folding, specs) -> dict:
    if folding is None:
        return {}
    if isinstance(folding, Plan):
        return folding.folding()
    if not isinstance(folding, dict):
        raise TypeError(f"folding must be None, a Plan or a dict, got {type(folding).__name__}")
    names = [s.dense.name for s in specs if s.folded]
    for name in folding:
        if name not in names:
            raise ValueError(f"folding: no dense layer named {name!r} (dense layers: "
                             f"{', '.join(names)})")
    return folding


def plan_engines(model: IntModel, folding=None, elements_per_beat=None) -> list:
    """The engines of ``model`` in order (not yet elaborated), folded as ``folding`` says.

    ``folding``: ``None`` (every dense engine ``pe = simd = 1``), a
    :class:`~softfloor.hw.planner.Plan`, or ``{dense layer name: (pe, simd[, dsp])}``.
    Layers without a hardware engine raise :class:`~softfloor.hw.planner.UnsupportedLayerError`
    naming the layer and its op.
    """
    specs = engine_specs(model)
    fold = _folding_dict(folding, specs)
    for s in specs:
        if s.folded and s.dense.name in fold:
            f = tuple(fold[s.dense.name])
            s.pe, s.simd = int(f[0]), int(f[1])
            s.dsp = bool(f[2]) if len(f) > 2 else False
            if not (1 <= s.pe <= s.rows and 1 <= s.simd <= s.cols):
                raise ValueError(f"{s.name}: fold {s.pe}x{s.simd} outside 1..{s.rows} x "
                                 f"1..{s.cols} for this {s.rows}x{s.cols} layer")
    in_layout, out_layout = beat_layouts(model, elements_per_beat)
    return build_engines(specs, link_widths(specs, in_layout, out_layout))


def build_engines(specs, widths) -> list:
    """Engine objects (not yet elaborated) for folded ``specs`` and stream ``widths``."""
    engines = []
    for k, s in enumerate(specs):
        if s.kind == "dense":
            eng = DenseEngine(s.dense, s.in_type, s.requant, pe=s.pe, simd=s.simd,
                              in_elements_per_transfer=widths[k],
                              out_elements_per_transfer=widths[k + 1], dsp=s.dsp)
        elif s.kind == "conv":
            eng = ConvEngine(s.layer, s.in_type, s.frame, order=s.order, requant=s.requant,
                             pe=s.pe, simd=s.simd, in_elements_per_transfer=widths[k],
                             tap_elements_per_transfer=s.tap_ept,
                             out_elements_per_transfer=widths[k + 1], dsp=s.dsp)
        elif s.kind == "pool":
            eng = MaxPoolEngine(s.layer, s.in_type, s.frame, order=s.order,
                                in_elements_per_transfer=widths[k],
                                tap_elements_per_transfer=s.tap_ept)
        elif s.kind == "threshold":
            eng = ThresholdEngine(s.layer, s.in_type, elements=s.rows,
                                  elements_per_transfer=widths[k], channel_of=s.channel_of)
        else:
            eng = RequantEngine(s.requant, s.in_type, elements=s.rows,
                                elements_per_transfer=widths[k], channel_of=s.channel_of)
        eng.layer_names = list(s.names)
        eng.spec = s
        engines.append(eng)
    return engines


def silence(engines) -> list:
    """Mark engines used only for their faces (never elaborated): no UnusedElaboratable warning."""
    for e in engines:
        for obj in (e, getattr(e, "window", None), getattr(e, "core", None)):
            if obj is not None:
                obj._MustUse__silence = True
    return engines


def check_split_output(last, out_layout) -> None:
    """An output beat narrower than an element takes ``k = beats_per_element`` cycles per
    element: the last engine must then produce at most one element every ``k`` cycles (a dense
    or conv engine with ``pe = 1`` and ``ceil(cols/simd) >= k``), so the packer never stalls
    it and the latency stays exact. ``last`` is an engine or an EngineSpec."""
    k = out_layout.beats_per_element
    if k == 1:
        return
    name = last.names[0] if hasattr(last, "names") else last.layer_names[0]
    folds = getattr(last, "folds", 0)
    if not (getattr(last, "pe", 0) == 1 and folds >= k and last.cols > 1
            and (getattr(last, "folded", False) or hasattr(last, "dense"))):
        raise ValueError(
            f"{name}: the {out_layout.tdata_width}-bit output beat carries each "
            f"{out_layout.element_bits}-bit element in {k} beats, so the last engine must "
            f"produce at most one element every {k} cycles (a dense layer folded pe = 1 with "
            f"ceil(cols/simd) >= {k}); fold it so or widen the output beat")


def top_latency(engines, in_layout, in_ept: int, out_layout=None) -> int:
    """:attr:`SoftfloorTop.cycles_per_inference` of a chain of engines (see there)."""
    split = out_layout.beats_per_element - 1 if out_layout is not None else 0
    return (in_layout.elements // in_ept - 1 + ADAPTER_LATENCY + split
            + sum(e.tail_latency for e in engines))


class SoftfloorTop(wiring.Component):
    """The accelerator: AXI4-Stream in, AXI4-Stream out, one engine per layer.

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
    folding : None, Plan or dict
        Per dense layer ``(pe, simd[, dsp])`` (see :func:`plan_engines`); ``None`` is fully
        folded (``1 x 1``, one MAC lane per layer). :func:`softfloor.hw.generate.generate`
        passes the planner's plan.
    """

    def __init__(self, model: IntModel, *, elements_per_beat=None, folding=None):
        if not isinstance(model, IntModel):
            raise TypeError(f"model must be an IntModel, got {type(model).__name__}")
        self._MustUse__silence = True           # no "never used" warning if validation fails
        self.model = model
        self.plan = folding if isinstance(folding, Plan) else None
        self.engines = plan_engines(model, folding, elements_per_beat)
        self.in_layout, self.out_layout = beat_layouts(model, elements_per_beat)
        try:
            check_split_output(self.engines[-1], self.out_layout)
        except ValueError:
            silence(self.engines)               # never elaborated: no UnusedElaboratable noise
            raise
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
    def in_elements_per_transfer(self) -> int:
        return self.engines[0].in_ept

    @property
    def out_elements_per_transfer(self) -> int:
        return self.engines[-1].out_ept

    @property
    def initiation_interval(self) -> int:
        """Cycles between successive samples when streaming back to back (output always ready).

        The slowest stage sets the pace: an engine's compute cycles or stream transfers
        (:attr:`DenseEngine.initiation_interval`), the input unpacker's transfers or beats, the
        output packer's transfers or beats.
        """
        L, O = self.in_layout, self.out_layout
        return max([e.initiation_interval for e in self.engines]
                   + [L.elements // self.in_elements_per_transfer, L.beats_per_sample,
                      O.elements // self.out_elements_per_transfer, O.beats_per_sample])

    @property
    def cycles_per_inference(self) -> int:
        """First input beat accepted -> last output beat accepted (isolated sample, output ready).

        Cycle difference between the two handshakes, input beats presented back to back. Each
        engine starts computing only when its whole input vector has arrived, so latencies add
        up: 1 (unpacker) + ``input transfers - 1`` + per engine, from its last input accepted to
        its last output accepted, :attr:`DenseEngine.tail_latency` (``cycles + tree levels +
        ENGINE_LATENCY + last group transfers - 1``; ``REQUANT_LATENCY`` for a standalone
        Requant) + 1 (packer).
        """
        return top_latency(self.engines, self.in_layout, self.in_elements_per_transfer,
                           self.out_layout)

    @property
    def mac_units(self) -> int:
        return sum(e.mac_units for e in self.engines)

    @property
    def io_pins(self) -> int:
        return self.in_layout.tdata_width + 3 + self.out_layout.tdata_width + 3 + 2

    def resources(self, device: str = "up5k") -> dict:
        """Planner estimate of the whole top on ``device`` (engines + adapters)."""
        from .planner import ADAPTER_LC_PER_BIT
        tot: dict = {}
        for e in self.engines:
            for k, v in e.resources(device).items():
                tot[k] = tot.get(k, 0) + v
        bits = self.in_layout.tdata_width + self.out_layout.tdata_width
        tot["lc"] += int(ADAPTER_LC_PER_BIT * bits) + 20
        tot["ff"] += bits + 16
        tot["lut4"], tot["dff"] = tot["lc"], tot["ff"]
        return tot

    # -- hardware ---------------------------------------------------------------------------
    def elaborate(self, platform):
        m = Module()
        m.submodules.unpack = unpack = BeatUnpacker(self.in_layout, self.in_elements_per_transfer)
        m.d.comb += [unpack.i.payload.data.eq(self.s_axis_tdata),
                     unpack.i.payload.last.eq(self.s_axis_tlast),
                     unpack.i.valid.eq(self.s_axis_tvalid),
                     self.s_axis_tready.eq(unpack.i.ready)]
        prev = unpack.o
        for n, eng in enumerate(self.engines):
            m.submodules[f"engine{n}_{eng.layer_names[0]}"] = eng
            wiring.connect(m, prev, eng.i)
            prev = eng.o
        m.submodules.pack = pack = BeatPacker(self.out_layout, self.engines[-1].out_shape,
                                              self.out_elements_per_transfer)
        wiring.connect(m, prev, pack.i)
        m.d.comb += [self.m_axis_tdata.eq(pack.o.payload.data),
                     self.m_axis_tlast.eq(pack.o.payload.last),
                     self.m_axis_tvalid.eq(pack.o.valid),
                     pack.o.ready.eq(self.m_axis_tready)]
        return m
