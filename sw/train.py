"""Quantization-aware training of the digits MLP, and the hard-quantized integer forward.

:func:`train_qat` trains a :class:`~softfloor.models.QuantMLP` with Adam and a cosine learning
rate, while an :class:`~softfloor.surrogates.AnnealSchedule` raises the surrogate sharpness
``k`` and ends in a hard phase: the last epochs use the exact hard rounding in the forward pass,
so the trained model *is* the hard-quantized model. :func:`hard_codes` runs that model on
integer input codes with integer arithmetic (torch int64, the rules of :mod:`softfloor.arith`)
and is what the golden model of the exported file must reproduce bit for bit.

Deterministic for a seed: the run uses one CPU thread and its own random generators.
"""
from __future__ import annotations

import contextlib
import io
import math
import time
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F

from . import arith, cnn, input_thresholds
from .data import DigitsSplit, augment_codes, check_input_bits, check_input_quant, load_split
from .cnn import FloatCNN, QuantCNN
from .artifacts import atomic_write_bytes
from .intmodel import InputSpec
from .models import SIZES, FloatMLP, QuantMLP, check_activation, check_free_scales, int_dense
from .quant import PACT_DECAY, check_binary_grad, check_bits, check_scales, pact_penalty
from .surrogates import AnnealSchedule, check_surrogate, default_k

Progress = Callable[[int, int, dict], None]

#: Network architectures: the MLP (``sizes``), the CNN (:mod:`softfloor.cnn`; ``layers`` a
#: layer spec, :func:`softfloor.zoo.parse_cnn`) and a user's builder (``layers`` is
#: ``FILE.py:FUNCTION``, :func:`softfloor.zoo.build_custom`).
ARCHS = ("mlp", "cnn", "custom")

#: Adam's implementation switch (the same arithmetic either way; float and QAT runs both use
#: it): the single-tensor loop, PyTorch's default on the CPU, the faster one here for the
#: float MLP's six parameters and for QAT's one flat parameter
#: (:meth:`~softfloor.models.QuantMLP.flatten_parameters`; ``docs/experiments.md``).
ADAM_IMPL = {"foreach": False}
#: Learning-rate decays (:func:`lr_factor`, ``TrainConfig.lr_schedule``).
LR_SCHEDULES = ("cosine", "flat_cosine")


#: Each option left unset (None) and the rule it resolves by (the rules are
#: :class:`TrainConfig`'s properties; ``softfloor train --help`` shows them and the table of the
#: resolved defaults; why each rule: ``docs/experiments.md``, "Defaults per configuration").
DEFAULT_RULES = {
    "surrogate": "ste when the weights or activations have <= 2 bits, sigmoid above",
    "batchnorm": "MLP: on unless the activations are 1-bit; CNN: off",
    "lr": "1e-2 with 1-bit weights or activations, 2e-2 at 2 bits, 5e-3 above",
    "lr_schedule": "flat-cosine for the MLP w1a1 at a 1-bit input with the STE, else cosine",
    "binary_act_grad": "triangle for the MLP w1a1 at a 1-bit input with the STE, else box",
    "augment_noise": "MLP with 1-bit activations: 0.05 at a 1-bit input, 0.3 wider; else 0",
    "augment_shift": "0",
    "input_quant": "learned for the MLP at a 1-bit input, else global",
    "beta1": "0.7 for the MLP with 1-bit activations and a 1-bit input, else 0.9",
    "k_start/k_end": "the surrogate's default_k",
}


