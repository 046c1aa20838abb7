"""``softfloor.fit``: the tuned training loop for any network of :mod:`softfloor.nn` layers.

What :func:`fit` does, in order (the same loop as :func:`softfloor.train.train_qat`):

1. calibrates the network's :class:`~softfloor.nn.layers.QuantInput` on the training split
   (its scale, or per-value thresholds), quantizes the inputs once, and holds out a stratified
   validation split of the training samples (or takes the data's own);
2. calibrates every scale layer by layer on the training codes (:func:`softfloor.nn.calibrate`);
3. trains with Adam, a cosine learning-rate decay over the steps and the surrogates' annealing
   schedule (sharpness rising geometrically, then a hard phase that trains exactly the exported
   network, BatchNorm statistics frozen), the defaults of
   :class:`~softfloor.train.TrainConfig` for the network's narrowest widths;
4. returns the network hard-quantized, in eval mode, with its accuracies (validation and
   test) and a check that the exported integer model reproduces it on the test split.

One CPU thread and the seed's own random generators: deterministic for a seed. A user's own
loop works as well: calibrate (:func:`softfloor.nn.calibrate`), then any optimiser;
:func:`softfloor.nn.set_surrogate` drives the annealing.
"""
from __future__ import annotations

import time

import numpy as np
import torch
from torch import nn

from softfloor import arith, golden
from softfloor.nn.graph import calibrate, chain, hard_forward_codes, set_surrogate
from softfloor.nn.layers import QuantInput
from softfloor.nn.tensor import QuantTensor
from softfloor.quant import QuantReLU, pact_penalty


class FusedMLP(nn.Module):
    """A user's MLP chain (QuantInput, then QuantLinear/QuantReLU pairs, a QuantLinear) trained
    by the fused whole-network step of :class:`~softfloor.models.QuantMLP` over the same
    layers: the same values as the layers composed, a fraction of the time."""

    def __init__(self, qin: QuantInput, mlp, augment=None):
        super().__init__()
        self.qin, self.mlp, self.augment = qin, mlp, augment

    def forward(self, x):
        if isinstance(x, QuantTensor) or self.qin.mode == "learned":
            x = self.qin(x).value  # learned thresholds: their gradient flows through
            if self.augment is not None and self.training:
                x = self.augment(x.reshape(x.shape[0], -1))  # straight through to them
        return self.mlp(x.reshape(x.shape[0], -1))


def fused(model: nn.Module, qin: QuantInput):
    """:class:`FusedMLP` of ``model`` when its chain is an MLP the fused step runs, else None."""
    from softfloor.models import QuantMLP
    from softfloor.quant import QuantLinear
    layers = [m for _, m in chain(model)]
    layers = layers[layers.index(qin) + 1:]
    lin = [m for m in layers if isinstance(m, QuantLinear)]
    acts = [m for m in layers if isinstance(m, QuantReLU)]
    if qin.signed or len(lin) + len(acts) != len(layers) \
            or any(not isinstance(m, QuantLinear) for m in layers[0::2]) \
            or any(not isinstance(m, QuantReLU) for m in layers[1::2]):
        return None
    mlp = QuantMLP.of_layers(lin, acts, qin.bits)
    return None if mlp is None else FusedMLP(qin, mlp)


class CodesIn(nn.Module):
    """``model`` fed pre-quantized input codes (times ``2**exp``, as plain tensors): wraps each
    batch as the QuantTensor its QuantInput would make, returns real outputs."""

    def __init__(self, model: nn.Module, qin: QuantInput):
        super().__init__()
        self.model, self.qin = model, qin

    def forward(self, x):
        shape = (x.shape[0],) + tuple(self.qin.shape)
        q = QuantTensor(x.reshape(shape), exp=self.qin.exp, lo=self.qin.lo, hi=self.qin.hi)
        out = self.model(q)
        return out.real() if isinstance(out, QuantTensor) else out


