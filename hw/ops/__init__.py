"""One plan-time class per integer-model op (see :mod:`softfloor.hw.ops.base` for the interface).

=====================  ==============================  ============================================
IntModel op            class                           hardware (:mod:`softfloor.hw.rtl`)
=====================  ==============================  ============================================
``dense`` (+requant)   :class:`~.dense.DenseOp`        matrix-vector unit, PE x SIMD
``conv2d`` (+requant)  :class:`~.conv2d.Conv2dOp`      sliding window + matrix-vector unit
``maxpool2d``          :class:`~.maxpool2d.MaxPool2dOp`  sliding window + running maximum
``requant``            :class:`~.requant.RequantOp`    elementwise requantizer
``multithreshold``     :class:`~.multithreshold.MultiThresholdOp`  elementwise comparators
``lut``                :class:`~.lut.LutOp`            elementwise table (logic or ROM)
``argmax``             :class:`~.argmax.ArgmaxOp`      compare tree, one index per sample
``flatten``            :class:`~.flatten.FlattenLowering`  none: a column permutation
=====================  ==============================  ============================================

:func:`lower` turns a model into its ops; the planner folds them and chooses stream widths.
"""
from __future__ import annotations

from softfloor.intmodel import IntModel
from softfloor.hw.ops.argmax import ArgmaxOp
from softfloor.hw.ops.base import (ElementwiseOp, HwOp, Lowering, PlanEntryError,
                                   UnsupportedLayerError)
from softfloor.hw.ops.conv2d import Conv2dOp
from softfloor.hw.ops.dense import DenseOp
from softfloor.hw.ops.flatten import FlattenLowering
from softfloor.hw.ops.lut import LutOp
from softfloor.hw.ops.maxpool2d import MaxPool2dOp
from softfloor.hw.ops.multithreshold import MultiThresholdOp
from softfloor.hw.ops.requant import RequantOp

__all__ = ["OPS", "LOWERINGS", "lower", "HwOp", "ElementwiseOp", "Lowering", "DenseOp",
           "Conv2dOp", "MaxPool2dOp", "RequantOp", "MultiThresholdOp", "LutOp", "ArgmaxOp",
           "FlattenLowering", "UnsupportedLayerError", "PlanEntryError"]

#: Every op class, and the lowerings without hardware.
OPS = (DenseOp, Conv2dOp, MaxPool2dOp, RequantOp, MultiThresholdOp, LutOp, ArgmaxOp)
#: IntModel layer class -> the class whose ``lower`` turns it into ops.
LOWERINGS = {t: cls for cls in OPS + (FlattenLowering,) for t in cls.layer_types}


def _supported() -> str:
    names = sorted({t.op for t in LOWERINGS})
    return ", ".join(names[:-1]) + " and " + names[-1]


def lower(model: IntModel) -> list[HwOp]:
    """The ops of ``model`` in stream order, unfolded (``1 x 1``, one element per transfer).

    Unsupported layers raise :class:`UnsupportedLayerError` naming the layer and its op, as
    does a network whose output is a ``(C, H, W)`` tensor streamed in ``"hwc"`` with ``C > 1``
    and ``H*W > 1`` (end it with a dense layer).
    """
    if not isinstance(model, IntModel):
        raise TypeError(f"model must be an IntModel, got {type(model).__name__}")
    for k, layer in enumerate(model.layers):
        if type(layer) not in LOWERINGS:
            op = getattr(layer, "op", type(layer).__name__)
            raise UnsupportedLayerError(
                f"layers[{k}] ({getattr(layer, 'name', '?')}): op {op!r} has no hardware op; "
                f"the generator supports {_supported()} layers")
    lw = Lowering(model)
    ops = []
    while not lw.done:
        ops += LOWERINGS[type(lw.layer)].lower(lw)
    shape = lw.permuted_from if lw.permutation is not None else lw.shapes[-1]
    if lw.permutation is not None or (len(shape) == 3 and lw.order == "hwc" and shape[0] > 1
                                      and shape[1] * shape[2] > 1):
        raise UnsupportedLayerError(
            f"{lw.where(len(lw.layers) - 1)}: the network ends in a {shape[0]}x{shape[1]}x"
            f"{shape[2]} feature map, which the hardware streams pixel by pixel (HWC) while the "
            f"model's output is channel-major (CHW): end the network with a dense layer")
    if not ops:
        raise UnsupportedLayerError("the model has no layer with a hardware op")
    return ops
