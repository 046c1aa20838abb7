"""QONNX import agreement: Brevitas-trained digits models, export_qonnx, import, golden vs execute_onnx.

For each configuration a small model is trained for a few epochs on the digits split (stratified
80/20, random_state=0), exported with ``export_qonnx``, imported with
:func:`softfloor.qonnx_import.import_qonnx`, and the golden integer model is compared with QONNX's
``execute_onnx`` on the 360 test samples: identical output codes, identical argmax, accuracies.
Power-of-two configurations must be exact; the others report their agreement. Needs the
``[qonnx]`` extra.
"""
from __future__ import annotations

import contextlib
import io
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np

#: (name, kind, weight bits, act bits, scales, weight scale granularity, last bias quantized)
CONFIGS = [
    ("mlp w4a4 po2", "mlp", 4, 4, "po2", "tensor", True),
    ("mlp w2a2 po2", "mlp", 2, 2, "po2", "tensor", True),
    ("mlp w8a8 po2", "mlp", 8, 8, "po2", "tensor", True),
    ("mlp w4a4 po2 per-channel", "mlp", 4, 4, "po2", "channel", True),
    ("cnn w4a4 po2 per-channel", "cnn", 4, 4, "po2", "channel", True),
    ("mlp w4a4 float", "mlp", 4, 4, "float", "tensor", True),
    ("mlp w4a4 float per-channel, float bias", "mlp", 4, 4, "float", "channel", False),
    ("mlp w8a8 float", "mlp", 8, 8, "float", "tensor", True),
    ("cnn w4a4 float per-channel", "cnn", 4, 4, "float", "channel", True),
    ("cnn flat input, avg-pool + trunc-avg-pool, 12-bit conv / 10-bit dense", "cnn-view-trunc",
     4, 4, "po2", "channel", True),
    ("cnn flat input, avg-pool + global avg-pool, 12-bit conv / 10-bit dense", "cnn-view-global",
     4, 4, "po2", "channel", True),
]
QUICK = {"mlp w4a4 po2", "cnn w4a4 po2 per-channel", "mlp w4a4 float per-channel, float bias",
         "cnn flat input, avg-pool + trunc-avg-pool, 12-bit conv / 10-bit dense"}
#: Weight bits of the second convolution and the dense layer of the ``cnn-view-*`` models.
WIDE_BITS = (12, 10)


def input_shape(kind: str) -> tuple[int, ...]:
    """The shape of one sample a ``build(kind, ...)`` model takes."""
    return (1, 8, 8) if kind == "cnn" else (64,)


def _quantizers(scales: str, granularity: str):
    from brevitas.quant import (Int8WeightPerTensorFixedPoint, Int8WeightPerTensorFloat,
                                Uint8ActPerTensorFixedPoint, Uint8ActPerTensorFloat)
    from brevitas.quant.fixed_point import Int8WeightPerChannelFixedPoint
    from brevitas.quant.scaled_int import Int8WeightPerChannelFloat
    w = {("po2", "tensor"): Int8WeightPerTensorFixedPoint,
         ("po2", "channel"): Int8WeightPerChannelFixedPoint,
         ("float", "tensor"): Int8WeightPerTensorFloat,
         ("float", "channel"): Int8WeightPerChannelFloat}[scales, granularity]
    a = Uint8ActPerTensorFixedPoint if scales == "po2" else Uint8ActPerTensorFloat
    return w, a


