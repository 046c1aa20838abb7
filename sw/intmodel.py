"""The integer model: the one artifact that crosses from training to hardware.

A model file is JSON (``*.intmodel.json``), documented in ``docs/intmodel.md``. Integer arrays
are stored as JSON integers, so they are exact. Loading validates everything and raises
:class:`ModelFormatError` naming the field; nothing half-valid is ever returned.

The model is a chain of operations on integer codes. Each operation knows the code type of its
input and derives the code type of its output (exact worst-case value range), which is how
accumulator widths are checked against the actual integer weights.
"""
from __future__ import annotations

import dataclasses
import json
import math
import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from . import arith

FORMAT = "softfloor.intmodel"
VERSION = 1
#: Widest accumulator accepted: partial sums stay exact in int64 and in float64 (53-bit mantissa).
MAX_ACC_BITS = 48
MAX_CODE_BITS = 32
MAX_SHIFT = 62


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


def _int(d: dict, key: str, where: str, lo: int | None = None, hi: int | None = None) -> int:
    v = _req(d, key, where)
    if isinstance(v, bool) or not isinstance(v, int):
        raise ModelFormatError(f"{where}.{key}: expected an integer, got {v!r}")
    if (lo is not None and v < lo) or (hi is not None and v > hi):
        raise ModelFormatError(f"{where}.{key}: {v} outside the supported range [{lo}, {hi}]")
    return v


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


def _float(d: dict, key: str, where: str, positive: bool = False) -> float:
    v = _req(d, key, where)
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
        raise ModelFormatError(f"{where}.{key}: expected a finite number, got {v!r}")
    if positive and v <= 0:
        raise ModelFormatError(f"{where}.{key}: must be > 0, got {v!r}")
    return float(v)


def _int_array(d: dict, key: str, where: str, shape: tuple[int, ...], lo: int, hi: int
               ) -> np.ndarray:
    v = _req(d, key, where)

    def check(node, depth, path):
        if depth == len(shape):
            if isinstance(node, bool) or not isinstance(node, int):
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


def _no_extra(d: dict, allowed: set[str], where: str) -> None:
    if not isinstance(d, dict):
        raise ModelFormatError(f"{where}: expected an object, got {type(d).__name__}")
    extra = sorted(set(d) - allowed)
    if extra:
        raise ModelFormatError(f"{where}: unknown field(s) {', '.join(extra)}")


# ----------------------------------------------------------------------------------------------
# Operations

@dataclass
class Dense:
    """``acc = x @ weight.T + bias``: the accumulator is the output code, ``acc_bits`` wide, signed.

    ``weight`` is ``(out_features, in_features)`` of signed ``weight_bits`` codes; ``bias`` is
    ``(out_features,)`` of signed ``bias_bits`` codes at the accumulator's scale.
    """
    name: str
    weight: np.ndarray
    bias: np.ndarray
    weight_bits: int
    bias_bits: int
    acc_bits: int
    op: str = field(default="dense", init=False)

    @property
    def in_features(self) -> int:
        return int(self.weight.shape[1])

    @property
    def out_features(self) -> int:
        return int(self.weight.shape[0])

    def macs(self) -> int:
        return self.in_features * self.out_features

    def acc_bounds(self, x: CodeType) -> tuple[int, int]:
        """Worst-case accumulator range over all inputs of type ``x``, all outputs."""
        lo, hi = arith.dense_bounds(self.weight, self.bias, x.lo, x.hi)
        return int(min(lo)), int(max(hi))

    def out_type(self, x: CodeType) -> CodeType:
        lo, hi = self.acc_bounds(x)
        return CodeType(self.acc_bits, True, lo, hi)

    def execute(self, x: np.ndarray) -> np.ndarray:
        # Exact in float64: every partial sum is bounded by 2**MAX_ACC_BITS < 2**53 (checked at load),
        # and BLAS is much faster than numpy's integer matmul.
        acc = x.astype(np.float64) @ self.weight.T.astype(np.float64)
        return acc.astype(np.int64) + self.bias

    def to_dict(self) -> dict:
        return {"op": "dense", "name": self.name, "in_features": self.in_features,
                "out_features": self.out_features, "weight_bits": self.weight_bits,
                "bias_bits": self.bias_bits, "acc_bits": self.acc_bits,
                "weight": self.weight.tolist(), "bias": self.bias.tolist()}

    @classmethod
    def from_dict(cls, d: dict, where: str) -> "Dense":
        _no_extra(d, {"op", "name", "in_features", "out_features", "weight_bits", "bias_bits",
                      "acc_bits", "weight", "bias"}, where)
        n_in = _int(d, "in_features", where, 1, 1 << 16)
        n_out = _int(d, "out_features", where, 1, 1 << 16)
        wb = _int(d, "weight_bits", where, 1, 8)
        bb = _int(d, "bias_bits", where, 1, MAX_ACC_BITS)
        ab = _int(d, "acc_bits", where, 2, MAX_ACC_BITS)
        w = _int_array(d, "weight", where, (n_out, n_in), *_weight_range(wb))
        b = _int_array(d, "bias", where, (n_out,), *arith.code_range(bb, True))
        return cls(_str(d, "name", where), w, b, wb, bb, ab)

    def check(self, x: CodeType, where: str) -> None:
        if x.bits + self.weight_bits + math.ceil(math.log2(self.in_features + 1)) > 62:
            raise ModelFormatError(f"{where} ({self.name}): input codes {x} too wide")
        if self.weight_bits == 1 and np.any(self.weight == 0):
            raise ModelFormatError(
                f"{where}.weight ({self.name}): 1-bit weights are -1 or +1, found 0")
        lo, hi = self.acc_bounds(x)
        need_bits, signed = arith.bits_for_range(lo, hi)
        need_bits += 0 if signed else 1
        alo, ahi = arith.code_range(self.acc_bits, True)
        if lo < alo or hi > ahi:
            raise ModelFormatError(
                f"{where}.acc_bits ({self.name}): a {self.acc_bits}-bit accumulator can overflow: "
                f"the worst case over inputs {x} is [{lo}, {hi}], which needs {need_bits} bits")
        if self.bias_bits > self.acc_bits:
            raise ModelFormatError(
                f"{where}.bias_bits ({self.name}): {self.bias_bits} > acc_bits {self.acc_bits}")


