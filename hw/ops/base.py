"""The op interface: one plan-time class per integer-model op (FINN's ``HWCustomOp`` idea).

An :class:`HwOp` is a frozen, printable description of one hardware stage: which model layers
it computes, its fold (for the ops that have one) and its stream widths. From these it answers
everything the planner, the top and the manifest ask, without building any hardware:

=========================  =====================================================================
lowering                   :meth:`HwOp.lower` (class method): the ops of the layer at the
                           :class:`Lowering` cursor; registered per IntModel class
folds and widths           :meth:`fold_options`, :meth:`with_fold`, :meth:`in_width_ok`,
                           :meth:`out_width_ok`, :meth:`with_widths`, :meth:`dsp_lanes`
timing                     :attr:`plan_cycles`, :attr:`cycles`, :attr:`initiation_interval`,
                           :attr:`tail_latency`, :attr:`latency`
resources                  :meth:`estimate` (per device family)
numpy twin                 :meth:`model` (stream order in and out)
hardware                   :meth:`build`: an Amaranth ``wiring.Component`` with ``i``/``o``
                           streams (:mod:`softfloor.hw.rtl`)
manifest, plan file        :meth:`manifest_entry`, :meth:`plan_entry`, :meth:`apply_plan_entry`
=========================  =====================================================================

``docs/hardware.md`` ("The op interface") walks through adding one.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import ClassVar

import numpy as np

from softfloor.intmodel import CodeType, IntModel
from softfloor.hw.rtl import primitives as P
from softfloor.hw.rtl.elementwise import ELEMENTWISE_LATENCY
from softfloor.hw.rtl.tables import positive_int

__all__ = ["HwOp", "ElementwiseOp", "Lowering", "UnsupportedLayerError", "PlanEntryError",
           "channel_of"]


class UnsupportedLayerError(ValueError):
    """A model layer has no hardware op; the message names the layer and its op."""


class PlanEntryError(ValueError):
    """An entry of a plan file an op cannot take; the message names the layer and the field."""


def channel_of(shape, order: str) -> list[int]:
    """Channel of each element of a sample of ``shape`` sent in ``order``."""
    if len(shape) == 1:
        return list(range(shape[0]))
    C, H, W = shape
    if order == "hwc":
        return [e % C for e in range(C * H * W)]
    return [e // (H * W) for e in range(C * H * W)]


class Lowering:
    """A cursor over a model's layers while they become ops.

    It tracks the input shape, code type and element order of the stream at layer ``index``
    (``"chw"`` for the model's ``(C, H, W)`` input, ``"flat"`` for a vector, ``"hwc"`` after a
    conv or pool) and a pending column permutation (a ``flatten`` of an HWC stream: the next
    dense layer takes its columns in stream order).
    """

    def __init__(self, model: IntModel):
        self.model = model
        self.layers = model.layers
        self.types = model.types()
        self.shapes = [tuple(s) for s in model.shapes()]
        self.index = 0
        self.order = "chw" if len(self.shapes[0]) == 3 else "flat"
        self.permutation = None
        self.permuted_from = None

    @property
    def done(self) -> bool:
        return self.index >= len(self.layers)

    @property
    def layer(self):
        return self.layers[self.index]

    @property
    def next_layer(self):
        k = self.index + 1
        return self.layers[k] if k < len(self.layers) else None

    @property
    def shape(self) -> tuple:
        """Input shape of the current layer."""
        return self.shapes[self.index]

    @property
    def out_shape(self) -> tuple:
        """Output shape of the current layer."""
        return self.shapes[self.index + 1]

    @property
    def in_type(self) -> CodeType:
        return self.types[self.index]

    def where(self, k: int | None = None) -> str:
        k = self.index if k is None else k
        return f"layers[{k}] ({self.layers[k].name})"

    def take_permutation(self):
        """The pending column permutation (``None`` if the stream is in C order), cleared."""
        perm, self.permutation = self.permutation, None
        return perm

    def advance(self, n: int, order: str) -> None:
        """``n`` layers consumed; the stream after them is in ``order``."""
        self.index += n
        self.order = order


@dataclass(frozen=True, kw_only=True, eq=False, repr=False)
class HwOp:
    """One hardware stage: its layers, fold and stream widths (see the module docstring).

    Fields common to every op: ``names`` (the model layers it computes, the first one names
    it; a dense or conv op also computes the requant it fuses), ``in_type`` (input code type),
    ``in_shape`` (input tensor shape), ``in_order`` (element order on the input stream),
    ``layer`` (the model layer it lowers), ``in_ept`` / ``out_ept`` (elements per input /
    output transfer, chosen by the planner).
    """
    #: The manifest's ``kind`` of this op.
    kind: ClassVar[str] = ""
    #: IntModel layer classes whose lowering this op owns (the registry key).
    layer_types: ClassVar[tuple] = ()
    #: Output stream width = input stream width (elementwise ops: the planner passes widths
    #: through them, and their cycles do not set the pace).
    passthrough: ClassVar[bool] = False
    #: Memory kinds a plan file may give this op (the first is the default).
    memories: ClassVar[tuple] = ("logic",)

    names: tuple
    in_type: CodeType
    in_shape: tuple
    layer: object
    in_order: str = "flat"
    in_ept: int = 1
    out_ept: int = 1

    def __repr__(self) -> str:
        fold = f" {self.fold[0]}x{self.fold[1]}" if self.fold else ""
        return (f"{type(self).__name__}({'+'.join(self.names)}: {self.rows}x{self.cols}{fold}, "
                f"{self.in_ept}/{self.out_ept} per transfer, memory {self.memory})")

    # -- lowering ---------------------------------------------------------------------------
    @classmethod
    def lower(cls, lw: Lowering) -> list["HwOp"]:
        """The ops of the layer at ``lw`` (consuming it, and any layer it fuses)."""
        raise NotImplementedError

    @classmethod
    def at(cls, lw: Lowering, **fields) -> "HwOp":
        """The op of the layer at ``lw``: its name, input type, shape and order (``fields``
        add to or override them); ``lw`` is not advanced."""
        return cls(**{"names": (lw.layer.name,), "in_type": lw.in_type, "in_shape": lw.shape,
                      "in_order": lw.order, "layer": lw.layer, **fields})

    # -- what it computes -------------------------------------------------------------------
    @property
    def name(self) -> str:
        return self.names[0]

    @property
    def out_type(self) -> CodeType:
        """Code type of its output elements (the layer's own rule by default)."""
        return self.layer.out_type(self.in_type)

    @property
    def in_elements(self) -> int:
        return int(np.prod(self.in_shape))

    @property
    def out_elements(self) -> int:
        raise NotImplementedError

    @property
    def out_order(self) -> str:
        """Element order of the output stream."""
        return self.in_order

    @property
    def rows(self) -> int:
        """The manifest's ``rows`` (output rows of a matrix; elements of an elementwise op)."""
        raise NotImplementedError

    @property
    def cols(self) -> int:
        """The manifest's ``cols`` (input columns of a matrix; 1 for an elementwise op)."""
        return 1

    def model(self, x) -> np.ndarray:
        """Numpy twin on ``(N, in_elements)`` codes in stream order -> ``(N, out_elements)``."""
        raise NotImplementedError

    # -- folds and stream widths ------------------------------------------------------------
    @property
    def fold(self) -> tuple[int, int] | None:
        """``(pe, simd)`` of an op the planner folds, else ``None``."""
        return None

    def fold_options(self, device: str, wide: bool) -> list[tuple]:
        """``(plan_cycles, lc, pe, simd)`` of every fold worth searching (empty: no fold)."""
        return []

    def with_fold(self, pe: int, simd: int) -> "HwOp":
        """This op folded ``pe x simd`` (a ValueError naming the layer if it cannot be)."""
        raise ValueError(f"{self.name}: a {self.kind} layer has no PE x SIMD fold")

    def in_width_ok(self, d: int) -> bool:
        """Can this op take ``d`` elements per input transfer?"""
        return self.in_elements % d == 0

    def out_width_ok(self, d: int) -> bool:
        """Can this op emit ``d`` elements per output transfer?"""
        return self.out_elements % d == 0

    def with_widths(self, in_ept: int, out_ept: int) -> "HwOp":
        return dataclasses.replace(self, in_ept=in_ept, out_ept=out_ept)

    def check_widths(self) -> "HwOp":
        """This op if its stream widths are ones it takes, else a ValueError naming the layer."""
        for key, n, ok in (("in_elements_per_transfer", self.in_ept, self.in_width_ok),
                           ("out_elements_per_transfer", self.out_ept, self.out_width_ok)):
            positive_int(key, n)
            if not ok(n):
                raise ValueError(f"{self.name}: {key}={n} is not a width this {self.kind} layer "
                                 f"takes")
        return self

    @property
    def dsp(self) -> bool:
        """Are its products built for DSP blocks?"""
        return False

    def dsp_lanes(self) -> int:
        """DSP blocks this op would take if given them (0: its products do not qualify)."""
        return 0

    def with_dsp(self, dsp: bool) -> "HwOp":
        return self

    # -- timing -----------------------------------------------------------------------------
    @property
    def plan_cycles(self) -> int:
        """Compute cycles per sample at this fold, whatever the stream widths (what the
        planner balances; the plan's ``cycles``)."""
        return self.rows

    @property
    def cycles(self) -> int:
        """Compute cycles per sample with these stream widths (the manifest's ``cycles``)."""
        return self.in_elements // self.in_ept

    @property
    def in_transfers(self) -> int:
        return self.in_elements // self.in_ept

    @property
    def out_transfers(self) -> int:
        return self.out_elements // self.out_ept

    @property
    def initiation_interval(self) -> int:
        """Cycles per sample of this op alone, streaming (input always valid, output ready)."""
        return max(self.in_transfers, self.out_transfers)

    @property
    def tail_latency(self) -> int:
        """Cycles from its last input transfer accepted to its last output transfer accepted."""
        raise NotImplementedError

    @property
    def latency(self) -> int:
        """First input transfer accepted -> last output transfer accepted (idle op)."""
        return self.in_transfers - 1 + self.tail_latency

    @property
    def raw_output(self) -> bool | None:
        """Are its outputs raw accumulators (the top sign-extends them to whole bytes)?
        ``None``: it keeps the codes of its input (the answer of the op before it)."""
        return False

    @property
    def output_spacing(self) -> int:
        """Fewest cycles between two of its output transfers (a narrow output beat that splits
        elements needs the last op to leave it that many)."""
        return 1

    @property
    def mac_units(self) -> int:
        return 0

    # -- resources --------------------------------------------------------------------------
    def estimate(self, device: str = "up5k") -> dict:
        """Estimated ``{"lc", "ff", "ram", "dsp"}`` on ``device`` with these stream widths (and
        ``"spram"``, UP5K SPRAM blocks, when it uses any; absent means 0)."""
        raise NotImplementedError

    @property
    def weight_bits_total(self) -> int:
        """Bits of its weights (the manifest's ``resources.weight_bits``)."""
        return 0

    def resources(self, device: str = "up5k") -> dict:
        """The manifest's ``resources``: :meth:`estimate` plus the version-1 names."""
        est = self.estimate(device)
        return est | {"lut4": est["lc"], "dff": est["ff"], "ebr": est["ram"],
                      "weight_bits": self.weight_bits_total}

    # -- hardware ---------------------------------------------------------------------------
    @property
    def in_element_shape(self):
        return P.code_shape(self.in_type.bits, self.in_type.signed)

    @property
    def out_element_shape(self):
        """Amaranth shape of one output element."""
        t = self.out_type
        return P.code_shape(t.bits, t.signed)

    def build(self):
        """The Amaranth component (``i``/``o`` streams of these widths) computing this op."""
        raise NotImplementedError

    # -- manifest and plan file -------------------------------------------------------------
    def manifest_entry(self, index: int, device: str) -> dict:
        """``manifest.json``'s ``layers[index]``."""
        ot = self.out_type
        return {"name": self.name, "fused": list(self.names),
                "instance": f"engine{index}_{self.name}", "kind": self.kind,
                "rows": self.rows, "cols": self.cols, "cycles": self.cycles,
                "initiation_interval": self.initiation_interval,
                "latency": self.latency, "tail_latency": self.tail_latency,
                "resources": self.resources(device),
                "in_bits": self.in_type.bits, "in_signed": self.in_type.signed,
                "out_bits": ot.bits, "out_signed": ot.signed,
                "in_elements_per_transfer": self.in_ept,
                "out_elements_per_transfer": self.out_ept,
                "out_element_bits": self.out_element_shape.width,
                "in_order": self.in_order, "out_order": self.out_order,
                "out_elements": self.out_elements,
                "pe": self.in_ept, "simd": 1, "mac_units": 0, "dsp": False, "acc_bits": None}

    @property
    def memory(self) -> str:
        """Where its constants live (one of :attr:`memories`)."""
        return self.memories[0]

    def plan_entry(self) -> dict:
        """Its choices in a plan file (``kind`` and ``memory``; folded ops add theirs)."""
        return {"name": self.name, "kind": self.kind, "memory": self.memory}

    def apply_plan_entry(self, entry: dict, where: str, device: str = "up5k") -> "HwOp":
        """This op with the choices of a plan-file entry (already checked to name this op) for
        ``device``."""
        mem = entry.get("memory", self.memory)
        if mem not in self.memories:
            raise PlanEntryError(f"{where}.memory: {mem!r} is not a memory of a {self.kind} "
                                 f"layer (choose {' or '.join(map(repr, self.memories))})")
        return self.with_memory(mem)

    def with_memory(self, memory: str) -> "HwOp":
        return self

    def with_spram(self, on: bool) -> "HwOp":
        """This op with its weights in SPRAM (``on``) or not; ops without weights in a
        memory, or that cannot use SPRAM, return themselves (their ``memory`` unchanged)."""
        return self


@dataclass(frozen=True, kw_only=True, eq=False, repr=False)
class ElementwiseOp(HwOp):
    """Base of the elementwise ops: one output element per input element, the stream's width
    passed through, ``channel_of`` (the channel of each element of a sample, in stream order)
    for per-channel constants. Timing: one transfer per cycle, ``latency_cycles`` after it."""
    passthrough = True
    #: Cycles from an element's input transfer to its output transfer.
    latency_cycles: ClassVar[int] = ELEMENTWISE_LATENCY

    channel_of: tuple = ()
    #: ``(C, H, W)`` of a flattened feature map it sees in HWC order (after a ``flatten`` of a
    #: conv or pool output, before the dense layer that takes the permutation), else ``None``.
    stream_frame: tuple | None = None

    @classmethod
    def of(cls, layer, in_type: CodeType, *, elements: int, elements_per_transfer: int = 1,
           channel_of=None, **fields) -> "ElementwiseOp":
        """The op of ``layer`` alone, on ``elements`` elements per sample (channel of element
        ``e``: ``channel_of[e]``, default ``e``), ``elements_per_transfer`` lanes."""
        chans = tuple(range(elements)) if channel_of is None else tuple(channel_of)
        return cls(names=(layer.name,), in_type=in_type, in_shape=(elements,), layer=layer,
                   channel_of=chans, in_ept=elements_per_transfer,
                   out_ept=elements_per_transfer, **fields).check_widths()

    @classmethod
    def lower(cls, lw: Lowering) -> list[HwOp]:
        chans = channel_of(lw.shape, lw.order)
        frame = {}
        if lw.permutation is not None:     # a flattened HWC map: stream element e is C-order
            chans = [chans[int(p)] for p in lw.permutation]    # element permutation[e]
            frame = {"stream_frame": tuple(lw.permuted_from), "in_order": "hwc"}
        op = cls.at(lw, channel_of=tuple(chans), **frame)
        lw.advance(1, lw.order)
        return [op]

    @property
    def rows(self) -> int:
        return self.in_elements

    @property
    def out_elements(self) -> int:
        return self.in_elements

    @property
    def initiation_interval(self) -> int:
        return self.rows // self.in_ept

    @property
    def tail_latency(self) -> int:
        return self.latency_cycles

    def manifest_entry(self, index: int, device: str) -> dict:
        entry = super().manifest_entry(index, device)
        if self.stream_frame is not None:
            entry["out_frame"] = list(self.stream_frame)
        return entry