def build(kind: str, wbits: int | None, abits: int | None, scales: str = "po2",
          granularity: str = "tensor", last_bias: bool = True, *, sizes=(64, 32, 10),
          batchnorm: bool = False, input_quant: tuple[int, float] | None = None,
          channels=(8, 16)):
    """A Brevitas digits MLP (``sizes``, default 64-32-10) or CNN (conv3x3x``channels[0]``-pool-
    conv3x3x``channels[1]``-pool-dense, default 8 and 16 channels); ``kind`` ``"cnn-view-trunc"``
    or ``"cnn-view-global"``: the CNN on flat rows with average pooling and wide weights
    (:func:`_view_cnn`; its samples are :func:`input_shape` ``(64,)``).

    The one Brevitas model builder of the benchmarks (``qonnx`` and ``compare``) and of the
    QONNX import tests.

    Parameters
    ----------
    wbits, abits : int or None
        Weight and activation bits. ``wbits=None``: the float MLP (``nn.Linear``/``nn.ReLU``,
        no quantizer, real inputs). ``wbits=1``: binary weights (sign times a power-of-two
        scale from the weights' max; per-tensor ``po2`` only); ``wbits=2``: ternary (Brevitas's
        weight quantizers are narrow-range: codes -1, 0, 1).
    batchnorm : bool
        MLP: ``BatchNorm1d`` after every hidden linear layer, before its activation (not folded:
        Brevitas evaluates it with its running statistics).
    input_quant : (bits, scale) or None
        ``None``: the input quantizer is a learned ``abits`` activation quantizer. ``(bits,
        scale)``: a constant-scale unsigned quantizer; feed it ``codes * scale`` and it passes
        the codes through unchanged (how :mod:`softfloor.benchmarks.compare` gives Brevitas
        softfloor's input codes).
    """
    import torch.nn as nn
    if kind.startswith("cnn-view-"):
        return _view_cnn(kind[len("cnn-view-"):], wbits, abits, scales, granularity, channels)
    if wbits is None:
        if kind != "mlp":
            raise ValueError("the float model (wbits=None) is the MLP only")
        layers = []
        for i, (a, b) in enumerate(zip(sizes, sizes[1:])):
            layers += [nn.Linear(a, b)] + ([nn.ReLU()] if i < len(sizes) - 2 else [])
        return nn.Sequential(*layers)
    import brevitas.nn as qnn
    from brevitas.core.quant import QuantType
    from brevitas.core.restrict_val import RestrictValueType
    from brevitas.core.scaling import ScalingImplType
    from brevitas.quant import Int32Bias
    wq, aq = _quantizers(scales, granularity)
    if wbits == 1:
        if (scales, granularity) != ("po2", "tensor"):
            raise ValueError("1-bit (binary) weights: per-tensor po2 scales only")
        wq = wq.let(quant_type=QuantType.BINARY)
    act = dict(act_quant=aq, bit_width=abits, return_quant_tensor=True)
    wgt = dict(weight_quant=wq, weight_bit_width=wbits, bias_quant=Int32Bias,
               return_quant_tensor=True)
    last = wgt | {"return_quant_tensor": False, "bias_quant": Int32Bias if last_bias else None}
    if input_quant is None:
        inp = act
    else:
        bits, scale = input_quant
        top = float(scale) * (2 ** bits - 1)
        inp = dict(act_quant=aq.let(scaling_impl_type=ScalingImplType.CONST,
                                    restrict_scaling_type=RestrictValueType.FP,
                                    scaling_const=top, max_val=top),
                   bit_width=bits, return_quant_tensor=True)
    if kind == "mlp":
        layers = [qnn.QuantIdentity(**inp)]
        for i, (a, b) in enumerate(zip(sizes, sizes[1:])):
            if i == len(sizes) - 2:
                layers.append(qnn.QuantLinear(a, b, bias=True, **last))
                break
            layers.append(qnn.QuantLinear(a, b, bias=True, **(
                wgt | {"return_quant_tensor": not batchnorm})))
            layers += [nn.BatchNorm1d(b)] if batchnorm else []
            layers.append(qnn.QuantReLU(**act))
        return nn.Sequential(*layers)
    c1, c2 = channels
    return nn.Sequential(qnn.QuantIdentity(**inp), qnn.QuantConv2d(1, c1, 3, padding=1, **wgt),
                         qnn.QuantReLU(**act), nn.MaxPool2d(2),
                         qnn.QuantConv2d(c1, c2, 3, padding=1, **wgt), qnn.QuantReLU(**act),
                         nn.MaxPool2d(2), nn.Flatten(),
                         qnn.QuantLinear(4 * c2, 10, bias=True, **last))


def _view_cnn(head: str, wbits: int, abits: int, scales: str, granularity: str, channels):
    """The model a Brevitas user writes for flat inputs: ``x.view(-1, 1, 8, 8)`` before the
    input quantizer, conv3x3 -> QuantReLU -> ``nn.AvgPool2d(2)`` -> QuantIdentity ->
    conv3x3 (:data:`WIDE_BITS` weights) -> QuantReLU, then ``head`` ``"trunc"``
    (``TruncAvgPool2d(2)``, flatten, dense) or ``"global"`` (``AdaptiveAvgPool2d(1)`` ->
    QuantIdentity, flatten, dense); the dense layer has :data:`WIDE_BITS` weights."""
    import brevitas.nn as qnn
    import torch.nn as nn
    from brevitas.quant import Int32Bias
    wq, aq = _quantizers(scales, granularity)
    act = dict(act_quant=aq, bit_width=abits, return_quant_tensor=True)
    wgt = dict(weight_quant=wq, bias_quant=Int32Bias, return_quant_tensor=True)
    c1, c2 = channels
    if head == "trunc":
        tail = [qnn.TruncAvgPool2d(2, return_quant_tensor=True), nn.Flatten()]
        features = 4 * c2
    elif head == "global":
        tail = [nn.AdaptiveAvgPool2d(1), qnn.QuantIdentity(**act), nn.Flatten()]
        features = c2
    else:
        raise ValueError(f"head must be 'trunc' or 'global', got {head!r}")

    class ViewCNN(nn.Module):
        def __init__(self):
            super().__init__()
            self.body = nn.Sequential(
                qnn.QuantIdentity(**act),
                qnn.QuantConv2d(1, c1, 3, padding=1, weight_bit_width=wbits, **wgt),
                qnn.QuantReLU(**act), nn.AvgPool2d(2), qnn.QuantIdentity(**act),
                qnn.QuantConv2d(c1, c2, 3, padding=1, weight_bit_width=WIDE_BITS[0], **wgt),
                qnn.QuantReLU(**act), *tail,
                qnn.QuantLinear(features, 10, bias=True, weight_bit_width=WIDE_BITS[1],
                                **(wgt | {"return_quant_tensor": False})))

        def forward(self, x):
            return self.body(x.view(-1, 1, 8, 8))
    return ViewCNN()


