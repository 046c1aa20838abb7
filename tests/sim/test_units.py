"""Every arithmetic primitive against its numpy twin in cocotb, on both simulators.

Each unit harness (``softfloor.sim.units``) puts many configurations of one primitive side by
side and gets >= 10,000 random vectors plus its corners (min/max codes, every rounding tie of
every shift and the codes next to it, saturation edges). The twins are the ``np_*`` faces of
``softfloor.hw.rtl.primitives``, i.e. ``softfloor.arith``. (The Amaranth-simulator tests in
``tests/hw/test_primitives.py`` cover the same primitives exhaustively on narrower widths.)
"""
from __future__ import annotations

import os

import numpy as np
import pytest
from amaranth.hdl import signed, unsigned

from softfloor import arith
from softfloor.hw.rtl import primitives as P
from softfloor.sim import tools, units
from tests.conftest import require_tool

pytestmark = pytest.mark.sim

#: Random vectors per unit: 10,000 in ``make test``, 100,000 under ``make soak``.
N_RANDOM = 100_000 if os.environ.get("SOFTFLOOR_SOAK", "") not in ("", "0") else 10_000


def code_range(shape):
    return arith.code_range(shape.width, shape.signed)


def rand(rng, shape, n):
    lo, hi = code_range(shape)
    return rng.integers(lo, hi, size=n, endpoint=True)


def ties(shape, shifts, rng, per_shift=40):
    """Every shift's ties ``k * 2**s + 2**(s-1)`` (random k, both ends of the range), +-1."""
    lo, hi = code_range(shape)
    out = [v for v in (lo, lo + 1, -1, 0, 1, hi - 1, hi) if lo <= v <= hi]
    for s in shifts:
        if s < 1:
            continue
        kmin, kmax = (lo - (1 << (s - 1))) >> s, (hi - (1 << (s - 1))) >> s
        ks = set(rng.integers(kmin, kmax, size=per_shift, endpoint=True).tolist())
        ks |= {kmin, kmin + 1, -1, 0, 1, kmax - 1, kmax}
        for k in ks:
            for d in (-1, 0, 1):
                v = k * (1 << s) + (1 << (s - 1)) + d
                if lo <= v <= hi:
                    out.append(v)
    return out


# -- the units ----------------------------------------------------------------------------------

def multiply_unit(rng):
    a_s, b_s = signed(8), signed(8)
    h = units.harness("u_multiply", {"a": a_s, "b": b_s}, {
        "ss": lambda v: P.multiply(v["a"], v["b"]),
        "su": lambda v: P.multiply(v["a"], v["b"].as_unsigned()),
        "us": lambda v: P.multiply(v["a"].as_unsigned(), v["b"]),
        "uu": lambda v: P.multiply(v["a"].as_unsigned(), v["b"].as_unsigned()),
    })
    corners = [-128, -127, -1, 0, 1, 126, 127]
    a = np.concatenate([rand(rng, a_s, N_RANDOM), np.repeat(corners, len(corners))])
    b = np.concatenate([rand(rng, b_s, N_RANDOM), np.tile(corners, len(corners))])
    au, bu = a & 0xFF, b & 0xFF
    want = {"ss": P.np_multiply(a, b), "su": P.np_multiply(a, bu), "us": P.np_multiply(au, b),
            "uu": P.np_multiply(au, bu)}
    return h, {"a": a, "b": b}, want


SHIFTS = (0, 1, 2, 3, 4, 7, 12, 19, 20, 22)


def round_shift_unit(rng):
    xs, xu = signed(20), unsigned(16)
    outs = {}
    for mode in arith.ROUNDING_MODES:
        for s in SHIFTS:
            outs[f"s_{mode}_{s}"] = lambda v, m=mode, s=s: P.round_shift(v["x"], s, m)
            outs[f"u_{mode}_{s}"] = lambda v, m=mode, s=s: P.round_shift(v["xu"], s, m)
    h = units.harness("u_round_shift", {"x": xs, "xu": xu}, outs)
    x = np.concatenate([rand(rng, xs, N_RANDOM), ties(xs, SHIFTS, rng)])
    tu = ties(xu, SHIFTS, rng)
    u = np.concatenate([rand(rng, xu, N_RANDOM), np.resize(tu, len(x) - N_RANDOM)])
    want = {}
    for mode in arith.ROUNDING_MODES:
        for s in SHIFTS:
            want[f"s_{mode}_{s}"] = P.np_round_shift(x, s, mode)
            want[f"u_{mode}_{s}"] = P.np_round_shift(u, s, mode)
    return h, {"x": x, "xu": u}, want


BOUNDS = [(-8192, 8191), (0, 15), (-8, 7), (-3, -3), (5, 200), (-100, -2), (0, 0), (-1, 0),
          (0, 8191), (-8192, -8192)]


def saturate_unit(rng):
    xs = signed(14)
    outs = {f"sat{i}": (lambda v, lo=lo, hi=hi: P.saturate(v["x"], lo, hi))
            for i, (lo, hi) in enumerate(BOUNDS)}
    outs["relu"] = lambda v: P.relu(v["x"])
    h = units.harness("u_saturate", {"x": xs}, outs)
    lo_x, hi_x = code_range(xs)
    edges = sorted({lo_x, hi_x, 0} | {b + d for lo, hi in BOUNDS for b in (lo, hi)
                                      for d in (-2, -1, 0, 1, 2) if lo_x <= b + d <= hi_x})
    x = np.concatenate([rand(rng, xs, N_RANDOM), edges])
    want = {f"sat{i}": P.np_saturate(x, lo, hi) for i, (lo, hi) in enumerate(BOUNDS)}
    want["relu"] = P.np_relu(x)
    return h, {"x": x}, want


