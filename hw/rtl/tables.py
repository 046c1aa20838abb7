"""Constant tables in hardware: per-lane channel schedules and a constant indexed by a signal.

Several units pick a per-channel constant (a multiplier, a threshold, a table entry) by a
counter: :func:`channel_tables` says which channel each lane of each transfer carries, and
:func:`table_value` turns a list of constants and an index signal into one expression.
"""
from __future__ import annotations

from amaranth.hdl import Cat, Const, Module, Shape, Signal, Value

__all__ = ["channel_tables", "table_value", "positive_int", "double_buffer_depth"]


def double_buffer_depth(words: int) -> int:
    """Depth of a memory holding two banks of ``words`` words, each bank a power of two (the
    bank is the address's top bit): ``2 * 2**ceil(log2(words))``."""
    return 2 << max(0, (int(words) - 1).bit_length())


def positive_int(name: str, v) -> int:
    """``v`` if it is a positive integer (not a bool), else a ValueError naming ``name``."""
    if isinstance(v, bool) or not isinstance(v, int) or v < 1:
        raise ValueError(f"{name} must be a positive integer, got {v!r}")
    return v


def channel_tables(channel_of: list[int], ept: int) -> tuple[int, list[list[int]]]:
    """Channel of lane ``j`` at transfer ``t`` as ``(period, tables)``: ``tables[j][t % period]``.

    ``channel_of[e]`` is the channel of element ``e`` of a sample; transfers carry ``ept``
    consecutive elements. ``period`` is the smallest number of transfers after which the pattern
    repeats (a divisor of the transfers per sample), so a counter modulo ``period`` indexes it.
    """
    n = len(channel_of) // ept
    per = [[channel_of[t * ept + j] for j in range(ept)] for t in range(n)]
    period = next(p for p in range(1, n + 1) if n % p == 0
                  and all(per[t] == per[t % p] for t in range(n)))
    return period, [[per[t][j] for t in range(period)] for j in range(ept)]


def table_value(m: Module, values: list[int], index, shape, name: str) -> Value:
    """``values[index]`` as an expression: a constant when all values agree, else a mux."""
    if len(set(values)) == 1:
        return Const(values[0], shape)
    sig = Signal(shape, name=name)
    index = Value.cast(index)
    shape = Shape.cast(shape)
    # One continuous expression (a part-select of a constant), not an Array's case statement:
    # 4-state simulators evaluate it at time 0 even while the index keeps its initial value
    # (Icarus leaves a never-triggered combinational process X), and every index is covered.
    values = list(values) + [values[-1]] * ((1 << len(index)) - len(values))
    table = Cat(*[Const(v, shape) for v in values])
    word = table.word_select(index, shape.width)
    m.d.comb += sig.eq(word.as_signed() if shape.signed else word)
    return sig
