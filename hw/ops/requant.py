"""``requant``: a standalone Requant / ChannelRequant (one that does not follow a dense or conv).

Lowering: a :class:`~softfloor.intmodel.Requant` or :class:`~softfloor.intmodel.ChannelRequant`
that no dense or conv op fused (e.g. on the input, or after a max-pool). Per lane: a multiply
by the element's channel multiplier (a ChannelRequant's shifts folded into its multipliers, see
:func:`~softfloor.hw.rtl.mvu.requant_params`), then round and saturate; the stream's width
passes through.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from softfloor import arith
from softfloor.intmodel import ChannelRequant, Requant
from softfloor.hw.ops import cost
from softfloor.hw.ops.base import ElementwiseOp
from softfloor.hw.rtl.elementwise import RequantUnit

__all__ = ["RequantOp"]


@dataclass(frozen=True, kw_only=True, eq=False, repr=False)
class RequantOp(ElementwiseOp):
    """Elementwise requantization of the stream."""
    kind = "requant"
    layer_types = (Requant, ChannelRequant)

    def model(self, x) -> np.ndarray:
        x = np.asarray(x, dtype=np.int64)
        rq = self.layer
        if isinstance(rq, ChannelRequant):
            return np.stack([arith.requantize(x[:, e], int(rq.shift[c]), rq.rounding, rq.lo,
                                              rq.hi, int(rq.multiplier[c]))
                             for e, c in enumerate(self.channel_of)], axis=1)
        return rq.execute(x)

    def estimate(self, device: str = "up5k") -> dict:
        fam = cost.family(device)
        rq, xb = self.layer, self.in_type.bits
        ob = rq.bits
        mults, _ = cost.requant_mults(rq, max(self.channel_of or [0]) + 1)
        mb = max(mults).bit_length()
        if len(set(mults)) > 1:
            mult_luts = (xb + 1) * mb
        else:
            m = mults[0]
            mult_luts = 0 if m & (m - 1) == 0 else (xb + mb) * (bin(m).count("1") - 1)
        lanes = self.in_ept
        luts = lanes * (mult_luts + xb + mb + 2 * ob + 2) + 10
        ffs = lanes * (xb + mb + 3 * ob) + 6
        return {"lc": cost.logic_cells(luts, ffs, fam), "ff": int(ffs), "ram": 0, "dsp": 0}

    def build(self) -> RequantUnit:
        return RequantUnit(self.layer, self.in_type, elements=self.rows,
                           elements_per_transfer=self.in_ept, channel_of=list(self.channel_of))