def requant_configs(rng, n=14):
    cfgs = []
    for i in range(n):
        mult = int(rng.choice([1, 1, 2, 3, 7, 77, 255, 1000]))
        shift = int(rng.integers(0, 24))
        bits = int(rng.integers(1, 13))
        sgn = bool(rng.integers(2))
        clo, chi = arith.code_range(bits, sgn)
        lo = int(rng.integers(clo, chi + 1))
        hi = int(rng.integers(lo, chi + 1))
        if i % 3 == 0:
            lo, hi = clo, chi
        if i % 5 == 1 and sgn:
            lo, hi = 0, chi                                     # ReLU
        cfgs.append(dict(multiplier=mult, shift=shift, rounding=arith.ROUNDING_MODES[i % 3],
                         lo=lo, hi=hi, shape=P.code_shape(bits, sgn)))
    return cfgs


def requantize_unit(rng):
    accs = signed(22)
    cfgs = requant_configs(rng)
    outs = {f"c{i}": (lambda v, c=c: P.requantize(v["acc"], **c)) for i, c in enumerate(cfgs)}
    h = units.harness("u_requantize", {"acc": accs}, outs)
    lo_a, hi_a = code_range(accs)
    corners = [lo_a, lo_a + 1, -1, 0, 1, hi_a - 1, hi_a]
    for c in cfgs:
        m, s = c["multiplier"], c["shift"]
        # Ties after the multiplication, and the accumulators next to each saturation edge.
        for k in rng.integers(-(1 << 12), 1 << 12, size=20).tolist() + [c["lo"], c["hi"]]:
            center = ((k << s) + ((1 << s) >> 1)) // m
            corners += [v for v in range(center - 2, center + 3) if lo_a <= v <= hi_a]
        for edge in (c["lo"] - 1, c["lo"], c["hi"], c["hi"] + 1):
            center = (edge << s) // m
            corners += [v for v in range(center - 3, center + 4) if lo_a <= v <= hi_a]
    acc = np.concatenate([rand(rng, accs, N_RANDOM), corners])
    want = {f"c{i}": P.np_requantize(acc, multiplier=c["multiplier"], shift=c["shift"],
                                     rounding=c["rounding"], lo=c["lo"], hi=c["hi"])
            for i, c in enumerate(cfgs)}
    return h, {"acc": acc}, want


UNITS = {"multiply": multiply_unit, "round_shift": round_shift_unit,
         "saturate_relu": saturate_unit, "requantize": requantize_unit}


@pytest.mark.parametrize("unit", list(UNITS))
def test_unit_against_numpy_twin(simulator, unit, tmp_path):
    rng = np.random.default_rng(sum(map(ord, unit)))
    h, vectors, want = UNITS[unit](rng)
    n = len(next(iter(vectors.values())))
    assert n >= N_RANDOM
    got = units.run_vectors(h, vectors, simulator, tmp_path)
    for name, w in want.items():
        bad = np.nonzero(got[name] != np.asarray(w))[0]
        assert not len(bad), (f"{unit}.{name}: {len(bad)} of {n} vectors differ; first: inputs "
                              f"{ {k: int(v[bad[0]]) for k, v in vectors.items()} } expected "
                              f"{int(np.asarray(w)[bad[0]])} got {int(got[name][bad[0]])}")
    print(f"{unit} on {simulator}: {n} vectors x {len(want)} configurations")


def test_unit_ties_really_are_ties():
    """The corner generator covers a tie and its neighbours for every shift (not vacuous)."""
    rng = np.random.default_rng(0)
    v = np.array(ties(signed(20), SHIFTS, rng))
    for s in SHIFTS:
        if s == 0 or s > 19:
            continue
        t = v[(v & ((1 << s) - 1)) == 1 << (s - 1)]
        assert len(t) >= (10 if s <= 12 else 2), s       # a 20-bit range has 2 ties of 2**19
        assert np.any(arith.round_shift(t, s, "half_up") != arith.round_shift(t, s, "half_even"))


def test_harness_pack_unpack_round_trip():
    fields = [units.Field("a", 0, 5, True), units.Field("b", 5, 3, False),
              units.Field("c", 8, 70, True)]
    row = [-16, 7, -(1 << 69)]
    assert units.unpack(fields, units.pack(fields, row)) == row


def test_a_wrong_rounding_unit_is_caught(tmp_path):
    """Not vacuous: a harness that rounds half_up, checked against the half_even twin, fails on
    exactly the ties with an odd quotient."""
    require_tool("icarus", lambda: tools.ensure("icarus"))
    h = units.harness("u_wrong", {"x": signed(10)},
                      {"r": lambda v: P.round_shift(v["x"], 3, "half_up")})
    x = np.arange(-512, 512)
    got = units.run_vectors(h, {"x": x}, "icarus", tmp_path)["r"]
    differ = np.nonzero(got != P.np_round_shift(x, 3, "half_even"))[0]
    assert len(differ) and np.all((x[differ] & 7) == 4)
