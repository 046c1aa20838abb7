"""QONNX (Brevitas ``export_qonnx``) -> softfloor integer model.

``softfloor import-qonnx MODEL.onnx -o MODEL.intmodel.json``. Needs the optional extra
``pip install 'softfloor[qonnx]'`` (onnx, qonnx; Brevitas only to produce the files).

Supported: a single chain from one graph input to one graph output of

* ``Quant`` (scale, zero point 0, bit width, signed, narrow, rounding ``ROUND``/``HALF_EVEN`` or
  ``FLOOR``) on the graph input (-> the input spec), on constants (weights, biases, Int32 biases
  included) and on activations (-> a requant); shape-only ops between the graph input and its
  ``Quant`` (``Reshape``, ``Flatten``, ``Squeeze``, ``Unsqueeze``: a model that views flat rows
  as images) fold into the input spec's shape, since they commute with the elementwise
  quantizer;
* ``Gemm`` (``alpha = beta = 1``, ``transA = 0``) and ``MatMul`` with a quantized constant weight
  of 1..:data:`~softfloor.intmodel.MAX_WEIGHT_BITS` bits (the accumulator bound decides),
  ``Add`` of a constant bias, ``Conv`` (2-D, ``group = 1``, dilation 1, explicit pads);
* ``Relu`` (folded into the next requant's ``lo = 0``, or a clamp), ``MaxPool`` (no padding,
  ``ceil_mode = 0``), ``AveragePool`` / ``GlobalAveragePool`` / ``ReduceMean`` over H and W on a
  power-of-two window (a ``conv2d`` with 0/1 weights: the window's sum; the divisor goes into
  the next requant's shift), ``Trunc`` (Brevitas ``TruncAvgPool2d``: a requant),
  ``Flatten`` / ``Reshape`` to ``(batch, features)``, ``Identity``, ``Dropout``;
* per-tensor and per-output-channel weight scales.

Exactness: when every requantization ratio ``input scale x weight scale / output scale`` is a
power of two and every bias lies on the accumulator grid (bias scale = input scale x weight
scale, as Brevitas ``Int*Bias`` gives), the integer model computes exactly what QONNX's
``execute_onnx`` computes (tested bit-exact). Otherwise the ratio becomes an integer multiplier +
shift (31-bit multiplier) and biases are rounded to the grid; :attr:`ImportResult.approximations`
lists each such place and :func:`agreement` measures the effect against ``execute_onnx``.
Anything else is rejected with :class:`QonnxImportError` naming the node, the reason and what
to do (branches and residual adds, other ops, inexact pooling, a permuted input).
"""
from __future__ import annotations

import math
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from . import arith
from .intmodel import (MAX_WEIGHT_BITS, ChannelRequant, CodeType, Conv2d, Dense, Flatten,
                       InputSpec, IntModel, MaxPool2d, OutputSpec, Requant)

#: Largest requant multiplier used for non-power-of-two ratios (bits).
MULTIPLIER_BITS = 31
SUPPORTED = ("Quant", "Trunc", "Gemm", "MatMul", "Add", "Conv", "Relu", "MaxPool", "AveragePool",
             "GlobalAveragePool", "ReduceMean", "Flatten", "Reshape", "Squeeze", "Unsqueeze", "Identity",
             "Dropout")
#: Ops that only reshape (C order kept): on the graph input before its quantizer they fold into
#: the input spec, since they commute with an elementwise quantizer.
SHAPE_ONLY = ("Reshape", "Flatten", "Squeeze", "Unsqueeze", "Identity", "Dropout")
#: What to do about a graph that is not one chain (branches, skip connections).
CHAIN_ADVICE = ("an integer model is a single chain of layers: export a model without skip "
                "connections or branches, or split it and run the parts as separate models")
#: What to do about ops the importer refuses (the generic advice names the supported ops).
HINTS = {
    "BatchNormalization": "fold it into the preceding convolution/linear layer before export "
                          "(or train with softfloor, which folds it exactly)",
    "Softmax": "remove it before export: the class is the argmax of the logits, which it "
               "does not change",
    "LogSoftmax": "remove it before export: the class is the argmax of the logits, which it "
                  "does not change",
    "Concat": "concatenations join branches; " + CHAIN_ADVICE,
    "Transpose": "an integer model keeps C order; export the model in the layout it computes in "
                 "(e.g. NCHW) and feed inputs in that layout",
    "Sigmoid": "quantize after a ReLU/identity instead, or train the model with softfloor",
    "Tanh": "quantize after a ReLU/identity instead, or train the model with softfloor",
    "Mul": "only scales folded by Brevitas's export are supported; an elementwise product "
           "(e.g. attention, squeeze-and-excitation) is not",
}


class QonnxImportError(ValueError):
    """The QONNX graph uses something softfloor cannot represent exactly; names the node."""


@dataclass
class ImportResult:
    """The imported model, whether it is exact, and where it is not."""
    model: IntModel
    exact: bool
    approximations: list[str] = field(default_factory=list)

    def __str__(self) -> str:
        head = "exact (power-of-two scales)" if self.exact else "approximate"
        return "\n".join([self.model.summary(), f"import: {head}"]
                         + [f"  - {a}" for a in self.approximations])


def _require_qonnx():
    try:
        import onnx  # noqa: F401
        from qonnx.core.modelwrapper import ModelWrapper  # noqa: F401
    except ImportError as e:
        raise QonnxImportError(
            f"QONNX import needs the optional dependencies ({e.name} is missing): "
            "pip install 'softfloor[qonnx]'") from None


