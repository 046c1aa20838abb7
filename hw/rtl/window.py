"""Sliding window: a (C, H, W) frame in, for each output pixel its window's taps out (im2col).

::

    i ─► frame buffer (2 banks, in_ept elements per word) ─► n read lanes ─► pad / select ─► skid ─► o
                 ▲ write counter                  ▲ (oy, ox, t) address generator

The frame arrives in ``order`` (``"chw"``: channel slowest, as the model's flattened input;
``"hwc"``: pixel by pixel, channels fastest, as every conv / pool engine emits), ``in_ept``
elements per transfer, and is written to the free bank of a double-buffered frame memory. When a
frame is complete the bank is marked full and the reader walks the output pixels in raster order
(``oy`` slowest, ``ox``), and for each pixel the window's ``cols = C * kh * kw`` taps in the order
``(c, ky, kx)`` (``kx`` fastest) -- the column order of ``Conv2d.weight.reshape(out_channels, -1)``
-- ``out_ept`` taps per transfer. Taps outside the frame (padding) carry ``pad_value``. While one
bank is read the next frame fills the other, so frames stream back to back.

Faces (FINN style):

* ``model(x)`` -- numpy twin: ``(N, C*H*W)`` codes in ``order`` -> ``(N, P*cols)`` taps;
* ``in_transfers``, ``out_transfers``, ``initiation_interval`` (``max`` of the two: the write
  and read sides overlap), ``tail_latency`` (last input transfer accepted -> last output
  transfer accepted, output always ready: ``out_transfers - 1 + WINDOW_LATENCY``);
* ``memory_words``/``read_ports`` for the resource estimate.
"""
from __future__ import annotations

import math
from types import SimpleNamespace

import numpy as np
from amaranth.hdl import Cat, Const, Module, Mux, Shape, Signal, Value, signed, unsigned
from amaranth.lib import stream, wiring
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out

from softfloor import arith
from softfloor.hw.rtl import primitives as P
from softfloor.hw.rtl.linebuffer import line_cycles, line_geometry, line_mode_error
from softfloor.hw.rtl.stream_io import transfer_shape
from softfloor.hw.rtl.tables import double_buffer_depth, positive_int, table_value

__all__ = ["SlidingWindow", "WINDOW_LATENCY", "RELEASE_DELAY", "ORDERS", "MODES", "stream_index",
           "window_taps", "im2col", "release_hazard"]

#: Cycles from the last input transfer accepted to the first output transfer accepted (idle
#: reader, output ready): bank-full flag (1), tap geometry (1), address (1), memory read (1),
#: tap register (1), skid (1).
WINDOW_LATENCY = 6
#: Cycles from issuing a tap transfer to reading the frame memory for it.
RELEASE_DELAY = 2
#: Element orders of a (C, H, W) tensor on a stream.
ORDERS = ("chw", "hwc")
#: Window memories: two whole frames (``"frame"``) or a line buffer (``"lines"``, see
#: :mod:`softfloor.hw.rtl.linebuffer`).
MODES = ("frame", "lines")


def stream_index(order: str, shape, c, y, x):
    """Position on the stream of element ``(c, y, x)`` of a ``(C, H, W)`` tensor sent in ``order``."""
    C, H, W = shape
    if order == "chw":
        return (c * H + y) * W + x
    if order == "hwc":
        return (y * W + x) * C + c
    raise ValueError(f"order must be one of {ORDERS}, got {order!r}")


def window_taps(shape, kernel, stride, padding):
    """Tap geometry: output size ``(OH, OW)`` and per column ``q`` its ``(c, ky, kx)``."""
    C, H, W = shape
    (kh, kw), (sy, sx), (pt, pl, pb, pr) = kernel, stride, padding
    oh = (H + pt + pb - kh) // sy + 1
    ow = (W + pl + pr - kw) // sx + 1
    cols = [(c, ky, kx) for c in range(C) for ky in range(kh) for kx in range(kw)]
    return (oh, ow), cols