@dataclass
class TrainConfig:
    """Everything a training run depends on.

    Options left unset resolve per configuration (weight, activation and input bits, arch) by
    :data:`DEFAULT_RULES`: ``surrogate`` in ``__post_init__`` (:attr:`default_surrogate`), the
    others by properties (:attr:`use_batchnorm`, :attr:`learning_rate`,
    :attr:`learning_rate_schedule`, :attr:`binary_grad`, :attr:`augment_options`,
    :attr:`input_quantizer`, :attr:`adam_betas`, :meth:`schedule`); :func:`config_dict` gives
    the resolved values. Each rule is the best measured on validation folds for its
    configuration (``docs/experiments.md``).

    The surrogate anneals its sharpness ``k`` geometrically from ``k_start`` to ``k_end`` (the
    surrogate's ``default_k`` when unset), then the last ``hard_fraction`` of the epochs train
    with the exact hard rounding in the forward pass and the surrogate's gradient in the
    backward pass (:class:`~softfloor.surrogates.AnnealSchedule`). With ``surrogate="pact"``
    the loss adds ``pact_decay * sum(alpha**2)`` over the clip levels
    (:func:`softfloor.quant.pact_penalty`; 0 turns it off).

    ``first_weight_bits`` widens the first layer's weights only (the usual exception of binary
    networks); every other default still resolves from ``weight_bits``.
    """
    weight_bits: int = 4
    act_bits: int = 4
    input_bits: int | None = None     # None: same as act_bits
    first_weight_bits: int | None = None  # None: weight_bits (the first layer's weight width)
    input_quant: str | None = None    # None: per configuration (input_quantizer)
    surrogate: str | None = None       # None: per configuration (default_surrogate)
    hard_grad: str = "smooth"          # sigmoid only: gradient in the hard phase
    k_start: float | None = None       # None: the surrogate's default_k
    k_end: float | None = None
    hard_fraction: float = 0.25
    batchnorm: bool | None = None      # None: per configuration (use_batchnorm)
    epochs: int = 60
    seed: int = 0
    lr: float | None = None            # None: per configuration (learning_rate)
    beta1: float | None = None         # None: Adam's beta1 per configuration (adam_betas)
    weight_decay: float = 0.0
    batch_size: int = 64
    bias_bits: int = 16
    sizes: tuple = SIZES
    arch: str = "mlp"                  # "mlp" or "cnn" (softfloor.cnn.QuantCNN)
    per_channel: bool = False          # per-output-channel weight scales (not the last layer)
    activation: str = "relu"           # "relu" (unsigned codes) or "hardtanh" (signed, >= 2 bits)
    scales: str = "po2"                # "po2" (shift-only requant) or "free" (multiplier + shift)
    augment_shift: int | None = None   # None: per configuration (augment_options)
    augment_noise: float | None = None
    pact_decay: float = PACT_DECAY     # surrogate "pact": L2 weight of the clip levels
    lr_schedule: str | None = None     # None: per configuration (learning_rate_schedule)
    binary_act_grad: str | None = None  # None: per configuration (binary_grad)
    data: str = "digits"               # "digits", "mnist5k" or a path to an .npz data set
    layers: str | None = None          # cnn: a layer spec; custom: FILE.py:FUNCTION

    def __post_init__(self):
        if self.arch not in ARCHS:
            raise ValueError(f"arch must be one of {', '.join(ARCHS)}, got {self.arch!r}")
        _check_arch_layers(self)
        if self.arch == "cnn" and self.batchnorm and self.scales == "free":
            raise ValueError("batchnorm with scales 'free' is not implemented for arch 'cnn'; "
                             "use scales 'po2' (BatchNorm folded into the convolutions)")
        check_bits("weight_bits", self.weight_bits)
        check_bits("act_bits", self.act_bits)
        if self.first_weight_bits is not None:
            check_bits("first_weight_bits", self.first_weight_bits)
        if self.input_bits is not None:
            check_input_bits(self.input_bits)
        if self.input_quant is not None:
            check_input_quant(self.input_quant, self.in_bits)
        self._surrogate_defaulted = self.surrogate is None
        if self.surrogate is None:
            self.surrogate = self.default_surrogate
        check_surrogate(self.surrogate)
        check_activation(self.activation)
        if self.activation == "hardtanh" and self.act_bits == 1:
            raise ValueError(
                "act_bits 1 is not supported with activation 'hardtanh': a signed 1-bit code is "
                "{-1, 0}; use act_bits >= 2, or activation 'relu' ({0, 1} codes, with BatchNorm "
                "as an integer threshold)")
        if check_scales(self.scales) == "free":
            check_free_scales(self.surrogate, self.use_batchnorm and self.act_bits == 1)
        if not (isinstance(self.epochs, int) and self.epochs >= 1):
            raise ValueError(f"epochs must be a positive integer, got {self.epochs!r}")
        if not (isinstance(self.batch_size, int) and self.batch_size >= 1):
            raise ValueError(f"batch_size must be a positive integer, got {self.batch_size!r}")
        self.schedule()  # validates k_start, k_end, hard_fraction
        if self.beta1 is not None and (isinstance(self.beta1, bool)
                                       or not isinstance(self.beta1, (int, float))
                                       or not 0.0 <= self.beta1 < 1.0):
            raise ValueError(f"beta1 (Adam's first-moment decay) must be in [0, 1), "
                             f"got {self.beta1!r}")
        if isinstance(self.pact_decay, bool) or not isinstance(self.pact_decay, (int, float)) \
                or not 0.0 <= self.pact_decay < math.inf:
            raise ValueError(f"pact_decay (PACT's L2 weight of its clip levels) must be a finite "
                             f"number >= 0, got {self.pact_decay!r}")
        if self.lr_schedule is not None:
            check_lr_schedule(self.lr_schedule)
        check_binary_grad(self.binary_grad, self.act_bits)
        shift, noise = self.augment_options
        if isinstance(shift, bool) or not isinstance(shift, int) or not 0 <= shift < 8:
            raise ValueError(f"augment_shift must be an integer from 0 to 7, got {shift!r}")
        if isinstance(noise, bool) or not isinstance(noise, (int, float)) \
                or not 0.0 <= noise <= 1.0:
            raise ValueError(f"augment_noise must be a probability in [0, 1], got {noise!r}")

    @property
    def in_bits(self) -> int:
        """The input code width actually used."""
        return self.act_bits if self.input_bits is None else self.input_bits

    @property
    def first_bits(self) -> int:
        """The first layer's weight width actually used (``first_weight_bits``, else
        ``weight_bits``). The other defaults resolve from ``weight_bits``."""
        return self.weight_bits if self.first_weight_bits is None else self.first_weight_bits

    @property
    def default_surrogate(self) -> str:
        """The surrogate when ``surrogate`` is unset (resolved in ``__post_init__``): ``"ste"``
        when the weights or the activations have 1 or 2 bits, ``"sigmoid"`` otherwise (MLP and
        CNN)."""
        return "ste" if min(self.weight_bits, self.act_bits) <= 2 else "sigmoid"

    @property
    def input_quantizer(self) -> str:
        """How pixels become input codes (:data:`softfloor.data.INPUT_QUANTS`): ``input_quant``
        if set, else ``"learned"`` for the MLP with a 1-bit input (one threshold per pixel,
        calibrated on the training samples, :func:`softfloor.data.mi_thresholds`, then trained
        with the network, :mod:`softfloor.input_thresholds`), else ``"global"``."""
        if self.input_quant is not None:
            return self.input_quant
        return "learned" if self.arch == "mlp" and self.in_bits == 1 else "global"

    @property
    def learning_rate(self) -> float:
        """Peak Adam learning rate: ``lr`` if set, else 1e-2 when the weights or activations are
        1-bit, 2e-2 when they are 2-bit, 5e-3 otherwise."""
        if self.lr is not None:
            return float(self.lr)
        if self.weight_bits == 1 or self.act_bits == 1:
            return 1e-2
        return 2e-2 if min(self.weight_bits, self.act_bits) == 2 else 5e-3

    @property
    def adam_betas(self) -> tuple[float, float]:
        """Adam's ``(beta1, beta2)``: ``beta1`` if set, else 0.7 for the MLP with 1-bit
        activations and a 1-bit input, PyTorch's 0.9 otherwise; ``beta2`` is 0.999."""
        if self.beta1 is not None:
            return float(self.beta1), 0.999
        one_bit = self.arch == "mlp" and self.act_bits == 1 and self.in_bits == 1
        return (0.7 if one_bit else 0.9), 0.999

    @property
    def _binary_ste_mlp(self) -> bool:
        """The all-binary MLP (w1a1) on a 1-bit input trained with the STE, where two defaults
        of their own apply (:attr:`learning_rate_schedule`, :attr:`binary_grad`)."""
        return (self.arch == "mlp" and self.weight_bits == 1 and self.act_bits == 1
                and self.in_bits == 1 and self.surrogate == "ste")

    @property
    def learning_rate_schedule(self) -> str:
        """How the learning rate decays over the steps (:func:`lr_factor`): ``lr_schedule``
        if set, else ``"flat_cosine"`` (the peak for the first half, then a cosine to 0) for
        the MLP w1a1 at a 1-bit input with the STE, ``"cosine"`` (to 0 over all steps)
        otherwise."""
        if self.lr_schedule is not None:
            return self.lr_schedule
        return "flat_cosine" if self._binary_ste_mlp else "cosine"

    @property
    def binary_grad(self) -> str:
        """The straight-through gradient's shape of the 1-bit activations
        (:data:`softfloor.quant.BINARY_GRADS`): ``binary_act_grad`` if set, else
        ``"triangle"`` for the MLP w1a1 at a 1-bit input with the STE, ``"box"`` (the clipped
        STE) otherwise."""
        if self.binary_act_grad is not None:
            return self.binary_act_grad
        return "triangle" if self._binary_ste_mlp else "box"

    @property
    def use_batchnorm(self) -> bool:
        """BatchNorm (folded before export) after the hidden layers: ``batchnorm`` if set, else
        on for the MLP unless the activations are 1-bit (folded into the weights and bias; an
        integer threshold before 1-bit activations trains worse than the plain bias); off for
        the CNN (folded into every convolution when set; it trains on the composed path at
        about 3x the float CNN's epoch time)."""
        if self.batchnorm is None:
            return self.arch == "mlp" and self.act_bits >= 2
        return bool(self.batchnorm)

    @property
    def augment_options(self) -> tuple[int, float]:
        """``(shift, noise)`` of the training augmentation (:func:`softfloor.data.augment_codes`):
        ``augment_shift``/``augment_noise`` if set, else the configuration's default: no
        shifts; code noise only for the MLP with 1-bit activations, ``0.05`` with a 1-bit input
        (a code flipped with probability 2.5 %), ``0.3`` with wider inputs (one step up or
        down)."""
        shift = 0 if self.augment_shift is None else self.augment_shift
        if self.augment_noise is not None:
            noise = self.augment_noise
        elif self.arch == "mlp" and self.act_bits == 1:
            noise = 0.05 if self.in_bits == 1 else 0.3
        else:
            noise = 0.0
        return shift, noise

    def schedule(self) -> AnnealSchedule:
        """The annealing schedule; unset ends come from the surrogate's ``default_k``."""
        k0, k1 = default_k(self.surrogate)
        return AnnealSchedule(k0 if self.k_start is None else self.k_start,
                              k1 if self.k_end is None else self.k_end, self.hard_fraction)

    def to_dict(self) -> dict:
        """Plain JSON-able dict; ``TrainConfig.from_dict(cfg.to_dict()) == cfg``."""
        return asdict(self) | {"sizes": list(self.sizes)}

    @classmethod
    def from_dict(cls, d: dict) -> "TrainConfig":
        """The config of ``to_dict()`` or of :func:`config_dict` (its ``defaults`` list is
        information only)."""
        names = {f.name for f in fields(cls)}
        d = {k: v for k, v in d.items() if k != "defaults"}
        unknown = sorted(set(d) - names)
        if unknown:
            raise ValueError(f"unknown training option(s) {', '.join(unknown)}; "
                             f"known: {', '.join(sorted(names))}")
        d = dict(d)
        if "sizes" in d:
            d["sizes"] = tuple(d["sizes"])
        return cls(**d)


