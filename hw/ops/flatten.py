"""``flatten``: no hardware, only a column order.

A ``(C, H, W)`` tensor after a conv or pool streams in ``"hwc"`` order, while the model's
``flatten`` is C order (``"chw"``). The lowering therefore leaves a column permutation pending
(:func:`hwc_to_chw`): the next dense op takes its weight columns in stream order (the same
products, summed in another order: exact), and an elementwise op between them picks each
element's channel through it. A network whose output is still permuted (no dense after the
flatten) is rejected by :func:`softfloor.hw.ops.lower`.
"""
from __future__ import annotations

import numpy as np

from softfloor.intmodel import Flatten
from softfloor.hw.ops.base import Lowering

__all__ = ["FlattenLowering", "hwc_to_chw"]


def hwc_to_chw(shape) -> np.ndarray:
    """``perm[i]``: the C-order (CHW) flat index of the ``i``-th element of an HWC stream."""
    C, H, W = shape
    return np.arange(C * H * W).reshape(C, H, W).transpose(1, 2, 0).reshape(-1)


class FlattenLowering:
    """The lowering of :class:`~softfloor.intmodel.Flatten`: no op, a pending permutation."""
    layer_types = (Flatten,)

    @classmethod
    def lower(cls, lw: Lowering) -> list:
        shape = lw.shape
        if lw.order == "hwc" and shape[0] > 1 and shape[1] * shape[2] > 1:
            lw.permutation, lw.permuted_from = hwc_to_chw(shape), shape
        lw.advance(1, "flat")
        return []