def load_clean(path):
    """Load a QONNX file (or ModelWrapper) and run QONNX's cleanup (shapes, constant folding).

    Node names are kept as the exporter wrote them (errors name them); unnamed nodes become
    ``<OpType>_<index>``.
    """
    _require_qonnx()
    from qonnx.core.modelwrapper import ModelWrapper
    from qonnx.transformation.fold_constants import FoldConstants
    from qonnx.transformation.general import (GiveUniqueParameterTensors,
                                              RemoveStaticGraphInputs, RemoveUnusedTensors)
    from qonnx.transformation.infer_shapes import InferShapes
    from qonnx.transformation.quant_constant_folding import FoldTransposeIntoQuantInit
    if isinstance(path, (str, os.PathLike)):
        if not Path(path).is_file():
            raise QonnxImportError(f"{path}: no such ONNX file")
        try:
            mw = ModelWrapper(str(path))
        except Exception as e:  # onnx raises DecodeError and friends
            raise QonnxImportError(f"{path}: not a readable ONNX model ({e})") from None
    else:
        mw = path
    for node in mw.graph.node:          # QONNX's own cleanup does this too
        if node.op_type in ("Quant", "Trunc", "BipolarQuant"):
            node.domain = "qonnx.custom_op.general"
    for i, node in enumerate(mw.graph.node):
        if not node.name:
            node.name = f"{node.op_type}_{i}"
    for t in (InferShapes(), GiveUniqueParameterTensors(),
              FoldConstants(exclude_op_types=["Quant", "BipolarQuant"]),
              FoldTransposeIntoQuantInit(), RemoveUnusedTensors(), RemoveStaticGraphInputs()):
        mw = mw.transform(t)
    return mw


# ----------------------------------------------------------------------------------------------
# Scales and rounding

def _rounding(node, mode: str) -> str:
    m = mode.upper()
    if m in ("ROUND", "HALF_EVEN"):
        return "half_even"
    if m == "FLOOR":
        return "floor"
    raise QonnxImportError(f"node {node.name} (Quant): rounding_mode {mode} is not supported "
                           "(ROUND/HALF_EVEN or FLOOR)")


def _pow2_exponent(r: float) -> int | None:
    """``k`` if ``r == 2**k`` exactly, else None."""
    if not (r > 0 and math.isfinite(r)):
        return None
    m, e = math.frexp(r)
    return e - 1 if m == 0.5 else None


def _ratio_to_mult_shift(r: float, max_abs_in: int) -> tuple[int, int, bool]:
    """``(multiplier, shift, exact)`` with ``multiplier / 2**shift`` = ``r`` (exact for 2**k)."""
    k = _pow2_exponent(r)
    if k is not None:
        if k <= 0 and -k <= 62:
            return 1, -k, True
        if 0 < k < MULTIPLIER_BITS:
            return 1 << k, 0, True
    # Widest multiplier such that |x| * multiplier < 2**62 for every input code.
    mbits = min(MULTIPLIER_BITS, 61 - max(1, int(max_abs_in)).bit_length())
    if mbits < 2:
        raise QonnxImportError(f"requant ratio {r:g}: inputs too wide for a multiplier")
    e = math.frexp(r)[1]                      # r in [2**(e-1), 2**e)
    shift = mbits - e
    if shift < 0:
        m = round(r)
        shift = 0
    else:
        shift = min(shift, 62)
        m = round(r * 2.0 ** shift)
    if m >= 1 << MULTIPLIER_BITS:             # rounding up to the next power of two
        m, shift = m >> 1, shift - 1
    if m < 1:
        m = 1
    return int(m), int(shift), False


# ----------------------------------------------------------------------------------------------
# The walk

@dataclass
class _State:
    """The live tensor: integer codes (the output of the model built so far) and their scale."""
    tensor: str
    shape: tuple[int, ...]          # per sample
    scale: np.ndarray               # one per channel (first axis), or a single value
    relu: bool = False              # a Relu is pending (folded into the next requant)
    fresh: int | None = None        # index of the dense/conv layer whose raw accumulator this is

    def uniform_scale(self) -> float | None:
        s = np.unique(self.scale)
        return float(s[0]) if len(s) == 1 else None


