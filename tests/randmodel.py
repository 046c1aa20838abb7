"""Random valid IntModels for tests (built only from softfloor.intmodel classes).

Accumulator widths always come from the worst-case bound of the actual integer weights.
"""
from __future__ import annotations

import math

import numpy as np

from softfloor import arith
from softfloor.intmodel import CodeType, Dense, InputSpec, IntModel, OutputSpec, Requant


def acc_bits_for(weight, bias, t: CodeType) -> int:
    lo, hi = arith.dense_bounds(weight, bias, t.lo, t.hi)
    bits, _ = arith.bits_for_range(min(int(min(lo)), -1), max(int(max(hi)), 0))
    return max(2, bits)


def random_model(rng: np.random.Generator, sizes, *, in_bits=None, in_signed=None,
                 weight_bits=None, act_bits=None, final_requant=None, multipliers=True,
                 worst_case=False, name="rand", leading_requant=False) -> IntModel:
    """A Dense/Requant chain ``sizes[0] -> sizes[1] -> ...`` with random integer parameters.

    Unset options are drawn at random. ``worst_case`` uses only the extreme weight codes, so the
    accumulators reach their bounds. Hidden layers always end in a Requant; the last layer ends
    in one when ``final_requant`` (raw accumulator logits otherwise). ``leading_requant`` puts a
    standalone Requant (no Dense before it) on the input.
    """
    in_bits = in_bits or int(rng.integers(1, 9))
    in_signed = bool(rng.integers(2)) if in_signed is None else in_signed
    final_requant = bool(rng.integers(2)) if final_requant is None else final_requant
    spec = InputSpec((sizes[0],), in_bits, in_signed, scale=1.0)
    t = spec.code_type
    layers = []
    if leading_requant:
        ob = act_bits or int(rng.integers(2, 9))
        sg = bool(rng.integers(2))
        clo, chi = arith.code_range(ob, sg)
        rq = Requant("rq_in", int(rng.integers(0, 3)), str(rng.choice(arith.ROUNDING_MODES)), ob,
                     sg, clo, chi, int(rng.choice([1, 3])))
        layers.append(rq)
        t = rq.out_type(t)
    n = len(sizes) - 1
    for k in range(n):
        wb = weight_bits or int(rng.integers(1, 9))
        wlo, whi = (-1, 1) if wb == 1 else arith.code_range(wb, True)
        w = rng.integers(wlo, whi + 1, size=(sizes[k + 1], sizes[k]))
        if worst_case:
            w = np.where(w < 0, wlo, whi)
        if wb == 1:
            w = np.where(w == 0, 1, w)
        bb = int(rng.integers(2, 10))
        b = rng.integers(*arith.code_range(bb, True), size=sizes[k + 1], endpoint=True)
        ab = acc_bits_for(w, b, t) + int(rng.integers(0, 3))
        bb = min(bb, ab)
        b = b.clip(*arith.code_range(bb, True))
        ab = max(ab, acc_bits_for(w, b, t))
        d = Dense(f"fc{k}", w.astype(np.int64), b.astype(np.int64), wb, bb, ab)
        layers.append(d)
        t = d.out_type(t)
        if k < n - 1 or final_requant:
            ob = act_bits or int(rng.integers(2, 9))
            signed = bool(rng.integers(2))
            clo, chi = arith.code_range(ob, signed)
            kind = rng.integers(3)
            if kind == 0 and signed:
                lo, hi = 0, chi                                   # ReLU
            elif kind == 1:
                lo = int(rng.integers(clo, chi + 1))
                hi = int(rng.integers(lo, chi + 1))               # narrowed clamp
            else:
                lo, hi = clo, chi
            mult = int(rng.choice([1, 1, 3, 5, 77, 255])) if multipliers else 1
            # Typical accumulators are ~sqrt(n) smaller than the worst case: aim the shift there
            # so outputs use the whole code range rather than all saturating.
            span = max(abs(t.lo), abs(t.hi), 1) * mult // max(1, math.isqrt(sizes[k]))
            shift = max(0, span.bit_length() - ob + int(rng.integers(-2, 3)))
            rq = Requant(f"rq{k}", shift, str(rng.choice(arith.ROUNDING_MODES)), ob, signed,
                         lo, hi, mult)
            layers.append(rq)
            t = rq.out_type(t)
    return IntModel(spec, layers, OutputSpec(1.0), name)