def _weight_range(bits: int) -> tuple[int, int]:
    """Weight codes: signed ``bits``; 1-bit weights are {-1, +1} (sign times scale, code 0 unused)."""
    if bits == 1:
        return -1, 1
    return arith.code_range(bits, True)


@dataclass
class Requant:
    """``y = saturate(round_shift(x * multiplier, shift, rounding), lo, hi)``, codes ``bits`` wide.

    ReLU is ``lo = 0``. ``lo``/``hi`` must lie inside the ``bits``/``signed`` code range.
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

    def out_type(self, x: CodeType) -> CodeType:
        # Exact image of [x.lo, x.hi] under a monotone map.
        a = arith.requantize(x.lo, self.shift, self.rounding, self.lo, self.hi, self.multiplier)
        b = arith.requantize(x.hi, self.shift, self.rounding, self.lo, self.hi, self.multiplier)
        return CodeType(self.bits, self.signed, int(a), int(b))

    def execute(self, x: np.ndarray) -> np.ndarray:
        return arith.requantize(x, self.shift, self.rounding, self.lo, self.hi, self.multiplier)

    def to_dict(self) -> dict:
        return {"op": "requant", "name": self.name, "multiplier": self.multiplier,
                "shift": self.shift, "rounding": self.rounding, "bits": self.bits,
                "signed": self.signed, "lo": self.lo, "hi": self.hi}

    @classmethod
    def from_dict(cls, d: dict, where: str) -> "Requant":
        _no_extra(d, {"op", "name", "multiplier", "shift", "rounding", "bits", "signed", "lo",
                      "hi"}, where)
        bits = _int(d, "bits", where, 1, MAX_CODE_BITS)
        signed = _bool(d, "signed", where)
        clo, chi = arith.code_range(bits, signed)
        lo = _int(d, "lo", where, clo, chi)
        hi = _int(d, "hi", where, lo, chi)
        mult = _int(d, "multiplier", where, 1, (1 << 31) - 1) if "multiplier" in d else 1
        return cls(_str(d, "name", where), _int(d, "shift", where, 0, MAX_SHIFT),
                   _str(d, "rounding", where, arith.ROUNDING_MODES), bits, signed, lo, hi, mult)

    def check(self, x: CodeType, where: str) -> None:
        if max(abs(x.lo), abs(x.hi)) * self.multiplier >= 1 << 62:
            raise ModelFormatError(
                f"{where}.multiplier ({self.name}): {self.multiplier} x {x} overflows 62 bits")


OPS = {"dense": Dense, "requant": Requant}


# ----------------------------------------------------------------------------------------------
# Input and output

@dataclass
class InputSpec:
    """Real inputs ``x`` (``shape``) become codes ``saturate(round(x / scale) + zero_point)``."""
    shape: tuple[int, ...]
    bits: int
    signed: bool
    scale: float
    zero_point: int = 0
    rounding: str = arith.DEFAULT_ROUNDING

    @property
    def size(self) -> int:
        return int(np.prod(self.shape))

    @property
    def code_type(self) -> CodeType:
        return CodeType.full(self.bits, self.signed)

    def quantize(self, x) -> np.ndarray:
        """Float inputs, one row per sample (any shape whose tail matches), to int64 codes."""
        x = np.asarray(x, dtype=np.float64)
        x = x.reshape(x.shape[0], -1) if x.ndim > 1 else x.reshape(1, -1)
        if x.shape[1] != self.size:
            raise ModelFormatError(
                f"inputs have {x.shape[1]} values per sample, the model expects {self.size}")
        return arith.quantize_real(x, self.scale, self.zero_point, self.bits, self.signed,
                                   self.rounding)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self) | {"shape": list(self.shape)}

    @classmethod
    def from_dict(cls, d: dict, where: str) -> "InputSpec":
        _no_extra(d, {"shape", "bits", "signed", "scale", "zero_point", "rounding"}, where)
        shape = _req(d, "shape", where)
        if (not isinstance(shape, list) or not shape
                or not all(isinstance(s, int) and not isinstance(s, bool) and s > 0
                           for s in shape)):
            raise ModelFormatError(f"{where}.shape: expected a list of positive integers")
        bits = _int(d, "bits", where, 1, 16)
        signed = _bool(d, "signed", where)
        zp = _int(d, "zero_point", where, *arith.code_range(bits, signed))
        return cls(tuple(shape), bits, signed, _float(d, "scale", where, positive=True), zp,
                   _str(d, "rounding", where, arith.ROUNDING_MODES))


@dataclass
class OutputSpec:
    """Output codes ``q`` mean real values ``scale * (q - zero_point)``."""
    scale: float
    zero_point: int = 0

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict, where: str) -> "OutputSpec":
        _no_extra(d, {"scale", "zero_point"}, where)
        return cls(_float(d, "scale", where, positive=True), _int(d, "zero_point", where))


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

    @property
    def output_type(self) -> CodeType:
        return self.types()[-1]

    @property
    def output_size(self) -> int:
        for layer in reversed(self.layers):
            if isinstance(layer, Dense):
                return layer.out_features
        return self.input.size

    def macs(self) -> int:
        return sum(layer.macs() for layer in self.layers if isinstance(layer, Dense))

    def validate(self) -> None:
        """Check the chain end to end: shapes, code ranges, accumulators that could overflow."""
        if not self.layers:
            raise ModelFormatError("layers: the model has no layers")
        names = [layer.name for layer in self.layers]
        dup = {n for n in names if names.count(n) > 1}
        if dup:
            raise ModelFormatError(f"layers: duplicate layer name(s) {', '.join(sorted(dup))}")
        t = self.input.code_type
        if len(self.input.shape) != 1:
            raise ModelFormatError(
                f"input.shape: {list(self.input.shape)} unsupported in version {VERSION}; "
                "flatten the input to one dimension")
        width = self.input.size
        for i, layer in enumerate(self.layers):
            where = f"layers[{i}]"
            if isinstance(layer, Dense):
                if layer.in_features != width:
                    raise ModelFormatError(
                        f"{where}.in_features ({layer.name}): {layer.in_features}, but the "
                        f"previous layer gives {width} values")
                width = layer.out_features
            layer.check(t, where)
            t = layer.out_type(t)

    def summary(self) -> str:
        """One line per layer: what it does and the code types in and out."""
        lines = [f"{self.name}: input {list(self.input.shape)} {self.input.code_type} "
                 f"scale={self.input.scale:g} zp={self.input.zero_point}"]
        types = self.types()
        for layer, tin, tout in zip(self.layers, types, types[1:]):
            if isinstance(layer, Dense):
                what = (f"dense {layer.in_features}->{layer.out_features} w{layer.weight_bits} "
                        f"bias{layer.bias_bits} acc{layer.acc_bits}")
            else:
                mult = f"*{layer.multiplier} " if layer.multiplier != 1 else ""
                what = (f"requant {mult}>>{layer.shift} {layer.rounding} "
                        f"sat[{layer.lo},{layer.hi}]")
            lines.append(f"  {layer.name:<12} {what:<40} {tin} -> {tout}")
        lines.append(f"  output scale={self.output.scale:g} zp={self.output.zero_point}")
        return "\n".join(lines)

    __str__ = summary

    # -- serialisation ---------------------------------------------------------------------
    def to_dict(self) -> dict:
        return {"format": FORMAT, "version": VERSION, "name": self.name,
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
        if version != VERSION:
            raise ModelFormatError(
                f"model.version: {version!r} unsupported (this softfloor reads version {VERSION})")
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
        return cls(InputSpec.from_dict(_req(d, "input", "model"), "input"), layers,
                   OutputSpec.from_dict(_req(d, "output", "model"), "output"), name, meta)


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
    except json.JSONDecodeError as e:
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
    """Write ``text`` to a temporary file beside ``path``, fsync it, then rename over ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path