#: The options :func:`config_dict` resolves from ``None``.
RESOLVED = ("input_bits", "first_weight_bits", "input_quant", "batchnorm", "lr", "beta1",
            "lr_schedule", "binary_act_grad", "augment_shift", "augment_noise", "k_start",
            "k_end")


def config_dict(cfg: TrainConfig) -> dict:
    """The config as a JSON-able dict, every option resolved (``input_bits``, ``batchnorm``,
    the learning rate and its schedule, ...); ``defaults`` lists the options that were unset
    and took their configuration's default (:data:`DEFAULT_RULES`)."""
    sch = cfg.schedule()
    shift, noise = cfg.augment_options
    defaults = (["surrogate"] if getattr(cfg, "_surrogate_defaulted", False) else []) + \
        [k for k in RESOLVED if getattr(cfg, k) is None]
    return cfg.to_dict() | {"defaults": defaults,"input_bits": cfg.in_bits, "first_weight_bits": cfg.first_bits,
                            "input_quant": cfg.input_quantizer,
                            "batchnorm": cfg.use_batchnorm,
                            "lr": cfg.learning_rate, "beta1": cfg.adam_betas[0],
                            "lr_schedule": cfg.learning_rate_schedule,
                            "binary_act_grad": cfg.binary_grad,
                            "augment_shift": shift,
                            "augment_noise": noise,
                            "k_start": sch.k_start, "k_end": sch.k_end}


