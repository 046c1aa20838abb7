"""Arithmetic and handshake primitives of the softfloor RTL, each with its numpy twin.

Every primitive has two faces side by side:

* its **numpy semantics**, which is *always* a call into :mod:`softfloor.arith` (the single
  definition of rounding, saturation and requantization); and
* its **Amaranth implementation**, either

  - *function-style*: a combinational helper returning an Amaranth expression
    (:func:`multiply`, :func:`round_shift`, :func:`saturate`, :func:`relu`, :func:`requantize`),
  - or *task-style*: a helper that adds sequential logic to a :class:`~amaranth.hdl.Module`
    (:func:`accumulate`, :func:`skid_buffer` and its component :class:`SkidBuffer`).

``tests/hw/test_primitives.py`` simulates each Amaranth face and compares it with the numpy face
on exhaustive or thousands of random vectors, including every rounding tie and saturation edge.

All shifts, multipliers and bounds are elaboration-time constants (they come from the integer
model); only the data is a signal.
"""
from __future__ import annotations

from amaranth.hdl import Cat, Const, Module, Mux, Shape, Signal, Value, signed, unsigned
from amaranth.lib import stream, wiring
from amaranth.lib.wiring import In, Out

from softfloor import arith

__all__ = [
    "np_multiply", "np_round_shift", "np_saturate", "np_relu", "np_requantize",
    "multiply", "round_shift", "saturate", "relu", "requantize", "requantize_shape",
    "accumulate", "skid_buffer", "SkidBuffer", "code_shape",
    "np_multiply_shift_add", "multiply_shift_add", "multiply_narrow", "multiply_binary",
    "multiply_const", "split_product_terms", "csd_digits",
]


# ----------------------------------------------------------------------------------------------
# Shapes

def code_shape(bits: int, signed_: bool) -> Shape:
    """Amaranth shape of ``bits``-wide codes (two's complement when ``signed_``)."""
    if not isinstance(bits, int) or bits < 1:
        raise ValueError(f"bits must be a positive integer, got {bits!r}")
    return signed(bits) if signed_ else unsigned(bits)


def _check_int(name: str, value, lo: int | None = None) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} must be an integer, got {value!r}")
    if lo is not None and value < lo:
        raise ValueError(f"{name} must be >= {lo}, got {value}")
    return value


# ----------------------------------------------------------------------------------------------
# Numpy faces: thin, named aliases of softfloor.arith (nothing is re-implemented here).

def np_multiply(a, b):
    """Exact product of integer codes (numpy / Python ints)."""
    return a * b


def np_round_shift(x, shift: int, mode: str):
    """:func:`softfloor.arith.round_shift`."""
    return arith.round_shift(x, shift, mode)


def np_saturate(x, lo: int, hi: int):
    """:func:`softfloor.arith.saturate`."""
    return arith.saturate(x, lo, hi)


def np_relu(x):
    """ReLU is saturation with ``lo = 0`` (no upper bound beyond the code range)."""
    if isinstance(x, int):
        return max(x, 0)
    return x.clip(0, None)


def np_requantize(acc, *, multiplier: int, shift: int, rounding: str, lo: int, hi: int):
    """:func:`softfloor.arith.requantize`."""
    return arith.requantize(acc, shift, rounding, lo, hi, multiplier)


# ----------------------------------------------------------------------------------------------
# Amaranth faces, function-style (combinational expressions)

def multiply(a, b) -> Value:
    """Exact product ``a * b`` of two code values (any mix of signed / unsigned).

    Amaranth widens the result so it never overflows: ``unsigned(m) * signed(n)`` is
    ``signed(m + n + 1)``; ``signed(m) * signed(n)`` is ``signed(m + n)``.
    """
    return Value.cast(a) * Value.cast(b)


def round_shift(x, shift: int, mode: str) -> Value:
    """``round(x / 2**shift)`` with rounding ``mode``: the hardware face of ``arith.round_shift``.

    Parameters
    ----------
    x : value-like
        Signed or unsigned value.
    shift : int
        Constant, non-negative shift.
    mode : str
        ``"floor"`` (arithmetic ``>>``), ``"half_up"`` (``(x + 2**(s-1)) >> s``) or
        ``"half_even"`` (``half_up`` then a tie rounded to an odd quotient goes back down).

    Returns
    -------
    Value
        Signed if ``x`` is signed; wide enough to never overflow (one bit wider than ``x`` for the
        rounding modes that add a half).
    """
    arith.check_rounding(mode)
    shift = _check_int("shift", shift, 0)
    x = Value.cast(x)
    if shift == 0:
        return x
    if mode == "floor":
        return x >> shift
    shape = x.shape()
    # One bit of headroom for the added half.
    wide = x.as_signed() if shape.signed else Cat(x, Const(0, 1)).as_signed()
    wide = wide + (1 << (shift - 1))          # signed(width + 2): no overflow
    q = wide >> shift
    if mode == "half_up":
        return q
    tie = x[:shift] == (1 << (shift - 1)) if shift <= len(x) else Const(0, 1)
    # Subtract one when a tie landed on an odd quotient.
    return q - (tie & q[0])