def digits_float():
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split
    x, y = load_digits(return_X_y=True)
    x = (x / 16).astype(np.float32)
    return train_test_split(x, y, test_size=0.2, stratify=y, random_state=0)


def train(model, xtr, ytr, shape, epochs: int, seed: int = 0, *, lr: float = 0.01,
          batch: int = 64, cosine: bool | str = False, beta1: float = 0.9, progress=None):
    """Adam (``lr``, ``betas=(beta1, 0.999)``, optionally with softfloor's per-step decay:
    ``cosine`` True is its cosine to 0, a string names a schedule of
    :func:`softfloor.train.lr_factor`) over mini-batches shuffled from seed ``seed``;
    ``progress(epoch)`` after every epoch. Returns the model in eval mode."""
    import math

    import torch

    from softfloor.train import lr_factor
    torch.manual_seed(seed)
    opt = torch.optim.Adam(model.parameters(), lr=lr, betas=(beta1, 0.999))
    total = epochs * math.ceil(len(ytr) / batch)
    decay = ("cosine" if cosine is True else cosine) if cosine else None
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda step: lr_factor(decay, step, total)) \
        if decay else None
    xt, yt = torch.tensor(xtr).reshape((-1,) + shape), torch.tensor(ytr)
    model.train()
    for epoch in range(epochs):
        perm = torch.randperm(len(xt))
        for i in range(0, len(xt), batch):
            idx = perm[i:i + batch]
            opt.zero_grad()
            torch.nn.functional.cross_entropy(model(xt[idx]), yt[idx]).backward()
            opt.step()
            if sched is not None:
                sched.step()
        if progress is not None:
            progress(epoch + 1)
    return model.eval()


def run(out_dir: Path, quick: bool) -> dict:
    import torch
    from brevitas.export import export_qonnx

    from softfloor import qonnx_import as qi
    xtr, xte, ytr, yte = digits_float()
    rows, notes = [], []
    with tempfile.TemporaryDirectory() as tmp:
        for name, kind, wb, ab, scales, gran, last_bias in CONFIGS:
            if quick and name not in QUICK:
                continue
            shape = input_shape(kind)
            t0 = time.monotonic()
            model = train(build(kind, wb, ab, scales, gran, last_bias), xtr, ytr, shape,
                          3 if quick else 8)
            with torch.no_grad():
                acc = float((model(torch.tensor(xte).reshape((-1,) + shape)).argmax(1).numpy()
                             == yte).mean())
            path = Path(tmp) / f"{kind}{len(rows)}.onnx"
            with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
                warnings.simplefilter("ignore")     # the exporter's progress lines, too
                export_qonnx(model, torch.rand((1,) + shape), export_path=str(path))
            res = qi.import_qonnx(path)
            ag = qi.agreement(path, res.model, xte, yte, batch=len(xte))
            n = ag["samples"]
            rows.append({"model": name, "exact import": res.exact,
                         "codes equal": f"{ag['codes_equal']}/{n}",
                         "argmax equal": f"{ag['argmax_equal']}/{n}",
                         "max |code diff|": round(ag["max_code_diff"], 4),
                         "per layer (input, requants)": " ".join(
                             str(v) for v in ag.get("layers", {}).values()),
                         "acc brevitas": round(acc, 4), "acc qonnx": round(ag["accuracy_qonnx"], 4),
                         "acc golden": round(ag["accuracy_golden"], 4),
                         "seconds": round(time.monotonic() - t0, 1)})
            if res.approximations:
                notes.append(f"{name}: " + "; ".join(res.approximations))
    notes.insert(0, "codes equal: golden output codes == round(execute_onnx output / output "
                    "scale) on every output of the sample; max |code diff| is before rounding "
                    "(0 when QONNX's output lies on the integer grid)")
    return {"rows": rows, "notes": notes}
