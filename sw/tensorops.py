"""Small-tensor helpers: the same values in fewer, cheaper torch ops.

On the digits networks (64x64 matrices, batch 64) a training step is counted in ops, not in
flops: every op costs a few microseconds of dispatch. Two costs are avoidable, and the fused
training ops (:func:`softfloor.quant.linear_quant_fwd` and friends,
:class:`softfloor.models.QuantMLP`'s fused step) avoid them with these helpers:

* A Python float operand of a float32 tensor op is wrapped as a float64 scalar tensor and then
  cast to float32: an extra ``_to_copy`` per op (about 2 us, as much as the op itself).
  :func:`scalar` returns a cached 0-dim tensor of the other operand's dtype instead. The value
  is the same: the cast rounds the Python float to the dtype exactly as the wrapped-scalar
  path does.
* A gradient masked where a value lies in a closed range, ``g * ((lo <= r) & (r <= hi)).to(
  g.dtype)`` (compare, compare, and, convert, multiply: about 13 us), is one op,
  :func:`pass_inside` (``hardtanh_backward``, about 3 us), with bounds one ulp outside the
  range so that the range stays closed.

Both are tested element for element against the plain expressions
(``tests/sw/test_tensorops.py``).
"""
from __future__ import annotations

import math

import numpy as np
import torch

__all__ = ["scalar", "pass_inside"]

_SCALARS: dict = {}   # dtype -> {value: 0-dim tensor} (non-zero values)
_ZEROS: dict = {}     # (dtype, sign) -> 0-dim tensor (-0.0 == 0.0: kept apart by sign)
_BOUNDS: dict = {}
_MAX_CACHED = 4096
_NP_DTYPES = {torch.float16: np.float16, torch.float32: np.float32, torch.float64: np.float64}


def scalar(value: float, dtype: torch.dtype) -> torch.Tensor | float:
    """``value`` as a cached 0-dim tensor of ``dtype`` (floating dtypes; else ``value``).

    Use it as the scalar operand of an elementwise op on a ``dtype`` tensor: the result is
    the one the Python float gives, without the per-op cast. Never modify the returned tensor.
    """
    cache = _SCALARS.get(dtype)
    if cache is not None and value:
        t = cache.get(value)
        if t is not None:
            return t
    if not dtype.is_floating_point:
        return value
    if not value:  # 0.0 or -0.0
        key = (dtype, math.copysign(1.0, value))
        t = _ZEROS.get(key)
        if t is None:
            t = _ZEROS[key] = torch.tensor(value, dtype=dtype)
        return t
    cache = _SCALARS.setdefault(dtype, {})
    if len(cache) >= _MAX_CACHED:
        cache.clear()
    t = cache[value] = torch.tensor(value, dtype=dtype)
    return t


def _bounds(lo: float, hi: float, dtype: torch.dtype) -> tuple[float, float]:
    key = (lo, hi, dtype)
    b = _BOUNDS.get(key)
    if b is None:
        if dtype not in _NP_DTYPES:
            raise TypeError(f"pass_inside: floating dtypes only, got {dtype}")
        t = _NP_DTYPES[dtype]
        if float(t(lo)) != lo or float(t(hi)) != hi:
            raise ValueError(f"pass_inside: the range [{lo}, {hi}] is not exact in {dtype}")
        b = (float(np.nextafter(t(lo), t(-np.inf))), float(np.nextafter(t(hi), t(np.inf))))
        if len(_BOUNDS) >= _MAX_CACHED:
            _BOUNDS.clear()
        _BOUNDS[key] = b
    return b


def pass_inside(g: torch.Tensor, r: torch.Tensor, lo: float, hi: float) -> torch.Tensor:
    """``g`` where ``lo <= r <= hi``, else 0: ``g * ((lo <= r) & (r <= hi))`` in one op.

    ``r`` and ``g`` have the same shape and floating dtype; ``lo`` and ``hi`` must be exact
    in it (the integer code ranges are). Unlike the comparison, a NaN in ``r`` passes its
    ``g`` (no training value is NaN).
    """
    below, above = _bounds(float(lo), float(hi), r.dtype)
    return torch.ops.aten.hardtanh_backward(g, r, below, above)
