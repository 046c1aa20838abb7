"""``argmax``: the output stream carries the class index (the first maximum) instead of logits.

Lowering: a :class:`~softfloor.intmodel.Argmax` over a flat tensor in C order (rule
:func:`softfloor.arith.argmax_first`: ties give the lowest index). The unit compares a whole
input transfer per cycle (a tree over its lanes), so it keeps up with any input width and
never sets the pace; it emits one unsigned element per sample. An argmax right after a
flattened HWC feature map (no dense between) is rejected: its indices would be stream
positions, not the model's.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from softfloor import arith
from softfloor.intmodel import Argmax, CodeType
from softfloor.hw.ops import cost
from softfloor.hw.ops.base import HwOp, Lowering, UnsupportedLayerError
from softfloor.hw.rtl.argmax import ARGMAX_LATENCY, ArgmaxUnit, index_bits

__all__ = ["ArgmaxOp"]


@dataclass(frozen=True, kw_only=True, eq=False, repr=False)
class ArgmaxOp(HwOp):
    """Index of the first maximum of each sample's ``in_elements`` codes."""
    kind = "argmax"
    layer_types = (Argmax,)

    @classmethod
    def of(cls, layer: Argmax, in_type: CodeType, *,
           elements_per_transfer: int = 1) -> "ArgmaxOp":
        """The op of one argmax alone, ``elements_per_transfer`` input lanes (validated)."""
        return cls(names=(layer.name,), in_type=in_type, in_shape=(layer.features,),
                   layer=layer, in_ept=elements_per_transfer).check_widths()

    @classmethod
    def lower(cls, lw: Lowering) -> list[HwOp]:
        if lw.permutation is not None:
            raise UnsupportedLayerError(
                f"{lw.where()}: argmax of a flattened feature map that the hardware streams "
                f"pixel by pixel (HWC) while the model indexes it channel-major (CHW): put a "
                f"dense layer before the argmax")
        op = cls.at(lw)
        lw.advance(1, "flat")
        return [op]

    @property
    def rows(self) -> int:
        return 1

    @property
    def cols(self) -> int:
        return self.in_elements

    @property
    def out_elements(self) -> int:
        return 1

    @property
    def out_order(self) -> str:
        return "flat"

    def model(self, x) -> np.ndarray:
        return arith.argmax_first(np.asarray(x, dtype=np.int64))[:, None].astype(np.int64)

    def out_width_ok(self, d: int) -> bool:
        return d == 1

    @property
    def plan_cycles(self) -> int:
        """It compares a whole transfer per cycle: never the pace."""
        return 1

    @property
    def tail_latency(self) -> int:
        return ARGMAX_LATENCY

    def estimate(self, device: str = "up5k") -> dict:
        fam = cost.family(device)
        n, xb = self.in_ept, self.in_type.bits
        ib = index_bits(self.in_elements)
        tb = max(1, (self.in_transfers - 1).bit_length())
        node = (xb + 1) + xb + ib                       # compare, value mux, index mux
        luts = n * node + ib + 2 * tb + 10              # tree (n - 1) + running (1), counter
        ffs = 2 * (xb + ib) + 4 * ib + tb + 5
        return {"lc": cost.logic_cells(luts, ffs, fam), "ff": int(ffs), "ram": 0, "dsp": 0}

    def build(self) -> ArgmaxUnit:
        return ArgmaxUnit(self.name, self.in_type, features=self.in_elements,
                          elements_per_transfer=self.in_ept)
