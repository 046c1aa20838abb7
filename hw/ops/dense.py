"""``dense`` (+ the requant it fuses): a folded matrix-vector unit, ``PE`` rows x ``SIMD`` columns.

Lowering: a :class:`~softfloor.intmodel.Dense` layer, fused with the
:class:`~softfloor.intmodel.Requant` / :class:`~softfloor.intmodel.ChannelRequant` right after
it; after a ``flatten`` of an HWC stream its columns are permuted to the stream's order (exact:
the same products, summed in another order).

Folds: ``pe`` output rows and ``simd`` input columns per cycle; ``ceil(rows/pe) *
ceil(cols/simd)`` compute cycles per vector. Fully unrolled (``pe = rows``, ``simd = cols``)
the weights are constants in the logic (memory ``"constants"``), otherwise they sit in a ROM
(memory ``"rom"``: block RAM or logic, as Yosys finds cheaper) or, on the iCE40 UP5K, in SPRAM
(memory ``"spram"``: ``ceil(pe*simd*weight_bits / 16)`` blocks side by side, ``groups*folds <=
16384`` words, loaded at run time through the top's ``w_axis`` stream, see
:mod:`softfloor.hw.rtl.spram`). Weight widths are generic: the
product widths, ROM words and estimates follow ``weight_bits`` (1-bit weights {-1, +1} are a
sign bit and a conditional negate).
"""
from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

import numpy as np

from softfloor.intmodel import ChannelRequant, CodeType, Dense, Requant
from softfloor.hw.ops import cost
from softfloor.hw.ops.base import HwOp, Lowering, PlanEntryError
from softfloor.hw.rtl import cmvm, spram
from softfloor.hw.rtl.mvu import (MatrixVectorUnit, check_fold, const_graph,
                                  dsp_eligible, is_const, product_bits, product_selector_bits,
                                  mvu_latency, product_terms, tree_levels, weight_words)
from softfloor.hw.rtl.tables import double_buffer_depth, positive_int
from softfloor.hw.synth import get_device

__all__ = ["DenseOp", "fold_values", "const_tree"]


def fold_values(n: int) -> list[int]:
    """The fewest lanes giving each distinct ``ceil(n / lanes)``: ``ceil(n / k)`` for k in 1..n."""
    return sorted({math.ceil(n / k) for k in range(1, n + 1)})


#: A constant matrix of more canonical-signed-digit terms than this is estimated from its plain
#: trees instead of solved (the solver's time grows about with the square of the terms: 6k
#: terms take seconds, 23k a minute; such a matrix unrolled is over 20k LUTs anyway).
SOLVE_TERMS = 8192
#: Adder and register bits of the shared graph over those of the plain trees, on random
#: 64x64 and 128x128 matrices of 4 and 8 bits (0.54..0.59).
SHARED_FRACTION = 0.6


def const_tree(weight, in_type: CodeType) -> tuple[int, int]:
    """(adder bits, register bits) of a fully unrolled MVU's constant weights: the carry-chain
    bits of the adders of the matrix's shared-subexpression graph and its pipeline register
    bits, as :meth:`MatrixVectorUnit._const_sums` builds them (:func:`const_graph`); beyond
    :data:`SOLVE_TERMS` terms, :data:`SHARED_FRACTION` of the plain trees'."""
    if int(cmvm.term_counts(weight).sum()) <= SOLVE_TERMS:
        g = const_graph(weight, in_type)
        return g.total_adder_bits, g.register_bits()
    g = cmvm.matrix_naive(weight, in_type.lo, in_type.hi)
    return (int(SHARED_FRACTION * g.total_adder_bits),
            int(SHARED_FRACTION * g.register_bits()))


