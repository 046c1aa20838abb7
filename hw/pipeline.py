"""A chain of folded ops between the top's beat adapters: stream widths, timing and totals.

::

    s_axis ─► BeatUnpacker ─► op 0 ─► op 1 ─► ... ─► BeatPacker ─► m_axis

:class:`Pipeline` is what the planner hands the top: the ops with their folds and the stream
width of every link (:func:`link_widths`), the input and output beat layouts
(:func:`beat_layouts`), and the formulas of the whole chain (initiation interval, latency,
resource totals). Nothing here knows an op's kind: every question goes to the ops.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from softfloor.intmodel import IntModel
from softfloor.hw.ops import HwOp, lower
from softfloor.hw.ops.conv2d import divisors
from softfloor.hw.rtl import primitives as P
from softfloor.hw.rtl.spram import LOAD_BITS
from softfloor.hw.rtl.stream_io import BeatLayout

__all__ = ["Pipeline", "link_widths", "check_split_output", "beat_layouts",
           "output_element_bits", "default_elements_per_beat", "ADAPTER_LATENCY",
           "ADAPTER_LC_PER_BIT", "IO_PINS_UP5K_SG48"]

#: User I/O pins of the iCE40 UP5K in the SG48 package.
IO_PINS_UP5K_SG48 = 39
#: Extra cycles of the stream adapters in the latency formula: the unpacker (1) and packer (1).
ADAPTER_LATENCY = 2
#: Logic of the beat adapters and the top, per tdata bit.
ADAPTER_LC_PER_BIT = 2.5


# ----------------------------------------------------------------------------------------------
# Beat layouts of the top's ports

def output_element_bits(model: IntModel, ops: list[HwOp] | None = None) -> tuple[int, bool]:
    """Element width and signedness of the output codes.

    Raw accumulator logits (a final dense or conv without a requant, possibly followed by
    ops that keep their codes) give the smallest of 8/16/32 holding ``acc_bits``, signed
    (sign-extended); otherwise the output codes' own ``bits``/``signed``.
    """
    ops = lower(model) if ops is None else ops
    raw = next((op.raw_output for op in reversed(ops) if op.raw_output is not None), False)
    t = model.output_type
    if not raw:
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


def beat_layouts(model: IntModel, elements_per_beat=None,
                 ops: list[HwOp] | None = None) -> tuple[BeatLayout, BeatLayout]:
    """Input and output :class:`BeatLayout` of the top (see
    :class:`~softfloor.hw.top.SoftfloorTop`); ``ops``: the model's ops, if already lowered."""
    in_epb, out_epb = _split_epb(elements_per_beat)
    in_shape = P.code_shape(model.input.bits, model.input.signed)
    in_layout = BeatLayout(
        in_shape, elements=model.input.size,
        elements_per_beat=in_epb or default_elements_per_beat(in_shape.width, model.input.size))
    ob, osg = output_element_bits(model, ops)
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


# ----------------------------------------------------------------------------------------------
# Stream widths between ops