class _Importer:
    def __init__(self, mw, name: str):
        import onnx.numpy_helper as nh
        self.mw = mw
        self.g = mw.graph
        self.name = name
        self.inits = {i.name: nh.to_array(i) for i in self.g.initializer}
        self.consts: dict[str, dict] = {}   # constant Quant outputs: codes, scale, bits, ...
        self.layers: list = []
        self.origin: dict[str, str] = {}    # layer name -> onnx node name
        # "input" and requant layer names -> [QONNX Quant output tensor, its scale]
        self.probes: dict[str, list] = {}
        self.approx: list[str] = []
        self.input: InputSpec | None = None
        self.state: _State | None = None
        self.input_views: list[str] = []    # shape-only nodes folded into the input spec

    # -- helpers ---------------------------------------------------------------------------
    def attrs(self, node) -> dict:
        import onnx
        return {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}

    def const(self, node, tensor: str):
        if tensor in self.inits:
            return self.inits[tensor]
        raise QonnxImportError(f"node {node.name} ({node.op_type}): input {tensor} must be a "
                               "constant")

    def types(self) -> CodeType:
        t = self.input.code_type
        for layer in self.layers:
            t = layer.out_type(t)
        return t

    def add(self, layer, node) -> None:
        self.layers.append(layer)
        self.origin[layer.name] = node.name

    def live(self, node, tensor: str) -> _State:
        if self.state is None or tensor != self.state.tensor:
            raise QonnxImportError(
                f"node {node.name} ({node.op_type}): input {tensor} is not the output of the "
                "previous layer; only single-chain graphs are supported (no branches, no "
                f"residual connections, no float-only inputs); {CHAIN_ADVICE}")
        return self.state

    def settle_relu(self, node) -> None:
        """Materialize a pending Relu as a clamp (``lo = 0``) before a non-commuting op."""
        st = self.state
        if st is None or not st.relu:
            return
        t = self.types()
        bits, _ = arith.bits_for_range(max(0, t.lo), max(0, t.hi))
        self.add(Requant(f"relu{len(self.layers)}", 0, "half_even", bits, False, 0,
                         max(0, t.hi)), node)
        st.relu, st.fresh = False, None

    # -- constant Quant ------------------------------------------------------------------
    def quant_const(self, node) -> None:
        from qonnx.custom_op.general.quant import max_int, min_int, resolve_rounding_mode
        a = self.attrs(node)
        x, scale, zp, bw = (self.const(node, t) for t in node.input[:4])
        bits = float(np.asarray(bw).reshape(-1)[0])
        if bits != int(bits) or not 1 <= bits <= 32 or np.asarray(bw).size != 1:
            raise QonnxImportError(f"node {node.name} (Quant): bit width {bw} is not an integer "
                                   "in 1..32")
        bits = int(bits)
        if np.any(zp != 0):
            raise QonnxImportError(f"node {node.name} (Quant): zero point {zp} is not 0")
        signed, narrow = int(a.get("signed", 1)), int(a.get("narrow", 0))
        y = np.asarray(x, dtype=np.float32) / np.asarray(scale, dtype=np.float32)
        if bits == 1 and signed:
            codes = np.where(y >= 0, 1.0, -1.0)
        else:
            lo, hi = min_int(signed, narrow, bits), max_int(signed, narrow, bits)
            codes = resolve_rounding_mode(a.get("rounding_mode", b"ROUND").decode()
                                          if isinstance(a.get("rounding_mode"), bytes)
                                          else a.get("rounding_mode", "ROUND"))(
                np.clip(y, lo, hi))
        if not np.all(np.isfinite(codes)):
            raise QonnxImportError(f"node {node.name} (Quant): non-finite weights or scale")
        self.consts[node.output[0]] = {"codes": codes.astype(np.int64),
                                       "scale": np.asarray(scale, dtype=np.float64),
                                       "bits": bits, "signed": bool(signed), "node": node.name,
                                       "real": codes.astype(np.float64)
                                       * np.asarray(scale, dtype=np.float64)}

    # -- input ----------------------------------------------------------------------------
    def quant_input(self, node) -> None:
        a = self.attrs(node)
        scale, zp, bw = (self.const(node, t) for t in node.input[1:4])
        if np.asarray(scale).size != 1:
            raise QonnxImportError(f"node {node.name} (Quant): the input needs one scale "
                                   "(per-tensor)")
        if np.any(zp != 0):
            raise QonnxImportError(f"node {node.name} (Quant): input zero point {zp} is not 0")
        bits = float(np.asarray(bw).reshape(-1)[0])
        if bits != int(bits) or not 1 <= bits <= 16:
            raise QonnxImportError(f"node {node.name} (Quant): input bit width {bits:g} outside "
                                   "1..16")
        bits, signed, narrow = int(bits), bool(a.get("signed", 1)), bool(a.get("narrow", 0))
        if bits == 1 and signed:
            raise QonnxImportError(f"node {node.name} (Quant): 1-bit signed (bipolar) inputs "
                                   "are not supported")
        mode = a.get("rounding_mode", "ROUND")
        mode = mode.decode() if isinstance(mode, bytes) else mode
        rounding = _rounding(node, mode)
        shape = tuple(self.mw.get_tensor_shape(node.input[0]))
        if len(shape) not in (2, 4):
            raise QonnxImportError(f"node {node.name} (Quant): input shape {shape} is neither "
                                   "(batch, features) nor (batch, C, H, W)")
        clo, chi = arith.code_range(bits, signed)
        lo = clo + 1 if narrow and signed else clo
        hi = chi - 1 if narrow and not signed else chi
        s = float(np.asarray(scale).reshape(-1)[0])
        if _pow2_exponent(s) is None:
            self.approx.append(f"{node.name}: input scale {s!r} is not a power of two; "
                               "x / scale is computed in float64 (QONNX: float32)")
        self.input = InputSpec(tuple(int(v) for v in shape[1:]), bits, signed, s, 0, rounding,
                               lo, hi)
        self.state = _State(node.output[0], self.input.shape, np.array([s]))
        self.probes["input"] = [node.output[0], s]

    # -- requantization ------------------------------------------------------------------
    def quant_act(self, node) -> None:
        st = self.live(node, node.input[0])
        a = self.attrs(node)
        scale, zp, bw = (self.const(node, t) for t in node.input[1:4])
        if np.unique(np.asarray(scale)).size != 1:
            raise QonnxImportError(f"node {node.name} (Quant): per-channel activation scales "
                                   "are not supported")
        if np.any(zp != 0):
            raise QonnxImportError(f"node {node.name} (Quant): zero point {zp} is not 0")
        bits = float(np.asarray(bw).reshape(-1)[0])
        if bits != int(bits) or not 1 <= bits <= 32:
            raise QonnxImportError(f"node {node.name} (Quant): bit width {bits:g} outside 1..32")
        bits, signed, narrow = int(bits), bool(a.get("signed", 1)), bool(a.get("narrow", 0))
        if bits == 1 and signed:
            raise QonnxImportError(f"node {node.name} (Quant): 1-bit signed (bipolar) "
                                   "activations are not supported")
        mode = a.get("rounding_mode", "ROUND")
        rounding = _rounding(node, mode.decode() if isinstance(mode, bytes) else mode)
        s_out = float(np.asarray(scale).reshape(-1)[0])
        if not (s_out > 0 and math.isfinite(s_out)):
            raise QonnxImportError(f"node {node.name} (Quant): scale {s_out!r} is not positive")
        clo, chi = arith.code_range(bits, signed)
        lo = clo + 1 if narrow and signed else clo
        hi = chi - 1 if narrow and not signed else chi
        if st.relu:
            lo = max(lo, 0)
        if lo > hi:
            raise QonnxImportError(f"node {node.name} (Quant): empty range after Relu")
        t = self.types()
        max_abs = max(abs(t.lo), abs(t.hi))
        ratios = st.scale.astype(np.float64) / s_out
        ms = [_ratio_to_mult_shift(float(r), max_abs) for r in ratios]
        if not all(e for _, _, e in ms):
            worst = max(abs(m / 2.0 ** s / r - 1) for (m, s, _), r in zip(ms, ratios))
            self.approx.append(f"{node.name}: requant ratio(s) {_fmt(ratios)} not powers of two;"
                               f" integer multiplier/2**shift, relative error <= {worst:.2g}")
        name = f"rq{len(self.layers)}"
        if len({(m, s) for m, s, _ in ms}) == 1:
            m, s, _ = ms[0]
            layer = Requant(name, s, rounding, bits, signed, lo, hi, m)
        else:
            chans = st.shape[0]
            mult = np.array([m for m, _, _ in ms], dtype=np.int64)
            shift = np.array([s for _, s, _ in ms], dtype=np.int64)
            if len(mult) != chans:
                mult, shift = np.broadcast_to(mult, chans).copy(), np.broadcast_to(shift,
                                                                                    chans).copy()
            layer = ChannelRequant(name, shift, rounding, bits, signed, lo, hi, mult)
        self.add(layer, node)
        self.probes[name] = [node.output[0], s_out]
        self.state = _State(node.output[0], st.shape, np.array([s_out]))

    # -- dense / conv -----------------------------------------------------------------------
    def _weights(self, node, tensor: str) -> dict:
        if tensor not in self.consts:
            raise QonnxImportError(f"node {node.name} ({node.op_type}): weight {tensor} is not a "
                                   "quantized constant (a Quant node on an initializer)")
        w = self.consts[tensor]
        if not w["signed"]:
            raise QonnxImportError(f"node {node.name}: unsigned weights are not supported")
        if w["bits"] > MAX_WEIGHT_BITS:
            raise QonnxImportError(f"node {node.name} ({node.op_type}): {w['bits']}-bit weights; "
                                   f"softfloor supports 1..{MAX_WEIGHT_BITS} (re-export with "
                                   f"weight_bit_width <= {MAX_WEIGHT_BITS})")
        return w

    def _bias(self, node, tensor: str | None, acc_scale: np.ndarray, n: int) -> np.ndarray:
        if not tensor:
            return np.zeros(n, dtype=np.int64)
        if tensor in self.consts:
            real = self.consts[tensor]["real"]
        elif tensor in self.inits:
            real = np.asarray(self.inits[tensor], dtype=np.float64)
        else:
            raise QonnxImportError(f"node {node.name} ({node.op_type}): bias {tensor} is not a "
                                   "constant")
        real = np.asarray(real, dtype=np.float64).reshape(-1)
        if real.size == 1:
            real = np.repeat(real, n)
        if real.size != n:
            raise QonnxImportError(f"node {node.name} ({node.op_type}): bias has {real.size} "
                                   f"values for {n} outputs")
        grid = real / np.broadcast_to(acc_scale, (n,))
        codes = np.rint(grid)
        err = np.abs(grid - codes)
        if err.max(initial=0) > 1e-6 * max(1.0, np.abs(grid).max(initial=0)):
            self.approx.append(f"{node.name}: bias not on the accumulator grid (bias scale != "
                               f"input scale x weight scale); rounded, max error "
                               f"{err.max():.3g} LSB")
        if np.abs(codes).max(initial=0) >= 2.0 ** 46:
            raise QonnxImportError(f"node {node.name}: bias too large for a 48-bit accumulator")
        return codes.astype(np.int64)

    def _acc_layer(self, node, kind, w_codes, bias, w_bits, acc_scale, out_shape, prefix=None,
                   **kw):
        t = self.types()
        w2d = w_codes.reshape(w_codes.shape[0], -1)
        lo, hi = arith.dense_bounds(w2d, bias, t.lo, t.hi)
        lo, hi = min(int(min(lo)), -1), max(int(max(hi)), 0)
        acc_bits = max(2, arith.bits_for_range(lo, hi)[0])
        bias_bits = max(1, arith.bits_for_range(min(int(bias.min()), -1),
                                                max(int(bias.max()), 0))[0])
        if acc_bits > 48:
            raise QonnxImportError(f"node {node.name} ({node.op_type}): the worst-case "
                                   f"accumulator needs {acc_bits} bits; softfloor supports 48")
        name = f"{prefix or ('fc' if kind is Dense else 'conv')}{len(self.layers)}"
        layer = kind(name, w_codes, bias, w_bits, min(bias_bits, acc_bits), acc_bits, **kw)
        self.add(layer, node)
        self.state = _State(node.output[0], out_shape, acc_scale, fresh=len(self.layers) - 1)

    def _in_scale(self, node) -> float:
        s = self.state.uniform_scale()
        if s is None:
            raise QonnxImportError(f"node {node.name} ({node.op_type}): its input has "
                                   "per-channel scales (an unquantized accumulator); quantize it "
                                   "first (e.g. a QuantIdentity / QuantReLU)")
        return s

    def gemm(self, node) -> None:
        st = self.live(node, node.input[0])
        self.settle_relu(node)
        a = self.attrs(node)
        if node.op_type == "Gemm" and (a.get("alpha", 1.0) != 1.0 or a.get("beta", 1.0) != 1.0
                                       or a.get("transA", 0)):
            raise QonnxImportError(f"node {node.name} (Gemm): alpha/beta must be 1, transA 0")
        if len(st.shape) != 1:
            raise QonnxImportError(f"node {node.name} ({node.op_type}): input of shape "
                                   f"{st.shape} is not flat; add a Flatten")
        w = self._weights(node, node.input[1])
        codes, scale = w["codes"], w["scale"]
        trans = node.op_type == "Gemm" and a.get("transB", 0)
        if not trans:
            codes = codes.T
            scale = scale.T if scale.ndim == 2 else scale
        if codes.ndim != 2 or codes.shape[1] != st.shape[0]:
            raise QonnxImportError(f"node {node.name} ({node.op_type}): weight shape "
                                   f"{w['codes'].shape} does not take {st.shape[0]} inputs")
        n_out = codes.shape[0]
        s_w = _per_output(node, scale, n_out, axis=0)
        acc_scale = self._in_scale(node) * s_w
        bias = self._bias(node, node.input[2] if len(node.input) > 2 else None, acc_scale, n_out)
        self._acc_layer(node, Dense, codes, bias, w["bits"], acc_scale, (n_out,))

    def conv(self, node) -> None:
        st = self.live(node, node.input[0])
        self.settle_relu(node)
        a = self.attrs(node)
        w = self._weights(node, node.input[1])
        codes = w["codes"]
        if codes.ndim != 4:
            raise QonnxImportError(f"node {node.name} (Conv): only 2-D convolutions")
        if a.get("group", 1) != 1:
            raise QonnxImportError(f"node {node.name} (Conv): group={a['group']} (grouped or "
                                   "depthwise convolution) is not supported")
        if any(d != 1 for d in a.get("dilations", [1, 1])):
            raise QonnxImportError(f"node {node.name} (Conv): dilations {a['dilations']} are not "
                                   "supported")
        ap = a.get("auto_pad", b"NOTSET")
        if (ap.decode() if isinstance(ap, bytes) else ap) not in ("NOTSET", "VALID"):
            raise QonnxImportError(f"node {node.name} (Conv): auto_pad {ap} is not supported; "
                                   "export with explicit pads")
        if len(st.shape) != 3 or st.shape[0] != codes.shape[1]:
            raise QonnxImportError(f"node {node.name} (Conv): input shape {st.shape} does not "
                                   f"match weights {codes.shape}")
        pads = list(a.get("pads", [0, 0, 0, 0]))
        strides = list(a.get("strides", [1, 1]))
        n_out = codes.shape[0]
        s_w = _per_output(node, w["scale"], n_out, axis=0)
        acc_scale = self._in_scale(node) * s_w
        bias = self._bias(node, node.input[2] if len(node.input) > 2 else None, acc_scale, n_out)
        layer_shape = Conv2d("probe", codes, bias, w["bits"], 1, 2, tuple(strides),
                             tuple(pads)).out_shape(st.shape, f"node {node.name}")
        self._acc_layer(node, Conv2d, codes, bias, w["bits"], acc_scale, layer_shape,
                        stride=tuple(strides), padding=tuple(pads), pad_value=0)

    def add_bias(self, node) -> None:
        ins = list(node.input)
        live = [t for t in ins if self.state and t == self.state.tensor]
        other = [t for t in ins if t not in live]
        if len(live) != 1 or len(other) != 1 or (other[0] not in self.inits
                                                 and other[0] not in self.consts):
            raise QonnxImportError(
                f"node {node.name} (Add): only adding a constant bias to a MatMul/Gemm/Conv "
                f"output is supported (no residual adds: {', '.join(ins)} are not one layer's "
                f"output and a constant); {CHAIN_ADVICE}")
        st = self.state
        if st.fresh is None or st.fresh != len(self.layers) - 1 or st.relu:
            raise QonnxImportError(f"node {node.name} (Add): a constant Add must directly follow "
                                   "the MatMul/Gemm/Conv it biases")
        layer = self.layers[-1]
        n = layer.weight.shape[0]
        bias = self._bias(node, other[0], np.broadcast_to(st.scale, (n,)), n)
        self.layers.pop()
        t_name = self.origin.pop(layer.name)
        src = type("N", (), {"name": t_name, "op_type": "Gemm"})
        kw = ({} if isinstance(layer, Dense)
              else dict(stride=layer.stride, padding=layer.padding, pad_value=0))
        self._acc_layer(src, type(layer), layer.weight, layer.bias + bias, layer.weight_bits,
                        st.scale, st.shape, **kw)
        self.state.tensor = node.output[0]

    def maxpool(self, node) -> None:
        st = self.live(node, node.input[0])
        a = self.attrs(node)
        if any(a.get("pads", [0, 0, 0, 0])) or a.get("ceil_mode", 0) or \
                any(d != 1 for d in a.get("dilations", [1, 1])):
            raise QonnxImportError(f"node {node.name} (MaxPool): pads, ceil_mode and dilations "
                                   "are not supported")
        if len(st.shape) != 3:
            raise QonnxImportError(f"node {node.name} (MaxPool): input shape {st.shape} is not "
                                   "(C, H, W)")
        k = tuple(a["kernel_shape"])
        layer = MaxPool2d(f"pool{len(self.layers)}", k, tuple(a.get("strides", (1, 1))))
        shape = layer.out_shape(st.shape, f"node {node.name}")
        self.add(layer, node)
        self.state = _State(node.output[0], shape, st.scale, relu=st.relu)

    def avgpool(self, node) -> None:
        """``AveragePool``, ``GlobalAveragePool`` or ``ReduceMean`` over height and width, on a
        power-of-two window: a ``conv2d`` whose
        weights are 1 from each channel to itself and 0 elsewhere (the window's sum, exact),
        at the input's scale divided by the window size (the next requant's shift divides)."""
        st = self.live(node, node.input[0])
        self.settle_relu(node)            # max(0, .) does not commute with averaging
        if len(st.shape) != 3:
            raise QonnxImportError(f"node {node.name} ({node.op_type}): input shape {st.shape} "
                                   "is not (C, H, W)")
        a = self.attrs(node)
        keep = True
        if node.op_type == "ReduceMean":   # PyTorch's AdaptiveAvgPool2d(1) / x.mean((2, 3))
            axes = a.get("axes")
            if axes is None and len(node.input) > 1 and node.input[1]:
                axes = self.const(node, node.input[1]).reshape(-1).tolist()
            if axes is None or sorted(int(v) % 4 for v in axes) != [2, 3]:
                raise QonnxImportError(f"node {node.name} (ReduceMean): axes {axes}; only the "
                                       "mean over height and width (axes 2, 3) is supported")
            keep = bool(a.get("keepdims", 1))
        if node.op_type != "AveragePool":
            k, strides, pads = tuple(st.shape[1:]), (1, 1), (0, 0, 0, 0)
        else:
            k = tuple(a["kernel_shape"])
            strides = tuple(a.get("strides", (1, 1)))
            pads = tuple(a.get("pads", (0, 0, 0, 0)))
            ap = a.get("auto_pad", b"NOTSET")
            if (ap.decode() if isinstance(ap, bytes) else ap) not in ("NOTSET", "VALID"):
                raise QonnxImportError(f"node {node.name} (AveragePool): auto_pad {ap} is not "
                                       "supported; export with explicit pads")
            if a.get("ceil_mode", 0) or any(d != 1 for d in a.get("dilations", (1, 1))):
                raise QonnxImportError(f"node {node.name} (AveragePool): ceil_mode and dilations "
                                       "are not supported")
            if any(pads) and not a.get("count_include_pad", 0):
                raise QonnxImportError(
                    f"node {node.name} (AveragePool): padding with count_include_pad=0 divides "
                    "the border windows by fewer elements, which no shift expresses exactly; "
                    "export with count_include_pad=True (PyTorch's default) or without padding")
        n = int(np.prod(k))
        if n & (n - 1):
            raise QonnxImportError(
                f"node {node.name} ({node.op_type}): a {k[0]}x{k[1]} window averages {n} values; "
                "only power-of-two windows (2x2, 4x4, 2x4, ...) are exact in integers (a shift); "
                "use one, or max pooling")
        c = st.shape[0]
        w = np.zeros((c, c) + k, dtype=np.int64)
        w[np.arange(c), np.arange(c)] = 1
        shape = Conv2d("probe", w, np.zeros(c, dtype=np.int64), 2, 1, 2, strides,
                       pads).out_shape(st.shape, f"node {node.name}")
        # Weights 0/1 are 2-bit codes (1-bit weights are -1/+1); zero padding is the code 0.
        self._acc_layer(node, Conv2d, w, np.zeros(c, dtype=np.int64), 2, st.scale / n, shape,
                        prefix="avgpool", stride=strides, padding=pads, pad_value=0)
        if not keep:                      # (C, 1, 1) -> (C,)
            self.add(Flatten(f"flatten{len(self.layers)}"), node)
            self.state.shape = (c,)

    def trunc(self, node) -> None:
        """QONNX ``Trunc`` (Brevitas ``TruncAvgPool2d``): ``round(x / scale)`` (exact: ``x`` is
        on a grid that ``scale`` divides) shifted right and clamped -- one requant."""
        st = self.live(node, node.input[0])
        a = self.attrs(node)
        ins = [self.const(node, t) for t in node.input[1:]]
        if len(ins) == 5:              # Trunc v2: scale, zeropt, in bits, out scale, out bits
            scale, zp, _, out_scale, out_bits = ins
        elif len(ins) == 4:            # Trunc v1: scale, zeropt, in bits, out bits
            scale, zp, in_bits, out_bits = ins
            out_scale = None
        else:
            raise QonnxImportError(f"node {node.name} (Trunc): {len(node.input)} inputs; "
                                   "expected 5 (Trunc v1) or 6 (v2)")
        if np.any(np.asarray(zp) != 0):
            raise QonnxImportError(f"node {node.name} (Trunc): zero point {zp} is not 0")
        if np.asarray(scale).size != 1:
            raise QonnxImportError(f"node {node.name} (Trunc): per-channel scales are not "
                                   "supported")
        s = float(np.asarray(scale).reshape(-1)[0])
        s_acc = st.uniform_scale()
        j = None if s_acc is None else _pow2_exponent(s_acc / s)
        if j is None or j < 0:
            raise QonnxImportError(
                f"node {node.name} (Trunc): its input (scale {_fmt(st.scale)}) is not on the grid "
                f"of its scale {s:g} times a power of two >= 1; only exact truncations are "
                "supported")
        if out_scale is None:
            t = int(round(float(np.asarray(in_bits).reshape(-1)[0])
                          - float(np.asarray(out_bits).reshape(-1)[0])))
            s_out = s
        else:
            s_out = float(np.asarray(out_scale).reshape(-1)[0])
            t = int(round(math.log2(s_out / s)))
        bits = float(np.asarray(out_bits).reshape(-1)[0])
        if bits != int(bits) or not 1 <= bits <= 32:
            raise QonnxImportError(f"node {node.name} (Trunc): bit width {bits:g} outside 1..32")
        bits, signed, narrow = int(bits), bool(a.get("signed", 1)), bool(a.get("narrow", 0))
        mode = a.get("rounding_mode", "FLOOR")
        rounding = _rounding(node, mode.decode() if isinstance(mode, bytes) else mode)
        shift = t - j
        mult = 1 if shift >= 0 else 1 << -shift
        if out_scale is None:          # v1 does not clamp: the range of the shifted input
            ty = self.types()
            lo, hi = (int(v) for v in arith.round_shift(np.array([ty.lo, ty.hi], np.int64) * mult,
                                                        max(shift, 0), rounding))
            bits, signed = arith.bits_for_range(lo, hi)
            s_out = s * 2.0 ** t
        else:
            lo, hi = arith.code_range(bits, signed)
            lo, hi = (lo + 1 if narrow and signed else lo), (hi - 1 if narrow and not signed
                                                             else hi)
        if st.relu:
            lo = max(lo, 0)
        name = f"rq{len(self.layers)}"
        self.add(Requant(name, max(shift, 0), rounding, bits, signed, lo, hi, mult), node)
        self.probes[name] = [node.output[0], s_out]
        self.state = _State(node.output[0], st.shape, np.array([s_out]))

    def input_view(self, node, views: set) -> None:
        """A shape-only op on the (unquantized) graph input: the input spec takes its output
        shape (quantization is elementwise, so it commutes with the reshape)."""
        if node.op_type == "Transpose":
            raise QonnxImportError(f"node {node.name} (Transpose): permutes the graph input "
                                   f"before its quantizer; {HINTS['Transpose']}")
        ins = tuple(self.mw.get_tensor_shape(node.input[0]) or ())
        out = tuple(self.mw.get_tensor_shape(node.output[0]) or ())
        if not ins or not out or ins[0] != out[0] or np.prod(ins) != np.prod(out):
            raise QonnxImportError(f"node {node.name} ({node.op_type}): on the graph input, "
                                   f"{ins} -> {out} does not keep the batch and the values per "
                                   "sample; only reshapes of each sample fold into the input")
        self.input_views.append(node.name)
        views.add(node.output[0])

    def flatten(self, node) -> None:
        st = self.live(node, node.input[0])
        a = self.attrs(node)
        size = int(np.prod(st.shape))
        if node.op_type == "Flatten" and a.get("axis", 1) != 1:
            raise QonnxImportError(f"node {node.name} (Flatten): axis {a['axis']} is not 1")
        if node.op_type != "Flatten":     # Reshape, Squeeze, Unsqueeze: to (batch, size)?
            out = self.mw.get_tensor_shape(node.output[0])
            if out is None and node.op_type == "Reshape":
                out = [int(v) for v in self.const(node, node.input[1]).reshape(-1)]
            if out is None or len(out) != 2 or out[1] not in (size, -1):
                raise QonnxImportError(f"node {node.name} ({node.op_type}): to {out}; only "
                                       f"flattening to (batch, {size}) is supported")
        if len(st.shape) == 1:
            self.state = _State(node.output[0], st.shape, st.scale, st.relu, st.fresh)
            return
        scale = st.scale
        if scale.size > 1:     # per-channel scales follow their elements into the flat tensor
            scale = np.repeat(scale, size // st.shape[0])
        self.add(Flatten(f"flatten{len(self.layers)}"), node)
        self.state = _State(node.output[0], (size,), scale, relu=st.relu)

    # -- driver -----------------------------------------------------------------------------
    def run(self) -> ImportResult:
        inputs = [i.name for i in self.g.input if i.name not in self.inits]
        if len(inputs) != 1 or len(self.g.output) != 1:
            raise QonnxImportError(f"the graph has {len(inputs)} inputs and {len(self.g.output)} "
                                   "outputs; exactly one of each is supported")
        views = {inputs[0]}              # the graph input and reshapes of it
        for node in self.g.node:
            op = node.op_type
            if self.input is None and op in SHAPE_ONLY + ("Transpose",) and node.input \
                    and node.input[0] in views:
                self.input_view(node, views)
                continue
            if op not in SUPPORTED:
                hint = HINTS.get(op, f"softfloor imports {', '.join(SUPPORTED)}")
                raise QonnxImportError(f"node {node.name} ({op}): not supported; {hint}")
            if op == "Quant":
                if all(t in self.inits for t in node.input):
                    self.quant_const(node)
                elif node.input[0] in views:
                    if self.input is not None:
                        raise QonnxImportError(f"node {node.name}: the input is quantized twice")
                    self.quant_input(node)
                else:
                    self.quant_act(node)
            elif self.input is None:
                raise QonnxImportError(f"node {node.name} ({op}): runs before the input is "
                                       "quantized; the graph input must feed a Quant node "
                                       "(e.g. a QuantIdentity first layer)")
            elif op in ("Gemm", "MatMul"):
                self.gemm(node)
            elif op == "Conv":
                self.conv(node)
            elif op == "Add":
                self.add_bias(node)
            elif op == "Relu":
                st = self.live(node, node.input[0])
                self.state = _State(node.output[0], st.shape, st.scale, True, None)
            elif op == "MaxPool":
                self.maxpool(node)
            elif op in ("AveragePool", "GlobalAveragePool", "ReduceMean"):
                self.avgpool(node)
            elif op == "Trunc":
                self.trunc(node)
            elif op in ("Flatten", "Reshape", "Squeeze", "Unsqueeze"):
                self.flatten(node)
            else:  # Identity, Dropout (inference)
                st = self.live(node, node.input[0])
                self.state = _State(node.output[0], st.shape, st.scale, st.relu, st.fresh)
        out = self.g.output[0].name
        if self.input is None or not self.layers and self.state is None:
            raise QonnxImportError("the graph has no quantized input")
        self.live(type("N", (), {"name": "graph output", "op_type": "output"}), out)
        self.settle_relu(type("N", (), {"name": "graph output", "op_type": "output"}))
        if not self.layers:
            raise QonnxImportError("the graph has no layers after the input quantizer")
        st = self.state
        s = st.uniform_scale()
        output = OutputSpec(s if s is not None else tuple(float(v) for v in st.scale), 0)
        meta = {"producer": "softfloor.qonnx_import", "exact": not self.approx,
                "approximations": self.approx, "onnx_nodes": self.origin,
                "onnx_probes": self.probes}
        if self.input_views:
            meta["onnx_input_views"] = self.input_views
        model = IntModel(self.input, self.layers, output, self.name, meta)
        return ImportResult(model, not self.approx, list(self.approx))


def _per_output(node, scale: np.ndarray, n: int, axis: int) -> np.ndarray:
    """A weight scale as one value per output channel (per-tensor scales repeated)."""
    s = np.asarray(scale, dtype=np.float64)
    if s.size == 1:
        return np.full(n, float(s.reshape(-1)[0]))
    if s.shape[axis] != n or s.size != n:
        raise QonnxImportError(f"node {node.name} ({node.op_type}): weight scale of shape "
                               f"{s.shape} is neither per-tensor nor per-output-channel")
    return s.reshape(-1)


def _fmt(v: np.ndarray) -> str:
    u = np.unique(v)
    return ", ".join(f"{x:.6g}" for x in u[:3]) + (", ..." if len(u) > 3 else "")


def import_qonnx(path, name: str | None = None) -> ImportResult:
    """Import a QONNX model (file path or ``ModelWrapper``) as an :class:`ImportResult`."""
    mw = load_clean(path)
    if name is None:
        name = Path(path).stem if isinstance(path, (str, os.PathLike)) else "qonnx-model"
    try:
        return _Importer(mw, name).run()
    except QonnxImportError:
        raise
    except Exception as e:   # never an internal error without the file named
        raise QonnxImportError(f"{path}: cannot import: {type(e).__name__}: {e}") from e


# ----------------------------------------------------------------------------------------------
# Agreement with QONNX's own execution

def execute_qonnx(path, x: np.ndarray, batch: int = 256, tensors=()):
    """QONNX ``execute_onnx`` on float inputs ``x`` (one row per sample), in fixed batches.

    The exported graph has a fixed batch size; it is changed once to ``batch`` (QONNX's
    ``ChangeBatchSize`` + shape inference, tensor names kept), and the last partial batch is
    padded with copies of the last sample. Returns the ``(N, outputs)`` float outputs, and with
    ``tensors`` also a dict of those intermediate tensors (``(N, ...)``).
    """
    _require_qonnx()
    from qonnx.core.onnx_exec import execute_onnx
    from qonnx.transformation.change_batchsize import ChangeBatchSize
    from qonnx.transformation.infer_shapes import InferShapes
    mw = load_clean(path).transform(ChangeBatchSize(batch)).transform(InferShapes())
    iname = [i.name for i in mw.graph.input if mw.get_initializer(i.name) is None][0]
    oname = mw.graph.output[0].name
    shape = tuple(mw.get_tensor_shape(iname))[1:]
    x = np.asarray(x, dtype=np.float32).reshape((-1,) + shape)
    outs, inner = [], {t: [] for t in tensors}
    for s in range(0, len(x), batch):
        xb = x[s:s + batch]
        n = len(xb)
        if n < batch:
            xb = np.concatenate([xb, np.repeat(xb[-1:], batch - n, axis=0)])
        ctx = execute_onnx(mw, {iname: xb}, return_full_exec_context=bool(tensors))
        outs.append(ctx[oname][:n])
        for t in tensors:
            inner[t].append(ctx[t][:n])
    out = np.concatenate(outs).reshape(len(x), -1)
    if not tensors:
        return out
    return out, {t: np.concatenate(v) for t, v in inner.items()}


def agreement(path, model: IntModel, x: np.ndarray, labels=None, batch: int = 256) -> dict:
    """Compare the integer model with ``execute_onnx`` on float inputs ``x``.

    Returns samples, integer codes equal (QONNX output / output scale, rounded, vs the golden
    codes), argmax equal, the largest code difference, accuracies when ``labels`` are given, and
    per requant layer the samples whose codes equal QONNX's ``Quant`` output / scale
    (``layers``; ``first_differing_layer`` names the first that is not all equal).
    """
    from . import golden
    probes = model.meta.get("onnx_probes", {})
    ref, inner = execute_qonnx(path, x, batch, tensors=[t for t, _ in probes.values()]) \
        if probes else (execute_qonnx(path, x, batch), {})
    codes = model.input.quantize(x)
    out, per_layer = golden.run(model, codes, intermediates=True)
    scale = np.asarray(model.output.scale, dtype=np.float64).reshape(1, -1)
    if model.output.per_channel:
        scale = np.repeat(scale, out.shape[1] // scale.shape[1], axis=1)
    ref_codes = ref.astype(np.float64) / scale + model.output.zero_point
    ref_int = np.rint(ref_codes)
    rep = {"samples": int(len(out)),
           "codes_equal": int(np.sum(np.all(ref_int == out, axis=1))),
           "codes_on_grid": bool(np.all(np.abs(ref_codes - ref_int) < 1e-3)),
           "max_code_diff": float(np.abs(ref_codes - out).max(initial=0)),
           "argmax_equal": int(np.sum(np.argmax(ref, 1) == golden.classify(model, out)))}
    layers, first = {}, None
    for name, mine in [("input", codes)] + [(lay.name, a) for lay, a in zip(model.layers,
                                                                            per_layer)]:
        if name not in probes:
            continue
        tensor, s = probes[name]
        q = np.rint(inner[tensor].astype(np.float64) / s).reshape(len(out), -1)
        eq = int(np.sum(np.all(q == mine.reshape(len(out), -1), axis=1)))
        layers[name] = eq
        if first is None and eq != len(out):
            first = name
    if layers:
        rep["layers"] = layers
        rep["first_differing_layer"] = first
    if labels is not None:
        labels = np.asarray(labels)
        rep["accuracy_qonnx"] = float(np.mean(np.argmax(ref, 1) == labels))
        rep["accuracy_golden"] = float(np.mean(golden.classify(model, out) == labels))
    return rep
