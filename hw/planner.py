"""Folding planner: PE x SIMD per dense layer for a device and an objective, before synthesis.

>>> from softfloor.hw import planner
>>> p = planner.plan(model, device="up5k", objective="throughput")      # doctest: +SKIP
>>> print(p)                                                            # doctest: +SKIP

A plan picks, per dense engine, ``pe`` (output rows per cycle) and ``simd`` (input columns per
cycle) so that the compute cycles ``ceil(rows/pe) * ceil(cols/simd)`` are balanced across layers,
and the estimated logic, RAM and DSP fit the device. Objectives:

* ``throughput``: the smallest initiation interval that fits (``budget`` of the logic cells, all
  RAM blocks and DSPs), then the fewest estimated logic cells;
* ``latency``: start from the throughput plan and keep unrolling the slowest layer while the
  design still fits (fully unrolled -- ``pe = rows``, ``simd = cols`` -- when the device allows).

Per-layer overrides (``{"fc1": (8, 4)}``, CLI ``--fold fc1=8x4``) are kept as given.

The resource model (:func:`estimate_engine`) counts the datapath the generator emits -- products,
adder trees, accumulators, hold register, requantizer lanes, gather register, control -- with
per-family coefficients fitted to Yosys 0.23 + nextpnr results (see ``tests/hw/test_planner.py``
and the ``hardware`` benchmark, which report estimate / synthesized ratios).
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field

import numpy as np

from ..intmodel import (ChannelRequant, CodeType, Conv2d, Dense, Flatten, IntModel, MaxPool2d,
                        MultiThreshold, Requant)
from .synth import DEVICES, get_device

__all__ = ["EngineSpec", "LayerPlan", "Plan", "UnsupportedLayerError", "engine_specs",
           "link_widths", "estimate_engine", "estimate_spec", "plan", "parse_fold",
           "OBJECTIVES", "DEFAULT_BUDGET", "DEFAULT_MIN_UTILISATION"]

OBJECTIVES = ("throughput", "latency")
#: Fraction of the device's logic cells a plan may use (RAM and DSP: all of them).
DEFAULT_BUDGET = 0.75
#: MAC-lane utilisation the throughput search aims for first (see :func:`plan`).
DEFAULT_MIN_UTILISATION = 0.9


class UnsupportedLayerError(ValueError):
    """A model layer has no hardware engine; the message names the layer and its op."""


#: Engine kinds folded PE x SIMD (a conv is a dense engine run once per output pixel).
FOLDED = ("dense", "conv")
#: Elementwise engines: they pass their stream width through.
ELEMENTWISE = ("requant", "threshold")
#: Most frame-memory read ports (window lanes) a conv/pool engine gets.
MAX_TAP_LANES = 8


@dataclass
class EngineSpec:
    """One engine before elaboration: what it computes and how it is folded.

    ``kind``: ``"dense"``, ``"conv"`` (``rows`` = output channels, ``cols`` = ``C*kh*kw``,
    run for each of ``pixels`` output pixels), ``"pool"`` (``rows`` = channels, ``cols`` =
    ``kh*kw``), ``"requant"`` or ``"threshold"`` (elementwise: ``rows`` = elements per sample).
    ``frame``/``order``: the input frame ``(C, H, W)`` and its element order on the stream
    (``"chw"``, ``"hwc"``) for conv/pool; ``channel_of``: the channel of each input element
    (elementwise engines).
    """
    kind: str
    names: list
    rows: int
    cols: int
    in_type: CodeType
    dense: Dense | None = None
    requant: object = None
    pe: int = 1
    simd: int = 1
    dsp: bool = False
    layer: object = None
    frame: tuple | None = None
    order: str = "flat"
    pixels: int = 1
    channel_of: list | None = None

    @property
    def name(self) -> str:
        return self.names[0]

    @property
    def folded(self) -> bool:
        return self.kind in FOLDED

    @property
    def folds(self) -> int:
        return math.ceil(self.cols / self.simd)

    @property
    def groups(self) -> int:
        return math.ceil(self.rows / self.pe)

    @property
    def tap_ept(self) -> int:
        """Window lanes of a conv (divides ``simd`` and ``cols``: the fewest that keep up with
        the MVU) or a pool (divides ``kh*kw``: as many as :data:`MAX_TAP_LANES` allows)."""
        if self.kind == "conv":
            ds = _divisors(math.gcd(self.simd, self.cols))
            ds = [d for d in ds if d <= MAX_TAP_LANES] or [1]
            keep = [d for d in ds if self.cols // d <= self.groups * self.folds]
            return keep[0] if keep else ds[-1]
        if self.kind == "pool":
            return max(d for d in _divisors(self.cols) if d <= MAX_TAP_LANES)
        return 1

    @property
    def in_elements(self) -> int:
        if self.kind in ("conv", "pool"):
            return self.frame[0] * self.frame[1] * self.frame[2]
        return self.cols if self.kind == "dense" else self.rows

    @property
    def out_elements(self) -> int:
        return self.pixels * self.rows if self.kind in ("conv", "pool") else self.rows

    @property
    def cycles(self) -> int:
        """Compute cycles per sample (the MVU's, the window's taps, or one per element)."""
        if self.kind == "dense":
            return self.groups * self.folds
        if self.kind == "conv":
            return self.pixels * max(self.groups * self.folds, self.cols // self.tap_ept)
        if self.kind == "pool":
            return self.pixels * self.rows * self.cols // self.tap_ept
        return self.rows

    @property
    def mac_units(self) -> int:
        return self.pe * self.simd if self.folded else 0

    def initiation_interval(self, w_in: int, w_out: int) -> int:
        """Cycles per sample of this engine alone, with ``w_in``/``w_out`` elements per transfer
        (the engines' own ``initiation_interval`` formulas)."""
        if self.kind == "dense":
            return max(self.cycles, self.cols // w_in, self.rows // w_out)
        if self.kind in ("conv", "pool"):
            from .window import RELEASE_DELAY, release_hazard
            L = self.layer
            taps = self.pixels * self.cols // self.tap_ept
            if release_hazard(self.frame, self.order, L.kernel, L.stride,
                              getattr(L, "padding", (0, 0, 0, 0)), w_in, self.tap_ept):
                taps += RELEASE_DELAY
            ii = max(self.in_elements // w_in, taps)
            if self.kind == "conv":
                ii = max(ii, self.pixels * max(self.groups * self.folds, self.cols // self.tap_ept,
                                               self.rows // w_out))
            return ii
        return self.rows // w_in

    def out_width_ok(self, d: int) -> bool:
        """Can this engine emit ``d`` elements per transfer?"""
        if self.folded:
            return self.pe % d == 0 and self.rows % d == 0 and self.pe // d <= self.folds
        if self.kind == "pool":
            return d == 1
        return self.rows % d == 0

    def in_width_ok(self, d: int) -> bool:
        """Can this engine take ``d`` elements per transfer?"""
        if self.kind == "dense":
            return self.simd % d == 0 and self.cols % d == 0
        if self.kind in ("conv", "pool"):
            return self.in_elements % d == 0 and d & (d - 1) == 0
        return self.rows % d == 0


def _channel_of(shape, order: str) -> list[int]:
    """Channel of each element of a sample of ``shape`` sent in ``order``."""
    if len(shape) == 1:
        return list(range(shape[0]))
    C, H, W = shape
    if order == "hwc":
        return [e % C for e in range(C * H * W)]
    return [e // (H * W) for e in range(C * H * W)]


def _hwc_to_chw(shape) -> np.ndarray:
    """``perm[i]``: the C-order (CHW) flat index of the ``i``-th element of an HWC stream."""
    C, H, W = shape
    return np.arange(C * H * W).reshape(C, H, W).transpose(1, 2, 0).reshape(-1)


def engine_specs(model: IntModel) -> list[EngineSpec]:
    """The engines of ``model`` in order, unfolded; unsupported ops raise, naming the layer.

    Tracks the element order of the stream: the input is ``"chw"`` (the model's flattened
    input), conv and pool engines emit ``"hwc"``. A ``flatten`` has no engine: the dense layer
    after it gets its columns permuted to the stream's order (exact: the same products, summed
    in another order). A network whose output is a ``(C, H, W)`` tensor streamed in ``"hwc"``
    with ``C > 1`` and ``H*W > 1`` is rejected (end it with a dense layer).
    """
    if not isinstance(model, IntModel):
        raise TypeError(f"model must be an IntModel, got {type(model).__name__}")
    supported = (Dense, Conv2d, MaxPool2d, Requant, ChannelRequant, MultiThreshold, Flatten)
    for k, layer in enumerate(model.layers):
        if not isinstance(layer, supported):
            op = getattr(layer, "op", type(layer).__name__)
            raise UnsupportedLayerError(
                f"layers[{k}] ({getattr(layer, 'name', '?')}): op {op!r} has no hardware engine; "
                f"the generator supports dense, conv2d, maxpool2d, flatten, requant and "
                f"multithreshold layers")
    types, shapes = model.types(), model.shapes()
    specs, i = [], 0
    shape = tuple(model.input.shape)
    order = "chw" if len(shape) == 3 else "flat"
    perm = None                      # pending column permutation for the next dense layer
    layers = model.layers
    where = lambda k: f"layers[{k}] ({layers[k].name})"    # noqa: E731

    def fused_requant(k):
        nxt = layers[k + 1] if k + 1 < len(layers) else None
        return nxt if isinstance(nxt, (Requant, ChannelRequant)) else None

    while i < len(layers):
        layer = layers[i]
        out_shape = tuple(shapes[i + 1])
        if isinstance(layer, Dense):
            rq = fused_requant(i)
            dense = layer
            if perm is not None:
                dense = Dense(layer.name, layer.weight[:, perm], layer.bias, layer.weight_bits,
                              layer.bias_bits, layer.acc_bits)
                perm = None
            specs.append(EngineSpec("dense", [layer.name] + ([rq.name] if rq else []),
                                    layer.out_features, layer.in_features, types[i], dense, rq,
                                    layer=layer))
            order, i = "flat", i + (2 if rq else 1)
        elif isinstance(layer, Conv2d):
            rq = fused_requant(i)
            from .conv import conv_as_dense
            C, kh, kw = layer.in_channels, *layer.kernel
            specs.append(EngineSpec("conv", [layer.name] + ([rq.name] if rq else []),
                                    layer.out_channels, C * kh * kw, types[i],
                                    conv_as_dense(layer), rq, layer=layer, frame=shape,
                                    order=order, pixels=out_shape[1] * out_shape[2]))
            order, i = "hwc", i + (2 if rq else 1)
        elif isinstance(layer, MaxPool2d):
            kh, kw = layer.kernel
            specs.append(EngineSpec("pool", [layer.name], shape[0], kh * kw, types[i],
                                    layer=layer, frame=shape, order=order,
                                    pixels=out_shape[1] * out_shape[2]))
            order, i = "hwc", i + 1
        elif isinstance(layer, (Requant, ChannelRequant, MultiThreshold)):
            kind = "threshold" if isinstance(layer, MultiThreshold) else "requant"
            specs.append(EngineSpec(kind, [layer.name], int(np.prod(shape)), 1, types[i], None,
                                    None if kind == "threshold" else layer, layer=layer,
                                    order=order, channel_of=_channel_of(shape, order)))
            i += 1
        elif isinstance(layer, Flatten):
            if order == "hwc" and shape[0] > 1 and shape[1] * shape[2] > 1:
                perm = _hwc_to_chw(shape)
            order, i = "flat", i + 1
        else:
            order, i = "flat", i + 1
        shape = tuple(shapes[i])
    if perm is not None or (len(shape) == 3 and order == "hwc" and shape[0] > 1
                            and shape[1] * shape[2] > 1):
        raise UnsupportedLayerError(
            f"{where(len(layers) - 1)}: the network ends in a {shape[0]}x{shape[1]}x{shape[2]} "
            f"feature map, which the hardware streams pixel by pixel (HWC) while the model's "
            f"output is channel-major (CHW): end the network with a dense layer")
    if not specs:
        raise UnsupportedLayerError("the model has no layer with a hardware engine")
    return specs


# ----------------------------------------------------------------------------------------------
# Stream widths between engines

def _divisors(n: int) -> list[int]:
    return [d for d in range(1, n + 1) if n % d == 0]


def link_widths(specs: list[EngineSpec], in_layout, out_layout) -> list[int]:
    """Elements per transfer on each internal stream: ``len(specs) + 1`` widths.

    Width ``k`` is the stream into ``specs[k]`` (the last one feeds the output packer). A chain of
    elementwise engines passes its width through. The width of a stream is one both ends can
    handle (:meth:`EngineSpec.out_width_ok` of the producer or a divisor of the input beat;
    :meth:`EngineSpec.in_width_ok` of the consumer or a divisor of the output beat); it is the
    smallest such width that keeps up with the slowest engine.
    """
    target = max([s.cycles for s in specs if s.kind not in ELEMENTWISE]
                 + [in_layout.beats_per_sample, out_layout.beats_per_sample])
    widths = [None] * (len(specs) + 1)
    k = 0
    while k <= len(specs):
        # segment: producer (k-1 or the unpacker) ... elementwise engines ... consumer
        j = k
        while j < len(specs) and specs[j].kind in ELEMENTWISE:
            j += 1
        if k == 0:
            prod = None
            n = in_layout.elements
            ok = _divisors(math.gcd(in_layout.elements_per_beat, in_layout.last_beat_elements))
        else:
            prod = specs[k - 1]
            n = prod.out_elements
            ok = [d for d in _divisors(n) if prod.out_width_ok(d)]
        if j < len(specs):
            ok = [d for d in ok if specs[j].in_width_ok(d)]
        else:
            ok = [d for d in ok if out_layout.elements_per_beat % d == 0
                  and out_layout.last_beat_elements % d == 0]
        if not ok:
            need = math.ceil(prod.pe / prod.folds) if prod is not None and prod.folded else 1
            raise ValueError(
                f"{prod.name if prod else 'input'}: fold {prod.pe if prod else 1}x"
                f"{prod.simd if prod else 1} finishes {prod.pe if prod else 1} results every "
                f"{prod.folds if prod else 1} cycles, so its output stream needs at least {need} "
                f"elements per transfer, but no such width fits the next engine (its simd and "
                f"columns, its frame, or the output beat): choose a smaller pe or a simd of the "
                f"next layer that {need} divides")
        fast = [d for d in ok if n // d <= target]
        w = fast[0] if fast else ok[-1]
        for t in range(k, j + 1):
            widths[t] = w
        k = j + 1
    return widths


# ----------------------------------------------------------------------------------------------
# Resource estimates

#: Per-family coefficients of the logic-cell model (fitted against Yosys 0.23 + nextpnr).
COEFFS = {
    "ice40": {"lut_per_pp": 1.0, "lut_per_add_bit": 1.0, "ff_unpaired": 0.3, "control": 10,
              "rom_lut_per_word": 0.1, "const_lut_per_add_bit": 1.0, "xbuf_lut_per_bit": 1.0,
              "block_cost": 64, "lutram": False, "lut_per_dpr16x4": 0},
    # ECP5 (LUT4 slots, TRELLIS_COMB): nextpnr also spends about one LUT slot per two FFs as
    # a route-through, and Yosys keeps ~2x the estimated FFs, hence the large FF term; ROMs in
    # logic and shift-add products come out cheaper than on iCE40 (k_rom, k_mul). Fitted on
    # five folded designs (16..205 lanes, w4a4 and w8a8; max error 13%) and two fully unrolled
    # ones (const_scale), Yosys 0.23 synth_ecp5 + nextpnr-ecp5 packing; const_narrow from the
    # fully unrolled digits w1a1 (1-bit inputs: 0.65 of the adder bits), narrow_scale from the
    # folded digits w1a1 on the ECP5-25F (4237 LUT4 for an estimate of 7876 before it).
    "ecp5": {"lut_per_pp": 1.0, "lut_per_add_bit": 1.0, "ff_unpaired": 1.9, "control": 60,
             "rom_lut_per_word": 0.1, "const_lut_per_add_bit": 1.0, "xbuf_lut_per_bit": 1.0,
             "block_cost": 128, "lutram": True, "lut_per_dpr16x4": 4, "k_mul": 0.7,
             "k_rom": 0.5, "const_ff": 0.0, "const_scale": 1.1, "const_narrow": 0.65,
             "narrow_scale": 0.55},
}
COEFFS["ice40"].update(const_ff=COEFFS["ice40"]["ff_unpaired"], const_scale=1.08,
                       const_narrow=0.65, narrow_scale=1.0)
#: Scale applied to the whole estimate of a folded engine (fitted).
SCALE = {"ice40": 1.08, "ecp5": 1.2}


def _product_bits(wb: int, t: CodeType) -> int:
    return t.bits + 1 if wb == 1 else wb + t.bits + (0 if t.signed else 1)


def _ram_blocks(depth: int, width: int, family: str) -> int:
    """Block RAMs for a ``depth x width`` memory (iCE40 4 kbit modes, ECP5 18 kbit modes)."""
    if depth * width <= 0:
        return 0
    modes = (((256, 16), (512, 8), (1024, 4), (2048, 2)) if family == "ice40"
             else ((512, 36), (1024, 18), (2048, 9), (4096, 4), (8192, 2), (16384, 1)))
    return min(math.ceil(depth / d) * math.ceil(width / w) for d, w in modes)


def _mem_blocks(depth: int, width: int, family: str) -> int:
    """RAM blocks a memory is expected to take; tiny memories go to logic (0 blocks)."""
    if depth * width < 512 or depth <= 2:
        return 0
    return _ram_blocks(depth, width, family)


def estimate_spec(spec: EngineSpec, device: str = "up5k", in_ept: int = 1,
                  out_ept: int = 1, detail: bool = False) -> dict:
    """Estimated ``{"lc", "ff", "ram", "dsp"}`` of one engine on ``device`` (``detail``: also
    ``"parts"``, the logic per datapath part before scaling, as the coefficients are fitted)."""
    fam = get_device(device).family
    c = COEFFS[fam]
    t = spec.in_type
    xb = t.bits
    if spec.kind == "threshold":
        L = spec.layer
        T, ob = L.steps, L.bits
        varying = L.thresholds.shape[0] > 1 and len(set(map(tuple, L.thresholds.tolist()))) > 1
        per_cmp = xb + 1 + (xb if varying else 0)           # comparator (+ threshold mux)
        luts = in_ept * (T * per_cmp + 2 * T + ob) + 10
        ffs = in_ept * (T + 2 * ob) + 6
        lc = (luts + c["ff_unpaired"] * ffs) * SCALE[fam]
        return {"lc": int(round(lc)), "ff": int(ffs), "ram": 0, "dsp": 0}
    if spec.kind == "pool":
        n = spec.tap_ept
        win = _estimate_window(spec, device, in_ept, n)
        luts = (n - 1 + (1 if spec.cols > n else 0)) * 2 * xb + 2 * xb + 12
        ffs = 3 * xb + 8
        lc = (luts + c["ff_unpaired"] * ffs) * SCALE[fam]
        return {"lc": int(round(lc)) + win["lc"], "ff": int(ffs) + win["ff"],
                "ram": win["ram"], "dsp": 0}
    if spec.kind == "requant":
        rq = spec.requant
        ob = rq.bits
        mults, _ = _requant_mults(rq, max(spec.channel_of or [0]) + 1)
        mb = max(mults).bit_length()
        if len(set(mults)) > 1:
            mult_luts = (xb + 1) * mb
        else:
            m = mults[0]
            mult_luts = 0 if m & (m - 1) == 0 else (xb + mb) * (bin(m).count("1") - 1)
        lanes = in_ept
        luts = lanes * (mult_luts + xb + mb + 2 * ob + 2) + 10
        ffs = lanes * (xb + mb + 3 * ob) + 6
        lc = (luts + c["ff_unpaired"] * ffs) * SCALE[fam]
        return {"lc": int(round(lc)), "ff": int(ffs), "ram": 0, "dsp": 0}
    d, rq = spec.dense, spec.requant
    wb, ab, bb = d.weight_bits, d.acc_bits, d.bias_bits
    pe, simd = spec.pe, spec.simd
    lanes = pe * simd
    if _is_const(spec):
        est = _estimate_const(spec, fam, c, in_ept, out_ept)
        if spec.kind == "conv":
            win = _estimate_window(spec, device, in_ept, spec.tap_ept)
            est = {k: est[k] + win[k] for k in est}
        return est
    from .engine import product_selector_bits, product_terms
    pb = min(_product_bits(wb, t), ab)
    dsp = lanes if spec.dsp and wb >= 2 and _product_bits(wb, t) >= 11 else 0
    sel = product_selector_bits(wb, t)                  # gated terms of a shift-add product
    if wb == 1:
        mul = xb + 1                                     # conditional negate
    elif sel == 1:
        mul = wb                                         # a 1-bit input gates the weight
    else:
        mul = c["lut_per_pp"] * (sel - 1) * (xb + wb)   # shift-add: sel-1 widening adders
    mul_luts = 0 if dsp else lanes * mul
    terms = product_terms(wb, t, bool(dsp))
    levels = (simd * terms - 1).bit_length()
    tree = 0
    n, width = simd * terms, pb
    for _ in range(levels):
        width = min(width + 1, ab)
        tree += (n // 2) * width
        n = (n + 1) // 2
    tree_luts = pe * tree * c["lut_per_add_bit"]
    acc_luts = pe * 2 * ab                               # bias/acc mux + adder
    hold_luts = pe * ab if pe > out_ept else 0           # shift-or-load mux
    ob = rq.bits if rq else ab
    rq_luts = _rq_lane_luts(rq, spec.rows, ab) * out_ept
    slots = simd // in_ept
    gather = simd * xb * 2 if slots > 1 else 0
    ctl_bits = (max(1, (spec.folds - 1).bit_length()) * 2 + max(1, spec.groups.bit_length())
                + max(1, (spec.groups * spec.folds).bit_length()))
    ctl = c["control"] + 2 * ctl_bits + 4 * (levels + 2)
    skid = 2 * out_ept * ob
    ffs = (lanes * pb + tree + pe * 2 * ab + out_ept * (3 * ab + 2 * ob)
           + (simd * xb if slots > 1 else 0) + ctl_bits * 2 + 3 * (levels + 3))
    # ROMs: a block RAM when Yosys' memory_libmap finds it cheaper (blocks * block cost <
    # bits / 16; block cost 64 on iCE40, 128 on ECP5), else logic (a depth:1 multiplexer of
    # constants per bit); RAMs (input buffer): blocks, or on ECP5 distributed RAM (DPR16X4,
    # cost 4 per 16x4) when that is cheaper.
    bcost = c["block_cost"]
    ram, rom_luts, lutram = 0, 0, 0
    for depth, width in ((spec.groups * spec.folds, lanes * wb), (spec.groups, pe * bb)):
        blocks = _ram_blocks(depth, width, fam)
        if blocks * bcost < depth * width / 16:
            ram += blocks
        else:
            rom_luts += width * max(1, depth * c["rom_lut_per_word"]) if depth > 1 else 0
    xdepth = 2 << max(0, (spec.folds - 1).bit_length())
    xblocks = _ram_blocks(xdepth, simd * xb, fam)
    dpr = math.ceil(xdepth / 16) * math.ceil(simd * xb / 4)
    if c["lutram"] and dpr * 4 < xblocks * bcost:
        lutram = dpr
    else:
        ram += xblocks
    parts = {"mul": mul_luts, "tree": tree_luts, "acc": acc_luts + hold_luts,
             "rq": rq_luts + skid, "ctl": ctl + gather, "rom": rom_luts,
             "lutram": lutram * c["lut_per_dpr16x4"], "ff": c["ff_unpaired"] * ffs}
    lc = sum(c.get(f"k_{k}", 1.0) * v for k, v in parts.items()) * SCALE[fam]
    if t.bits + (0 if t.signed else 1) <= 2:        # 1-bit codes: LUT4s absorb narrow adders
        lc *= c["narrow_scale"]
    est = {"lc": int(round(lc)), "ff": int(ffs), "ram": int(ram), "dsp": int(dsp)}
    if spec.kind == "conv":
        win = _estimate_window(spec, device, in_ept, spec.tap_ept)
        est = {k: est[k] + win[k] for k in est}
    return est | {"parts": parts} if detail else est


def _requant_mults(rq, channels: int) -> tuple[list[int], int]:
    from .engine import requant_params
    return requant_params(rq, rq.channels if isinstance(rq, ChannelRequant) else channels)


def _estimate_window(spec: EngineSpec, device: str, in_ept: int, lanes: int) -> dict:
    """A :class:`~softfloor.hw.window.SlidingWindow`: frame memory (2 banks, one copy per read
    lane), address generation per lane (adders, constant multiplies, bounds), control."""
    fam = get_device(device).family
    C, H, W = spec.frame
    xb = spec.in_type.bits
    words = (C * H * W) // in_ept
    depth = 2 << max(0, (words - 1).bit_length())
    ram = lanes * _mem_blocks(depth, in_ept * xb, fam)
    ew = (C * H * W).bit_length() + 3
    per_lane = 4 * ew + 12 + (in_ept - 1) * xb
    mem_luts = 0 if ram else lanes * in_ept * xb * max(1, depth // 16)
    luts = lanes * per_lane + mem_luts + 60
    ffs = lanes * (xb + 4) + 6 * ew + 10
    lc = (luts + COEFFS[fam]["ff_unpaired"] * ffs) * SCALE[fam]
    return {"lc": int(round(lc)), "ff": int(ffs), "ram": int(ram), "dsp": 0}


def spec_of(engine) -> EngineSpec:
    """The :class:`EngineSpec` an engine object was built from (or one describing it)."""
    spec = getattr(engine, "spec", None)
    if spec is not None:
        return spec
    from .conv import ConvEngine, MaxPoolEngine
    from .engine import DenseEngine
    from .threshold import ThresholdEngine
    if isinstance(engine, ConvEngine):
        w = engine.window
        return EngineSpec("conv", [engine.conv.name], engine.rows, engine.cols, engine.in_type,
                          engine.dense, engine.requant, engine.pe, engine.simd, engine.dsp,
                          engine.conv, w.shape, w.order, w.pixels)
    if isinstance(engine, MaxPoolEngine):
        w = engine.window
        return EngineSpec("pool", [engine.pool.name], engine.rows, engine.cols, engine.in_type,
                          layer=engine.pool, frame=w.shape, order=w.order, pixels=w.pixels)
    if isinstance(engine, DenseEngine):
        return EngineSpec("dense", [engine.dense.name], engine.rows, engine.cols,
                          engine.in_type, engine.dense, engine.requant, engine.pe, engine.simd,
                          engine.dsp)
    if isinstance(engine, ThresholdEngine):
        return EngineSpec("threshold", [engine.layer.name], engine.elements, 1, engine.in_type,
                          layer=engine.layer, channel_of=engine.channel_of)
    return EngineSpec("requant", [engine.requant.name], engine.elements, 1, engine.in_type,
                      None, engine.requant, layer=engine.requant, channel_of=engine.channel_of)


def _rq_lane_luts(rq, rows: int, ab: int) -> int:
    """Logic of one requantizer lane after an ``ab``-bit accumulator (scale, round, saturate)."""
    if rq is None:
        return ab
    mults, shift = _requant_mults(rq, rows)
    m = max(mults)
    sb = ab + m.bit_length()
    if len(set(mults)) > 1:
        scale = (ab + 1) * m.bit_length() + m.bit_length() * 2
    else:
        scale = 0 if m & (m - 1) == 0 else sb * (bin(m).count("1") - 1)
    return (scale + (sb + 1 if shift else 0)
            + (2 * sb if rq.rounding == "half_even" else 0) // 2 + 2 * sb + rq.bits)


def _is_const(spec: EngineSpec) -> bool:
    """A fully unrolled dense or conv engine: constant weights (see ``engine.is_const``)."""
    from .engine import is_const
    return spec.folded and is_const(spec.rows, spec.cols, spec.pe, spec.simd)


def const_tree(weight, in_type: CodeType) -> tuple[int, int]:
    """(adder bits, register bits) of a fully unrolled engine's constant weights: the carry-chain
    bits of the adders of the matrix's shared-subexpression graph and its pipeline register
    bits, as :meth:`DenseEngine._const_sums` builds them (:func:`engine.const_graph`)."""
    from .engine import const_graph
    g = const_graph(weight, in_type)
    return g.total_adder_bits, g.register_bits()


def _estimate_const(spec: EngineSpec, fam: str, c: dict, in_ept: int, out_ept: int) -> dict:
    """Fully unrolled engine: constant-weight add/sub trees, no weight ROM, constant biases."""
    d, rq, t = spec.dense, spec.requant, spec.in_type
    ab, xb = d.acc_bits, t.bits
    adders, regs = const_tree(d.weight, t)
    ob = rq.bits if rq else ab
    rq_luts = _rq_lane_luts(rq, spec.rows, ab) * out_ept
    slots = spec.simd // in_ept
    gather = spec.simd * xb * 2 if slots > 1 else 0
    xbuf = spec.simd * xb * c["xbuf_lut_per_bit"]          # two one-vector banks
    acc = spec.pe * ab * 2                                   # bias + sum, load mux
    ffs = regs + spec.pe * 2 * ab + out_ept * (3 * ab + 2 * ob) + spec.simd * xb * (
        1 + (1 if slots > 1 else 0)) + 40
    # 1-bit codes (2-bit signed leaves): LUT4s absorb the first adder levels (popcount-like)
    narrow = c["const_narrow"] if t.bits + (0 if t.signed else 1) <= 2 else 1.0
    lc = (c["const_lut_per_add_bit"] * narrow * adders + acc + rq_luts + 2 * out_ept * ob + gather
          + xbuf + c["control"] + c["const_ff"] * ffs) * c["const_scale"]
    return {"lc": int(round(lc)), "ff": int(ffs), "ram": 0, "dsp": 0}


def estimate_engine(engine, device: str = "up5k") -> dict:
    """Estimate of an engine object (dense, conv, pool, requant or threshold engine)."""
    spec = spec_of(engine)
    est = estimate_spec(spec, device, engine.in_ept, engine.out_ept)
    # the names of manifest version 1, kept: lut4/dff/ebr are the same numbers
    wb = spec.dense.weight_bits * spec.rows * spec.cols if spec.folded else 0
    return est | {"lut4": est["lc"], "dff": est["ff"], "ebr": est["ram"], "weight_bits": wb}


#: Logic of the beat adapters and the top, per tdata bit.
ADAPTER_LC_PER_BIT = 2.5


# ----------------------------------------------------------------------------------------------
# Plans

@dataclass
class LayerPlan:
    """The plan of one engine (printable, JSON-able via ``to_dict``)."""
    name: str
    kind: str
    rows: int
    cols: int
    pe: int
    simd: int
    cycles: int
    mac_units: int
    dsp: bool
    in_elements_per_transfer: int
    out_elements_per_transfer: int
    estimate: dict
    override: bool = False

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class Plan:
    """A folding plan for a model on a device."""
    device: str
    objective: str
    layers: list
    initiation_interval: int
    cycles_per_inference: int
    mac_units: int
    macs_per_inference: int
    estimate: dict
    budget: dict
    fits: bool
    notes: list = field(default_factory=list)

    @property
    def mac_utilisation(self) -> float:
        return self.macs_per_inference / max(1, self.mac_units * self.initiation_interval)

    def folding(self) -> dict:
        """``{layer name: (pe, simd, dsp)}`` for :class:`~softfloor.hw.top.SoftfloorTop`."""
        return {lp.name: (lp.pe, lp.simd, lp.dsp) for lp in self.layers if lp.kind in FOLDED}

    def to_dict(self) -> dict:
        return {"device": self.device, "objective": self.objective,
                "initiation_interval": self.initiation_interval,
                "cycles_per_inference": self.cycles_per_inference,
                "mac_units": self.mac_units, "macs_per_inference": self.macs_per_inference,
                "mac_utilisation": round(self.mac_utilisation, 4),
                "estimate": self.estimate, "budget": self.budget, "fits": self.fits,
                "layers": [lp.to_dict() for lp in self.layers], "notes": list(self.notes)}

    def __str__(self) -> str:
        head = (f"plan for {self.device} ({self.objective}): II {self.initiation_interval} "
                f"cycles, latency {self.cycles_per_inference} cycles, {self.mac_units} MAC lanes, "
                f"utilisation {100 * self.mac_utilisation:.1f}%")
        cols = ("layer", "rows x cols", "PE x SIMD", "cycles", "lanes", "in/out", "est LC",
                "RAM", "DSP")
        rows = [cols]
        for lp in self.layers:
            rows.append((lp.name + (" *" if lp.override else ""), f"{lp.rows}x{lp.cols}",
                         f"{lp.pe}x{lp.simd}", str(lp.cycles), str(lp.mac_units),
                         f"{lp.in_elements_per_transfer}/{lp.out_elements_per_transfer}",
                         str(lp.estimate["lc"]), str(lp.estimate["ram"]),
                         str(lp.estimate["dsp"])))
        e, b = self.estimate, self.budget
        rows.append(("total", "", "", str(self.initiation_interval), str(self.mac_units), "",
                     f"{e['lc']}/{b['lc']}", f"{e['ram']}/{b['ram']}", f"{e['dsp']}/{b['dsp']}"))
        w = [max(len(r[i]) for r in rows) for i in range(len(cols))]
        lines = [head] + ["  " + "  ".join(r[i].ljust(w[i]) for i in range(len(cols)))
                          for r in rows]
        lines += [f"  note: {n}" for n in self.notes]
        if not self.fits:
            lines.append("  WARNING: the estimate exceeds the device budget")
        return "\n".join(lines)


def parse_fold(text: str) -> tuple[str, tuple[int, int]]:
    """``"fc1=8x4"`` -> ``("fc1", (8, 4))`` (the CLI's ``--fold``)."""
    try:
        name, rest = text.split("=", 1)
        pe, simd = rest.lower().split("x", 1)
        pe, simd = int(pe), int(simd)
        if not name or pe < 1 or simd < 1:
            raise ValueError
    except ValueError:
        raise ValueError(f"--fold {text!r}: expected LAYER=PExSIMD with positive integers, "
                         f"e.g. fc1=8x4") from None
    return name, (pe, simd)


def _layouts(model: IntModel, elements_per_beat):
    from .top import beat_layouts
    return beat_layouts(model, elements_per_beat)


def _fold_values(n: int) -> list[int]:
    """The fewest lanes giving each distinct ``ceil(n / lanes)``: ``ceil(n / k)`` for k in 1..n."""
    return sorted({math.ceil(n / k) for k in range(1, n + 1)})


def _candidates(spec: EngineSpec, device: str, max_lanes: int, wide: bool) -> list:
    """(cycles, lc, pe, simd) of every fold worth considering (no fold with the same cycle
    count and more lanes in either dimension)."""
    out = []
    for pe in _fold_values(spec.rows):
        g = math.ceil(spec.rows / pe)
        for simd in _fold_values(spec.cols):
            f = math.ceil(spec.cols / simd)
            if pe * simd > max_lanes:
                break
            if pe > f and not wide:
                continue                 # keeps the output stream one element wide
            s = EngineSpec(**{**spec.__dict__, "pe": pe, "simd": simd})
            out.append((s.cycles, estimate_spec(s, device)["lc"], pe, simd))
    out.sort()
    return out


def plan(model: IntModel, device: str = "up5k", objective: str = "throughput",
         overrides: dict | None = None, *, elements_per_beat=None,
         budget: float = DEFAULT_BUDGET,
         min_utilisation: float = DEFAULT_MIN_UTILISATION) -> Plan:
    """Choose PE x SIMD per dense layer (see the module docstring).

    Parameters
    ----------
    model : IntModel
    device : str
        A key of :data:`softfloor.hw.synth.DEVICES`.
    objective : {"throughput", "latency"}
    overrides : dict, optional
        ``{layer name: (pe, simd)}`` kept as given (the name of a Dense layer).
    elements_per_beat : see :class:`~softfloor.hw.top.SoftfloorTop`.
    budget : float
        Fraction of the logic cells the plan may use.
    min_utilisation : float
        The throughput search first looks for the smallest II whose MAC lanes are at least
        this busy (``macs / (mac_units * II)``); only if no such plan fits does it take the
        smallest II that fits whatever its utilisation.
    """
    if objective not in OBJECTIVES:
        raise ValueError(f"unknown objective {objective!r}; choose one of {', '.join(OBJECTIVES)}")
    dev = get_device(device)
    specs = engine_specs(model)
    overrides = dict(overrides or {})
    dense_names = [s.dense.name for s in specs if s.folded]
    for name, fold in overrides.items():
        if name not in dense_names:
            raise ValueError(f"--fold {name}: no dense layer of that name (dense layers: "
                             f"{', '.join(dense_names)})")
        pe, simd = fold[:2]
        s = next(s for s in specs if s.folded and s.dense.name == name)
        if not (1 <= pe <= s.rows and 1 <= simd <= s.cols):
            raise ValueError(f"--fold {name}={pe}x{simd}: pe must be in 1..{s.rows} and simd "
                             f"in 1..{s.cols} for this {s.rows}x{s.cols} layer")
    in_l, out_l = _layouts(model, elements_per_beat)
    from .top import check_split_output
    caps = {"lc": int(dev.logic_cells * budget), "ram": dev.ram_blocks, "dsp": dev.dsp}
    free = [i for i, s in enumerate(specs) if s.folded and s.dense.name not in overrides]
    for s in specs:
        if s.folded and s.dense.name in overrides:
            s.pe, s.simd = overrides[s.dense.name][:2]

    def evaluate(choice: dict):
        trial = [EngineSpec(**{**s.__dict__, "pe": choice.get(i, (s.pe, s.simd))[0],
                               "simd": choice.get(i, (s.pe, s.simd))[1]})
                 for i, s in enumerate(specs)]
        try:
            widths = link_widths(trial, in_l, out_l)
            check_split_output(trial[-1], out_l)
        except ValueError:
            return None
        _assign_dsp(trial, dev)
        ests = [estimate_spec(s, device, widths[k], widths[k + 1]) for k, s in enumerate(trial)]
        tot = {k: sum(e[k] for e in ests) for k in ("lc", "ff", "ram", "dsp")}
        tot["lc"] += int(ADAPTER_LC_PER_BIT * (in_l.tdata_width + out_l.tdata_width)) + 20
        ii = max([s.initiation_interval(widths[k], widths[k + 1]) for k, s in enumerate(trial)]
                 + [in_l.elements // widths[0], in_l.beats_per_sample,
                    out_l.beats_per_sample, out_l.elements // widths[-1]])
        fits = tot["lc"] <= caps["lc"] and tot["ram"] <= caps["ram"] and tot["dsp"] <= caps["dsp"]
        return trial, widths, ests, tot, ii, fits

    def tables(wide, key):
        cands = {i: _candidates(specs[i], device, 1 << 16, wide) for i in free}
        best_for = {}
        for i, cs in cands.items():               # best fold (by ``key``) per cycle bound
            best, table = None, []
            for c in sorted(cs, key=lambda c: c[0]):
                if best is None or key(c) < key(best):
                    best = c
                table.append((c[0], best))
            best_for[i] = table
        return cands, best_for

    # narrow: one-element streams between engines (pe <= folds); wide: any fold, wider streams.
    # Per cycle bound, the cheapest fold (estimated LC) and the fold with the fewest MAC lanes
    # (no padded lanes when pe and simd divide rows and cols: the MAC-lane utilisation).
    cheap = lambda c: (c[1], c[2] * c[3])           # noqa: E731
    lean = lambda c: (c[2] * c[3], c[1])            # noqa: E731
    _, narrow_t = tables(False, cheap)
    cands, wide_t = tables(True, cheap)
    _, narrow_l = tables(False, lean)
    _, wide_l = tables(True, lean)

    def cheapest(table, bound):
        pick = None
        for cyc, b in table:
            if cyc > bound:
                break
            pick = b
        return pick

    fixed = [s.cycles for s in specs if s.folded and s.dense.name in overrides]
    targets = sorted({c for cs in cands.values() for c, *_ in cs} | set(fixed))
    floor_ii = max(fixed + [1])
    macs = int(model.macs())

    def utilisation(r):
        return macs / max(1, sum(s.mac_units for s in r[0]) * r[4])

    result, notes = None, []
    # First the smallest II whose plan keeps >= min_utilisation of its MAC lanes busy (folds
    # that divide rows and columns, layers balanced), then, if none, the smallest II that fits.
    for floor_util, pool in ((min_utilisation, (narrow_t, narrow_l, wide_t, wide_l)),
                             (0.0, (narrow_t, wide_t))):
        for t in targets:
            if t < floor_ii:
                continue
            for table in pool:
                choice = {}
                for i in free:
                    b = cheapest(table[i], t)
                    if b is None:
                        break
                    choice[i] = (b[2], b[3])
                else:
                    r = evaluate(choice)
                    if r and r[5] and r[4] <= t and utilisation(r) >= floor_util:
                        result = (choice, r)
                        break
            if result:
                break
        if result:
            break
    if result is None:                          # nothing fits: the smallest design, flagged
        choice = {i: (1, 1) for i in free}
        result = (choice, evaluate(choice))
        notes.append(f"no fold fits {int(budget * 100)}% of {device}: fully folded (1x1) plan"
                     if free else f"the given folds do not fit {int(budget * 100)}% of {device}")
    choice, r = result
    if objective == "latency" and free:
        full = {**choice, **{i: (specs[i].rows, specs[i].cols) for i in free}}
        tr = evaluate(full)
        if tr and tr[5]:                          # fully unrolled fits: the least latency
            choice, r = full, tr
    if objective == "latency":
        improved = True
        while improved:
            improved = False
            order = sorted(free, key=lambda i: -r[0][i].cycles)
            for i in order:
                cur = r[0][i].cycles
                faster = [c for c in cands[i] if c[0] < cur]
                if not faster:
                    continue
                cyc = max(c[0] for c in faster)
                pick = min((c for c in faster if c[0] == cyc), key=lambda c: c[1])
                trial_choice = {**choice, i: (pick[2], pick[3])}
                tr = evaluate(trial_choice)
                if tr and tr[5]:
                    choice, r, improved = trial_choice, tr, True
                    break
    trial, widths, ests, tot, ii, fits = r
    layers = []
    for k, s in enumerate(trial):
        layers.append(LayerPlan(s.name, s.kind, s.rows, s.cols, s.pe, s.simd, s.cycles,
                                s.mac_units, s.dsp, widths[k], widths[k + 1], ests[k],
                                s.folded and s.dense.name in overrides))
    # the latency is the top's own formula, on the engines this plan builds
    from .top import build_engines, silence, top_latency
    latency = top_latency(silence(build_engines(trial, widths)), in_l, widths[0], out_l)
    macs = int(model.macs())
    p = Plan(device, objective, layers, ii, latency, sum(s.mac_units for s in trial), macs,
             tot, caps, fits, notes)
    return p


def _assign_dsp(specs: list[EngineSpec], dev) -> None:
    """Give DSP blocks to the dense engines whose products qualify, largest saving first."""
    left = dev.dsp
    for s in specs:
        s.dsp = False
    if not left:
        return
    elig = [s for s in specs if s.folded and s.dense.weight_bits >= 2
            and _product_bits(s.dense.weight_bits, s.in_type) >= 11
            and not _is_const(s)]
    for s in sorted(elig, key=lambda s: -s.mac_units):
        if s.mac_units <= left:
            s.dsp = True
            left -= s.mac_units