def input_layer(model: nn.Module) -> QuantInput:
    """The network's QuantInput (its first layer), or a ValueError saying what to do."""
    from softfloor.nn.graph import InputView
    layers = chain(model)
    view = None
    if layers and isinstance(layers[0][1], InputView):
        view, layers = layers[0][1], layers[1:]
    first = layers[0][1] if layers else None
    if isinstance(first, QuantInput) and view is not None and first.shape is None:
        first.shape = view.shape   # the network views its flat inputs as images
    if not isinstance(first, QuantInput):
        raise ValueError(f"{type(model).__name__}: softfloor.fit needs a network that starts "
                         f"with a softfloor.nn.QuantInput (real inputs to codes)")
    return first


def widths(model: nn.Module) -> tuple[int, int]:
    """The narrowest weight and activation widths of the network (they choose the defaults)."""
    wb = [m.wq.bits for m in model.modules() if hasattr(m, "wq")] or [8]
    ab = [m.bits for m in model.modules() if isinstance(m, QuantReLU)] or [8]
    return min(wb), min(ab)


def surrogate_name(model: nn.Module) -> str:
    sur = [m.surrogate.name for m in model.modules() if isinstance(m, QuantReLU)]
    return sur[0] if sur else "ste"


def as_split(data, qin: QuantInput, val: float, seed: int):
    """``(x_train, y_train, x_val, y_val, x_test, y_test, name)`` from a data set name or
    ``.npz`` path, a :class:`~softfloor.data.DigitsSplit`, ``(x, y)`` or ``(x_train, y_train,
    x_test, y_test)``; the validation part held out of the training samples (stratified,
    ``random_state=seed``) unless the data has its own."""
    from sklearn.model_selection import train_test_split

    from softfloor.data import DigitsSplit, load_split
    if isinstance(data, str):
        data = load_split(data)  # its real inputs: the QuantInput makes the codes
    if isinstance(data, DigitsSplit):
        shape = data.shape
        arrays = (data.x_train, data.y_train, data.x_val, data.y_val, data.x_test, data.y_test)
        name = data.name
    else:
        data = tuple(np.asarray(a) for a in data)
        if len(data) not in (2, 4):
            raise ValueError("data: expected a data set name, a split, (x, y) or (x_train, "
                             "y_train, x_test, y_test)")
        shape = data[0].shape[1:]
        arrays = (data[0], data[1], None, None, *(data[2:] if len(data) == 4 else (None, None)))
        name = "arrays"
    x_tr, y_tr, x_va, y_va, x_te, y_te = arrays
    x_tr = np.asarray(x_tr, dtype=np.float64).reshape(len(x_tr), -1)
    if x_va is None and val:
        idx = np.arange(len(y_tr))
        tr, va = train_test_split(idx, test_size=val, stratify=y_tr, random_state=seed)
        x_tr, x_va, y_tr, y_va = x_tr[tr], x_tr[va], y_tr[tr], y_tr[va]
    if qin.shape is None:
        qin.shape = tuple(int(s) for s in shape)
    return x_tr, np.asarray(y_tr), x_va, y_va, x_te, y_te, name