def random_codes(rng: np.random.Generator, model: IntModel, n: int) -> np.ndarray:
    t = model.input.code_type
    return rng.integers(t.lo, t.hi, size=(n, model.input.size), endpoint=True)


def digits_model(seed: int = 0) -> IntModel:
    """A digits-sized 64-64-32-10 model, w4a4, 4-bit unsigned inputs, ReLU, raw logits out."""
    rng = np.random.default_rng(seed)
    spec = InputSpec((64,), 4, False, scale=1 / 15)
    t = spec.code_type
    layers = []
    sizes = [64, 64, 32, 10]
    for k in range(3):
        w = rng.integers(-8, 8, size=(sizes[k + 1], sizes[k]))
        b = rng.integers(-64, 64, size=sizes[k + 1])
        d = Dense(f"fc{k}", w, b, 4, 8, acc_bits_for(w, b, t))
        layers.append(d)
        t = d.out_type(t)
        if k < 2:
            shift = max(0, max(abs(t.lo), abs(t.hi)).bit_length() - 6)
            rq = Requant(f"act{k}", shift, "half_even" if k else "half_up", 4, False, 0, 15)
            layers.append(rq)
            t = rq.out_type(t)
    return IntModel(spec, layers, OutputSpec(1.0), "digits")


def random_network(seed: int, *, max_depth: int = 3, max_width: int = 12,
                   max_inputs: int = 16) -> IntModel:
    """A random valid model from one integer ``seed`` (reproducible: same seed, same model).

    Random depth (1..``max_depth`` Dense layers), widths (1..``max_width``), input/weight/
    activation bit widths, shifts, rounding modes, clamps, multipliers; one network in four
    uses only extreme weight codes (worst-case accumulators), one in five starts with a
    standalone Requant.
    """
    rng = np.random.default_rng(seed)
    depth = int(rng.integers(1, max_depth + 1))
    sizes = [int(rng.integers(1, max_inputs + 1))] + \
        [int(rng.integers(1, max_width + 1)) for _ in range(depth)]
    return random_model(rng, sizes, worst_case=bool(rng.random() < 0.25),
                        leading_requant=bool(rng.random() < 0.2), name=f"rand{seed}")


def extreme_codes(rng: np.random.Generator, model: IntModel, n: int) -> np.ndarray:
    """Input codes driving a random row of the first Dense to its accumulator max or min.

    Each sample sets every input to the code extreme matching (or opposing) the sign of the
    weights of one row: the worst-case accumulation that ``acc_bits`` must hold. Models that
    start with a Requant get extreme codes (all lo / all hi / alternating) instead.
    """
    t = model.input.code_type
    first = model.layers[0]
    out = np.empty((n, model.input.size), dtype=np.int64)
    for k in range(n):
        if isinstance(first, Dense):
            w = np.asarray(first.weight)[int(rng.integers(first.out_features))]
            up = (w > 0) if k % 2 == 0 else (w < 0)
            out[k] = np.where(up, t.hi, t.lo)
        else:
            out[k] = [(t.lo, t.hi)[(j + k) % 2] if k % 3 == 2 else (t.lo, t.hi)[k % 3]
                      for j in range(model.input.size)]
    return out


