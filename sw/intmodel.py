"""The integer model: the one artifact that crosses from training to hardware.

A model file is JSON (``*.intmodel.json``), documented in ``docs/intmodel.md``. Integer arrays
are stored as JSON integers, so they are exact. Loading validates everything and raises
:class:`ModelFormatError` naming the field; nothing half-valid is ever returned.

The model is a chain of operations on integer codes. Each sample is a tensor of codes with a
shape: ``(features,)`` or channels-first ``(C, H, W)``. Each operation derives the shape and the
code type (exact worst-case value range) of its output from those of its input, which is how
shapes are chained and accumulator widths are checked against the actual integer weights.

Version 1 files (dense and per-tensor requant on a flat input) keep loading; the writer emits
the lowest version that can express the model, so dense/requant models are still version 1.
"""
from __future__ import annotations

import dataclasses
import json
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from . import arith

FORMAT = "softfloor.intmodel"
#: The newest format version this softfloor reads and writes.
VERSION = 3
#: Every version this softfloor reads.
VERSIONS = (1, 2, 3)
#: Widest accumulator accepted: partial sums stay exact in int64 and in float64 (53-bit mantissa).
MAX_ACC_BITS = 48
MAX_CODE_BITS = 32
MAX_SHIFT = 62
#: Largest requantization multiplier (a signed 32-bit value).
MAX_MULTIPLIER = (1 << 31) - 1
#: Widest weights (signed codes). Weights wider than :data:`V2_WEIGHT_BITS` need version 3.
MAX_WEIGHT_BITS = 16
#: Widest weights of format versions 1 and 2.
V2_WEIGHT_BITS = 8
#: Limits on sizes, so a corrupt file cannot ask for absurd allocations.
MAX_FEATURES = 1 << 16
MAX_CHANNELS = 4096
MAX_ELEMENTS = 1 << 24
MAX_KERNEL = 16
MAX_STRIDE = 16
MAX_PAD = 16
MAX_THRESHOLDS = 1 << 16
#: Most entries of a ``lut`` table: every code of a 12-bit input.
MAX_LUT_ENTRIES = 1 << 12
#: Thresholds and pad values are bounded like 62-bit integers (no int64 overflow anywhere).
MAX_ABS_THRESHOLD = 1 << 62


class ModelFormatError(ValueError):
    """A model file (or model object) is malformed; the message names the offending field."""


# ----------------------------------------------------------------------------------------------
# Code types

@dataclass(frozen=True)
class CodeType:
    """Integer codes: storage ``bits``/``signed`` and the exact value range ``[lo, hi]`` they take."""
    bits: int
    signed: bool
    lo: int
    hi: int

    @classmethod
    def full(cls, bits: int, signed: bool) -> "CodeType":
        lo, hi = arith.code_range(bits, signed)
        return cls(bits, signed, lo, hi)

    @classmethod
    def of_range(cls, lo: int, hi: int) -> "CodeType":
        bits, signed = arith.bits_for_range(lo, hi)
        return cls(bits, signed, int(lo), int(hi))

    def __str__(self) -> str:
        return f"{'s' if self.signed else 'u'}{self.bits}[{self.lo}..{self.hi}]"


# ----------------------------------------------------------------------------------------------
# Validation helpers: each names the field it checks.

def _req(d: dict, key: str, where: str):
    if not isinstance(d, dict):
        raise ModelFormatError(f"{where}: expected an object, got {type(d).__name__}")
    if key not in d:
        raise ModelFormatError(f"{where}.{key}: missing")
    return d[key]


def _is_int(v) -> bool:
    return isinstance(v, (int, np.integer)) and not isinstance(v, (bool, np.bool_))


def _int(d: dict, key: str, where: str, lo: int | None = None, hi: int | None = None) -> int:
    v = _req(d, key, where)
    if not _is_int(v):
        raise ModelFormatError(f"{where}.{key}: expected an integer, got {v!r}")
    if (lo is not None and v < lo) or (hi is not None and v > hi):
        raise ModelFormatError(f"{where}.{key}: {v} outside the supported range [{lo}, {hi}]")
    return int(v)


def _opt_int(d: dict, key: str, where: str, default: int, lo=None, hi=None) -> int:
    return _int(d, key, where, lo, hi) if isinstance(d, dict) and key in d else default


def _bool(d: dict, key: str, where: str) -> bool:
    v = _req(d, key, where)
    if not isinstance(v, bool):
        raise ModelFormatError(f"{where}.{key}: expected true or false, got {v!r}")
    return v


def _str(d: dict, key: str, where: str, choices: tuple[str, ...] | None = None) -> str:
    v = _req(d, key, where)
    if not isinstance(v, str):
        raise ModelFormatError(f"{where}.{key}: expected a string, got {v!r}")
    if choices is not None and v not in choices:
        raise ModelFormatError(f"{where}.{key}: {v!r} is not one of {', '.join(choices)}")
    return v


def _name(d: dict, where: str) -> str:
    v = _str(d, "name", where)
    if not v:
        raise ModelFormatError(f"{where}.name: must not be empty")
    return v


def _float(d: dict, key: str, where: str, positive: bool = False) -> float:
    v = _req(d, key, where)
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
        raise ModelFormatError(f"{where}.{key}: expected a finite number, got {v!r}")
    if positive and v <= 0:
        raise ModelFormatError(f"{where}.{key}: must be > 0, got {v!r}")
    return float(v)


def _int_array(d: dict, key: str, where: str, shape: tuple[int, ...], lo: int, hi: int
               ) -> np.ndarray:
    """A nested JSON list of integers of exactly ``shape``, every element in ``[lo, hi]``."""
    v = _req(d, key, where)

    def check(node, depth, path):
        if depth == len(shape):
            if not _is_int(node):
                raise ModelFormatError(f"{where}.{key}{path}: expected an integer, got {node!r}")
            if not lo <= node <= hi:
                raise ModelFormatError(
                    f"{where}.{key}{path}: {node} outside the code range [{lo}, {hi}]")
            return
        if not isinstance(node, list) or len(node) != shape[depth]:
            n = len(node) if isinstance(node, list) else type(node).__name__
            raise ModelFormatError(
                f"{where}.{key}{path}: expected a list of {shape[depth]}, got {n}")
        for i, item in enumerate(node):
            check(item, depth + 1, f"{path}[{i}]")

    check(v, 0, "")
    return np.array(v, dtype=np.int64).reshape(shape)


def _int_list(d: dict, key: str, where: str, lo: int, hi: int, length: int | None = None,
              max_len: int = MAX_CHANNELS) -> list[int]:
    """A JSON list of integers in ``[lo, hi]`` (of ``length`` items when given)."""
    v = _req(d, key, where)
    if not isinstance(v, list) or not v or len(v) > max_len:
        raise ModelFormatError(f"{where}.{key}: expected a list of 1..{max_len} integers")
    if length is not None and len(v) != length:
        raise ModelFormatError(f"{where}.{key}: expected {length} integers, got {len(v)}")
    for i, x in enumerate(v):
        if not _is_int(x):
            raise ModelFormatError(f"{where}.{key}[{i}]: expected an integer, got {x!r}")
        if not lo <= x <= hi:
            raise ModelFormatError(f"{where}.{key}[{i}]: {x} outside the supported range "
                                   f"[{lo}, {hi}]")
    return [int(x) for x in v]


def _check_codes(a, where: str, shape: tuple[int, ...], lo: int, hi: int) -> np.ndarray:
    """Programmatically built arrays: integer dtype, ``shape``, every code in ``[lo, hi]``."""
    if not isinstance(a, np.ndarray) or not np.issubdtype(a.dtype, np.integer):
        kind = a.dtype if isinstance(a, np.ndarray) else type(a).__name__
        raise ModelFormatError(f"{where}: expected an integer numpy array, got {kind}")
    if a.shape != tuple(shape):
        raise ModelFormatError(f"{where}: expected shape {tuple(shape)}, got {a.shape}")
    if a.size and (a.min() < lo or a.max() > hi):
        bad = a[(a < lo) | (a > hi)].ravel()[0]
        raise ModelFormatError(f"{where}: {bad} outside the code range [{lo}, {hi}]")
    return a


