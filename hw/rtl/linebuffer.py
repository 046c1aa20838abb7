"""The line-buffer window's geometry and cycle model (``SlidingWindow(mode="lines")``).

A line buffer keeps, instead of whole frames, a ring of ``depth`` words: the input stream's words
from the oldest one a pending output pixel still reads (``rel``) to the newest written. Output
pixel ``p`` (raster order) may be read once ``need(p)`` words of its frame are written; when its
taps are read, the words before ``rel(p)`` are released. ``depth`` is the largest span
``need(p + 1 + lag) - rel(p)`` over the pixels of two frames back to back, so that a reader that
keeps up never waits for a word the writer could not yet write (the minimum, FINN's line buffer,
is ``(kh - 1)`` rows plus ``kw`` pixels). Counts are in words: a pixel is ``C / in_ept`` words
(the frame arrives pixel by pixel, ``"hwc"``).

:func:`line_timing` is the cycle model of the unit's control (input offered at full rate, output
always ready): the transfer times its latency and initiation interval come from.
"""
from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

__all__ = ["LineGeometry", "line_geometry", "line_timing", "line_mode_error", "line_cycles",
           "ISSUE_TO_OUT", "ISSUE_TO_RELEASE"]

#: Cycles from issuing a tap transfer to accepting it at the output (address, read, tap
#: register, skid; see ``WINDOW_LATENCY``: one more from the last write to the issue).
ISSUE_TO_OUT = 5
#: Cycles from issuing a tap transfer to the writer seeing its release.
ISSUE_TO_RELEASE = 3


def line_mode_error(shape, order: str, kernel, padding, in_ept: int) -> str | None:
    """Why a line buffer cannot serve this window (``None``: it can)."""
    C, H, W = shape
    (kh, kw), (pt, pl, pb, pr) = kernel, padding
    if order != "hwc" and C > 1:
        return f"a line buffer needs the frame pixel by pixel (\"hwc\"), not {order!r}"
    if C % in_ept:
        return f"a line buffer needs in_elements_per_transfer={in_ept} to divide the {C} channels"
    if max(pt, pb) >= kh or max(pl, pr) >= kw:
        return f"a line buffer needs padding {padding} smaller than the kernel {kernel}"
    return None


@dataclass(frozen=True)
class LineGeometry:
    """Per output row / column tables of the line buffer, in words of one frame.

    ``need(p) = row_need[oy] + col_need[ox]``; ``rel(p) = min(row_base[oy] + col_base[ox],
    row_next[oy])``; ``tap_offset[q]`` is tap ``q``'s word relative to the window's top-left
    pixel, ``tap_select[q]`` its element in the word."""
    words: int
    pixel_words: int
    row_need: tuple
    col_need: tuple
    row_base: tuple
    col_base: tuple
    row_next: tuple
    tap_offset: tuple
    tap_select: tuple
    lag: int
    depth: int

    def need(self, p: int) -> int:
        ow = len(self.col_need)
        return self.row_need[p // ow] + self.col_need[p % ow]

    def rel(self, p: int) -> int:
        ow = len(self.col_need)
        oy, ox = divmod(p, ow)
        return min(self.row_base[oy] + self.col_base[ox], self.row_next[oy])


@lru_cache(maxsize=512)
def line_geometry(shape, kernel, stride, padding, in_ept: int, out_ept: int) -> LineGeometry:
    C, H, W = shape
    (kh, kw), (sy, sx), (pt, pl, pb, pr) = kernel, stride, padding
    oh = (H + pt + pb - kh) // sy + 1
    ow = (W + pl + pr - kw) // sx + 1
    cw = C // in_ept
    words = H * W * cw
    y0 = [oy * sy - pt for oy in range(oh)]
    x0 = [ox * sx - pl for ox in range(ow)]
    row_need = [min(H - 1, y + kh - 1) * W * cw for y in y0]
    col_need = [(min(W - 1, x + kw - 1) + 1) * cw for x in x0]
    # the last pixel needs the whole frame: the reader leaves a frame only when it is written
    row_need[-1], col_need[-1] = (H - 1) * W * cw, W * cw
    row_base = [max(0, y) * W * cw for y in y0]
    col_base = [max(0, x) * cw for x in x0]
    row_next = row_base[1:] + [words]
    taps = [(c, ky, kx) for c in range(C) for ky in range(kh) for kx in range(kw)]
    tap_offset = tuple((ky * W + kx) * cw + c // in_ept for c, ky, kx in taps)
    tap_select = tuple(c % in_ept for c, _, _ in taps)
    T = len(taps) // out_ept
    lag = -(-(ISSUE_TO_RELEASE + 1) // T) + 1          # pixels between a release and its use
    geo = LineGeometry(words, cw, tuple(row_need), tuple(col_need), tuple(row_base),
                       tuple(col_base), tuple(row_next), tap_offset, tap_select, lag, 0)
    P = oh * ow
    span = max(geo.need(p) - geo.rel(p) for p in range(P))
    for p in range(P):
        q = p + 1 + lag
        nq = (q // P) * words + geo.need(q % P)
        span = max(span, nq - geo.rel(p))
    return LineGeometry(**{**geo.__dict__, "depth": int(span)})


@lru_cache(maxsize=512)
def line_timing(shape, kernel, stride, padding, in_ept: int, out_ept: int,
                frames: int = 4) -> tuple[tuple, tuple]:
    """Cycle model of ``frames`` frames streamed back to back (input offered every cycle from
    cycle 0, output always ready): per frame ``(first input accepted, last input accepted,
    last output accepted)``, and the per-word accept cycles of the first frame's last word."""
    g = line_geometry(shape, kernel, stride, padding, in_ept, out_ept)
    C = shape[0]
    T = C * kernel[0] * kernel[1] // out_ept
    P = len(g.row_need) * len(g.col_need)
    words, depth = g.words, g.depth
    rels = [g.rel(p) for p in range(P)]
    needs = [g.need(p) for p in range(P)]
    wtime = []                       # accept cycle of each global word
    start = []                       # issue cycle of each global pixel's first transfer
    relg = []                        # released position after each global pixel
    q = 0                            # first pixel whose release frees the next word
    prev_end = 0
    for f in range(frames):
        for p in range(P):
            last_word = f * words + needs[p] - 1
            while len(wtime) <= last_word:
                w = len(wtime)
                t = wtime[-1] + 1 if wtime else 0
                lim = w - depth + 1          # the write needs relg >= lim
                if lim > 0:
                    while relg[q] < lim:
                        q += 1
                    t = max(t, start[q] + ISSUE_TO_RELEASE)
                wtime.append(t)
            s = max(prev_end, wtime[last_word] + 1)
            start.append(s)
            relg.append(f * words + rels[p])
            prev_end = s + T
    out = []
    for f in range(frames):
        last_out = start[f * P + P - 1] + T - 1 + ISSUE_TO_OUT
        out.append((wtime[f * words], wtime[f * words + words - 1], last_out))
    return tuple(out)


def line_cycles(shape, kernel, stride, padding, in_ept: int, out_ept: int) -> dict:
    """The line buffer's timing from :func:`line_timing`: ``initiation_interval`` (frames back to
    back), ``latency`` (first input -> last output) and ``tail_latency`` (last input -> last
    output) of one frame, input at full rate, output always ready."""
    t = line_timing(tuple(shape), tuple(kernel), tuple(stride), tuple(padding), in_ept, out_ept)
    (first_in, last_in, last_out) = t[0]
    return {"initiation_interval": t[-1][2] - t[-2][2], "latency": last_out - first_in,
            "tail_latency": last_out - last_in}