def saturate(x, lo: int, hi: int, shape=None) -> Value:
    """Clamp ``x`` to ``[lo, hi]``; the result has ``shape`` (default: the smallest code shape).

    The hardware face of ``arith.saturate``: comparisons against constants, never wrap-around.
    """
    lo, hi = _check_int("lo", lo), _check_int("hi", hi)
    if lo > hi:
        raise ValueError(f"saturation bounds reversed: [{lo}, {hi}]")
    if shape is None:
        bits, sgn = arith.bits_for_range(lo, hi)
        shape = code_shape(bits, sgn)
    shape = Shape.cast(shape)
    smin, smax = arith.code_range(shape.width, shape.signed)
    if lo < smin or hi > smax:
        raise ValueError(f"[{lo}, {hi}] does not fit in {shape!r}")
    x = Value.cast(x)
    y = Mux(x < lo, lo, Mux(x > hi, hi, x))
    return y.as_signed()[:shape.width].as_signed() if shape.signed else y[:shape.width]


def relu(x) -> Value:
    """``max(x, 0)`` with the shape of ``x`` (unsigned values pass through unchanged)."""
    x = Value.cast(x)
    if not x.shape().signed:
        return x
    return Mux(x[-1], 0, x)[:len(x)].as_signed()


def requantize_shape(bits: int, signed_: bool) -> Shape:
    """Shape of the output code of a Requant (``bits`` / ``signed`` from the model)."""
    return code_shape(bits, signed_)


def requantize(acc, *, multiplier: int, shift: int, rounding: str, lo: int, hi: int,
               shape) -> Value:
    """``saturate(round_shift(acc * multiplier, shift, rounding), lo, hi)`` as one expression.

    For a pipelined version see :class:`softfloor.hw.rtl.mvu.MatrixVectorUnit`, which registers the
    product ``acc * multiplier`` before rounding and saturating.
    """
    multiplier = _check_int("multiplier", multiplier, 1)
    acc = Value.cast(acc)
    scaled = acc if multiplier == 1 else acc * multiplier
    return saturate(round_shift(scaled, shift, rounding), lo, hi, shape)


# ----------------------------------------------------------------------------------------------
# Amaranth faces, task-style (add sequential logic to a module)

def accumulate(m: Module, acc: Signal, value, *, enable, first, init=0, domain: str = "sync"):
    """Add an accumulator update: ``acc <= (first ? init : acc) + value`` when ``enable``.

    The sum is truncated to ``len(acc)`` bits. Wrap-around of *partial* sums is harmless: the sum
    is exact modulo ``2**len(acc)``, and the model's ``acc_bits`` holds the final value.
    The numpy face is ``init + sum(values)``.
    """
    base = Mux(first, init, acc)
    with m.If(enable):
        m.d[domain] += acc.eq(base + value)
    return acc


class SkidBuffer(wiring.Component):
    """Two-entry register slice between two streams: registers payload, valid *and* ready.

    Full throughput (one transfer per cycle), no combinational path from ``o.ready`` to
    ``i.ready`` or from ``i.valid`` to ``o.valid``. Latency: one cycle.

    Parameters
    ----------
    shape : shape-like
        Payload shape.

    Members
    -------
    i : ``In(stream.Signature(shape))``
    o : ``Out(stream.Signature(shape))``
    """

    def __init__(self, shape):
        self._shape = shape
        super().__init__({"i": In(stream.Signature(shape)), "o": Out(stream.Signature(shape))})

    def elaborate(self, platform):
        m = Module()
        skid = Signal(self._shape)
        skid_valid = Signal()
        # i.ready is a register: ready unless the skid entry holds a word.
        m.d.comb += self.i.ready.eq(~skid_valid)
        with m.If(~self.o.valid | self.o.ready):
            # Output register is free (or being emptied): refill from the skid entry first.
            with m.If(skid_valid):
                m.d.sync += [self.o.payload.eq(skid), self.o.valid.eq(1), skid_valid.eq(0)]
            with m.Else():
                m.d.sync += [self.o.payload.eq(self.i.payload), self.o.valid.eq(self.i.valid)]
        with m.Elif(self.i.valid & self.i.ready):
            # Output stalled, a word arrives: park it.
            m.d.sync += [skid.eq(self.i.payload), skid_valid.eq(1)]
        return m


def skid_buffer(m: Module, name: str, upstream: stream.Interface, shape) -> stream.Interface:
    """Task-style wrapper: add a :class:`SkidBuffer` after ``upstream``; return its output."""
    buf = SkidBuffer(shape)
    m.submodules[name] = buf
    wiring.connect(m, upstream, buf.i)
    return buf.o


