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
]
QUICK = {"mlp w4a4 po2", "cnn w4a4 po2 per-channel", "mlp w4a4 float per-channel, float bias"}


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


def build(kind: str, wbits: int, abits: int, scales: str, granularity: str, last_bias: bool):
    """A Brevitas digits MLP (64-32-10) or CNN (conv3x3x8-pool-conv3x3x16-pool-dense)."""
    import torch.nn as nn
    import brevitas.nn as qnn
    from brevitas.quant import Int32Bias
    wq, aq = _quantizers(scales, granularity)
    act = dict(act_quant=aq, bit_width=abits, return_quant_tensor=True)
    wgt = dict(weight_quant=wq, weight_bit_width=wbits, bias_quant=Int32Bias,
               return_quant_tensor=True)
    last = wgt | {"return_quant_tensor": False, "bias_quant": Int32Bias if last_bias else None}
    if kind == "mlp":
        return nn.Sequential(qnn.QuantIdentity(**act), qnn.QuantLinear(64, 32, bias=True, **wgt),
                             qnn.QuantReLU(**act), qnn.QuantLinear(32, 10, bias=True, **last))
    return nn.Sequential(qnn.QuantIdentity(**act), qnn.QuantConv2d(1, 8, 3, padding=1, **wgt),
                         qnn.QuantReLU(**act), nn.MaxPool2d(2),
                         qnn.QuantConv2d(8, 16, 3, padding=1, **wgt), qnn.QuantReLU(**act),
                         nn.MaxPool2d(2), nn.Flatten(),
                         qnn.QuantLinear(64, 10, bias=True, **last))


def digits_float():
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split
    x, y = load_digits(return_X_y=True)
    x = (x / 16).astype(np.float32)
    return train_test_split(x, y, test_size=0.2, stratify=y, random_state=0)


def train(model, xtr, ytr, shape, epochs: int, seed: int = 0):
    import torch
    torch.manual_seed(seed)
    opt = torch.optim.Adam(model.parameters(), lr=0.01)
    xt, yt = torch.tensor(xtr).reshape((-1,) + shape), torch.tensor(ytr)
    model.train()
    for _ in range(epochs):
        perm = torch.randperm(len(xt))
        for i in range(0, len(xt), 64):
            idx = perm[i:i + 64]
            opt.zero_grad()
            torch.nn.functional.cross_entropy(model(xt[idx]), yt[idx]).backward()
            opt.step()
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
            shape = (64,) if kind == "mlp" else (1, 8, 8)
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