def im2col(x, shape, order: str, kernel, stride, padding, pad_value: int) -> np.ndarray:
    """The window's numpy semantics: ``(N, C*H*W)`` frames sent in ``order`` -> ``(N,
    pixels*cols)`` taps, pixels in raster order, each pixel's taps in ``(c, ky, kx)`` order,
    ``pad_value`` outside the frame."""
    x = np.asarray(x, dtype=np.int64)
    C, H, W = shape
    (sy, sx), (pt, pl, _, _) = stride, padding
    (oh, ow), taps = window_taps(shape, kernel, stride, padding)
    out = np.full((x.shape[0], oh * ow, len(taps)), pad_value, dtype=np.int64)
    for oy in range(oh):
        for ox in range(ow):
            for q, (c, ky, kx) in enumerate(taps):
                y, xx = oy * sy + ky - pt, ox * sx + kx - pl
                if 0 <= y < H and 0 <= xx < W:
                    out[:, oy * ow + ox, q] = x[:, stream_index(order, shape, c, y, xx)]
    return out.reshape(x.shape[0], -1)


def release_hazard(shape, order, kernel, stride, padding, in_ept: int, out_ept: int) -> bool:
    """Would the next frame overwrite a word the last tap transfers still have to read?

    A bank is released when its last tap transfer is *issued*; the memory is read
    :data:`RELEASE_DELAY` cycles later. The writer may write word ``w`` of the next frame
    ``w + 1`` cycles after the release at the earliest, so the last two transfers must not read
    words 0 and 1. When they would (tiny frames, windows reaching back to the top-left corner),
    the bank is released after the last read instead, and the reader pauses
    :data:`RELEASE_DELAY` cycles after each frame (initiation interval
    ``max(in_transfers, out_transfers + RELEASE_DELAY)``).
    """
    C, H, W = shape
    (sy, sx), (pt, pl, _, _) = stride, padding
    (oh, ow), taps = window_taps(shape, kernel, stride, padding)
    T = len(taps) // out_ept
    last = [(oh * ow - 1, T - 1)]
    if T > 1:
        last.append((oh * ow - 1, T - 2))
    elif oh * ow > 1:
        last.append((oh * ow - 2, 0))
    for p, t in last:
        py, px = (p // ow) * sy - pt, (p % ow) * sx - pl
        for j in range(out_ept):
            c, ky, kx = taps[t * out_ept + j]
            y, x = py + ky, px + kx
            if 0 <= y < H and 0 <= x < W and \
                    stream_index(order, shape, c, y, x) // in_ept <= 1:
                return True
    return False


def _stage(m, advance, expr, name, shape=None):
    """A pipeline register loaded from ``expr`` while ``advance``."""
    r = Signal(shape if shape is not None else Value.cast(expr).shape(), name=name)
    with m.If(advance):
        m.d.sync += r.eq(expr)
    return r


class SlidingWindow(wiring.Component):
    """Double-buffered frame memory and im2col tap generator.

    Parameters
    ----------
    shape : (C, H, W)
        Frame shape.
    element_shape : shape-like
        Shape of one element (code).
    order : "chw" or "hwc"
        Element order of the incoming frame.
    kernel, stride : (int, int)
    padding : (top, left, bottom, right)
    pad_value : int
        Code of the padded taps (a code of ``element_shape``).
    in_elements_per_transfer : int
        A power of two dividing ``C*H*W``.
    out_elements_per_transfer : int
        Divides ``cols = C*kh*kw``; one memory read port per lane.
    name : str
        For error messages.

    Members
    -------
    i : ``In(stream.Signature(transfer_shape(element_shape, in_elements_per_transfer)))``
    o : ``Out(stream.Signature(transfer_shape(element_shape, out_elements_per_transfer)))``
    """

    def __init__(self, shape, element_shape, *, order: str = "hwc", kernel=(1, 1),
                 stride=(1, 1), padding=(0, 0, 0, 0), pad_value: int = 0,
                 in_elements_per_transfer: int = 1, out_elements_per_transfer: int = 1,
                 mode: str = "frame", name: str = "window"):
        self.name = name
        if mode not in MODES:
            raise ValueError(f"{name}: mode must be one of {MODES}, got {mode!r}")
        self.mode = mode
        self.shape = tuple(positive_int("shape", int(v)) for v in shape)
        if len(self.shape) != 3:
            raise ValueError(f"{name}: shape must be (C, H, W), got {shape!r}")
        if order not in ORDERS:
            raise ValueError(f"{name}: order must be one of {ORDERS}, got {order!r}")
        self.order = order
        self.element_shape = Shape.cast(element_shape)
        self.kernel = tuple(positive_int("kernel", int(v)) for v in kernel)
        self.stride = tuple(positive_int("stride", int(v)) for v in stride)
        self.padding = tuple(int(v) for v in padding)
        if len(self.padding) != 4 or min(self.padding) < 0:
            raise ValueError(f"{name}: padding must be 4 integers >= 0, got {padding!r}")
        lo, hi = arith.code_range(self.element_shape.width, self.element_shape.signed)
        if not lo <= int(pad_value) <= hi:
            raise ValueError(f"{name}: pad_value {pad_value} is not a code of {self.element_shape}")
        self.pad_value = int(pad_value)
        C, H, W = self.shape
        (self.oh, self.ow), self.taps = window_taps(self.shape, self.kernel, self.stride,
                                                    self.padding)
        if self.oh < 1 or self.ow < 1:
            raise ValueError(f"{name}: kernel {self.kernel} larger than the padded frame")
        self.cols = len(self.taps)
        self.pixels = self.oh * self.ow
        self.frame = C * H * W
        k = positive_int("in_elements_per_transfer", in_elements_per_transfer)
        n = positive_int("out_elements_per_transfer", out_elements_per_transfer)
        if k & (k - 1) or self.frame % k:
            raise ValueError(f"{name}: in_elements_per_transfer={k} must be a power of two "
                             f"dividing the frame's {self.frame} elements")
        if self.cols % n:
            raise ValueError(f"{name}: out_elements_per_transfer={n} must divide the window's "
                             f"{self.cols} taps")
        self.in_ept, self.out_ept = k, n
        if mode == "lines":
            why = line_mode_error(self.shape, order, self.kernel, self.padding, k)
            if why:
                raise ValueError(f"{name}: {why}")
            self.lines = line_geometry(self.shape, self.kernel, self.stride, self.padding, k, n)
        self.late_release = mode == "frame" and release_hazard(self.shape, self.order, self.kernel, self.stride,
                                           self.padding, k, n)
        super().__init__({
            "i": In(stream.Signature(transfer_shape(self.element_shape, k))),
            "o": Out(stream.Signature(transfer_shape(self.element_shape, n)))})

    # -- faces ------------------------------------------------------------------------------
    def model(self, x) -> np.ndarray:
        """Numpy twin: ``(N, C*H*W)`` frames in ``order`` -> ``(N, pixels*cols)`` taps."""
        return im2col(x, self.shape, self.order, self.kernel, self.stride, self.padding,
                      self.pad_value)

    @property
    def in_transfers(self) -> int:
        return self.frame // self.in_ept

    @property
    def transfers_per_pixel(self) -> int:
        return self.cols // self.out_ept

    @property
    def out_transfers(self) -> int:
        return self.pixels * self.transfers_per_pixel

    def _line(self, key: str) -> int:
        return line_cycles(self.shape, self.kernel, self.stride, self.padding, self.in_ept,
                           self.out_ept)[key]

    @property
    def initiation_interval(self) -> int:
        if self.mode == "lines":
            return self._line("initiation_interval")
        return max(self.in_transfers, self.out_transfers
                   + (RELEASE_DELAY if self.late_release else 0))

    @property
    def tail_latency(self) -> int:
        """Last input transfer accepted -> last output transfer accepted (one frame, input at
        full rate, output always ready)."""
        if self.mode == "lines":
            return self._line("tail_latency")
        return self.out_transfers - 1 + WINDOW_LATENCY

    @property
    def latency(self) -> int:
        """First input transfer accepted -> last output transfer accepted (as above)."""
        if self.mode == "lines":
            return self._line("latency")
        return self.in_transfers - 1 + self.tail_latency

    @property
    def memory_words(self) -> int:
        if self.mode == "lines":
            return self.lines.depth
        return double_buffer_depth(self.in_transfers)

    read_ports = property(lambda self: self.out_ept)

    # -- hardware ---------------------------------------------------------------------------
    def _read_counters(self, m):
        """The reader's output-side signals and its (oy, ox, t) counters, with the window's
        top-left corner ``(by, bx) = (oy * sy - pt, ox * sx - pl)``; ``issue`` is driven by
        the caller."""
        C, H, W = self.shape
        T = self.transfers_per_pixel
        (kh, kw), (sy, sx), (pt, pl, _, _) = self.kernel, self.stride, self.padding
        res = stream.Signature(transfer_shape(self.element_shape, self.out_ept)).create()
        advance = Signal()
        m.d.comb += advance.eq(~res.valid | res.ready)
        issue = Signal()
        t = Signal(range(max(2, T)))
        ox = Signal(range(max(2, self.ow)))
        oy = Signal(range(max(2, self.oh)))
        span = max(H, W) + max(pt, pl) + max(kh, kw) + max(sy * self.oh, sx * self.ow) + 2
        by = Signal(signed(span.bit_length() + 1), init=-pt)       # oy * sy - pt
        bx = Signal(signed(span.bit_length() + 1), init=-pl)       # ox * sx - pl
        last_t, last_x, last_y = (t == T - 1), (ox == self.ow - 1), (oy == self.oh - 1)
        return SimpleNamespace(T=T, span=span, res=res, advance=advance, issue=issue, t=t,
                               ox=ox, oy=oy, by=by, bx=bx, last_t=last_t, last_x=last_x,
                               last_y=last_y)

    def _step_counters(self, m, c, next_frame, next_row=None, next_col=None):
        """Advance the counters on ``issue``; the callbacks add what changes with them."""
        (sy, sx), (pt, pl, _, _) = self.stride, self.padding
        with m.If(c.issue):
            with m.If(c.last_t):
                m.d.sync += c.t.eq(0)
                with m.If(c.last_x):
                    m.d.sync += [c.ox.eq(0), c.bx.eq(-pl)]
                    with m.If(c.last_y):
                        m.d.sync += [c.oy.eq(0), c.by.eq(-pt)]
                        next_frame()
                    with m.Else():
                        m.d.sync += [c.oy.eq(c.oy + 1), c.by.eq(c.by + sy)]
                        if next_row:
                            next_row()
                with m.Else():
                    m.d.sync += [c.ox.eq(c.ox + 1), c.bx.eq(c.bx + sx)]
                    if next_col:
                        next_col()
            with m.Else():
                m.d.sync += c.t.eq(c.t + 1)

    def _emit(self, m, c, v1, vb, lanes):
        """The tap register and the skid buffer to ``o``."""
        with m.If(c.advance):
            m.d.sync += [v1.eq(vb), c.res.valid.eq(v1), c.res.payload.eq(Cat(*lanes))]
        out = P.skid_buffer(m, "skid", c.res, transfer_shape(self.element_shape, self.out_ept))
        m.d.comb += [self.o.payload.eq(out.payload), self.o.valid.eq(out.valid),
                     out.ready.eq(self.o.ready)]


    def elaborate(self, platform):
        if self.mode == "lines":
            return self._elaborate_lines()
        m = Module()
        C, H, W = self.shape
        k, n = self.in_ept, self.out_ept
        b = self.element_shape.width
        words = self.in_transfers
        aw = max(0, (words - 1).bit_length())
        kb = (k - 1).bit_length()
        depth = self.memory_words
        m.submodules.fbuf = fbuf = Memory(shape=unsigned(k * b), depth=depth, init=[0] * depth)
        wp = fbuf.write_port()
        rps = [fbuf.read_port() for _ in range(n)]

        def addr(word, bank):
            return Cat(word[:aw], bank) if aw else bank

        full = Signal(2)
        set_full, clr_full = Signal(2), Signal(2, name="clr_full")
        rd_bank = Signal()
        m.d.sync += full.eq((full | set_full) & ~clr_full)

        # ---- write side ----------------------------------------------------------------------
        wr_bank = Signal()
        wr_word = Signal(range(max(2, words)))
        take = Signal()
        # Early release (below): a bank is free once its last transfer is issued, while stages
        # a and b still hold up to two reads of it. Without stalls those reads happen in the
        # next two cycles, before the writer reaches the words they need (release_hazard); while
        # the read pipeline stalls, the writer waits instead of writing the released bank.
        pending_old = Signal()
        m.d.comb += self.i.ready.eq(~full.bit_select(wr_bank, 1)
                                    & ~(pending_old & (wr_bank != rd_bank)))
        m.d.comb += [
                     take.eq(self.i.valid & self.i.ready),
                     wp.addr.eq(addr(wr_word, wr_bank)), wp.data.eq(Value.cast(self.i.payload)),
                     wp.en.eq(take)]
        with m.If(take):
            with m.If(wr_word == words - 1):
                m.d.sync += [wr_word.eq(0), wr_bank.eq(~wr_bank)]
                m.d.comb += set_full.eq(Mux(wr_bank, 0b10, 0b01))
            with m.Else():
                m.d.sync += wr_word.eq(wr_word + 1)

        # ---- read side: (oy, ox, t) counters -------------------------------------------------
        c = self._read_counters(m)
        T, span, advance, issue = c.T, c.span, c.advance, c.issue
        (kh, kw), (sy, sx), (pt, pl, _, _) = self.kernel, self.stride, self.padding
        last_t, last_x, last_y, t = c.last_t, c.last_x, c.last_y, c.t
        if self.late_release:
            gap = Signal(2)                   # idle cycles after a frame (see late_release)
            m.d.comb += issue.eq(full.bit_select(rd_bank, 1) & advance & (gap == 0))
            with m.If(issue & last_t & last_x & last_y):
                m.d.sync += gap.eq(RELEASE_DELAY)
            with m.Elif(advance & (gap != 0)):
                m.d.sync += gap.eq(gap - 1)
        else:
            m.d.comb += issue.eq(full.bit_select(rd_bank, 1) & advance)

        def next_frame():
            m.d.sync += rd_bank.eq(~rd_bank)
            if not self.late_release:
                m.d.comb += clr_full.eq(Mux(rd_bank, 0b10, 0b01))
        self._step_counters(m, c, next_frame)
        by, bx = c.by, c.bx

        # ---- per lane: tap address, padding, element select (pipelined: geometry register,
        # address register, memory read, tap register) ------------------------------------
        rs, cs = (W, 1) if self.order == "chw" else (W * C, C)
        ew = (self.frame + rs * span + cs * span).bit_length() + 2

        def reg(expr, name, shape=None):
            return _stage(m, advance, expr, name, shape)

        va = reg(issue, "va")
        vb = reg(va, "vb")
        v1 = Signal(name="v1")
        bank_a = reg(rd_bank, "bank_a")
        bank_b = reg(bank_a, "bank_b")
        m.d.comb += pending_old.eq(~advance & ((va & (bank_a != rd_bank))
                                               | (vb & (bank_b != rd_bank))))
        if self.late_release:
            rel_a = reg(issue & last_t & last_x & last_y, "rel_a", 1)
            rel_b = reg(rel_a, "rel_b", 1)
            m.d.comb += clr_full.eq(Mux(rel_b & advance, Mux(bank_b, 0b10, 0b01), 0))
        lanes = []
        for j in range(n):
            qs = [t_ * n + j for t_ in range(T)]
            ky = [self.taps[q][1] for q in qs]
            kx = [self.taps[q][2] for q in qs]
            cb = [self.taps[q][0] * (H * W if self.order == "chw" else 1) for q in qs]

            def pick(vals, name):
                return table_value(m, vals, t, signed(max(v.bit_length() for v in vals) + 1),
                                   f"{name}{j}")

            # stage a: tap coordinates
            iy = reg(by + pick(ky, "ky"), f"iy{j}", by.shape())
            ix = reg(bx + pick(kx, "kx"), f"ix{j}", bx.shape())
            cbr = reg(pick(cb, "cb"), f"cb{j}")
            # stage b: in-frame flag and element index
            inb = reg((iy >= 0) & (iy < H) & (ix >= 0) & (ix < W), f"inb{j}", 1)
            e = reg(cbr + iy * rs + ix * cs, f"e{j}", signed(ew))
            eu = e.as_unsigned()
            m.d.comb += [rps[j].addr.eq(addr(eu[kb:], bank_b)), rps[j].en.eq(advance)]
            pad1 = reg(~inb, f"pad1_{j}", 1)
            sel1 = reg(eu[:kb] if kb else 0, f"sel1_{j}", max(1, kb))
            word = rps[j].data
            elem = word.word_select(sel1, b) if k > 1 else word
            lanes.append(Mux(pad1, Const(self.pad_value, self.element_shape).as_unsigned(),
                             elem))
        self._emit(m, c, v1, vb, lanes)
        return m

    def _elaborate_lines(self):
        """The line buffer (see :mod:`softfloor.hw.rtl.linebuffer`): a ring of ``depth`` words,
        global word counters modulo ``R`` (written ``wr``, released ``relg``, the reader's frame
        start ``fbase``), the pixel's base address in the ring kept incrementally."""
        m = Module()
        C, H, W = self.shape
        g = self.lines
        k, n, b = self.in_ept, self.out_ept, self.element_shape.width
        depth, words = g.depth, g.words
        rbits = (words + depth).bit_length() + 1            # R = 2**rbits > 2 * (words + depth)
        m.submodules.lbuf = lbuf = Memory(shape=unsigned(k * b), depth=depth, init=[0] * depth)
        wp = lbuf.write_port()
        rps = [lbuf.read_port() for _ in range(n)]
        aw = max(1, (depth - 1).bit_length())

        def addmod(x, const):
            """``(x + const) mod depth`` for ``0 <= x < depth`` (``const`` any integer)."""
            c = const % depth
            if c == 0:
                return x
            s_ = x + c
            return Mux(s_ >= depth, s_ - depth, s_)[:aw]

        # ---- write side: ring address, global count, free space -----------------------------
        wr, relg = Signal(rbits), Signal(rbits)
        fbase = Signal(rbits, name="fbase")
        waddr = Signal(aw)
        take = Signal()
        occ = Signal(rbits)
        m.d.comb += [occ.eq(wr - relg), self.i.ready.eq(occ < depth),
                     take.eq(self.i.valid & self.i.ready),
                     wp.addr.eq(waddr), wp.data.eq(Value.cast(self.i.payload)), wp.en.eq(take)]
        with m.If(take):
            m.d.sync += [wr.eq(wr + 1), waddr.eq(addmod(waddr, 1))]

        # ---- read side: (oy, ox, t) counters, need / release of the pixel --------------------
        c = self._read_counters(m)
        T, advance, issue, t, ox, oy = c.T, c.advance, c.issue, c.t, c.ox, c.oy
        (kh, kw), (sy, sx), (pt, pl, _, _) = self.kernel, self.stride, self.padding
        start = (-pt * W - pl) * g.pixel_words % depth
        pbase = Signal(aw, init=start, name="pbase")  # ring address of the window's top left
        rbase = Signal(aw, init=start, name="rbase")  # ... of the row's first window
        fstart = Signal(aw, name="fstart")            # ring address of the frame's word 0
        wbits = words.bit_length() + 1
        need = Signal(wbits)
        rel = Signal(wbits)
        rbase_w, cbase_w = (table_value(m, list(v), i, unsigned(wbits), nm) for v, i, nm in
                            ((g.row_base, oy, "row_base"), (g.col_base, ox, "col_base")))
        rnext = table_value(m, list(g.row_next), oy, unsigned(wbits), "row_next")
        m.d.comb += [
            need.eq(table_value(m, list(g.row_need), oy, unsigned(wbits), "row_need")
                    + table_value(m, list(g.col_need), ox, unsigned(wbits), "col_need")),
            rel.eq(Mux(rbase_w + cbase_w < rnext, rbase_w + cbase_w, rnext))]
        lead = Signal(rbits)
        m.d.comb += [lead.eq(wr - fbase), issue.eq(advance & (lead >= need))]

        def next_frame():
            f2 = addmod(fstart, words)
            m.d.sync += [fbase.eq(fbase + words), fstart.eq(f2), rbase.eq(addmod(f2, start)),
                         pbase.eq(addmod(f2, start))]

        def next_row():
            r2 = addmod(rbase, sy * W * g.pixel_words)
            m.d.sync += [rbase.eq(r2), pbase.eq(r2)]

        def next_col():
            m.d.sync += pbase.eq(addmod(pbase, sx * g.pixel_words))
        self._step_counters(m, c, next_frame, next_row, next_col)
        by, bx = c.by, c.bx

        def reg(expr, name, shape=None):
            return _stage(m, advance, expr, name, shape)

        va = reg(issue, "va")
        vb = reg(va, "vb")
        v1 = Signal(name="v1")
        rel_a = reg((fbase + rel)[:rbits], "rel_a", rbits)
        rel_b = reg(rel_a, "rel_b", rbits)
        with m.If(advance & vb):                  # the taps are read: release what they free
            m.d.sync += relg.eq(rel_b)
        kb = (k - 1).bit_length()
        lanes = []
        for j in range(n):
            qs = [t_ * n + j for t_ in range(T)]

            def pick(vals, name, unsigned_=False):
                shape = (unsigned(max(1, max(vals).bit_length())) if unsigned_
                         else signed(max(v.bit_length() for v in vals) + 1))
                return table_value(m, vals, t, shape, f"{name}{j}")

            iy = reg(by + pick([self.taps[q][1] for q in qs], "ky"), f"iy{j}", by.shape())
            ix = reg(bx + pick([self.taps[q][2] for q in qs], "kx"), f"ix{j}", bx.shape())
            off = pick([g.tap_offset[q] for q in qs], "off", True)
            sa = reg(pbase + off, f"sa{j}", unsigned(aw + 1))
            sela = reg(pick([g.tap_select[q] for q in qs], "sel", True), f"sela{j}")
            inb = reg((iy >= 0) & (iy < H) & (ix >= 0) & (ix < W), f"inb{j}", 1)
            ab = reg(Mux(sa >= depth, sa - depth, sa)[:aw], f"ab{j}", unsigned(aw))
            selb = reg(sela, f"selb{j}")
            m.d.comb += [rps[j].addr.eq(ab), rps[j].en.eq(advance)]
            pad1 = reg(~inb, f"pad1_{j}", 1)
            sel1 = reg(selb, f"sel1_{j}")
            word = rps[j].data
            elem = word.word_select(sel1[:max(1, kb)], b) if k > 1 else word
            lanes.append(Mux(pad1, Const(self.pad_value, self.element_shape).as_unsigned(),
                             elem))
        self._emit(m, c, v1, vb, lanes)
        return m
