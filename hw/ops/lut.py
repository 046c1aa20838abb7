"""``lut``: ``y = table[x - in_lo]``, one table for every element (sigmoid, tanh, GELU, ...).

Lowering: a :class:`~softfloor.intmodel.Lut` (rule :func:`softfloor.arith.table_lookup`). Only
the entries the previous layer can reach (its code range) are built. Memory ``"logic"``: each
lane indexes the table as a multiplexer of constants; ``"rom"``: one memory, a synchronous
read port per lane (block RAM when Yosys finds that cheaper). Tables of more than
:data:`ROM_ENTRIES` reachable entries default to a ROM. The stream's width passes through.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import numpy as np

from softfloor import arith
from softfloor.intmodel import Lut
from softfloor.hw.ops import cost
from softfloor.hw.ops.base import ElementwiseOp, Lowering
from softfloor.hw.rtl.elementwise import LUT_MEMORIES, LutUnit

__all__ = ["LutOp", "ROM_ENTRIES"]

#: Reachable table entries above which a lut op keeps its table in a ROM by default.
ROM_ENTRIES = 256
#: LUT4s per output bit of a ``k``-input table, ``k > 4``, per 16 entries (a multiplexer tree
#: of 4-input leaves; ECP5 merges leaves with its wide-function multiplexers). Sigmoid tables of
#: 4..8-bit codes synthesized at 0.35x..2.7x of this count: a table's structure decides (a
#: smooth monotone table compresses, a permutation does not); see docs/hardware.md.
LUT4_PER_16_ENTRIES = {"ice40": 1.5, "ecp5": 1.0}


@dataclass(frozen=True, kw_only=True, eq=False, repr=False)
class LutOp(ElementwiseOp):
    """Elementwise table lookup; ``table_memory`` is ``"logic"`` or ``"rom"``."""
    kind = "lut"
    layer_types = (Lut,)
    memories = LUT_MEMORIES

    table_memory: str = "logic"

    @classmethod
    def lower(cls, lw: Lowering):
        [op] = super().lower(lw)
        if op.entries > ROM_ENTRIES:
            op = op.with_memory("rom")
        return [op]

    @property
    def entries(self) -> int:
        """Reachable entries: the input codes the previous layer can produce."""
        return self.in_type.hi - self.in_type.lo + 1

    @property
    def memory(self) -> str:
        return self.table_memory

    def with_memory(self, memory: str) -> "LutOp":
        return dataclasses.replace(self, table_memory=memory)

    def model(self, x) -> np.ndarray:
        L = self.layer
        return arith.table_lookup(np.asarray(x, dtype=np.int64), L.table, L.in_lo)

    def estimate(self, device: str = "up5k") -> dict:
        fam = cost.family(device)
        ob, n = self.out_type.bits, self.in_ept
        k = max(1, (self.entries - 1).bit_length())          # index bits
        ffs = n * 4 * ob + 2
        ram = 0
        if self.memory == "rom":        # block RAM when Yosys finds it cheaper (as dense ROMs)
            blocks = cost.ram_blocks(self.entries, ob, fam)
            if blocks * cost.COEFFS[fam]["block_cost"] < self.entries * ob / 16:
                ram = n * blocks
        if ram:
            luts = n * (k + ob) + 10                         # index arithmetic, stage 2
        else:
            per_bit = 1 if k <= 4 else LUT4_PER_16_ENTRIES[fam] * (1 << (k - 4))
            luts = n * (ob * per_bit + k) + 10
        return {"lc": cost.logic_cells(luts, ffs, fam), "ff": int(ffs), "ram": int(ram),
                "dsp": 0}

    def build(self) -> LutUnit:
        return LutUnit(self.layer, self.in_type, elements=self.rows,
                       elements_per_transfer=self.in_ept, memory=self.memory)