@dataclass
class TrainResult:
    """A trained model with its configuration, accuracies, per-epoch history and wall time.

    ``accuracy`` holds ``test`` and ``train`` (for QAT: of the hard-quantized model, argmax of
    the integer output codes) and, for QAT, ``bit_exact`` (the float hard forward and
    :func:`hard_codes` agree on every test sample).

    ``input_spec`` (QAT) is the input quantizer whose codes the model was trained on and
    measured with: the split's, or, with ``input_quant="learned"``, the learned thresholds.
    It is what the model exports with (:func:`result_split` gives its codes of a split).
    """
    model: torch.nn.Module
    config: TrainConfig
    accuracy: dict
    history: list = field(default_factory=list)
    seconds: float = 0.0
    input_spec: InputSpec | None = None
    #: CPU time of each epoch (s, one thread), when measured.
    epoch_seconds: list = field(default_factory=list)

    @property
    def test_accuracy(self) -> float:
        return float(self.accuracy["test"])

    def __str__(self) -> str:
        acc = ", ".join(f"{k}={v:.4f}" if isinstance(v, float) else f"{k}={v}"
                        for k, v in self.accuracy.items())
        c = self.config
        first = "" if c.first_weight_bits is None else f"f{c.first_weight_bits}"
        return (f"TrainResult({type(self.model).__name__} w{c.weight_bits}{first}a{c.act_bits}"
                f"i{c.in_bits} {c.surrogate} seed={c.seed} epochs={c.epochs}: {acc}; "
                f"{self.seconds:.1f} s)")


@contextlib.contextmanager
def _one_thread():
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(n)


def _check_arch_layers(cfg: TrainConfig) -> None:
    """``layers`` fits ``arch``: a CNN layer spec for ``cnn`` (optional), ``FILE.py:FUNCTION``
    for ``custom`` (required), nothing for ``mlp`` (its widths are ``sizes``)."""
    from .zoo import parse_arch, parse_cnn
    if not isinstance(cfg.data, str) or not cfg.data:
        raise ValueError(f"data must be a data set name or an .npz path, got {cfg.data!r}")
    if cfg.arch == "cnn" and cfg.layers is not None:
        parse_cnn(cfg.layers)
    elif cfg.arch == "custom":  # None: a network given to softfloor.fit (no builder)
        if cfg.layers is not None:
            parse_arch(cfg.layers)
    elif cfg.layers is not None:
        raise ValueError(f"layers {cfg.layers!r} is for arch cnn or custom; the MLP's widths "
                         f"are sizes")


def digits_split(cfg: TrainConfig) -> DigitsSplit:
    """The split the config trains on: its ``data`` with ``cfg.in_bits`` codes made by its
    :attr:`~TrainConfig.input_quantizer` (per-pixel thresholds calibrated on the training
    samples)."""
    return load_split(cfg.data, cfg.in_bits, cfg.input_quantizer)


data_split = digits_split


def _check_split(cfg: TrainConfig, split: DigitsSplit) -> None:
    # learned thresholds start from the per-pixel split
    want = "per_pixel" if cfg.input_quantizer == "learned" else cfg.input_quantizer
    if split.input_bits != cfg.in_bits or split.input_quant != want:
        raise ValueError(
            f"the split's inputs are {split.input_bits}-bit codes ({split.input_quant} "
            f"quantizer) but the config wants input_bits={cfg.in_bits} ({cfg.input_quantizer}); "
            f"load the split with softfloor.train.digits_split(cfg) (load_digits_split("
            f"{cfg.in_bits}, {cfg.input_quantizer!r}))")


#: The augmentation's generator is seeded with ``AUGMENT_SEED + seed`` (its own stream: the
#: shuffling is the same with and without augmentation).
AUGMENT_SEED = 1_000_000