def _no_extra(d: dict, allowed: set[str], where: str) -> None:
    if not isinstance(d, dict):
        raise ModelFormatError(f"{where}: expected an object, got {type(d).__name__}")
    extra = sorted(set(d) - allowed)
    if extra:
        raise ModelFormatError(f"{where}: unknown field(s) {', '.join(extra)}")


def _scale_field(d: dict, where: str, max_len: int):
    """``d["scale"]``: a positive finite number, or (v2) a list of 1..``max_len`` of them
    (returned as a tuple). Shared by the input (one per value) and the output (one per
    channel)."""
    scale = _req(d, "scale", where)
    if not isinstance(scale, list):
        return _float(d, "scale", where, positive=True)
    if not 1 <= len(scale) <= max_len:
        raise ModelFormatError(f"{where}.scale: expected 1..{max_len} numbers, got {len(scale)}")
    return tuple(_float({f"scale[{i}]": v}, f"scale[{i}]", where, positive=True)
                 for i, v in enumerate(scale))


def _check_scales(scale, where: str) -> tuple:
    """The scales of a spec built in code (one number or a tuple), each a positive finite
    number; returns them as a tuple."""
    scales = scale if isinstance(scale, tuple) else (scale,)
    for v in scales:
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) \
                or v <= 0:
            raise ModelFormatError(f"{where}.scale: {v!r} is not a positive finite number")
    return scales


def _scale_str(scale) -> str:
    """A scale for a summary line: the number, or ``per-value[n] lo..hi``."""
    if isinstance(scale, tuple):
        return f"per-value[{len(scale)}] {min(scale):g}..{max(scale):g}"
    return f"{scale:g}"


def _shape_str(shape) -> str:
    return "x".join(str(s) for s in shape)


def exact_matmul(x: np.ndarray, w: np.ndarray) -> np.ndarray:
    """``x @ w.T`` on integer arrays, exact, as int64; BLAS only where provably exact.

    Every partial sum BLAS may form (in any order) is bounded by ``max|x| * max_o sum_i |w[o, i]|``
    (measured on the actual data): below ``2**24`` float32 is exact, below ``2**53`` float64 is;
    otherwise numpy's int64 matmul (exact because validation keeps sums below ``2**62``).
    """
    if x.size == 0 or w.size == 0:
        return np.zeros((x.shape[0], w.shape[0]), dtype=np.int64)
    dt = exact_dtype(x, w)
    return (x.astype(dt, copy=False) @ w.T.astype(dt)).astype(np.int64)


def exact_dtype(x: np.ndarray, w: np.ndarray, plus: int = 0):
    """The fastest dtype in which ``x @ w.T`` (``+ b`` with ``|b| <= plus``) is exact.

    See :func:`exact_matmul`: the bound is ``max|x| * max_o sum_i |w[o, i]| + plus``.
    """
    xmax = max(abs(int(x.min())), abs(int(x.max()))) if x.size else 0
    bound = xmax * int(np.abs(w.reshape(w.shape[0], -1)).sum(axis=1).max()) + int(plus)
    if bound < 1 << 24:
        return np.float32
    if bound < 1 << 53:
        return np.float64
    return np.int64


def _pair(d: dict, key: str, where: str, lo: int, hi: int, default=None) -> tuple[int, int]:
    if default is not None and key not in d:
        return default
    return tuple(_int_list(d, key, where, lo, hi, length=2))


# ----------------------------------------------------------------------------------------------
# Operations. Each has: name, op, out_shape(shape, where), check(type, where), out_type(type),
# execute(x) on a batch (N, *shape), to_dict(), from_dict(d, where), min_version.

def _weight_range(bits: int) -> tuple[int, int]:
    """Weight codes: signed ``bits``; 1-bit weights are {-1, +1} (sign times scale, code 0 unused)."""
    if bits == 1:
        return -1, 1
    return arith.code_range(bits, True)


def _check_acc(layer, x: CodeType, where: str, w2d: np.ndarray, fan_in: int) -> None:
    """Shared checks of dense and conv2d: weights, bias, accumulator width from the worst case."""
    name = layer.name
    for key in ("weight_bits", "bias_bits", "acc_bits"):
        if not _is_int(getattr(layer, key)):
            raise ModelFormatError(f"{where}.{key} ({name}): expected an integer, got "
                                   f"{getattr(layer, key)!r}")
    if not isinstance(layer.bias, np.ndarray):
        raise ModelFormatError(f"{where}.bias ({name}): expected an integer numpy array")
    if x.bits + layer.weight_bits + math.ceil(math.log2(fan_in + 1)) > 62:
        raise ModelFormatError(f"{where} ({name}): input codes {x} too wide for {fan_in} inputs")
    if not 1 <= layer.weight_bits <= MAX_WEIGHT_BITS:
        raise ModelFormatError(f"{where}.weight_bits ({name}): {layer.weight_bits} outside "
                               f"[1, {MAX_WEIGHT_BITS}]")
    if not 2 <= layer.acc_bits <= MAX_ACC_BITS:
        raise ModelFormatError(f"{where}.acc_bits ({name}): {layer.acc_bits} outside "
                               f"[2, {MAX_ACC_BITS}]")
    if not 1 <= layer.bias_bits <= MAX_ACC_BITS:
        raise ModelFormatError(f"{where}.bias_bits ({name}): {layer.bias_bits} outside "
                               f"[1, {MAX_ACC_BITS}]")
    _check_codes(layer.weight, f"{where}.weight ({name})", layer.weight.shape,
                 *_weight_range(layer.weight_bits))
    if layer.weight_bits == 1 and np.any(layer.weight == 0):
        raise ModelFormatError(f"{where}.weight ({name}): 1-bit weights are -1 or +1, found 0")
    _check_codes(layer.bias, f"{where}.bias ({name})", (w2d.shape[0],),
                 *arith.code_range(layer.bias_bits, True))
    lo, hi = layer.acc_bounds(x)
    need_bits, signed = arith.bits_for_range(lo, hi)
    need_bits += 0 if signed else 1
    alo, ahi = arith.code_range(layer.acc_bits, True)
    if lo < alo or hi > ahi:
        raise ModelFormatError(
            f"{where}.acc_bits ({name}): a {layer.acc_bits}-bit accumulator can overflow: "
            f"the worst case over inputs {x} is [{lo}, {hi}], which needs {need_bits} bits")
    if layer.bias_bits > layer.acc_bits:
        raise ModelFormatError(
            f"{where}.bias_bits ({name}): {layer.bias_bits} > acc_bits {layer.acc_bits}")


@dataclass
class Dense:
    """``acc = x @ weight.T + bias``: the accumulator is the output code, ``acc_bits`` wide, signed.

    ``weight`` is ``(out_features, in_features)`` of signed ``weight_bits`` codes; ``bias`` is
    ``(out_features,)`` of signed ``bias_bits`` codes at the accumulator's scale. The input must be
    a flat ``(in_features,)`` tensor (insert a ``flatten`` after convolutions).
    """
    name: str
    weight: np.ndarray
    bias: np.ndarray
    weight_bits: int
    bias_bits: int
    acc_bits: int
    op: str = field(default="dense", init=False)
    min_version = 1

    @property
    def in_features(self) -> int:
        return int(self.weight.shape[1])

    @property
    def out_features(self) -> int:
        return int(self.weight.shape[0])

    def macs(self, in_shape=None) -> int:
        return self.in_features * self.out_features

    def acc_bounds(self, x: CodeType) -> tuple[int, int]:
        """Worst-case accumulator range over all inputs of type ``x``, all outputs."""
        lo, hi = arith.dense_bounds(self.weight, self.bias, x.lo, x.hi)
        return int(min(lo)), int(max(hi))

    def out_type(self, x: CodeType) -> CodeType:
        lo, hi = self.acc_bounds(x)
        return CodeType(self.acc_bits, True, lo, hi)

    def out_shape(self, shape: tuple[int, ...], where: str) -> tuple[int, ...]:
        if len(shape) != 1:
            raise ModelFormatError(
                f"{where} ({self.name}): dense needs a flat input, got shape {_shape_str(shape)}; "
                "insert a flatten layer before it")
        if self.in_features != shape[0]:
            raise ModelFormatError(
                f"{where}.in_features ({self.name}): {self.in_features}, but the previous layer "
                f"gives {shape[0]} values")
        return (self.out_features,)

    def execute(self, x: np.ndarray) -> np.ndarray:
        return exact_matmul(x, self.weight) + self.bias

    def to_dict(self) -> dict:
        return {"op": "dense", "name": self.name, "in_features": self.in_features,
                "out_features": self.out_features, "weight_bits": self.weight_bits,
                "bias_bits": self.bias_bits, "acc_bits": self.acc_bits,
                "weight": self.weight.tolist(), "bias": self.bias.tolist()}

    @classmethod
    def from_dict(cls, d: dict, where: str) -> "Dense":
        _no_extra(d, {"op", "name", "in_features", "out_features", "weight_bits", "bias_bits",
                      "acc_bits", "weight", "bias"}, where)
        n_in = _int(d, "in_features", where, 1, MAX_FEATURES)
        n_out = _int(d, "out_features", where, 1, MAX_FEATURES)
        wb = _int(d, "weight_bits", where, 1, MAX_WEIGHT_BITS)
        bb = _int(d, "bias_bits", where, 1, MAX_ACC_BITS)
        ab = _int(d, "acc_bits", where, 2, MAX_ACC_BITS)
        w = _int_array(d, "weight", where, (n_out, n_in), *_weight_range(wb))
        b = _int_array(d, "bias", where, (n_out,), *arith.code_range(bb, True))
        return cls(_name(d, where), w, b, wb, bb, ab)

    def check(self, x: CodeType, where: str) -> None:
        if (not isinstance(self.weight, np.ndarray) or self.weight.ndim != 2
                or 0 in self.weight.shape):
            raise ModelFormatError(f"{where}.weight ({self.name}): expected a non-empty 2-D "
                                   "integer array (out_features, in_features)")
        _check_acc(self, x, where, self.weight, self.in_features)