# ----------------------------------------------------------------------------------------------
# Multipliers without a generic ``$mul`` cell (so synthesis never maps them to a DSP block)

def np_multiply_shift_add(w, x):
    """Numpy face of :func:`multiply_shift_add`, :func:`multiply_narrow`,
    :func:`split_product_terms` (summed) and :func:`multiply_binary`: the exact product."""
    return np_multiply(w, x)


def multiply_shift_add(w, x) -> Value:
    """``w * x`` for a two's complement ``w`` as a sum of shifted, gated copies of ``x``.

    ``w = -w[n-1] * 2**(n-1) + sum(w[i] * 2**i)``: each bit of ``w`` selects ``x << i``; the sign
    bit's copy is subtracted. Exact for any signed ``w`` (width ``n >= 1``) and any ``x``. Yosys
    sees adders and multiplexers, never a ``$mul``, so the product stays in logic even when the
    device has DSP blocks (which :func:`multiply` may be mapped to).
    """
    w, x = Value.cast(w), Value.cast(x)
    n = len(w)
    xs = x.as_signed() if x.shape().signed else Cat(x, Const(0, 1)).as_signed()
    top = Mux(w[n - 1], xs << (n - 1), 0)
    terms = [Mux(w[i], xs << i, 0) for i in range(n - 1)]
    terms.append(-top if w.shape().signed else top)
    while len(terms) > 1:                     # balanced: log2(n) adders deep, not n - 1
        terms = [terms[i] + terms[i + 1] if i + 1 < len(terms) else terms[i]
                 for i in range(0, len(terms), 2)]
    return terms[0]


def multiply_narrow(w, x) -> Value:
    """``w * x`` as :func:`multiply_shift_add` over the bits of the narrower operand (``w`` on a
    tie): ``len(x) - 1`` adders instead of ``len(w) - 1`` when the input is narrower; a 1-bit
    unsigned ``x`` just gates ``w`` (``Mux(x, w, 0)``, no adder)."""
    return split_product_terms(w, x, 1)[0]


def split_product_terms(w, x, parts: int) -> list[Value]:
    """``w * x`` as ``parts`` partial products that sum to it exactly: bit slices of the narrower
    operand (``w`` on a tie; the one :func:`multiply_narrow` iterates over).

    Slice ``k`` (bits ``[lo, hi)``) contributes ``slice * other << lo``; the top slice is signed
    when its operand is, the others unsigned. Registering the partial products separately and
    adding them in an adder tree halves the multiplier's logic depth per pipeline stage.
    """
    w, x = Value.cast(w), Value.cast(x)
    if len(x) < len(w):
        w, x = x, w
    n = len(w)
    parts = max(1, min(parts, n))
    bounds = [round(k * n / parts) for k in range(parts + 1)]
    out = []
    for k in range(parts):
        lo, hi = bounds[k], bounds[k + 1]
        sl = w[lo:hi]                          # unsigned: every gated copy is added
        if k == parts - 1 and w.shape().signed:
            sl = sl.as_signed()                # the sign bit's copy is subtracted
        out.append(multiply_shift_add(sl, x) << lo)
    return out


def multiply_binary(bit, x) -> Value:
    """``(+1 if bit else -1) * x``: the product with a 1-bit weight stored as its sign bit."""
    x = Value.cast(x)
    xs = x.as_signed() if x.shape().signed else Cat(x, Const(0, 1)).as_signed()
    return Mux(bit, xs, -xs)


def multiply_const(x, c: int) -> Value:
    """``x * c`` for a constant ``c >= 1`` as shifts and adds (a single shift for a power of two)."""
    c = _check_int("c", c, 1)
    x = Value.cast(x)
    total = None
    for i in range(c.bit_length()):
        if (c >> i) & 1:
            t = x << i
            total = t if total is None else total + t
    return total


# ----------------------------------------------------------------------------------------------
# Constant weights (fully unrolled units): the digits the adder graph of
# softfloor.hw.rtl.cmvm is built from

def csd_digits(c: int) -> list[tuple[int, int]]:
    """Canonical signed digits of ``c``: ``[(shift, sign)]`` with ``c == sum(sign << shift)``.

    The fewest non-zero digits (no two adjacent): 7 -> 8 - 1, 3 -> 4 - 1, -6 -> -8 + 2; a
    power of two or its negative is one digit; 0 has none. A constant multiplier is one
    add/sub per digit beyond the first; a ternary weight (-1, 0, 1) is one signed term or none,
    a binary one (+-1) is +-x (the add/sub form of XNOR-popcount). :mod:`softfloor.hw.rtl.cmvm`
    builds a constant matrix's adder graph from these terms.
    """
    c = _check_int("c", c)
    out, k = [], 0
    while c:
        if c & 1:
            d = 2 - (c & 3)                       # +1 if c = 1 mod 4, -1 if c = 3 mod 4
            out.append((k, d))
            c -= d
        c >>= 1
        k += 1
    return out