def _augmenter(cfg: TrainConfig, step: float, hi: float, lo: float = 0.0):
    """The per-batch augmentation of a run (None without one): inputs on the grid ``k * step``
    in ``[lo, hi]``, deterministic for the seed."""
    shift, noise = cfg.augment_options
    if not shift and not noise:
        return None
    gen = torch.Generator().manual_seed(AUGMENT_SEED + cfg.seed)
    return lambda xb: augment_codes(xb, shift, noise, step, hi, gen, lo)


class TrainingDiverged(ValueError):
    """A trained network that cannot be an integer model: its scales drifted so far apart
    that a requantization is outside the model file's limits (a shift above
    :data:`~softfloor.intmodel.MAX_SHIFT` or a multiplier of 2**31 or more). ``history`` and
    ``seconds`` are the run's."""

    def __init__(self, message: str, history=None, seconds: float | None = None):
        super().__init__(message)
        self.history, self.seconds = history or [], seconds


def check_integer_scales(model) -> None:
    """Raise :class:`TrainingDiverged` when a requantization of ``model``'s integer layers
    (:meth:`~softfloor.models.QuantMLP.integer_layers`) is outside the integer model file's
    limits, naming the layer and the limit (before anything computes with it)."""
    from .intmodel import MAX_MULTIPLIER, MAX_SHIFT
    for i, layer in enumerate(model.integer_layers(), 1):
        if layer.requant is None:
            continue
        shift, mult = layer.requant[0], layer.requant[4]
        top = lambda v: int(v.max()) if isinstance(v, torch.Tensor) else int(v)  # noqa: E731
        if top(mult) > MAX_MULTIPLIER or top(shift) > MAX_SHIFT:
            raise TrainingDiverged(
                f"training diverged: layer {i}'s requantization needs shift {top(shift)}, "
                f"multiplier 2**{top(mult).bit_length() - 1} (its scales drifted apart); an "
                f"integer model allows shifts up to {MAX_SHIFT} and multipliers below 2**31. "
                "Not exportable: try another surrogate (this one may not train at these "
                "widths), a lower lr or BatchNorm")


def check_lr_schedule(schedule: str) -> str:
    """``schedule`` if it is one of :data:`LR_SCHEDULES`, else ValueError."""
    if schedule not in LR_SCHEDULES:
        raise ValueError(f"lr_schedule must be one of {', '.join(LR_SCHEDULES)} (the lr "
                         f"schedule), got {schedule!r}")
    return schedule


def lr_factor(schedule: str, step: int, total: int) -> float:
    """The learning rate at ``step`` of ``total`` as a fraction of the peak: ``"cosine"``
    ``(1 + cos(pi t)) / 2`` with ``t = step / total``; ``"flat_cosine"`` 1 while ``t < 1/2``,
    then ``(1 + cos(pi (2 t - 1))) / 2``; 0 from ``total`` on."""
    step = min(step, total)
    if check_lr_schedule(schedule) == "cosine":
        return 0.5 * (1 + math.cos(math.pi * step / total))
    t = step / total                                      # flat_cosine
    return 1.0 if t < 0.5 else 0.5 * (1 + math.cos(math.pi * (2 * t - 1)))


def _fit(model, params, x, y, cfg: TrainConfig, on_epoch, progress: Progress | None,
         augment=None, inputs=None, penalty=None, epoch_times: list | None = None):
    """Adam + per-step cosine decay over shuffled mini-batches; returns the history.
    ``augment`` (optional) maps each input batch to the one trained on. ``inputs`` (optional,
    a :class:`~softfloor.input_thresholds.LearnedThresholds`) makes the batches instead of
    ``x`` and is updated after every step from their gradient, with the same cosine
    factor. ``penalty`` (optional, a callable) gives a regulariser added to every step's loss
    (the history's ``loss`` stays the cross entropy). Each epoch's entry also has ``acc``: the
    fraction of that epoch's training batches classified right, in training mode (soft
    surrogates, augmentation), not a test accuracy."""
    gen = torch.Generator().manual_seed(cfg.seed)
    opt = torch.optim.Adam(params, lr=cfg.learning_rate, betas=cfg.adam_betas,
                           weight_decay=cfg.weight_decay, **ADAM_IMPL)
    n = len(y)
    steps_per_epoch = math.ceil(n / cfg.batch_size)
    total = cfg.epochs * steps_per_epoch
    shape = cfg.learning_rate_schedule
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda step: lr_factor(shape, step, total))
    history = []
    for epoch in range(cfg.epochs):
        t_epoch = time.process_time()  # CPU time: a shared machine's load does not count
        info = on_epoch(epoch)
        model.train()
        perm = torch.randperm(n, generator=gen)
        loss_sum, correct = 0.0, 0
        for start in range(0, n, cfg.batch_size):
            idx = perm[start:start + cfg.batch_size]
            xb = x[idx] if inputs is None else inputs.batch(idx)
            if augment is not None:
                xb = augment(xb)
            if inputs is not None:
                xb.requires_grad_()
            logits = model(xb)
            ce = F.cross_entropy(logits, y[idx])
            reg = None if penalty is None else penalty()
            loss = ce if reg is None else ce + reg
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            if inputs is not None:
                inputs.update(xb.grad, sched.get_last_lr()[0] / cfg.learning_rate)
            loss_sum += float(ce.detach()) * len(idx)
            correct += int((logits.detach().argmax(1) == y[idx]).sum())
        info = {"loss": loss_sum / n, "acc": correct / n, "lr": sched.get_last_lr()[0]} | info
        if epoch_times is not None:
            epoch_times.append(time.process_time() - t_epoch)
        history.append({"epoch": epoch + 1} | info)
        if progress is not None:
            progress(epoch + 1, cfg.epochs, info)
    return history