def fit(model: nn.Module, data, epochs: int = 60, *, lr: float | None = None,
        batch_size: int = 64, seed: int = 0, val: float = 0.2, k_start: float | None = None,
        k_end: float | None = None, hard_fraction: float = 0.25,
        lr_schedule: str | None = None, weight_decay: float = 0.0, progress=None):
    """Train a network of softfloor.nn layers with the tuned loop (see the module docstring).

    Parameters
    ----------
    model : nn.Module
        Starts with a :class:`~softfloor.nn.layers.QuantInput`; any chain :func:`softfloor.export`
        accepts.
    data : str, DigitsSplit or tuple
        ``"digits"``, ``"mnist5k"``, an ``.npz`` path, a split, ``(x, y)`` or ``(x_train,
        y_train, x_test, y_test)`` of real inputs and integer labels.
    epochs, lr, batch_size, seed, weight_decay
        ``lr`` None: :attr:`softfloor.train.TrainConfig.learning_rate` for the network's
        narrowest weight and activation widths.
    val : float
        Fraction of the training samples held out for validation (0: none) when the data has
        no validation split of its own.
    k_start, k_end, hard_fraction
        The annealing schedule (None: the first activation surrogate's default sharpness).
    lr_schedule : str, optional
        ``"cosine"`` (default) or ``"flat_cosine"``.
    progress : callable(epoch, epochs, info), optional

    Returns
    -------
    softfloor.train.TrainResult
        The hard-quantized model (eval mode), a config recording the options, ``accuracy``
        (``val``, ``test`` when there is a test split, ``bit_exact``), the history and the
        input spec.
    """
    from softfloor.train import TrainConfig
    qin = input_layer(model)
    x_tr, y_tr, x_va, y_va, x_te, y_te, _ = as_split(data, qin, val, seed)
    wb, ab = widths(model)
    # an MLP chain takes the digits MLP's tuned defaults (Adam's beta1, the learning-rate decay,
    # the 1-bit activations' gradient window, the input-code noise of 1-bit activations)
    arch = "mlp" if fused(model, qin) is not None else "custom"
    cfg = TrainConfig(arch=arch, weight_bits=wb, act_bits=ab, epochs=epochs, seed=seed,
                      lr=lr, batch_size=batch_size, surrogate=surrogate_name(model),
                      k_start=k_start, k_end=k_end, hard_fraction=hard_fraction,
                      lr_schedule=lr_schedule, weight_decay=weight_decay,
                      input_bits=qin.bits, batchnorm=False)
    if not qin.calibrated:
        qin.calibrate(x_tr.reshape((len(x_tr),) + qin.shape), y_tr)
    for act in model.modules():  # layers left at the default gradient window take the tuned one
        if isinstance(act, QuantReLU) and act.bits == 1 and act.binary_grad == "box":
            act.binary_grad = cfg.binary_grad
    return train_network(model, qin, cfg, x_tr, y_tr, {"val": (x_va, y_va),
                                                        "test": (x_te, y_te)}, progress)


def train_network(model: nn.Module, qin: QuantInput, cfg, x_tr, y_tr, evals: dict,
                  progress=None):
    """The loop of :func:`fit` on real training inputs ``x_tr`` (flat rows) quantized by
    ``qin``; ``evals`` maps names to ``(x, y)`` (None skipped) measured at the end."""
    from softfloor.train import TrainResult, _fit, _one_thread
    t0 = time.perf_counter()
    with _one_thread():
        torch.manual_seed(cfg.seed)
        learned = qin.mode == "learned"
        fast = fused(model, qin)
        if learned:  # the thresholds train through autograd: the model sees real inputs
            x = torch.as_tensor(x_tr).reshape((len(x_tr),) + qin.shape)
            net = model if fast is None else fast
            calibrate(model, x)
        else:
            codes = qin.quantize(x_tr)
            x = torch.as_tensor(codes, dtype=torch.float32) * 2.0 ** qin.exp
            net = CodesIn(model, qin) if fast is None else fast
            calibrate(model, qin.codes(torch.as_tensor(codes).reshape((len(codes),) +
                                                                      qin.shape)))
        y = torch.as_tensor(np.asarray(y_tr, dtype=np.int64))
        schedule = cfg.schedule()

        def on_epoch(epoch):
            k, hard = schedule.at(epoch, cfg.epochs)
            set_surrogate(model, k, hard)
            return {"k": k, "hard": hard}

        acts = [m for m in model.modules() if isinstance(m, QuantReLU)]
        penalty = (lambda: pact_penalty(acts, cfg.pact_decay)) \
            if any(a.surrogate.scale_grad == "pact" for a in acts) and cfg.pact_decay else None
        times: list = []
        # the config's input-code augmentation: on the batches of codes, or after the learned
        # thresholds (the fused MLP; a gradient straight through to them)
        augment = augmenter(cfg, 2.0 ** qin.exp, qin.lo, qin.hi)
        if learned and isinstance(net, FusedMLP):
            net.augment, augment = augment, None
        elif learned:
            augment = None
        # the fused step's parameters as one flat tensor: one Adam update instead of one per
        # parameter, element for element the same arithmetic
        flat = fast.mlp.flatten_parameters() if fast is not None else None
        params = list(model.parameters()) if flat is None else \
            [flat] + [p for p in qin.parameters()]
        try:
            history = _fit(net, params, x, y, cfg, on_epoch, progress, augment=augment,
                           penalty=penalty, epoch_times=times)
        finally:
            if flat is not None:
                fast.mlp.unflatten_parameters()
        set_surrogate(model, schedule.k_end, True)
        model.eval()
        acc = accuracies(model, qin, evals)
    return TrainResult(model, cfg, acc, history, time.perf_counter() - t0, qin.spec(), times)


