"""What flows between :mod:`softfloor.nn` layers: integer codes with their scale.

:class:`QuantTensor` is a plain object (not a ``torch.Tensor`` subclass) holding a tensor and
the facts a layer needs about it, so a layer never asks its parent for an input exponent:

* ``value``: with power-of-two scales the real values, ``codes * 2**exp`` (exact dyadic
  rationals in the layer's dtype); with free scales the integer codes themselves (float64) and
  the real value is ``codes * 2**log2``.
* ``exp`` (power-of-two scales): the integer exponent of the scale, one ``int``, or an int64
  tensor with one exponent per channel (axis 1) after a layer with per-channel weight scales.
* ``log2`` (free scales): the log2 scale, a float tensor (per channel a vector) that carries the
  gradient to the scale parameters.
* ``lo``/``hi``: bounds of the integer codes (the code range of an activation, the worst case of
  an accumulator), which decide the dtype a weighted layer needs to stay exact.
* ``kind``: ``"codes"`` (an input or activation) or ``"acc"`` (an accumulator of a weighted
  layer, not yet requantized).
* ``bn``/``pre``/``in_exp``: a BatchNorm that a 1-bit activation must turn into an integer
  threshold (``QuantLinear(batchnorm="threshold")``): ``value`` is then BatchNorm of the
  accumulator ``pre``, and ``bn`` the layer that owns the statistics.

A QuantTensor takes part in any torch function as its real value (``__torch_function__``), so
``F.cross_entropy(model(x), y)`` and ``model(x).argmax(1)`` work on a network of quantized
layers; :meth:`QuantTensor.codes` gives the integer codes the exported model computes.

:class:`IntState` is the same facts at export time (numpy and Python integers), passed from
layer to layer through ``to_int``.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch


def _channel_view(t: torch.Tensor, ndim: int) -> torch.Tensor:
    """A per-channel vector shaped to broadcast along axis 1 of an ``ndim``-d batch."""
    return t.reshape((-1,) + (1,) * (ndim - 2)) if t.dim() else t


class QuantTensor:
    """Integer codes and their scale, flowing between :mod:`softfloor.nn` layers.

    See the module docstring for the fields. Build one from codes with
    :meth:`from_codes` (e.g. inputs quantized once before training).
    """
    __slots__ = ("value", "exp", "log2", "lo", "hi", "kind", "bn", "pre", "in_exp")

    def __init__(self, value: torch.Tensor, exp=None, log2=None, lo: int = 0, hi: int = 0,
                 kind: str = "codes", bn=None, pre=None, in_exp=None):
        if (exp is None) == (log2 is None):
            raise ValueError("a QuantTensor has either a power-of-two exponent (exp) or a free "
                             "log2 scale (log2)")
        self.value, self.exp, self.log2 = value, exp, log2
        self.lo, self.hi, self.kind = int(lo), int(hi), kind
        self.bn, self.pre, self.in_exp = bn, pre, in_exp

    @classmethod
    def from_codes(cls, codes, exp: int, lo: int, hi: int, dtype=torch.float32) -> "QuantTensor":
        """Integer ``codes`` (any integer or float array) at scale ``2**exp``."""
        c = torch.as_tensor(codes)
        return cls(c.to(dtype) * 2.0 ** exp, exp=int(exp), lo=lo, hi=hi)

    @property
    def free(self) -> bool:
        """True with a free (real) scale, False with a power-of-two one."""
        return self.log2 is not None

    @property
    def per_channel(self) -> bool:
        s = self.log2 if self.free else self.exp
        return isinstance(s, torch.Tensor) and s.dim() > 0

    @property
    def absmax(self) -> int:
        """The largest code magnitude."""
        return max(abs(self.lo), abs(self.hi))

    def real(self) -> torch.Tensor:
        """The real values (``value`` itself with power-of-two scales)."""
        if self.log2 is None:
            return self.value
        return self.value * torch.exp2(_channel_view(self.log2, self.value.dim()))

    def codes(self) -> torch.Tensor:
        """The integer codes as a float tensor (exact; for a pending BatchNorm threshold, the
        accumulator's)."""
        v = self.value if self.pre is None else self.pre
        if self.log2 is not None:
            return v
        if isinstance(self.exp, torch.Tensor):
            return v * torch.exp2(-_channel_view(self.exp.to(v.dtype), v.dim()))
        return v * 2.0 ** -self.exp

    def with_value(self, value: torch.Tensor, **changes) -> "QuantTensor":
        """The same scale and code range with another tensor (shape ops, pooling)."""
        kw = {k: getattr(self, k) for k in self.__slots__} | {"value": value} | changes
        return QuantTensor(**kw)

    def __repr__(self) -> str:
        sc = f"log2={self.log2}" if self.free else f"exp={self.exp}"
        return (f"QuantTensor({self.kind}, shape={tuple(self.value.shape)}, {sc}, "
                f"codes=[{self.lo}, {self.hi}]{', bn threshold' if self.bn else ''})")

    # -- as a tensor: the real values ----------------------------------------------------------
    @classmethod
    def __torch_function__(cls, func, types, args=(), kwargs=None):
        x = args[0] if args else None
        if func in _SHAPE_OPS and isinstance(x, QuantTensor) and x.reshapable:
            return x.with_value(func(x.value, *args[1:], **(kwargs or {})))
        return func(*_unwrap(args), **_unwrap(kwargs or {}))

    @property
    def reshapable(self) -> bool:
        """A shape op keeps it a QuantTensor (one scale for every element)."""
        return not self.per_channel and self.bn is None

    def _shape_op(self, name, *args, **kwargs):
        if not self.reshapable:
            return getattr(self.real(), name)(*args, **kwargs)
        return self.with_value(getattr(self.value, name)(*args, **kwargs))

    def view(self, *args, **kwargs):
        return self._shape_op("view", *args, **kwargs)

    def reshape(self, *args, **kwargs):
        return self._shape_op("reshape", *args, **kwargs)

    def flatten(self, *args, **kwargs):
        return self._shape_op("flatten", *args, **kwargs)

    def __getattr__(self, name):
        if name.startswith("__"):
            raise AttributeError(name)
        return getattr(self.real(), name)

    def __len__(self) -> int:
        return len(self.value)

    def __getitem__(self, idx):
        return self.real()[idx]

    def __neg__(self):
        return -self.real()

    def __add__(self, o):
        return self.real() + _unwrap(o)

    def __radd__(self, o):
        return _unwrap(o) + self.real()

    def __sub__(self, o):
        return self.real() - _unwrap(o)

    def __rsub__(self, o):
        return _unwrap(o) - self.real()

    def __mul__(self, o):
        return self.real() * _unwrap(o)

    def __rmul__(self, o):
        return _unwrap(o) * self.real()

    def __truediv__(self, o):
        return self.real() / _unwrap(o)

    def __matmul__(self, o):
        return self.real() @ _unwrap(o)


_SHAPE_OPS = {torch.flatten, torch.reshape, torch.Tensor.view, torch.Tensor.reshape,
              torch.Tensor.flatten}


def _unwrap(obj):
    if isinstance(obj, QuantTensor):
        return obj.real()
    if isinstance(obj, (list, tuple)):
        return type(obj)(_unwrap(o) for o in obj)
    if isinstance(obj, dict):
        return {k: _unwrap(v) for k, v in obj.items()}
    return obj


@dataclass
class IntState:
    """The integer tensor between two layers at export time (what ``to_int`` reads and
    returns): per-sample ``shape``, code bounds ``lo``/``hi``, the scale (``exp``: an int or
    an int64 array per channel; or ``log2``: a float64 tensor, free scales), ``kind``
    (``"codes"`` or ``"acc"``), and a ``pending`` weighted layer whose integer op waits for
    the 1-bit activation that turns its BatchNorm into a threshold."""
    shape: tuple
    lo: int
    hi: int
    exp: int | np.ndarray | None = None
    log2: torch.Tensor | None = None
    kind: str = "codes"
    pending: tuple | None = None
    #: Names already used and the running count of weighted layers (op names).
    names: set = field(default_factory=set)
    weighted: int = 0
    #: Check each requantization against the model file's limits (off to inspect a diverged
    #: network's integer layers).
    strict: bool = True

    @property
    def per_channel(self) -> bool:
        s = self.log2 if self.log2 is not None else self.exp
        return isinstance(s, (np.ndarray, torch.Tensor)) and np.ndim(s) > 0

    def name(self, base: str) -> str:
        """``base``, or ``base_2``, ``base_3``... if taken; recorded as taken."""
        name, k = base, 1
        while name in self.names:
            k += 1
            name = f"{base}_{k}"
        self.names.add(name)
        return name