def train_qat(cfg: TrainConfig, split: DigitsSplit, progress: Progress | None = None
              ) -> TrainResult:
    """Quantization-aware training; returns the model in its final, hard-quantized state.

    Parameters
    ----------
    cfg : TrainConfig
    split : DigitsSplit
        Must have been loaded with ``cfg.in_bits`` input bits and the config's input quantizer
        (:func:`digits_split`). With ``input_quant="learned"`` the thresholds train from the
        split's per-pixel ones; the accuracies are measured on the codes of the learned ones
        (``result.input_spec``).
    progress : callable(epoch, epochs, info), optional
        Called after every epoch (``epoch`` counts completed epochs, 1..epochs) with a dict of
        the mean loss, learning rate, sharpness ``k`` and ``hard``.
    """
    _check_split(cfg, split)
    if cfg.arch == "custom":
        return _train_custom(cfg, split, progress)
    t0 = time.perf_counter()
    with _one_thread():
        torch.manual_seed(cfg.seed)
        model = _build(cfg, "qat", split.shape, split.classes)
        x = torch.as_tensor(split.c_train, dtype=getattr(model, "dtype", torch.float64)) \
            * 2.0 ** model.input_exp
        y = torch.as_tensor(split.y_train)
        model.calibrate(x)
        schedule = cfg.schedule()

        def on_epoch(epoch):
            k, hard = schedule.at(epoch, cfg.epochs)
            model.set_surrogate(k, hard)
            return {"k": k, "hard": hard}

        step = 2.0 ** model.input_exp
        augment = _augmenter(cfg, step, ((1 << cfg.in_bits) - 1) * step)
        inputs = input_thresholds.LearnedThresholds(split, step, x.dtype) \
            if cfg.input_quantizer == "learned" else None
        flat = model.flatten_parameters() if isinstance(model, QuantMLP) else None
        try:
            acts = getattr(model, "acts", ())
            penalty = (lambda: pact_penalty(acts, cfg.pact_decay)) \
                if cfg.surrogate == "pact" and cfg.pact_decay else None
            history = _fit(model, model.parameters() if flat is None else [flat], x, y, cfg,
                           on_epoch, progress, augment, inputs, penalty)
        finally:
            if flat is not None:
                model.unflatten_parameters()
        if inputs is not None:
            split = split.requantized(inputs.input_spec())
            history[-1]["thresholds_moved"] = inputs.moved()
        model.set_surrogate(schedule.k_end, True)
        model.eval()
        try:
            check_integer_scales(model)
        except TrainingDiverged as e:
            raise TrainingDiverged(str(e), history, time.perf_counter() - t0) from None
        acc = {"test": quantized_accuracy(model, split.c_test, split.y_test),
               "train": quantized_accuracy(model, split.c_train, split.y_train)}
        acc["bit_exact"] = bool(np.array_equal(float_hard_codes(model, split.c_test),
                                               hard_codes(model, split.c_test)))
    return TrainResult(model, cfg, acc, history, time.perf_counter() - t0, split.input_spec)


def result_split(result: TrainResult, split: DigitsSplit) -> DigitsSplit:
    """``split``'s samples with the codes of the input quantizer ``result`` was trained with
    (``result.input_spec``; unchanged when it has none)."""
    spec = result.input_spec
    if spec is None or spec == split.input_spec:
        return split
    return split.requantized(spec)


def train_float(cfg: TrainConfig, split: DigitsSplit, progress: Progress | None = None
                ) -> TrainResult:
    """Train the float baseline (:class:`~softfloor.models.FloatMLP` or
    :class:`~softfloor.cnn.FloatCNN`) on the real inputs."""
    t0 = time.perf_counter()
    with _one_thread():
        torch.manual_seed(cfg.seed)
        model = _build(cfg, "float", split.shape, split.classes)
        x = torch.as_tensor(split.x_train, dtype=torch.float32)
        y = torch.as_tensor(split.y_train)
        # Real inputs pixel / 16 in [0, 1]: the same shifts, noise steps of one pixel level.
        history = _fit(model, model.parameters(), x, y, cfg, lambda epoch: {}, progress,
                       _augmenter(cfg, 1.0 / 16, 1.0))
        model.eval()
        with torch.no_grad():
            acc = {name: float((model(torch.as_tensor(xs)).argmax(1).numpy() == ys).mean())
                   for name, xs, ys in (("test", split.x_test, split.y_test),
                                        ("train", split.x_train, split.y_train))}
    return TrainResult(model, cfg, acc, history, time.perf_counter() - t0)


# ----------------------------------------------------------------------------------------------
# The hard-quantized forward on integer codes