def augmenter(cfg, step: float, lo: int, hi: int):
    """The per-batch input-code augmentation of ``cfg`` for codes ``lo..hi`` times ``step``
    (None without one): noise alone through :func:`softfloor.data.code_noise` (a quarter of
    the random draws of :func:`softfloor.data.augment_codes`, which shifts take), seeded with
    ``AUGMENT_SEED + seed``."""
    from softfloor.data import code_noise
    from softfloor.train import AUGMENT_SEED, _augmenter
    shift, noise = cfg.augment_options
    if shift or not noise:
        return _augmenter(cfg, step, hi * step, lo * step)
    gen = torch.Generator().manual_seed(AUGMENT_SEED + cfg.seed)
    return lambda xb: code_noise(xb, noise, step, lo * step, hi * step, gen)


def accuracies(model: nn.Module, qin: QuantInput, evals: dict) -> dict:
    """Hard-quantized accuracy on each ``(x, y)`` of ``evals`` (argmax of the integer output
    codes), and ``bit_exact``: the exported integer model reproduces the last one's codes."""
    from softfloor.nn.exporter import export
    acc = {}
    last = None
    for name, (x, y) in evals.items():
        if x is None:
            continue
        xr = np.asarray(x, dtype=np.float64).reshape((len(x),) + qin.shape)
        codes = hard_forward_codes(model, torch.as_tensor(xr))
        acc[name] = float(np.mean(arith.argmax_first(codes) == np.asarray(y)))
        last = (xr, codes)
    if last is not None:
        m = export(model)
        acc["bit_exact"] = bool(np.array_equal(
            golden.run(m, m.input.quantize(last[0].reshape(len(last[0]), -1))), last[1]))
    return acc


def fit_float(model: nn.Module, data, cfg, progress=None):
    """Train a float network (e.g. :func:`softfloor.zoo.float_twin`) on the real inputs with the
    loop and hyperparameters of ``cfg`` (a quantized run's config: the same optimiser, learning
    rate and schedule, epochs, batches and seed); returns a TrainResult with its test
    accuracy."""
    from softfloor.train import TrainResult, _fit, _one_thread
    x_tr, y_tr = np.asarray(data[0], dtype=np.float32), np.asarray(data[1], dtype=np.int64)
    t0 = time.perf_counter()
    with _one_thread():
        torch.manual_seed(cfg.seed)
        x = torch.as_tensor(x_tr.reshape(len(x_tr), -1))
        times: list = []
        history = _fit(model, list(model.parameters()), x, torch.as_tensor(y_tr), cfg,
                       lambda epoch: {}, progress, epoch_times=times)
        model.eval()
        acc = {}
        if len(data) == 4:
            with torch.no_grad():
                xt = torch.as_tensor(np.asarray(data[2], dtype=np.float32).reshape(len(data[2]), -1))
                acc["test"] = float((model(xt).argmax(1).numpy() == np.asarray(data[3])).mean())
    return TrainResult(model, cfg, acc, history, time.perf_counter() - t0, None, times)


def epoch_seconds(result) -> float:
    """The median epoch CPU time of a run (seconds)."""
    times = result.epoch_seconds
    return float(np.median(times)) if times else float("nan")