@dataclass(frozen=True, kw_only=True, eq=False, repr=False)
class DenseOp(HwOp):
    """A dense layer (its columns in stream order) and the requant it fuses, folded.

    Fields: ``layer`` (the model's layer), ``dense`` (the matrix the unit computes: the layer,
    columns permuted after a flatten), ``requant`` (fused, or ``None``: raw accumulators out),
    ``pe``, ``simd``, ``use_dsp`` (build the products for DSP blocks when they qualify),
    ``spram`` (weights in SPRAM when folded, see :meth:`spram_fits`).
    """
    kind = "dense"
    layer_types = (Dense,)
    memories = ("rom", "constants", "spram")

    dense: Dense
    requant: object = None
    pe: int = 1
    simd: int = 1
    use_dsp: bool = False
    spram: bool = False

    def __post_init__(self):
        if not isinstance(self.dense, Dense):
            raise TypeError(f"dense must be a Dense layer, got {type(self.dense).__name__}")
        for key in ("pe", "simd"):
            positive_int(key, getattr(self, key))
        if self.pe > self.rows or self.simd > self.cols:
            raise ValueError(f"{self.name}: fold {self.pe}x{self.simd} outside 1..{self.rows} x "
                             f"1..{self.cols} for this {self.rows}x{self.cols} layer")

    @classmethod
    def of(cls, dense: Dense, in_type: CodeType, requant=None, *, pe: int = 1, simd: int = 1,
           in_elements_per_transfer: int = 1, out_elements_per_transfer: int = 1,
           dsp: bool = False) -> "DenseOp":
        """The op of one dense layer (and its fused requant) alone, folded and with stream
        widths as given (validated: a ValueError naming the layer)."""
        if not isinstance(dense, Dense):
            raise TypeError(f"dense must be a Dense layer, got {type(dense).__name__}")
        if not isinstance(in_type, CodeType):
            raise TypeError(f"in_type must be a CodeType, got {in_type!r}")
        if requant is not None and not isinstance(requant, (Requant, ChannelRequant)):
            raise TypeError(f"requant must be a Requant/ChannelRequant layer or None, got "
                            f"{requant!r}")
        op = cls(names=(dense.name,) + ((requant.name,) if requant else ()), in_type=in_type,
                 in_shape=(dense.in_features,), layer=dense, dense=dense, requant=requant,
                 pe=pe, simd=simd, in_ept=in_elements_per_transfer,
                 out_ept=out_elements_per_transfer, use_dsp=dsp)
        return op.check_widths()

    def check_widths(self) -> "DenseOp":
        check_fold(self.name, self.rows, self.cols, self.pe, self.simd, self.mvu_in_ept,
                   self.out_ept)
        return super().check_widths()

    @classmethod
    def lower(cls, lw: Lowering) -> list[HwOp]:
        layer = lw.layer
        rq = lw.next_layer if isinstance(lw.next_layer, (Requant, ChannelRequant)) else None
        dense = layer
        perm = lw.take_permutation()
        if perm is not None:
            dense = Dense(layer.name, layer.weight[:, perm], layer.bias, layer.weight_bits,
                          layer.bias_bits, layer.acc_bits)
        op = cls.at(lw, dense=dense, requant=rq,
                    names=(layer.name,) + ((rq.name,) if rq else ()))
        lw.advance(2 if rq else 1, "flat")
        return [op]

    # -- what it computes -------------------------------------------------------------------
    @property
    def rows(self) -> int:
        return self.dense.out_features

    @property
    def cols(self) -> int:
        return self.dense.in_features

    @property
    def acc_type(self) -> CodeType:
        return self.dense.out_type(self.in_type)

    @property
    def out_type(self) -> CodeType:
        return self.requant.out_type(self.acc_type) if self.requant else self.acc_type

    @property
    def out_elements(self) -> int:
        return self.rows

    @property
    def out_order(self) -> str:
        return "flat"

    def model(self, x) -> np.ndarray:
        """``requant.execute(dense.execute(x))`` on ``(N, cols)`` codes in stream order."""
        y = self.dense.execute(np.asarray(x, dtype=np.int64))
        return self.requant.execute(y) if self.requant else y

    # -- folds ------------------------------------------------------------------------------
    @property
    def fold(self) -> tuple[int, int]:
        return self.pe, self.simd

    @property
    def folds(self) -> int:
        return math.ceil(self.cols / self.simd)

    @property
    def groups(self) -> int:
        return math.ceil(self.rows / self.pe)

    @property
    def const_weights(self) -> bool:
        """Fully unrolled: weights and biases are constants in the logic."""
        return is_const(self.rows, self.cols, self.pe, self.simd)

    @property
    def memory(self) -> str:
        if self.const_weights:
            return "constants"
        return "spram" if self.spram else "rom"

    @property
    def weight_width(self) -> int:
        """Bits of one weight-memory word: ``pe * simd * weight_bits``."""
        return self.pe * self.simd * self.dense.weight_bits

    def spram_blocks(self) -> int:
        """SPRAM blocks its weights take (0 unless in SPRAM)."""
        return spram.blocks(self.weight_width) if self.memory == "spram" else 0

    def spram_problem(self, device: str) -> str | None:
        """Why this fold cannot keep its weights in SPRAM on ``device`` (None: it can)."""
        have = get_device(device).spram
        if self.kind != "dense":
            return f"a {self.kind} layer keeps its weights in 'rom' (SPRAM: dense layers only)"
        if not have:
            return f"{device} has no SPRAM"
        if self.const_weights:
            return "the fully unrolled fold keeps its weights as constants"
        depth = self.groups * self.folds
        if depth > spram.SPRAM_DEPTH:
            return (f"fold {self.pe}x{self.simd} needs {depth} weight words, more than the "
                    f"{spram.SPRAM_DEPTH} of an SPRAM block: raise pe or simd")
        if spram.blocks(self.weight_width) > have:
            return (f"fold {self.pe}x{self.simd} reads {self.weight_width} weight bits per "
                    f"cycle, {spram.blocks(self.weight_width)} SPRAM blocks side by side, more "
                    f"than the {have} of {device}: lower pe or simd")
        return None

    def load_words(self) -> list[int]:
        """The ``w_axis`` bytes that load its SPRAM weights (the unit's
        :meth:`~softfloor.hw.rtl.mvu.MatrixVectorUnit.load_words`, without building it)."""
        return spram.load_words(weight_words(self.dense.weight, self.dense.weight_bits,
                                             self.pe, self.simd), self.weight_width)

    def with_spram(self, on: bool) -> "DenseOp":
        """Weights in SPRAM or not (dense layers only: a subclass's unit, e.g. the conv
        unit, keeps its ROM)."""
        if on and self.kind != DenseOp.kind:
            return self
        return dataclasses.replace(self, spram=bool(on))

    def with_fold(self, pe: int, simd: int) -> "DenseOp":
        return dataclasses.replace(self, pe=pe, simd=simd)

    def fold_options(self, device: str, wide: bool, max_lanes: int = 1 << 16) -> list[tuple]:
        """(cycles, lc, pe, simd) of every fold worth considering (no fold with the same cycle
        count and more lanes in either dimension); ``wide``: also folds that finish more than
        one result per cycle (wider output streams). The fully unrolled fold is left out when
        even :meth:`const_lc_floor` exceeds the device's logic cells (solving a large matrix's
        adder graph takes the planner tens of seconds)."""
        out = []
        device_lc = get_device(device).logic_cells
        for pe in fold_values(self.rows):
            for simd in fold_values(self.cols):
                f = math.ceil(self.cols / simd)
                if pe * simd > max_lanes:
                    break
                if pe > f and not wide:
                    continue                 # keeps the output stream one element wide
                s = dataclasses.replace(self, pe=pe, simd=simd, in_ept=1, out_ept=1,
                                        use_dsp=False)
                if s.const_weights and s.const_lc_floor(device) > device_lc:
                    continue                 # unrolled, it cannot fit the device at all
                if self.spram and s.spram_problem(device):
                    continue                 # SPRAM weights: only folds the blocks can hold
                out.append((s.plan_cycles, s.estimate(device)["lc"], pe, simd))
        out.sort()
        return out

    def in_width_ok(self, d: int) -> bool:
        return self.simd % d == 0 and self.cols % d == 0

    def out_width_ok(self, d: int) -> bool:
        return self.pe % d == 0 and self.rows % d == 0 and self.pe // d <= self.folds

    @property
    def dsp(self) -> bool:
        return self.use_dsp and not self.const_weights

    def dsp_lanes(self) -> int:
        if self.const_weights or not dsp_eligible(self.dense.weight_bits, self.in_type):
            return 0
        return self.mac_units

    def with_dsp(self, dsp: bool) -> "DenseOp":
        return dataclasses.replace(self, use_dsp=bool(dsp))

    # -- timing -----------------------------------------------------------------------------
    @property
    def mvu_cycles(self) -> int:
        """Compute cycles of one vector: ``ceil(rows / pe) * ceil(cols / simd)``."""
        return self.groups * self.folds

    @property
    def plan_cycles(self) -> int:
        return self.mvu_cycles

    @property
    def cycles(self) -> int:
        return self.mvu_cycles

    @property
    def product_terms(self) -> int:
        return product_terms(self.dense.weight_bits, self.in_type, self.dsp)

    @property
    def tree_levels(self) -> int:
        return tree_levels(self.simd, self.product_terms, self.const_weights,
                           self.dense.weight)

    @property
    def mvu_in_ept(self) -> int:
        """Elements per transfer into the MVU (the op's input stream)."""
        return self.in_ept

    @property
    def mvu_initiation_interval(self) -> int:
        return max(self.mvu_cycles, self.cols // self.mvu_in_ept, self.rows // self.out_ept)

    @property
    def mvu_tail_latency(self) -> int:
        last_rows = self.rows - (self.groups - 1) * self.pe
        return (self.mvu_cycles + self.tree_levels + mvu_latency(self.const_weights)
                + last_rows // self.out_ept - 1)

    @property
    def initiation_interval(self) -> int:
        return self.mvu_initiation_interval

    @property
    def tail_latency(self) -> int:
        return self.mvu_tail_latency

    @property
    def raw_output(self) -> bool:
        return self.requant is None

    @property
    def output_spacing(self) -> int:
        return self.folds if self.pe == 1 and self.cols > 1 else 1

    @property
    def mac_units(self) -> int:
        return self.pe * self.simd

    @property
    def macs(self) -> int:
        return int(self.dense.macs())

    # -- resources --------------------------------------------------------------------------
    @property
    def weight_bits_total(self) -> int:
        return self.dense.weight_bits * self.rows * self.cols

    def estimate(self, device: str = "up5k") -> dict:
        return self.estimate_mvu(device)

    def estimate_mvu(self, device: str = "up5k", detail: bool = False) -> dict:
        """The matrix-vector unit: products, adder trees, accumulators, hold register,
        requantizer lanes, gather register, ROMs (block RAM when Yosys' memory_libmap finds it
        cheaper: blocks * block cost < bits / 16), input buffer, control. ``detail``: also
        ``"parts"``, the logic per datapath part before scaling."""
        fam = cost.family(device)
        c = cost.COEFFS[fam]
        t = self.in_type
        xb = t.bits
        in_ept, out_ept = self.in_ept, self.out_ept
        d, rq = self.dense, self.requant
        wb, ab, bb = d.weight_bits, d.acc_bits, d.bias_bits
        pe, simd = self.pe, self.simd
        lanes = pe * simd
        if self.const_weights:
            return self._estimate_const(fam, c)
        pb = min(product_bits(wb, t), ab)
        dsp = lanes if self.dsp and dsp_eligible(wb, t) else 0
        sel = product_selector_bits(wb, t)                  # gated terms of a shift-add product
        if wb == 1:
            mul = xb + 1                                     # conditional negate
        elif sel == 1:
            mul = wb                                         # a 1-bit input gates the weight
        else:
            mul = c["lut_per_pp"] * (sel - 1) * (xb + wb)   # shift-add: sel-1 widening adders
        mul_luts = 0 if dsp else lanes * mul
        terms = product_terms(wb, t, bool(dsp))
        levels = (simd * terms - 1).bit_length()
        tree = 0
        n, width = simd * terms, pb
        for _ in range(levels):
            width = min(width + 1, ab)
            tree += (n // 2) * width
            n = (n + 1) // 2
        tree_luts = pe * tree * c["lut_per_add_bit"]
        acc_luts = pe * 2 * ab                               # bias/acc mux + adder
        hold_luts = pe * ab if pe > out_ept else 0           # shift-or-load mux
        ob = rq.bits if rq else ab
        rq_luts = cost.requant_lane_luts(rq, self.rows, ab) * out_ept
        slots = simd // in_ept
        gather = simd * xb * 2 if slots > 1 else 0
        ctl_bits = (max(1, (self.folds - 1).bit_length()) * 2 + max(1, self.groups.bit_length())
                    + max(1, (self.groups * self.folds).bit_length()))
        ctl = c["control"] + 2 * ctl_bits + 4 * (levels + 2)
        skid = 2 * out_ept * ob
        ffs = (lanes * pb + tree + pe * 2 * ab + out_ept * (3 * ab + 2 * ob)
               + (simd * xb if slots > 1 else 0) + ctl_bits * 2 + 3 * (levels + 3))
        # ROMs: a block RAM when Yosys' memory_libmap finds it cheaper (blocks * block cost <
        # bits / 16; block cost 64 on iCE40, 128 on ECP5), else logic (a depth:1 multiplexer
        # of constants per bit); RAMs (input buffer): blocks, or on ECP5 distributed RAM
        # (DPR16X4, cost 4 per 16x4) when that is cheaper.
        bcost = c["block_cost"]
        ram, rom_luts, lutram = 0, 0, 0
        roms = [(self.groups * self.folds, lanes * wb), (self.groups, pe * bb)]
        nspram = 0
        if self.memory == "spram":                 # weights in SPRAM: load counters, address mux
            roms, nspram = roms[1:], spram.blocks(lanes * wb)
            ctl += c["spram_load_luts"] + 2 * nspram
            ffs += 14 + nspram.bit_length() + 1
        for depth, width in roms:
            blocks = cost.ram_blocks(depth, width, fam)
            if blocks * bcost < depth * width / 16:
                ram += blocks
            else:
                rom_luts += width * max(1, depth * c["rom_lut_per_word"]) if depth > 1 else 0
        xdepth = double_buffer_depth(self.folds)
        xblocks = cost.ram_blocks(xdepth, simd * xb, fam)
        dpr = math.ceil(xdepth / 16) * math.ceil(simd * xb / 4)
        if c["lutram"] and dpr * 4 < xblocks * bcost:
            lutram = dpr
        else:
            ram += xblocks
        parts = {"mul": mul_luts, "tree": tree_luts, "acc": acc_luts + hold_luts,
                 "rq": rq_luts + skid, "ctl": ctl + gather, "rom": rom_luts,
                 "lutram": lutram * c["lut_per_dpr16x4"], "ff": c["ff_unpaired"] * ffs}
        lc = sum(c.get(f"k_{k}", 1.0) * v for k, v in parts.items()) * cost.SCALE[fam]
        if t.bits + (0 if t.signed else 1) <= 2:        # 1-bit codes: LUT4s absorb narrow adders
            lc *= c["narrow_scale"]
        est = {"lc": int(round(lc)), "ff": int(ffs), "ram": int(ram), "dsp": int(dsp),
               "spram": nspram}
        return est | {"parts": parts} if detail else est

    def const_lc_floor(self, device: str) -> int:
        """A lower bound of the fully unrolled fold's estimated logic cells, without building
        its adder graph: for a matrix of more than :data:`SOLVE_TERMS` terms (estimated from
        :data:`SHARED_FRACTION` of its plain trees: at least one adder bit per adder, ``terms
        - 1`` adders per row), else the logic around the graph alone. Lets the planner drop
        unrolled folds that cannot fit the device before solving them."""
        terms = cmvm.term_counts(self.dense.weight)
        adders = 0
        if int(terms.sum()) > SOLVE_TERMS:
            adders = int(SHARED_FRACTION * int(np.maximum(terms - 1, 0).sum()))
        fam = cost.family(device)
        return self._estimate_const(fam, cost.COEFFS[fam], (adders, 0))["lc"]

    def _estimate_const(self, fam: str, c: dict, tree: tuple | None = None) -> dict:
        """Fully unrolled: the matrix's shared-subexpression adder graph, no weight ROM,
        constant biases; ``tree``: (adder bits, register bits) instead of :func:`const_tree`'s."""
        d, rq, t = self.dense, self.requant, self.in_type
        in_ept, out_ept = self.in_ept, self.out_ept
        ab, xb = d.acc_bits, t.bits
        adders, regs = tree if tree is not None else const_tree(d.weight, t)
        ob = rq.bits if rq else ab
        rq_luts = cost.requant_lane_luts(rq, self.rows, ab) * out_ept
        slots = self.simd // in_ept
        gather = self.simd * xb * 2 if slots > 1 else 0
        xbuf = self.simd * xb * c["xbuf_lut_per_bit"]        # two one-vector banks
        acc = self.pe * ab * 2                                # bias + sum, load mux
        ffs = regs + self.pe * 2 * ab + out_ept * (3 * ab + 2 * ob) + self.simd * xb * (
            1 + (1 if slots > 1 else 0)) + 40
        # 1-bit codes (2-bit signed leaves): LUT4s absorb the first adder levels (popcount-like)
        narrow = c["const_narrow"] if t.bits + (0 if t.signed else 1) <= 2 else 1.0
        lc = (c["const_lut_per_add_bit"] * narrow * adders + acc + rq_luts + 2 * out_ept * ob
              + gather + xbuf + c["control"] + c["const_ff"] * ffs) * c["const_scale"]
        return {"lc": int(round(lc)), "ff": int(ffs), "ram": 0, "dsp": 0, "spram": 0}

    # -- hardware ---------------------------------------------------------------------------
    def build(self) -> MatrixVectorUnit:
        return MatrixVectorUnit(self.dense, self.in_type, self.requant, pe=self.pe,
                                simd=self.simd, in_elements_per_transfer=self.in_ept,
                                out_elements_per_transfer=self.out_ept, dsp=self.dsp,
                                weight_memory="spram" if self.memory == "spram" else "rom")

    # -- manifest and plan file -------------------------------------------------------------
    def manifest_entry(self, index: int, device: str) -> dict:
        entry = super().manifest_entry(index, device)
        entry.update(pe=self.pe, simd=self.simd, mac_units=self.mac_units, dsp=self.dsp,
                     tree_levels=self.tree_levels, acc_bits=self.dense.acc_bits,
                     weight_bits=self.dense.weight_bits, macs=self.macs,
                     const_weights=self.const_weights)
        if self.memory == "spram":
            entry.update(memory="spram", spram_blocks=self.spram_blocks(),
                         spram_words=self.groups * self.folds,
                         weight_word_bits=self.weight_width)
        rq = self.requant
        if rq is not None:
            entry["requant"] = {"multiplier": np.asarray(rq.multiplier).tolist(),
                                "shift": np.asarray(rq.shift).tolist(),
                                "rounding": rq.rounding, "lo": rq.lo, "hi": rq.hi}
        return entry

    def plan_entry(self) -> dict:
        return {"name": self.name, "kind": self.kind, "pe": self.pe, "simd": self.simd,
                "unrolled": self.const_weights, "memory": self.memory, "dsp": self.dsp}

    def apply_plan_entry(self, entry: dict, where: str, device: str = "up5k") -> "DenseOp":
        pe, simd = entry.get("pe"), entry.get("simd")
        for key, v in (("pe", pe), ("simd", simd)):
            if isinstance(v, bool) or not isinstance(v, int):
                raise PlanEntryError(f"{where}.{key}: expected a positive integer, got {v!r}")
        if not (1 <= pe <= self.rows and 1 <= simd <= self.cols):
            raise PlanEntryError(f"{where}: fold {pe}x{simd} is outside 1..{self.rows} x "
                                 f"1..{self.cols} for this {self.rows}x{self.cols} layer")
        op = self.with_fold(pe, simd)
        unrolled = entry.get("unrolled", op.const_weights)
        if not isinstance(unrolled, bool):
            raise PlanEntryError(f"{where}.unrolled: expected true or false, got {unrolled!r}")
        if unrolled != op.const_weights:
            raise PlanEntryError(
                f"{where}.unrolled: {str(unrolled).lower()} needs "
                + (f"the fold {self.rows}x{self.cols} (pe = rows, simd = cols)" if unrolled
                   else "a fold other than pe = rows, simd = cols")
                + f", the entry says {pe}x{simd}")
        mem = entry.get("memory", op.memory)
        if mem not in self.memories:
            raise PlanEntryError(f"{where}.memory: {mem!r} is not a memory of a {self.kind} "
                                 f"layer (choose {' or '.join(map(repr, self.memories))})")
        if mem == "spram" and not op.const_weights:
            why = op.spram_problem(device)
            if why:
                raise PlanEntryError(f"{where}.memory: 'spram' is not possible: {why}")
            op = op.with_spram(True)
        if mem != op.memory:
            raise PlanEntryError(f"{where}.memory: {mem!r} needs "
                                 + ("the fully unrolled fold" if mem == "constants"
                                    else "a folded layer")
                                 + f"; fold {pe}x{simd} keeps its weights in {op.memory!r}")
        dsp = entry.get("dsp", False)
        if not isinstance(dsp, bool):
            raise PlanEntryError(f"{where}.dsp: expected true or false, got {dsp!r}")
        if dsp and not op.with_dsp(True).dsp_lanes():
            raise PlanEntryError(f"{where}.dsp: true, but its {self.dense.weight_bits}-bit x "
                                 f"{self.in_type.bits}-bit products do not qualify for DSP "
                                 f"blocks (or the layer is unrolled)")
        return op.with_dsp(dsp)