def hard_codes(model: QuantMLP, codes, intermediates: bool = False):
    """Run integer input codes through the hard-quantized model with integer arithmetic.

    Mirrors the exported :class:`~softfloor.intmodel.IntModel` layer by layer
    (:meth:`~softfloor.models.QuantMLP.integer_layers`): per linear layer
    ``acc = x @ W.T + b`` (int64), then (except after the last) the requantization
    ``arith.requantize(acc, shift, "half_up", lo, hi, multiplier)`` (``[0, 2**act_bits - 1]``
    after ReLU, the signed range after hardtanh; a 1-bit
    activation after BatchNorm: shift 0, the BatchNorm threshold folded into the bias).

    Parameters
    ----------
    codes : int array (N, 64)
        Input codes.
    intermediates : bool
        Also return the codes after every integer op (as ``golden.run(..., intermediates=True)``).

    Returns
    -------
    int64 array (N, 10), or ``(outputs, per_layer)``.

    A :class:`~softfloor.cnn.QuantCNN` runs :func:`softfloor.cnn.hard_codes`.
    """
    if isinstance(model, QuantCNN):
        return cnn.hard_codes(model, codes, intermediates)
    if not isinstance(model, QuantMLP):  # any network of softfloor.nn layers: its export
        from . import golden
        from .nn.exporter import export
        return golden.run(export(model), np.asarray(codes), intermediates)
    x = torch.as_tensor(np.asarray(codes), dtype=torch.int64)
    per_layer = []
    for layer in model.integer_layers():
        x = int_dense(x, layer, per_layer)
    out = x.numpy().astype(np.int64)
    return (out, per_layer) if intermediates else out


@torch.no_grad()
def float_hard_codes(model: QuantMLP, codes) -> np.ndarray:
    """The float forward with hard rounding, divided by the output scale: integer codes.

    Every value is a dyadic rational computed exactly in the model's dtype
    (:meth:`~softfloor.models.QuantMLP.exact_dtype`), so this equals
    :func:`hard_codes`; raises if a result is not an integer (it would be a bug).
    """
    if not isinstance(model, (QuantMLP, QuantCNN)):  # any network of softfloor.nn layers
        from .loop import input_layer
        from .nn.graph import hard_forward_codes
        qin = input_layer(model)
        c = torch.as_tensor(np.asarray(codes))
        return hard_forward_codes(model, qin.codes(c.reshape((len(c),) + tuple(qin.shape))))
    hard = [a.surrogate.hard for a in model.acts]
    was_training = model.training
    model.eval()
    model.set_surrogate(model.acts[0].surrogate.k if model.acts else 1.0, True)
    try:
        x = torch.as_tensor(np.asarray(codes), dtype=torch.float64) * 2.0 ** model.input_exp
        if getattr(model, "scales", "po2") == "free":
            y = model.forward_free(x, codes=True)
        else:
            y = model(x) * 2.0 ** -model.output_exp
    finally:
        for a, h in zip(model.acts, hard):
            a.surrogate.hard = h
        model.train(was_training)
    q = torch.round(y)
    if not torch.equal(q, y):
        raise ArithmeticError("the float hard forward produced a non-integer output code")
    return q.to(torch.int64).numpy()


def quantized_accuracy(model: QuantMLP, codes, labels) -> float:
    """Accuracy of the hard-quantized model: argmax (first maximum) of the integer codes."""
    return float((arith.argmax_first(hard_codes(model, codes)) == np.asarray(labels)).mean())


# ----------------------------------------------------------------------------------------------
# Checkpoints


def _build(cfg: TrainConfig, kind: str, shape=None, classes: int | None = None
           ) -> torch.nn.Module:
    """The network of ``cfg`` (``kind`` ``"qat"`` or its ``"float"`` twin) for data with
    per-sample ``shape`` and ``classes`` classes (default: the digits')."""
    from . import zoo
    shape = tuple(shape) if shape is not None else (1, 8, 8)
    classes = classes or 10
    kw = {"hard_grad": cfg.hard_grad} if cfg.surrogate == "sigmoid" else None
    if cfg.arch == "custom":
        if cfg.layers is None:
            raise ValueError("this network was given to softfloor.fit, not built from "
                             "--arch FILE.py:FUNCTION: there is no builder to rebuild it from")
        model = zoo.build_custom(cfg.layers, custom_options(cfg, shape, classes))
        return zoo.float_twin(model) if kind == "float" else model
    if cfg.arch == "cnn":
        layers = zoo.cnn_layers(cfg.layers, shape, classes)
        if kind == "float":
            return FloatCNN(input_shape=shape, layers=layers)
        return QuantCNN(cfg.weight_bits, cfg.act_bits, cfg.in_bits, cfg.surrogate,
                        cfg.bias_bits, kw, per_channel=cfg.per_channel,
                        activation=cfg.activation, scales=cfg.scales,
                        batchnorm=cfg.use_batchnorm, first_weight_bits=cfg.first_weight_bits,
                        binary_act_grad=cfg.binary_grad, input_shape=shape, layers=layers)
    sizes = zoo.mlp_sizes(cfg.sizes, int(np.prod(shape)), classes, SIZES)
    if kind == "float":
        return FloatMLP(sizes)
    return QuantMLP(sizes, cfg.weight_bits, cfg.act_bits, cfg.in_bits, cfg.surrogate,
                    cfg.bias_bits, kw, batchnorm=cfg.use_batchnorm, per_channel=cfg.per_channel,
                    activation=cfg.activation, scales=cfg.scales,
                    first_weight_bits=cfg.first_weight_bits, binary_act_grad=cfg.binary_grad)


