"""Builders: the networks ``--arch`` names, as chains of :mod:`softfloor.nn` layers.

``--arch`` takes

* ``mlp``: the digits MLP's hidden layers (64, 32) between the data's inputs and classes
  (:class:`~softfloor.models.QuantMLP`, 64-64-32-10 on the digits; trained by the fused
  whole-network step);
* ``cnn``: the digits CNN's stages (conv 3x3x8 pad 1, max-pool 2, conv 3x3x16 pad 1, max-pool
  2, dense) on the data's images (:class:`~softfloor.cnn.QuantCNN`);
* ``mlp:784-64-64-64-10``: an MLP with these widths, inputs first (FINN's TFC);
* ``cnn:c16k3p1-m2-c32k3p1-m2-d10``: a CNN from a layer spec (the grammar below);
* ``FILE.py:FUNCTION``: a user's own builder, ``FUNCTION(**options)`` returning a network of
  softfloor.nn layers that starts with a :class:`~softfloor.nn.layers.QuantInput`.

CNN spec grammar: layers separated by ``-``; ``c<OUT>[k<K>][s<S>][p<P>]`` a convolution with
``OUT`` channels, ``K x K`` kernel (default 3), stride ``S`` (default 1) and zero padding ``P``
(default 0), followed by the activation; ``m<K>[s<S>]`` a ``K x K`` max-pool (stride default
``K``) right after a convolution; ``d<OUT>`` a dense layer (a flatten comes before the first
one; an activation after every dense layer but the last, whose ``OUT`` is the class count).
"""
from __future__ import annotations

import importlib.util
import inspect
import re
from pathlib import Path

#: The digits MLP's hidden widths, used by ``--arch mlp`` on any data.
MLP_HIDDEN = (64, 32)
_CONV = re.compile(r"^c(\d+)(?:k(\d+))?(?:s(\d+))?(?:p(\d+))?$")
_POOL = re.compile(r"^m(\d+)(?:s(\d+))?$")
_DENSE = re.compile(r"^d(\d+)$")


def parse_arch(arch: str) -> dict:
    """``--arch`` as TrainConfig fields: ``{"arch": "mlp" | "cnn" | "custom", "sizes"?: tuple,
    "layers"?: str}``; raises a ValueError saying what is wrong."""
    if arch in ("mlp", "cnn"):
        return {"arch": arch}
    if arch.startswith("mlp:"):
        return {"arch": "mlp", "sizes": parse_mlp(arch[4:])}
    if arch.startswith("cnn:"):
        parse_cnn(arch[4:])
        return {"arch": "cnn", "layers": arch[4:]}
    if ":" in arch and arch.rsplit(":", 1)[0].endswith(".py"):
        return {"arch": "custom", "layers": arch}
    raise ValueError(f"arch {arch!r}: expected mlp, cnn, mlp:784-64-10 (widths), "
                     f"cnn:c16k3p1-m2-d10 (a layer spec) or FILE.py:FUNCTION")


def parse_mlp(spec: str) -> tuple[int, ...]:
    """``"784-64-64-64-10"`` -> ``(784, 64, 64, 64, 10)`` (at least inputs and outputs)."""
    parts = spec.split("-")
    if len(parts) < 2 or not all(p.isdigit() and 0 < int(p) <= 65536 for p in parts):
        raise ValueError(f"mlp spec {spec!r}: expected widths 1..65536 joined by '-', inputs "
                         f"first, classes last (e.g. mlp:784-64-64-64-10)")
    return tuple(int(p) for p in parts)


def parse_cnn(spec: str) -> tuple[tuple, ...]:
    """A CNN spec (module docstring) as layer tuples for :class:`~softfloor.cnn.QuantCNN`."""
    out = []
    for tok in spec.split("-"):
        if m := _CONV.match(tok):
            o, k, s, p = (int(v) if v else d for v, d in zip(m.groups(), (0, 3, 1, 0)))
            out.append(("conv", o, k, s, p))
        elif m := _POOL.match(tok):
            k = int(m.group(1))
            out.append(("pool", k, int(m.group(2)) if m.group(2) else k))
        elif m := _DENSE.match(tok):
            out.append(("dense", int(m.group(1))))
        else:
            raise ValueError(f"cnn spec {spec!r}: {tok!r} is not a layer (c<OUT>[k<K>][s<S>]"
                             f"[p<P>], m<K>[s<S>] or d<OUT>; see docs/nn.md)")
    if not out or out[-1][0] != "dense":
        raise ValueError(f"cnn spec {spec!r}: the last layer must be dense (d<CLASSES>)")
    return tuple(out)