def link_widths(ops: list[HwOp], in_layout: BeatLayout, out_layout: BeatLayout) -> list[int]:
    """Elements per transfer on each internal stream: ``len(ops) + 1`` widths.

    Width ``k`` is the stream into ``ops[k]`` (the last one feeds the output packer). A chain of
    passthrough (elementwise) ops passes its width through. The width of a stream is one both
    ends can handle (:meth:`~softfloor.hw.ops.base.HwOp.out_width_ok` of the producer or a
    divisor of the input beat; :meth:`~softfloor.hw.ops.base.HwOp.in_width_ok` of the consumer
    or a divisor of the output beat); it is the smallest such width that keeps up with the
    slowest op.
    """
    target = max([op.plan_cycles for op in ops if not op.passthrough]
                 + [in_layout.beats_per_sample, out_layout.beats_per_sample])
    widths = [None] * (len(ops) + 1)
    k = 0
    while k <= len(ops):
        # segment: producer (k-1 or the unpacker) ... passthrough ops ... consumer
        j = k
        while j < len(ops) and ops[j].passthrough:
            j += 1
        if k == 0:
            prod = None
            n = in_layout.elements
            ok = divisors(math.gcd(in_layout.elements_per_beat, in_layout.last_beat_elements))
        else:
            prod = ops[k - 1]
            n = prod.out_elements
            ok = [d for d in divisors(n) if prod.out_width_ok(d)]
        if j < len(ops):
            ok = [d for d in ok if ops[j].in_width_ok(d)]
        else:
            ok = [d for d in ok if out_layout.elements_per_beat % d == 0
                  and out_layout.last_beat_elements % d == 0]
        if not ok:
            raise ValueError(_no_width_message(prod))
        fast = [d for d in ok if n // d <= target]
        w = fast[0] if fast else ok[-1]
        for t in range(k, j + 1):
            widths[t] = w
        k = j + 1
    return widths


def _no_width_message(prod: HwOp | None) -> str:
    pe, simd = (prod.fold if prod is not None and prod.fold else (1, 1))
    folds = math.ceil(prod.cols / simd) if prod is not None and prod.fold else 1
    need = math.ceil(pe / folds)
    return (f"{prod.name if prod else 'input'}: fold {pe}x{simd} finishes {pe} results every "
            f"{folds} cycles, so its output stream needs at least {need} elements per "
            f"transfer, but no such width fits the next layer (its simd and columns, its "
            f"frame, or the output beat): choose a smaller pe or a simd of the next layer that "
            f"{need} divides")


def check_split_output(last: HwOp, out_layout: BeatLayout) -> None:
    """An output beat narrower than an element takes ``k = beats_per_element`` cycles per
    element: the last op must then leave at least ``k`` cycles between its output elements
    (a dense or conv folded ``pe = 1`` with ``ceil(cols/simd) >= k``), so the packer never
    stalls it and the latency stays exact."""
    k = out_layout.beats_per_element
    if k == 1 or last.output_spacing >= k:
        return
    raise ValueError(
        f"{last.name}: the {out_layout.tdata_width}-bit output beat carries each "
        f"{out_layout.element_bits}-bit element in {k} beats, so the last engine must "
        f"produce at most one element every {k} cycles (a dense layer folded pe = 1 with "
        f"ceil(cols/simd) >= {k}); fold it so or widen the output beat")


# ----------------------------------------------------------------------------------------------
# The chain

@dataclass(frozen=True, eq=False)
class Pipeline:
    """Folded ops with their stream widths between the top's input and output adapters."""
    model: IntModel
    ops: tuple
    in_layout: BeatLayout
    out_layout: BeatLayout

    @classmethod
    def make(cls, model: IntModel, ops: list[HwOp], in_layout: BeatLayout,
             out_layout: BeatLayout) -> "Pipeline":
        """``ops`` (folded) joined by the widths :func:`link_widths` chooses; a ValueError
        naming the layer if no width fits or the last op cannot feed a split output beat."""
        widths = link_widths(ops, in_layout, out_layout)
        check_split_output(ops[-1], out_layout)
        ops = tuple(op.with_widths(widths[k], widths[k + 1]) for k, op in enumerate(ops))
        return cls(model, ops, in_layout, out_layout)

    def __str__(self) -> str:
        return "\n".join(f"{k}: {op!r}" for k, op in enumerate(self.ops))

    @property
    def widths(self) -> list[int]:
        return [op.in_ept for op in self.ops] + [self.ops[-1].out_ept]

    @property
    def in_elements_per_transfer(self) -> int:
        return self.ops[0].in_ept

    @property
    def out_elements_per_transfer(self) -> int:
        return self.ops[-1].out_ept

    @property
    def initiation_interval(self) -> int:
        """Cycles between successive samples streamed back to back (output always ready): the
        slowest of every op, the unpacker's transfers or beats, the packer's transfers or
        beats."""
        L, O = self.in_layout, self.out_layout
        return max([op.initiation_interval for op in self.ops]
                   + [L.elements // self.in_elements_per_transfer, L.beats_per_sample,
                      O.elements // self.out_elements_per_transfer, O.beats_per_sample])

    @property
    def cycles_per_inference(self) -> int:
        """First input beat accepted -> last output beat accepted (isolated sample, output
        ready): input transfers - 1 + the adapters + each op's tail latency + the extra beats
        of a split output element."""
        split = self.out_layout.beats_per_element - 1
        return (self.in_layout.elements // self.in_elements_per_transfer - 1 + ADAPTER_LATENCY
                + split + sum(op.tail_latency for op in self.ops))

    @property
    def mac_units(self) -> int:
        return sum(op.mac_units for op in self.ops)

    @property
    def adapter_bits(self) -> int:
        return self.in_layout.tdata_width + self.out_layout.tdata_width

    @property
    def io_pins(self) -> int:
        """Top-level pins: both AXI4-Stream ports, clock and reset, and the weight-load port
        (``w_axis``: data, valid, ready) when weights sit in SPRAM."""
        load = LOAD_BITS + 2 if any(op.memory == "spram" for op in self.ops) else 0
        return self.in_layout.tdata_width + 3 + self.out_layout.tdata_width + 3 + 2 + load

    def totals(self, estimates: list[dict]) -> dict:
        """The planner's total of per-op ``estimates``: their sum plus the adapters' logic."""
        tot = {k: sum(e.get(k, 0) for e in estimates) for k in ("lc", "ff", "ram", "dsp",
                                                                  "spram")}
        tot["lc"] += int(ADAPTER_LC_PER_BIT * self.adapter_bits) + 20
        return tot

    def resources(self, device: str = "up5k") -> dict:
        """The manifest's ``resources_estimate``: every op's resources plus the adapters."""
        tot: dict = {}
        for op in self.ops:
            for k, v in op.resources(device).items():
                tot[k] = tot.get(k, 0) + v
        bits = self.adapter_bits
        tot["lc"] += int(ADAPTER_LC_PER_BIT * bits) + 20
        tot["ff"] += bits + 16
        tot["lut4"], tot["dff"] = tot["lc"], tot["ff"]
        return tot

    def model_run(self, codes) -> np.ndarray:
        """The ops' numpy twins chained (stream order in and out, as the hardware)."""
        x = np.asarray(codes, dtype=np.int64)
        for op in self.ops:
            x = op.model(x)
        return x