def custom_options(cfg: TrainConfig, shape, classes: int) -> dict:
    """What a user's builder may take (by name): the config's widths and options, the data's
    per-sample ``input_shape`` and ``classes``."""
    return {"weight_bits": cfg.weight_bits, "act_bits": cfg.act_bits, "input_bits": cfg.in_bits,
            "first_weight_bits": cfg.first_bits, "surrogate": cfg.surrogate,
            "batchnorm": cfg.use_batchnorm, "per_channel": cfg.per_channel,
            "scales": cfg.scales, "activation": cfg.activation, "input_shape": tuple(shape),
            "classes": classes, "bias_bits": cfg.bias_bits}


def _train_custom(cfg: TrainConfig, split: DigitsSplit, progress) -> TrainResult:
    """A user's builder (``--arch FILE.py:FUNCTION``) trained by the loop of
    :func:`softfloor.fit` on the split, its QuantInput taking the split's input quantizer."""
    from .loop import input_layer, train_network
    from .nn.layers import QuantInput
    torch.manual_seed(cfg.seed)
    model = _build(cfg, "qat", split.shape, split.classes)
    qin = input_layer(model)
    spec = split.input_spec
    if qin.bits != spec.bits or qin.signed != spec.signed:
        raise ValueError(f"--arch {cfg.layers}: its QuantInput has {qin.bits}-bit "
                         f"{'signed' if qin.signed else 'unsigned'} codes, the data's input "
                         f"quantizer {spec.bits}-bit {'signed' if spec.signed else 'unsigned'}; "
                         f"build it with QuantInput(input_bits)")
    set_input(qin, QuantInput.from_spec(spec, qin.exp, split.shape))
    evals = {"test": (split.x_test, split.y_test), "train": (split.x_train, split.y_train)}
    return train_network(model, qin, cfg, split.x_train, split.y_train, evals, progress)


def set_input(qin, src) -> None:
    """Make the QuantInput ``qin`` quantize as ``src`` does (its mode, scales and shape)."""
    qin.mode, qin.shape, qin.scale_ = src.mode, src.shape, src.scale_.clone()


def _data_shape(model) -> tuple:
    """The per-sample input shape a model was built for."""
    if hasattr(model, "input_shape"):
        return tuple(model.input_shape)
    if hasattr(model, "sizes"):
        return (model.sizes[0],)
    from .loop import input_layer
    try:
        return tuple(input_layer(model).shape)
    except ValueError:  # a float twin of a user's network
        return tuple(getattr(model, "input_shape", ()))


def _classes(model) -> int:
    if hasattr(model, "sizes"):
        return int(model.sizes[-1])
    if hasattr(model, "fc"):
        return int(model.fc.out_features)
    return int(getattr(model, "classes", 0)) or int(
        [m for m in model.modules() if hasattr(m, "out_features")][-1].out_features)


def save_checkpoint(result: TrainResult, path) -> Path:
    """Save a :class:`TrainResult` (config, weights, accuracies, history) atomically."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    kind = "float" if isinstance(result.model, (FloatMLP, FloatCNN)) else "qat"
    blob = {"format": "softfloor.checkpoint", "version": 1, "kind": kind,
            "config": result.config.to_dict(), "state_dict": result.model.state_dict(),
            "accuracy": dict(result.accuracy), "history": list(result.history),
            "seconds": float(result.seconds), "data_shape": list(_data_shape(result.model)),
            "classes": _classes(result.model)}
    if result.input_spec is not None:
        blob["input_spec"] = result.input_spec.to_dict()
    buf = io.BytesIO()
    torch.save(blob, buf)
    return atomic_write_bytes(path, buf.getvalue())


def load_checkpoint(path) -> TrainResult:
    """Load a checkpoint written by :func:`save_checkpoint`; the QAT model comes back hard,
    with the input quantizer it was trained with (checkpoints written before it was saved:
    the config's, :func:`digits_split`)."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path}: no such checkpoint; run the training stage first")
    try:
        blob = torch.load(path, map_location="cpu", weights_only=True)
        if not isinstance(blob, dict) or blob.get("format") != "softfloor.checkpoint":
            raise ValueError("not a softfloor checkpoint")
        cfg = TrainConfig.from_dict(blob["config"])
        model = _build(cfg, blob["kind"], blob.get("data_shape"), blob.get("classes"))
        model.load_state_dict(blob["state_dict"])
    except Exception as e:  # torch.load raises RuntimeError, UnpicklingError, EOFError, ...
        msg = " ".join(str(e).split())[:160] or type(e).__name__
        raise ValueError(f"{path}: truncated or not a softfloor checkpoint ({msg}); rerun the "
                         f"training stage") from None
    if blob["kind"] == "qat":
        from .nn.graph import set_surrogate
        set_surrogate(model, cfg.schedule().k_end, True)
    model.eval()
    spec = blob.get("input_spec")
    if spec is not None:
        spec = InputSpec.from_dict(spec, f"{path}: input_spec")
    elif blob["kind"] == "qat":
        if cfg.input_quantizer == "learned":
            raise ValueError(f"{path}: a checkpoint with learned input thresholds but no "
                             f"input_spec; train it again")
        spec = digits_split(cfg).input_spec
    return TrainResult(model, cfg, blob["accuracy"], blob["history"], blob["seconds"], spec)