def mlp_sizes(sizes: tuple, features: int, classes: int, default: tuple) -> tuple:
    """The MLP's widths on data with ``features`` inputs and ``classes`` classes: ``sizes``
    (checked), or for the default widths the digits MLP's hidden layers between them."""
    if tuple(sizes) == tuple(default) and (features, classes) != (sizes[0], sizes[-1]):
        return (features, *MLP_HIDDEN, classes)
    if sizes[0] != features or sizes[-1] != classes:
        raise ValueError(f"mlp widths {'-'.join(map(str, sizes))}: the data has {features} "
                         f"inputs and {classes} classes; use mlp:{features}-...-{classes}")
    return tuple(sizes)


def cnn_layers(spec: str | None, shape: tuple, classes: int) -> tuple:
    """The CNN's layer tuples on ``(C, H, W)`` images with ``classes`` classes."""
    from softfloor.cnn import layer_list
    if len(shape) != 3:
        raise ValueError(f"a CNN needs image inputs (C, H, W); the data's samples have shape "
                         f"{tuple(shape)} (give the .npz x arrays as (N, C, H, W))")
    layers = parse_cnn(spec) if spec else layer_list(classes=classes)
    if layers[-1][1] != classes:
        raise ValueError(f"cnn spec {spec!r}: the last dense layer has {layers[-1][1]} outputs, "
                         f"the data {classes} classes")
    return layers


def load_builder(ref: str):
    """The function ``FUNCTION`` of ``FILE.py:FUNCTION`` (the file imported as a module)."""
    path, _, name = ref.rpartition(":")
    p = Path(path)
    if not p.exists():
        raise FileNotFoundError(f"--arch {ref}: {p} not found")
    spec = importlib.util.spec_from_file_location(f"softfloor_user_{p.stem}", p)
    mod = importlib.util.module_from_spec(spec)
    try:
        spec.loader.exec_module(mod)
    except Exception as e:
        raise ValueError(f"--arch {ref}: importing {p} failed: {type(e).__name__}: {e}") from None
    fn = getattr(mod, name, None)
    if not callable(fn):
        raise ValueError(f"--arch {ref}: {p} has no function {name!r}")
    return fn


def build_custom(ref: str, options: dict):
    """Call a user's builder with the options its signature names (``weight_bits``,
    ``act_bits``, ``input_bits``, ``surrogate``, ``input_shape``, ``classes``, ...); it must
    return a network of softfloor.nn layers starting with a QuantInput."""
    from torch import nn

    fn = load_builder(ref)
    params = inspect.signature(fn).parameters
    takes_all = any(p.kind is p.VAR_KEYWORD for p in params.values())
    model = fn(**{k: v for k, v in options.items() if takes_all or k in params})
    if not isinstance(model, nn.Module):
        raise ValueError(f"--arch {ref}: returned {type(model).__name__}, not an nn.Module")
    from softfloor.loop import input_layer
    try:
        qin = input_layer(model)
    except ValueError:
        raise ValueError(f"--arch {ref}: the network must start with a softfloor.nn.QuantInput"
                         ) from None
    if qin.shape is None:
        qin.shape = tuple(options["input_shape"])
    return model


def float_twin(model):
    """The float network of a chain of softfloor.nn layers: the same widths with float layers
    (``nn.Linear``, ``nn.Conv2d``, ReLU, Hardtanh, Sigmoid, Tanh, max-pools, flatten), on the
    real inputs (the QuantInput dropped), float32."""
    from torch import nn

    from softfloor.cnn import QuantConv2d
    from softfloor.nn.graph import Float32, InputView, chain
    from softfloor.nn.layers import (Flatten, QuantInput, QuantMaxPool2d, QuantSigmoid,
                                     QuantTanh)
    from softfloor.quant import QuantHardTanh, QuantLinear, QuantReLU
    mods, shape = [], None
    for _, m in chain(model):
        if isinstance(m, QuantInput):
            shape = tuple(m.shape)
            mods.append(InputView(shape))
        elif isinstance(m, InputView):
            continue
        elif isinstance(m, QuantLinear):
            mods.append(nn.Linear(m.in_features, m.out_features))
        elif isinstance(m, QuantConv2d):
            mods.append(nn.Conv2d(m.in_channels, m.out_channels, m.kernel, stride=m.stride,
                                  padding=m.padding))
        elif isinstance(m, QuantHardTanh):
            mods.append(nn.Hardtanh())
        elif isinstance(m, QuantReLU):
            mods.append(nn.ReLU())
        elif isinstance(m, QuantSigmoid):
            mods.append(nn.Sigmoid())
        elif isinstance(m, QuantTanh):
            mods.append(nn.Tanh())
        elif isinstance(m, QuantMaxPool2d):
            mods.append(nn.MaxPool2d(m.kernel, m.stride))
        elif isinstance(m, Flatten):
            mods.append(nn.Flatten())
    twin = nn.Sequential(Float32(), *mods)
    twin.input_shape = shape
    twin.classes = int([x for x in mods if hasattr(x, "out_features")][-1].out_features)
    return twin