def with_mixed_activations(model: IntModel, rng: np.random.Generator, *,
                           p_threshold: float = 0.4, p_channel: float = 0.3) -> IntModel:
    """``model`` with each Requant that follows a Dense replaced, at random, by a MultiThreshold
    (one row of thresholds per output feature, or one shared row) or a ChannelRequant (its own
    shift and multiplier per feature) whose outputs stay inside the codes the Requant can
    actually produce (its derived output range, which may be narrower than its ``[lo, hi]``)
    -- so every later accumulator width, sized for those codes, still holds.

    Thresholds are drawn (unsorted, duplicates allowed) from the span the accumulator typically
    takes, plus occasionally values at or beyond its bounds.
    """
    from softfloor.intmodel import ChannelRequant, MultiThreshold
    types = model.types()
    layers = list(model.layers)
    for k, rq in enumerate(layers):
        if not (isinstance(rq, Requant) and k and isinstance(layers[k - 1], Dense)):
            continue
        draw = rng.random()
        t = types[k]                                          # the accumulator's code type
        lo, hi = types[k + 1].lo, types[k + 1].hi             # what the Requant can produce
        feats = layers[k - 1].out_features
        if draw < p_threshold:
            steps = int(rng.integers(1, min(hi - lo, 15) + 1)) if hi > lo else 0
            if steps == 0:
                continue
            rows = feats if rng.random() < 0.6 else 1
            fan = max(1, math.isqrt(layers[k - 1].in_features))
            mid = (t.lo + t.hi) // 2
            half = max(1, (t.hi - t.lo) // (2 * fan))
            thr = rng.integers(mid - half, mid + half + 1, size=(rows, steps))
            if rng.random() < 0.3:
                thr[0, 0] = int(rng.choice([t.lo, t.hi, t.hi + 1, t.lo - 1]))
            layers[k] = MultiThreshold(f"thr{k}", thr.astype(np.int64), rq.bits, rq.signed,
                                       out_bias=lo)
        elif draw < p_threshold + p_channel:
            shifts = np.clip(rq.shift + rng.integers(-2, 3, size=feats), 0, None)
            mults = rng.choice([1, 3, 5, 77], size=feats)
            layers[k] = ChannelRequant(f"crq{k}", shifts.astype(np.int64), rq.rounding, rq.bits,
                                       rq.signed, lo, hi, mults.astype(np.int64))
    return IntModel(model.input, layers, model.output, model.name + "_mixed")


def with_luts_and_argmax(model: IntModel, rng: np.random.Generator, *, p_lut: float = 0.5,
                         p_argmax: float = 0.5) -> IntModel:
    """``model`` with, at random, a ``lut`` after each Requant / ChannelRequant /
    MultiThreshold (a random table from its output codes onto the same code range, so every
    later accumulator width and pad value still holds; spare entries either side) and an ``argmax``
    at the end."""
    from softfloor.intmodel import Argmax, ChannelRequant, Lut, MultiThreshold
    types = model.types()
    layers = []
    for k, layer in enumerate(model.layers):
        layers.append(layer)
        if isinstance(layer, (Requant, ChannelRequant, MultiThreshold)) and \
                rng.random() < p_lut:
            t = types[k + 1]
            spare = int(rng.integers(0, 3))
            table = rng.integers(t.lo, t.hi + 1, t.hi - t.lo + 1 + 2 * spare)
            table[spare], table[len(table) - 1 - spare] = t.lo, t.hi   # the same code range
            layers.append(Lut(f"lut{k}", table, t.lo - spare, layer.bits, layer.signed))
    if rng.random() < p_argmax:
        layers.append(Argmax("argmax", model.output_size))
        return IntModel(model.input, layers, OutputSpec(1.0), model.name + "_argmax")
    return IntModel(model.input, layers, model.output, model.name)


def random_mixed_network(seed: int, **kw) -> IntModel:
    """:func:`random_network` with mixed activations (:func:`with_mixed_activations`), luts and
    an argmax output (:func:`with_luts_and_argmax`), from one seed (separate streams: ``seed``
    gives the same base network as ``random_network(seed)``)."""
    return with_luts_and_argmax(
        with_mixed_activations(random_network(seed, **kw), np.random.default_rng([seed, 1])),
        np.random.default_rng([seed, 2]))