@dataclass
class Conv2d:
    """2-D convolution on ``(C, H, W)`` codes: ``acc[o, y, x] = sum w[o, c, i, j] * in[c, ...] + b[o]``.

    ``weight`` is ``(out_channels, in_channels, kh, kw)`` of signed ``weight_bits`` codes, ``bias``
    ``(out_channels,)`` at the accumulator's scale. ``padding`` is ``(top, left, bottom, right)``
    (ONNX ``pads`` order), filled with the code ``pad_value``; ``stride`` is ``(sy, sx)``. Output
    ``H' = (H + top + bottom - kh) // sy + 1`` (and likewise ``W'``). Groups and dilation are 1.
    """
    name: str
    weight: np.ndarray
    bias: np.ndarray
    weight_bits: int
    bias_bits: int
    acc_bits: int
    stride: tuple[int, int] = (1, 1)
    padding: tuple[int, int, int, int] = (0, 0, 0, 0)
    pad_value: int = 0
    op: str = field(default="conv2d", init=False)
    min_version = 2

    @property
    def in_channels(self) -> int:
        return int(self.weight.shape[1])

    @property
    def out_channels(self) -> int:
        return int(self.weight.shape[0])

    @property
    def kernel(self) -> tuple[int, int]:
        return int(self.weight.shape[2]), int(self.weight.shape[3])

    def _w2d(self) -> np.ndarray:
        return self.weight.reshape(self.out_channels, -1)

    def in_range(self, x: CodeType) -> tuple[int, int]:
        """The values a tap can hold: the input's range, and the pad value when there is
        padding (a code of the input type, possibly one the input never takes)."""
        if any(self.padding):
            return min(x.lo, self.pad_value), max(x.hi, self.pad_value)
        return x.lo, x.hi

    def acc_bounds(self, x: CodeType) -> tuple[int, int]:
        lo, hi = arith.dense_bounds(self._w2d(), self.bias, *self.in_range(x))
        return int(min(lo)), int(max(hi))

    def out_type(self, x: CodeType) -> CodeType:
        lo, hi = self.acc_bounds(x)
        return CodeType(self.acc_bits, True, lo, hi)

    def out_shape(self, shape: tuple[int, ...], where: str) -> tuple[int, ...]:
        if len(shape) != 3:
            raise ModelFormatError(f"{where} ({self.name}): conv2d needs a (C, H, W) input, got "
                                   f"shape {_shape_str(shape)}")
        c, h, w = shape
        if c != self.in_channels:
            raise ModelFormatError(f"{where}.in_channels ({self.name}): {self.in_channels}, but "
                                   f"the previous layer gives {c} channels")
        (kh, kw), (sy, sx), (pt, pl, pb, pr) = self.kernel, self.stride, self.padding
        hp, wp = h + pt + pb, w + pl + pr
        if hp < kh or wp < kw:
            raise ModelFormatError(f"{where}.kernel ({self.name}): {kh}x{kw} larger than the "
                                   f"padded input {hp}x{wp}")
        return self.out_channels, (hp - kh) // sy + 1, (wp - kw) // sx + 1

    def macs(self, in_shape) -> int:
        _, oh, ow = self.out_shape(tuple(in_shape), "macs")
        return self.out_channels * oh * ow * self.in_channels * self.kernel[0] * self.kernel[1]

    def execute(self, x: np.ndarray) -> np.ndarray:
        """im2col + one exact matmul, in sub-batches of bounded memory."""
        n = x.shape[0]
        (kh, kw), (sy, sx), (pt, pl, pb, pr) = self.kernel, self.stride, self.padding
        oc, oh, ow = self.out_shape(tuple(x.shape[1:]), "execute")
        w2d = self._w2d()
        # One dtype for the whole batch: exact for every partial sum (pad_value is an input code).
        bmax = int(np.abs(self.bias).max())
        dt = exact_dtype(np.array([[x.min(), x.max(), self.pad_value]]) if x.size else x, w2d,
                         bmax)
        wt, bias = w2d.T.astype(dt), self.bias.astype(dt)
        per_sample = oh * ow * w2d.shape[1]
        step = max(1, (1 << 20) // max(1, per_sample))
        out = np.empty((n, oc, oh, ow), dtype=np.int64)
        for s in range(0, n, step):
            xb = x[s:s + step].astype(dt)
            if pt or pl or pb or pr:
                xb = np.pad(xb, ((0, 0), (0, 0), (pt, pb), (pl, pr)),
                            constant_values=self.pad_value)
            win = np.lib.stride_tricks.sliding_window_view(xb, (kh, kw), axis=(2, 3))
            win = win[:, :, ::sy, ::sx][:, :, :oh, :ow]          # (b, C, oh, ow, kh, kw)
            cols = win.transpose(0, 2, 3, 1, 4, 5).reshape(-1, w2d.shape[1])
            acc = cols @ wt
            acc += bias                       # still exact: the bound includes max|bias|
            out[s:s + step] = acc.reshape(len(xb), oh, ow, oc).transpose(0, 3, 1, 2)
        return out

    def to_dict(self) -> dict:
        return {"op": "conv2d", "name": self.name, "in_channels": self.in_channels,
                "out_channels": self.out_channels, "kernel": list(self.kernel),
                "stride": list(self.stride), "padding": list(self.padding),
                "pad_value": self.pad_value, "weight_bits": self.weight_bits,
                "bias_bits": self.bias_bits, "acc_bits": self.acc_bits,
                "weight": self.weight.tolist(), "bias": self.bias.tolist()}

    @classmethod
    def from_dict(cls, d: dict, where: str) -> "Conv2d":
        _no_extra(d, {"op", "name", "in_channels", "out_channels", "kernel", "stride", "padding",
                      "pad_value", "weight_bits", "bias_bits", "acc_bits", "weight", "bias"},
                  where)
        ci = _int(d, "in_channels", where, 1, MAX_CHANNELS)
        co = _int(d, "out_channels", where, 1, MAX_CHANNELS)
        kh, kw = _pair(d, "kernel", where, 1, MAX_KERNEL)
        stride = _pair(d, "stride", where, 1, MAX_STRIDE, default=(1, 1))
        padding = tuple(_int_list(d, "padding", where, 0, MAX_PAD, length=4)) \
            if "padding" in d else (0, 0, 0, 0)
        pad_value = _opt_int(d, "pad_value", where, 0, -MAX_ABS_THRESHOLD, MAX_ABS_THRESHOLD)
        wb = _int(d, "weight_bits", where, 1, MAX_WEIGHT_BITS)
        bb = _int(d, "bias_bits", where, 1, MAX_ACC_BITS)
        ab = _int(d, "acc_bits", where, 2, MAX_ACC_BITS)
        w = _int_array(d, "weight", where, (co, ci, kh, kw), *_weight_range(wb))
        b = _int_array(d, "bias", where, (co,), *arith.code_range(bb, True))
        return cls(_name(d, where), w, b, wb, bb, ab, stride, padding, pad_value)

    def check(self, x: CodeType, where: str) -> None:
        if (not isinstance(self.weight, np.ndarray) or self.weight.ndim != 4
                or 0 in self.weight.shape):
            raise ModelFormatError(f"{where}.weight ({self.name}): expected a non-empty 4-D "
                                   "integer array (out_channels, in_channels, kh, kw)")
        for key, vals, n, lo, hi in (("stride", self.stride, 2, 1, MAX_STRIDE),
                                     ("padding", self.padding, 4, 0, MAX_PAD)):
            if len(vals) != n or not all(_is_int(v) and lo <= v <= hi for v in vals):
                raise ModelFormatError(f"{where}.{key} ({self.name}): expected {n} integers in "
                                       f"[{lo}, {hi}], got {vals!r}")
        if max(self.kernel) > MAX_KERNEL:
            raise ModelFormatError(f"{where}.kernel ({self.name}): {self.kernel} larger than "
                                   f"{MAX_KERNEL}")
        clo, chi = arith.code_range(x.bits, x.signed)
        if not (_is_int(self.pad_value) and clo <= self.pad_value <= chi):
            raise ModelFormatError(f"{where}.pad_value ({self.name}): {self.pad_value!r} is not a "
                                   f"code of the input type {x}")
        _check_acc(self, x, where, self._w2d(), self._w2d().shape[1])


@dataclass
class MaxPool2d:
    """Max over ``kernel`` windows of ``(C, H, W)`` codes, moving by ``stride``; no padding.

    Output ``H' = (H - kh) // sy + 1`` (floor; incomplete windows at the edge are dropped).
    """
    name: str
    kernel: tuple[int, int]
    stride: tuple[int, int]
    op: str = field(default="maxpool2d", init=False)
    min_version = 2

    def out_type(self, x: CodeType) -> CodeType:
        return x

    def check(self, x: CodeType, where: str) -> None:
        for key, vals, hi in (("kernel", self.kernel, MAX_KERNEL), ("stride", self.stride,
                                                                    MAX_STRIDE)):
            if len(vals) != 2 or not all(_is_int(v) and 1 <= v <= hi for v in vals):
                raise ModelFormatError(f"{where}.{key} ({self.name}): expected 2 integers in "
                                       f"[1, {hi}], got {vals!r}")

    def out_shape(self, shape: tuple[int, ...], where: str) -> tuple[int, ...]:
        self.check(CodeType(1, False, 0, 1), where)
        if len(shape) != 3:
            raise ModelFormatError(f"{where} ({self.name}): maxpool2d needs a (C, H, W) input, "
                                   f"got shape {_shape_str(shape)}")
        c, h, w = shape
        (kh, kw), (sy, sx) = self.kernel, self.stride
        if h < kh or w < kw:
            raise ModelFormatError(f"{where}.kernel ({self.name}): {kh}x{kw} larger than the "
                                   f"input {h}x{w}")
        return c, (h - kh) // sy + 1, (w - kw) // sx + 1

    def macs(self, in_shape) -> int:
        return 0

    def execute(self, x: np.ndarray) -> np.ndarray:
        n, c, h, w = x.shape
        (kh, kw), (sy, sx) = self.kernel, self.stride
        _, oh, ow = self.out_shape((c, h, w), "execute")
        out = None
        for i in range(kh):          # elementwise maximum of the kh*kw strided window offsets
            for j in range(kw):
                tap = x[:, :, i:i + sy * (oh - 1) + 1:sy, j:j + sx * (ow - 1) + 1:sx]
                out = tap.copy() if out is None else np.maximum(out, tap, out=out)
        return out

    def to_dict(self) -> dict:
        return {"op": "maxpool2d", "name": self.name, "kernel": list(self.kernel),
                "stride": list(self.stride)}

    @classmethod
    def from_dict(cls, d: dict, where: str) -> "MaxPool2d":
        _no_extra(d, {"op", "name", "kernel", "stride"}, where)
        kernel = _pair(d, "kernel", where, 1, MAX_KERNEL)
        return cls(_name(d, where), kernel, _pair(d, "stride", where, 1, MAX_STRIDE,
                                                  default=kernel))


@dataclass
class Flatten:
    """``(C, H, W)`` codes to ``(C*H*W,)`` in C order (channel slowest), as ONNX/PyTorch flatten."""
    name: str
    op: str = field(default="flatten", init=False)
    min_version = 2

    def out_type(self, x: CodeType) -> CodeType:
        return x

    def check(self, x: CodeType, where: str) -> None:
        pass

    def out_shape(self, shape: tuple[int, ...], where: str) -> tuple[int, ...]:
        return (int(np.prod(shape)),)

    def macs(self, in_shape) -> int:
        return 0

    def execute(self, x: np.ndarray) -> np.ndarray:
        return x.reshape(x.shape[0], -1)

    def to_dict(self) -> dict:
        return {"op": "flatten", "name": self.name}

    @classmethod
    def from_dict(cls, d: dict, where: str) -> "Flatten":
        _no_extra(d, {"op", "name"}, where)
        return cls(_name(d, where))


def _check_requant_common(layer, where: str) -> tuple[int, int]:
    if not _is_int(layer.bits) or not 1 <= layer.bits <= MAX_CODE_BITS:
        raise ModelFormatError(f"{where}.bits ({layer.name}): {layer.bits!r} outside "
                               f"[1, {MAX_CODE_BITS}]")
    if not isinstance(layer.signed, bool):
        raise ModelFormatError(f"{where}.signed ({layer.name}): expected true or false")
    clo, chi = arith.code_range(layer.bits, layer.signed)
    if not (_is_int(layer.lo) and _is_int(layer.hi) and clo <= layer.lo <= layer.hi <= chi):
        raise ModelFormatError(f"{where}.lo/hi ({layer.name}): [{layer.lo}, {layer.hi}] is not "
                               f"a range inside the code range [{clo}, {chi}]")
    if layer.rounding not in arith.ROUNDING_MODES:
        raise ModelFormatError(f"{where}.rounding ({layer.name}): {layer.rounding!r} is not one "
                               f"of {', '.join(arith.ROUNDING_MODES)}")
    return clo, chi


def _requant_fields(d: dict, where: str):
    bits = _int(d, "bits", where, 1, MAX_CODE_BITS)
    signed = _bool(d, "signed", where)
    clo, chi = arith.code_range(bits, signed)
    lo = _int(d, "lo", where, clo, chi)
    hi = _int(d, "hi", where, lo, chi)
    return bits, signed, lo, hi, _str(d, "rounding", where, arith.ROUNDING_MODES)


@dataclass
class Requant:
    """``y = saturate(round_shift(x * multiplier, shift, rounding), lo, hi)``, codes ``bits`` wide.

    One multiplier and shift for the whole tensor (per-tensor). ReLU is ``lo = 0``; a plain clamp
    is ``multiplier = 1, shift = 0``. ``lo``/``hi`` lie inside the ``bits``/``signed`` code range.
    """
    name: str
    shift: int
    rounding: str
    bits: int
    signed: bool
    lo: int
    hi: int
    multiplier: int = 1
    op: str = field(default="requant", init=False)
    min_version = 1

    def out_type(self, x: CodeType) -> CodeType:
        # Exact image of [x.lo, x.hi] under a monotone map.
        a = arith.requantize(x.lo, self.shift, self.rounding, self.lo, self.hi, self.multiplier)
        b = arith.requantize(x.hi, self.shift, self.rounding, self.lo, self.hi, self.multiplier)
        return CodeType(self.bits, self.signed, int(a), int(b))

    def out_shape(self, shape: tuple[int, ...], where: str) -> tuple[int, ...]:
        return shape

    def macs(self, in_shape=None) -> int:
        return 0

    def execute(self, x: np.ndarray) -> np.ndarray:
        return arith.requantize(x, self.shift, self.rounding, self.lo, self.hi, self.multiplier)

    def to_dict(self) -> dict:
        return {"op": "requant", "name": self.name, "multiplier": self.multiplier,
                "shift": self.shift, "rounding": self.rounding, "bits": self.bits,
                "signed": self.signed, "lo": self.lo, "hi": self.hi}

    @classmethod
    def from_dict(cls, d: dict, where: str):
        _no_extra(d, {"op", "name", "multiplier", "shift", "rounding", "bits", "signed", "lo",
                      "hi"}, where)
        if isinstance(d.get("shift"), list) or isinstance(d.get("multiplier"), list):
            return ChannelRequant.from_dict(d, where)
        bits, signed, lo, hi, rounding = _requant_fields(d, where)
        mult = _opt_int(d, "multiplier", where, 1, 1, MAX_MULTIPLIER)
        return cls(_name(d, where), _int(d, "shift", where, 0, MAX_SHIFT), rounding, bits,
                   signed, lo, hi, mult)

    def check(self, x: CodeType, where: str) -> None:
        _check_requant_common(self, where)
        if not _is_int(self.shift) or not 0 <= self.shift <= MAX_SHIFT:
            raise ModelFormatError(f"{where}.shift ({self.name}): {self.shift!r} outside "
                                   f"[0, {MAX_SHIFT}]")
        if not _is_int(self.multiplier) or not 1 <= self.multiplier <= MAX_MULTIPLIER:
            raise ModelFormatError(f"{where}.multiplier ({self.name}): {self.multiplier!r} "
                                   "outside [1, 2**31 - 1]")
        if max(abs(x.lo), abs(x.hi)) * self.multiplier >= 1 << 62:
            raise ModelFormatError(
                f"{where}.multiplier ({self.name}): {self.multiplier} x {x} overflows 62 bits")


@dataclass
class ChannelRequant:
    """Per-channel requantization: channel ``c`` uses ``multiplier[c]`` and ``shift[c]``.

    The channel is the first axis of a sample (``C`` of ``(C, H, W)``, the feature of a flat
    tensor). Rounding and the saturation bounds ``lo``/``hi`` are shared. Stored as a ``requant``
    whose ``multiplier`` and ``shift`` are lists.
    """
    name: str
    shift: np.ndarray
    rounding: str
    bits: int
    signed: bool
    lo: int
    hi: int
    multiplier: np.ndarray
    op: str = field(default="requant", init=False)
    min_version = 2

    @property
    def channels(self) -> int:
        return len(self.shift)

    def _groups(self):
        pairs = {}
        for c, (m, s) in enumerate(zip(self.multiplier.tolist(), self.shift.tolist())):
            pairs.setdefault((m, s), []).append(c)
        return pairs

    def out_type(self, x: CodeType) -> CodeType:
        vals = [arith.requantize(v, s, self.rounding, self.lo, self.hi, m)
                for (m, s) in self._groups() for v in (x.lo, x.hi)]
        return CodeType(self.bits, self.signed, int(min(vals)), int(max(vals)))

    def out_shape(self, shape: tuple[int, ...], where: str) -> tuple[int, ...]:
        if shape[0] != self.channels:
            raise ModelFormatError(f"{where}.shift ({self.name}): {self.channels} channels, but "
                                   f"the previous layer gives shape {_shape_str(shape)} "
                                   f"({shape[0]} channels)")
        return shape

    def macs(self, in_shape=None) -> int:
        return 0

    def execute(self, x: np.ndarray) -> np.ndarray:
        groups = self._groups()
        if len(groups) == 1:
            (m, s), = groups
            return arith.requantize(x, s, self.rounding, self.lo, self.hi, m)
        out = np.empty_like(x)
        for (m, s), chans in groups.items():
            out[:, chans] = arith.requantize(x[:, chans], s, self.rounding, self.lo, self.hi, m)
        return out

    def to_dict(self) -> dict:
        return {"op": "requant", "name": self.name, "multiplier": self.multiplier.tolist(),
                "shift": self.shift.tolist(), "rounding": self.rounding, "bits": self.bits,
                "signed": self.signed, "lo": self.lo, "hi": self.hi}

    @classmethod
    def from_dict(cls, d: dict, where: str) -> "ChannelRequant":
        bits, signed, lo, hi, rounding = _requant_fields(d, where)
        shift, mult = _req(d, "shift", where), d.get("multiplier", 1)
        n = len(shift) if isinstance(shift, list) else len(mult) if isinstance(mult, list) else 0
        if isinstance(shift, list):
            shift = _int_list(d, "shift", where, 0, MAX_SHIFT)
        else:
            shift = [_int(d, "shift", where, 0, MAX_SHIFT)] * n
        if isinstance(mult, list):
            mult = _int_list(d, "multiplier", where, 1, MAX_MULTIPLIER, length=len(shift))
        else:
            mult = [_opt_int(d, "multiplier", where, 1, 1, MAX_MULTIPLIER)] * len(shift)
        return cls(_name(d, where), np.array(shift, dtype=np.int64), rounding, bits, signed, lo,
                   hi, np.array(mult, dtype=np.int64))

    def check(self, x: CodeType, where: str) -> None:
        _check_requant_common(self, where)
        for key, arr, lo, hi in (("shift", self.shift, 0, MAX_SHIFT),
                                 ("multiplier", self.multiplier, 1, MAX_MULTIPLIER)):
            if not isinstance(arr, np.ndarray) or arr.ndim != 1 or not 1 <= len(arr) \
                    <= MAX_CHANNELS:
                raise ModelFormatError(f"{where}.{key} ({self.name}): expected a 1-D array of "
                                       f"1..{MAX_CHANNELS} integers")
            _check_codes(arr, f"{where}.{key} ({self.name})", (len(self.shift),), lo, hi)
        if max(abs(x.lo), abs(x.hi)) * int(self.multiplier.max()) >= 1 << 62:
            raise ModelFormatError(f"{where}.multiplier ({self.name}): {int(self.multiplier.max())}"
                                   f" x {x} overflows 62 bits")


@dataclass
class MultiThreshold:
    """``y = out_bias + #{t : thresholds[c][t] <= x}`` per channel ``c`` (FINN/QONNX MultiThreshold).

    ``thresholds`` is ``(C, T)`` (one row per channel, the channel being the first axis of a
    sample) or ``(1, T)`` (shared). ``out_bias .. out_bias + T`` must be codes of the output type
    ``bits``/``signed``.
    """
    name: str
    thresholds: np.ndarray
    bits: int
    signed: bool
    out_bias: int = 0
    op: str = field(default="multithreshold", init=False)
    min_version = 2

    @property
    def steps(self) -> int:
        return int(self.thresholds.shape[1])

    def out_type(self, x: CodeType) -> CodeType:
        lo = int((self.thresholds <= x.lo).sum(axis=1).min()) + self.out_bias
        hi = int((self.thresholds <= x.hi).sum(axis=1).max()) + self.out_bias
        return CodeType(self.bits, self.signed, lo, hi)

    def out_shape(self, shape: tuple[int, ...], where: str) -> tuple[int, ...]:
        rows = self.thresholds.shape[0]
        if rows not in (1, shape[0]):
            raise ModelFormatError(f"{where}.thresholds ({self.name}): {rows} rows, but the "
                                   f"previous layer gives {shape[0]} channels (use 1 row to "
                                   "share thresholds)")
        return shape

    def macs(self, in_shape=None) -> int:
        return 0

    def execute(self, x: np.ndarray) -> np.ndarray:
        thr = self.thresholds.reshape((1, self.thresholds.shape[0]) + (1,) * (x.ndim - 2)
                                      + (self.steps,))
        return arith.multithreshold(x, thr, self.out_bias)

    def to_dict(self) -> dict:
        return {"op": "multithreshold", "name": self.name, "bits": self.bits,
                "signed": self.signed, "out_bias": self.out_bias,
                "channels": int(self.thresholds.shape[0]), "steps": self.steps,
                "thresholds": self.thresholds.tolist()}

    @classmethod
    def from_dict(cls, d: dict, where: str) -> "MultiThreshold":
        _no_extra(d, {"op", "name", "bits", "signed", "out_bias", "channels", "steps",
                      "thresholds"}, where)
        bits = _int(d, "bits", where, 1, MAX_CODE_BITS)
        signed = _bool(d, "signed", where)
        rows = _int(d, "channels", where, 1, MAX_CHANNELS)
        steps = _int(d, "steps", where, 1, MAX_THRESHOLDS)
        thr = _int_array(d, "thresholds", where, (rows, steps), -MAX_ABS_THRESHOLD,
                         MAX_ABS_THRESHOLD)
        out_bias = _opt_int(d, "out_bias", where, 0, -(1 << MAX_CODE_BITS), 1 << MAX_CODE_BITS)
        return cls(_name(d, where), thr, bits, signed, out_bias)

    def check(self, x: CodeType, where: str) -> None:
        if not _is_int(self.bits) or not 1 <= self.bits <= MAX_CODE_BITS:
            raise ModelFormatError(f"{where}.bits ({self.name}): {self.bits!r} outside "
                                   f"[1, {MAX_CODE_BITS}]")
        if not isinstance(self.signed, bool):
            raise ModelFormatError(f"{where}.signed ({self.name}): expected true or false")
        t = self.thresholds
        if (not isinstance(t, np.ndarray) or t.ndim != 2 or 0 in t.shape
                or t.shape[0] > MAX_CHANNELS or t.shape[1] > MAX_THRESHOLDS):
            raise ModelFormatError(f"{where}.thresholds ({self.name}): expected a (channels, "
                                   "steps) integer array")
        _check_codes(t, f"{where}.thresholds ({self.name})", t.shape, -MAX_ABS_THRESHOLD,
                     MAX_ABS_THRESHOLD)
        if not _is_int(self.out_bias):
            raise ModelFormatError(f"{where}.out_bias ({self.name}): expected an integer")
        clo, chi = arith.code_range(self.bits, self.signed)
        if not clo <= self.out_bias <= self.out_bias + self.steps <= chi:
            raise ModelFormatError(
                f"{where}.out_bias ({self.name}): outputs {self.out_bias}..{self.out_bias + self.steps}"
                f" do not fit {'signed' if self.signed else 'unsigned'} {self.bits}-bit codes "
                f"[{clo}, {chi}]")


@dataclass
class Lut:
    """``y = table[x - in_lo]``: any function of one code, the same table for every element.

    The table covers the input codes ``in_lo .. in_lo + len(table) - 1``, which must include
    every code the previous layer can produce; its entries are codes of the output type
    ``bits``/``signed``. The activation unit of a quantized network (sigmoid, tanh, GELU, SiLU
    of a code).
    """
    name: str
    table: np.ndarray
    in_lo: int
    bits: int
    signed: bool
    op: str = field(default="lut", init=False)
    min_version = 3

    @property
    def in_hi(self) -> int:
        return int(self.in_lo) + len(self.table) - 1

    def out_type(self, x: CodeType) -> CodeType:
        reach = self.table[x.lo - self.in_lo:x.hi - self.in_lo + 1]
        return CodeType(self.bits, self.signed, int(reach.min()), int(reach.max()))

    def out_shape(self, shape: tuple[int, ...], where: str) -> tuple[int, ...]:
        return shape

    def macs(self, in_shape=None) -> int:
        return 0

    def execute(self, x: np.ndarray) -> np.ndarray:
        return arith.table_lookup(x, self.table, self.in_lo)

    def to_dict(self) -> dict:
        return {"op": "lut", "name": self.name, "bits": self.bits, "signed": self.signed,
                "in_lo": int(self.in_lo), "entries": len(self.table),
                "table": self.table.tolist()}

    @classmethod
    def from_dict(cls, d: dict, where: str) -> "Lut":
        _no_extra(d, {"op", "name", "bits", "signed", "in_lo", "entries", "table"}, where)
        bits = _int(d, "bits", where, 1, MAX_CODE_BITS)
        signed = _bool(d, "signed", where)
        n = _int(d, "entries", where, 1, MAX_LUT_ENTRIES)
        in_lo = _int(d, "in_lo", where, -(1 << MAX_CODE_BITS), 1 << MAX_CODE_BITS)
        lo, hi = arith.code_range(bits, signed)
        table = _int_array(d, "table", where, (n,), lo, hi)
        return cls(_name(d, where), table, in_lo, bits, signed)

    def check(self, x: CodeType, where: str) -> None:
        if not _is_int(self.bits) or not 1 <= self.bits <= MAX_CODE_BITS:
            raise ModelFormatError(f"{where}.bits ({self.name}): {self.bits!r} outside "
                                   f"[1, {MAX_CODE_BITS}]")
        if not isinstance(self.signed, bool):
            raise ModelFormatError(f"{where}.signed ({self.name}): expected true or false")
        t = self.table
        if (not isinstance(t, np.ndarray) or t.ndim != 1 or not 1 <= len(t) <= MAX_LUT_ENTRIES):
            raise ModelFormatError(f"{where}.table ({self.name}): expected 1 to "
                                   f"{MAX_LUT_ENTRIES} integers")
        lo, hi = arith.code_range(self.bits, self.signed)
        _check_codes(t, f"{where}.table ({self.name})", t.shape, lo, hi)
        if not _is_int(self.in_lo):
            raise ModelFormatError(f"{where}.in_lo ({self.name}): expected an integer")
        if x.lo < self.in_lo or x.hi > self.in_hi:
            raise ModelFormatError(
                f"{where}.in_lo ({self.name}): the table covers input codes "
                f"[{self.in_lo}, {self.in_hi}], but the previous layer gives [{x.lo}, {x.hi}]: "
                f"extend the table to every input code")


@dataclass
class Argmax:
    """``y = index of the first maximum`` of a flat ``(features,)`` tensor: the class index, a
    ``(1,)`` tensor of unsigned codes ``0 .. features-1``.

    It compares codes: put it after a layer whose codes share one scale (per-channel scales
    make codes incomparable across channels).
    """
    name: str
    features: int
    op: str = field(default="argmax", init=False)
    min_version = 3

    def out_type(self, x: CodeType) -> CodeType:
        return CodeType(max(1, (self.features - 1).bit_length()), False, 0, self.features - 1)

    def out_shape(self, shape: tuple[int, ...], where: str) -> tuple[int, ...]:
        if tuple(shape) != (self.features,):
            raise ModelFormatError(f"{where}.features ({self.name}): argmax over "
                                   f"{self.features} values, but the previous layer gives shape "
                                   f"{_shape_str(shape)} (a flat tensor; add a flatten before it)")
        return (1,)

    def macs(self, in_shape=None) -> int:
        return 0

    def execute(self, x: np.ndarray) -> np.ndarray:
        return arith.argmax_first(x.reshape(x.shape[0], -1))[:, None].astype(np.int64)

    def to_dict(self) -> dict:
        return {"op": "argmax", "name": self.name, "features": self.features}

    @classmethod
    def from_dict(cls, d: dict, where: str) -> "Argmax":
        _no_extra(d, {"op", "name", "features"}, where)
        return cls(_name(d, where), _int(d, "features", where, 1, MAX_FEATURES))

    def check(self, x: CodeType, where: str) -> None:
        if not _is_int(self.features) or not 1 <= self.features <= MAX_FEATURES:
            raise ModelFormatError(f"{where}.features ({self.name}): {self.features!r} outside "
                                   f"[1, {MAX_FEATURES}]")


#: JSON ``op`` name -> class (``requant`` with list ``shift``/``multiplier`` gives ChannelRequant).
OPS = {"dense": Dense, "requant": Requant, "conv2d": Conv2d, "maxpool2d": MaxPool2d,
       "flatten": Flatten, "multithreshold": MultiThreshold, "lut": Lut, "argmax": Argmax}
#: Every class an IntModel layer may be.
LAYER_TYPES = (Dense, Requant, ChannelRequant, Conv2d, MaxPool2d, Flatten, MultiThreshold, Lut,
               Argmax)


# ----------------------------------------------------------------------------------------------
# Input and output

@dataclass
class InputSpec:
    """Real inputs ``x`` (``shape``) become codes ``saturate(round(x / scale) + zero_point, lo, hi)``.

    ``scale`` is one number, or one per input value (a tuple of ``size`` numbers, flat C order:
    a per-value quantizer, e.g. one 1-bit threshold per pixel; format version 2). ``lo``/``hi``
    default to the full ``bits``/``signed`` code range (narrow ranges, e.g. a symmetric
    ``[-127, 127]``, set them).
    """
    shape: tuple[int, ...]
    bits: int
    signed: bool
    scale: float | tuple[float, ...]
    zero_point: int = 0
    rounding: str = arith.DEFAULT_ROUNDING
    lo: int | None = None
    hi: int | None = None

    def __post_init__(self):
        self.shape = tuple(self.shape)
        if isinstance(self.scale, (list, tuple, np.ndarray)):
            self.scale = tuple(float(v) for v in self.scale)
        # One form for one quantizer: an explicit full-range lo/hi is the default (None), so a
        # spec equals itself read back (from_dict fills them in).
        if _is_int(self.bits) and self.bits >= 1 and isinstance(self.signed, bool):
            clo, chi = arith.code_range(self.bits, self.signed)
            if self.lo == clo:
                self.lo = None
            if self.hi == chi:
                self.hi = None

    @property
    def size(self) -> int:
        return int(np.prod(self.shape))

    @property
    def per_value(self) -> bool:
        """One scale per input value (rather than one for all)."""
        return isinstance(self.scale, tuple)

    @property
    def code_type(self) -> CodeType:
        clo, chi = arith.code_range(self.bits, self.signed)
        lo = clo if self.lo is None else self.lo
        hi = chi if self.hi is None else self.hi
        return CodeType(self.bits, self.signed, lo, hi)

    @property
    def narrowed(self) -> bool:
        return self.code_type != CodeType.full(self.bits, self.signed)

    def quantize(self, x) -> np.ndarray:
        """Float inputs, one row per sample (any shape whose tail matches), to int64 codes.

        Returns ``(N, size)`` codes (flat, C order); out-of-range values saturate.
        """
        x = np.asarray(x, dtype=np.float64)
        x = x.reshape(x.shape[0], -1) if x.ndim > 1 else x.reshape(1, -1)
        if x.shape[1] != self.size:
            raise ModelFormatError(
                f"inputs have {x.shape[1]} values per sample, the model expects {self.size}")
        try:
            q = arith.quantize_real(x, self.scale, self.zero_point, self.bits, self.signed,
                                    self.rounding)
        except arith.RuleError as e:
            raise ModelFormatError(f"inputs: {e}") from None
        t = self.code_type
        return arith.saturate(q, t.lo, t.hi)

    def to_dict(self) -> dict:
        d = {"shape": list(self.shape), "bits": self.bits, "signed": self.signed,
             "scale": list(self.scale) if self.per_value else self.scale,
             "zero_point": self.zero_point, "rounding": self.rounding}
        if self.narrowed:
            t = self.code_type
            d.update(lo=t.lo, hi=t.hi)
        return d

    @classmethod
    def from_dict(cls, d: dict, where: str) -> "InputSpec":
        _no_extra(d, {"shape", "bits", "signed", "scale", "zero_point", "rounding", "lo", "hi"},
                  where)
        shape = _req(d, "shape", where)
        if (not isinstance(shape, list) or not 1 <= len(shape) <= 3
                or not all(_is_int(s) and 0 < s <= MAX_FEATURES for s in shape)):
            raise ModelFormatError(f"{where}.shape: expected a list of 1 to 3 integers in "
                                   f"[1, {MAX_FEATURES}] ((features,) or (C, H, W))")
        if math.prod(shape) > MAX_ELEMENTS:
            raise ModelFormatError(f"{where}.shape: {shape} has more than {MAX_ELEMENTS} values")
        bits = _int(d, "bits", where, 1, 16)
        signed = _bool(d, "signed", where)
        clo, chi = arith.code_range(bits, signed)
        zp = _int(d, "zero_point", where, clo, chi)
        lo = _opt_int(d, "lo", where, clo, clo, chi)
        hi = _opt_int(d, "hi", where, chi, lo, chi)
        scale = _scale_field(d, where, MAX_ELEMENTS)
        if isinstance(scale, tuple) and len(scale) != math.prod(shape):
            raise ModelFormatError(f"{where}.scale: {len(scale)} per-value scales for "
                                   f"{math.prod(shape)} input values {shape}")
        return cls(tuple(shape), bits, signed, scale, zp,
                   _str(d, "rounding", where, arith.ROUNDING_MODES), lo, hi)

    def check(self) -> None:
        if (not self.shape or len(self.shape) > 3
                or not all(_is_int(s) and 0 < s <= MAX_FEATURES for s in self.shape)):
            raise ModelFormatError(f"input.shape: {self.shape!r} is not 1 to 3 positive sizes")
        if not _is_int(self.bits) or not 1 <= self.bits <= 16:
            raise ModelFormatError(f"input.bits: {self.bits!r} outside [1, 16]")
        clo, chi = arith.code_range(self.bits, self.signed)
        t = self.code_type
        if not clo <= t.lo <= t.hi <= chi:
            raise ModelFormatError(f"input.lo/hi: [{t.lo}, {t.hi}] not inside [{clo}, {chi}]")
        if not (_is_int(self.zero_point) and clo <= self.zero_point <= chi):
            raise ModelFormatError(f"input.zero_point: {self.zero_point!r} outside [{clo}, {chi}]")
        scales = _check_scales(self.scale, "input")
        if self.per_value and len(scales) != self.size:
            raise ModelFormatError(f"input.scale: {len(scales)} per-value scales for "
                                   f"{self.size} input values {self.shape}")
        if self.rounding not in arith.ROUNDING_MODES:
            raise ModelFormatError(f"input.rounding: {self.rounding!r} is not one of "
                                   f"{', '.join(arith.ROUNDING_MODES)}")


@dataclass
class OutputSpec:
    """Output codes ``q`` mean real values ``scale * (q - zero_point)``.

    ``scale`` is one number, or one per output channel (first axis of the output tensor).
    """
    scale: float | tuple[float, ...]
    zero_point: int = 0

    @property
    def per_channel(self) -> bool:
        return isinstance(self.scale, (tuple, list))

    def to_dict(self) -> dict:
        return {"scale": list(self.scale) if self.per_channel else self.scale,
                "zero_point": self.zero_point}

    @classmethod
    def from_dict(cls, d: dict, where: str) -> "OutputSpec":
        _no_extra(d, {"scale", "zero_point"}, where)
        return cls(_scale_field(d, where, MAX_FEATURES), _int(d, "zero_point", where, -(1 << 62), 1 << 62))

    def check(self, out_shape: tuple[int, ...]) -> None:
        _check_scales(self.scale, "output")
        if self.per_channel and len(self.scale) != out_shape[0]:
            raise ModelFormatError(f"output.scale: {len(self.scale)} per-channel scales, but the "
                                   f"output has shape {_shape_str(out_shape)}")
        if not _is_int(self.zero_point):
            raise ModelFormatError(f"output.zero_point: expected an integer")

    def dequantize(self, codes: np.ndarray) -> np.ndarray:
        """``(N, *out_shape)`` codes to real values (float64)."""
        q = np.asarray(codes, dtype=np.float64) - self.zero_point
        if self.per_channel:
            s = np.asarray(self.scale, dtype=np.float64)
            return q * s.reshape((1, -1) + (1,) * (q.ndim - 2))
        return q * self.scale


# ----------------------------------------------------------------------------------------------
# The model

@dataclass
class IntModel:
    """An integer network: input quantization, a chain of integer ops, output dequantization."""
    input: InputSpec
    layers: list
    output: OutputSpec
    name: str = "model"
    meta: dict = field(default_factory=dict)

    def __post_init__(self):
        self.validate()

    # -- derived facts ---------------------------------------------------------------------
    def types(self) -> list[CodeType]:
        """Code type of the input and after every layer (``len(layers) + 1`` entries)."""
        t = [self.input.code_type]
        for layer in self.layers:
            t.append(layer.out_type(t[-1]))
        return t

    def shapes(self) -> list[tuple[int, ...]]:
        """Per-sample shape of the input and after every layer (``len(layers) + 1`` entries)."""
        s = [tuple(self.input.shape)]
        for i, layer in enumerate(self.layers):
            s.append(layer.out_shape(s[-1], f"layers[{i}]"))
        return s

    @property
    def output_type(self) -> CodeType:
        return self.types()[-1]

    @property
    def output_shape(self) -> tuple[int, ...]:
        return self.shapes()[-1]

    @property
    def output_size(self) -> int:
        return int(np.prod(self.output_shape))

    def macs(self) -> int:
        shapes = self.shapes()
        return sum(layer.macs(s) for layer, s in zip(self.layers, shapes))

    def required_version(self) -> tuple[int, str]:
        """The lowest format version that can express this model, and the first field needing
        it (the first of the newest version's features)."""
        need, what = 1, ""
        for cond, field in ((len(self.input.shape) != 1, "input.shape (not flat)"),
                            (self.input.narrowed, "input.lo/hi"),
                            (self.input.per_value, "input.scale (per value)"),
                            (self.output.per_channel, "output.scale (per channel)")):
            if cond:
                need, what = 2, field
                break
        for i, layer in enumerate(self.layers):
            if layer.min_version > need:
                kind = "per-channel requant" if isinstance(layer, ChannelRequant) else layer.op
                need, what = layer.min_version, f"layers[{i}] ({kind})"
            if getattr(layer, "weight_bits", 0) > V2_WEIGHT_BITS and need < 3:
                need, what = 3, f"layers[{i}].weight_bits ({layer.weight_bits} > {V2_WEIGHT_BITS})"
        return need, what

    def validate(self) -> None:
        """Check the chain end to end: shapes, code ranges, accumulators that could overflow."""
        if not isinstance(self.layers, list) or not self.layers:
            raise ModelFormatError("layers: the model has no layers")
        for i, layer in enumerate(self.layers):
            if not isinstance(layer, LAYER_TYPES):
                raise ModelFormatError(f"layers[{i}]: {type(layer).__name__} is not a layer type")
            if not isinstance(layer.name, str) or not layer.name:
                raise ModelFormatError(f"layers[{i}].name: expected a non-empty string")
        names = [layer.name for layer in self.layers]
        dup = {n for n in names if names.count(n) > 1}
        if dup:
            raise ModelFormatError(f"layers: duplicate layer name(s) {', '.join(sorted(dup))}")
        if not isinstance(self.input, InputSpec):
            raise ModelFormatError("input: expected an InputSpec")
        self.input.check()
        t, shape = self.input.code_type, tuple(self.input.shape)
        for i, layer in enumerate(self.layers):
            where = f"layers[{i}]"
            layer.check(t, where)
            shape = layer.out_shape(shape, where)
            if math.prod(shape) > MAX_ELEMENTS:
                raise ModelFormatError(f"{where} ({layer.name}): output {_shape_str(shape)} has "
                                       f"more than {MAX_ELEMENTS} values")
            t = layer.out_type(t)
        if not isinstance(self.output, OutputSpec):
            raise ModelFormatError("output: expected an OutputSpec")
        self.output.check(shape)

    def summary(self) -> str:
        """One line per layer: what it does, the shapes and the code types in and out."""
        lines = [f"{self.name}: input {_shape_str(self.input.shape)} {self.input.code_type} "
                 f"scale={_scale_str(self.input.scale)} zp={self.input.zero_point}"]
        types, shapes = self.types(), self.shapes()
        for layer, tin, tout, sout in zip(self.layers, types, types[1:], shapes[1:]):
            lines.append(f"  {layer.name:<12} {_describe(layer):<44} {tin} -> {tout} "
                         f"[{_shape_str(sout)}]")
        sc = (f"per-channel[{len(self.output.scale)}]" if self.output.per_channel
              else f"{self.output.scale:g}")
        lines.append(f"  output scale={sc} zp={self.output.zero_point}")
        return "\n".join(lines)

    __str__ = summary

    # -- serialisation ---------------------------------------------------------------------
    def to_dict(self) -> dict:
        return {"format": FORMAT, "version": self.required_version()[0], "name": self.name,
                "input": self.input.to_dict(),
                "layers": [layer.to_dict() for layer in self.layers],
                "output": self.output.to_dict(), "meta": self.meta}

    @classmethod
    def from_dict(cls, d: Any) -> "IntModel":
        if not isinstance(d, dict):
            raise ModelFormatError(f"model: expected a JSON object, got {type(d).__name__}")
        fmt = _req(d, "format", "model")
        if fmt != FORMAT:
            raise ModelFormatError(f"model.format: {fmt!r} is not {FORMAT!r}")
        version = _req(d, "version", "model")
        if not _is_int(version) or version not in VERSIONS:
            raise ModelFormatError(
                f"model.version: {version!r} unsupported (this softfloor reads versions "
                f"{', '.join(map(str, VERSIONS))}); upgrade softfloor to read newer files")
        _no_extra(d, {"format", "version", "name", "input", "layers", "output", "meta"}, "model")
        layers_raw = _req(d, "layers", "model")
        if not isinstance(layers_raw, list):
            raise ModelFormatError("model.layers: expected a list")
        layers = []
        for i, ld in enumerate(layers_raw):
            where = f"layers[{i}]"
            op = _str(ld, "op", where, tuple(OPS))
            layers.append(OPS[op].from_dict(ld, where))
        meta = d.get("meta", {})
        if not isinstance(meta, dict):
            raise ModelFormatError("model.meta: expected an object")
        name = d.get("name", "model")
        if not isinstance(name, str):
            raise ModelFormatError("model.name: expected a string")
        model = cls(InputSpec.from_dict(_req(d, "input", "model"), "input"), layers,
                    OutputSpec.from_dict(_req(d, "output", "model"), "output"), name, meta)
        need, what = model.required_version()
        if need > version:
            raise ModelFormatError(f"model.version: {version}, but {what} needs version {need}")
        return model


def _describe(layer) -> str:
    if isinstance(layer, Dense):
        return (f"dense {layer.in_features}->{layer.out_features} w{layer.weight_bits} "
                f"bias{layer.bias_bits} acc{layer.acc_bits}")
    if isinstance(layer, Conv2d):
        kh, kw = layer.kernel
        return (f"conv2d {layer.in_channels}->{layer.out_channels} {kh}x{kw} "
                f"s{layer.stride[0]},{layer.stride[1]} p{','.join(map(str, layer.padding))} "
                f"w{layer.weight_bits} acc{layer.acc_bits}")
    if isinstance(layer, MaxPool2d):
        return f"maxpool2d {layer.kernel[0]}x{layer.kernel[1]} s{layer.stride[0]},{layer.stride[1]}"
    if isinstance(layer, Flatten):
        return "flatten"
    if isinstance(layer, Lut):
        return f"lut {len(layer.table)} entries from {layer.in_lo}"
    if isinstance(layer, Argmax):
        return f"argmax over {layer.features}"
    if isinstance(layer, MultiThreshold):
        return (f"multithreshold {layer.thresholds.shape[0]}x{layer.steps} "
                f"+{layer.out_bias}")
    if isinstance(layer, ChannelRequant):
        return (f"requant per-channel[{layer.channels}] >>{int(layer.shift.min())}.."
                f"{int(layer.shift.max())} {layer.rounding} sat[{layer.lo},{layer.hi}]")
    mult = f"*{layer.multiplier} " if layer.multiplier != 1 else ""
    return f"requant {mult}>>{layer.shift} {layer.rounding} sat[{layer.lo},{layer.hi}]"


def load(path: str | os.PathLike) -> IntModel:
    """Read and validate a model file; raises :class:`ModelFormatError` on any defect."""
    path = Path(path)
    try:
        text = path.read_text()
    except FileNotFoundError:
        raise ModelFormatError(f"{path}: no such model file") from None
    except (OSError, UnicodeDecodeError) as e:
        raise ModelFormatError(f"{path}: cannot read: {e}") from None
    try:
        d = json.loads(text)
    except (json.JSONDecodeError, RecursionError) as e:
        raise ModelFormatError(f"{path}: not valid JSON ({e})") from None
    try:
        return IntModel.from_dict(d)
    except ModelFormatError as e:
        raise ModelFormatError(f"{path}: {e}") from None


def save(model: IntModel, path: str | os.PathLike) -> Path:
    """Write ``model`` atomically: readers see the old file or the new one, never a half."""
    model.validate()
    return atomic_write_text(path, json.dumps(model.to_dict(), separators=(",", ":")) + "\n")


def atomic_write_text(path: str | os.PathLike, text: str) -> Path:
    """Write ``text`` atomically with the usual permissions
    (:func:`softfloor.artifacts.atomic_write_bytes`)."""
    from softfloor.artifacts import atomic_write_bytes
    return atomic_write_bytes(path, text.encode())
