"""What the ops with a sliding window share (``conv2d``, ``maxpool2d``): its geometry, widths,
timing and estimate (:class:`~softfloor.hw.rtl.window.SlidingWindow`)."""
from __future__ import annotations

import dataclasses

import numpy as np

from softfloor.hw.ops import cost
from softfloor.hw.ops.base import PlanEntryError
from softfloor.hw.rtl.linebuffer import line_cycles, line_geometry, line_mode_error
from softfloor.hw.rtl.tables import double_buffer_depth
from softfloor.hw.rtl.window import MODES, RELEASE_DELAY, WINDOW_LATENCY, im2col, release_hazard

__all__ = ["SlidingWindowOp", "MAX_TAP_LANES", "LINES_ABOVE_BITS", "divisors"]

#: Most frame-memory read ports (window lanes) a conv/pool unit gets.
MAX_TAP_LANES = 8
#: Two frame banks above this many bits make a line buffer worth its control logic.
LINES_ABOVE_BITS = 16384


def divisors(n: int) -> list[int]:
    return [d for d in range(1, n + 1) if n % d == 0]


class SlidingWindowOp:
    """Mixin of an op reading ``in_shape`` frames (in ``in_order``) through a sliding window of
    ``layer.kernel`` / ``layer.stride`` / :attr:`padding`, ``tap_ept`` taps per cycle; its
    output leaves pixel by pixel (``"hwc"``), ``rows`` channels per pixel.

    The window keeps two whole frames (``"frame"``) or a line buffer (``"lines"``):
    :attr:`window_mode` is the op's ``window`` field when set (a plan file's ``window``), else
    ``"lines"`` when the two frame banks hold more than :data:`LINES_ABOVE_BITS` bits and the
    line buffer at most half their words (its counters and tables cost ~100-200 logic cells,
    paid back in RAM blocks only on large frames), else ``"frame"``. The rule does not depend
    on the device, so a design's Verilog does not either."""

    @property
    def padding(self) -> tuple:
        return getattr(self.layer, "padding", (0, 0, 0, 0))

    @property
    def out_hw(self) -> tuple[int, int]:
        (_, H, W), L, (pt, pl, pb, pr) = self.in_shape, self.layer, self.padding
        return ((H + pt + pb - L.kernel[0]) // L.stride[0] + 1,
                (W + pl + pr - L.kernel[1]) // L.stride[1] + 1)

    @property
    def pixels(self) -> int:
        oh, ow = self.out_hw
        return oh * ow

    @property
    def out_elements(self) -> int:
        return self.pixels * self.rows

    @property
    def out_order(self) -> str:
        return "hwc"

    @property
    def window_cols(self) -> int:
        """Taps per output pixel: ``C * kh * kw``."""
        kh, kw = self.layer.kernel
        return self.in_shape[0] * kh * kw

    def taps(self, x, pad_value: int = 0) -> np.ndarray:
        """The window's numpy twin: ``(N, pixels * window_cols)`` taps."""
        L = self.layer
        return im2col(x, self.in_shape, self.in_order, L.kernel, L.stride, self.padding,
                      pad_value)

    def in_width_ok(self, d: int) -> bool:
        return self.in_elements % d == 0 and d & (d - 1) == 0

    @property
    def window_out_transfers(self) -> int:
        return self.pixels * self.window_cols // self.tap_ept

    @property
    def late_release(self) -> bool:
        L = self.layer
        return release_hazard(self.in_shape, self.in_order, L.kernel, L.stride, self.padding,
                              self.in_ept, self.tap_ept)

    def lines_error(self) -> str | None:
        """Why this window cannot be a line buffer (``None``: it can)."""
        return line_mode_error(self.in_shape, self.in_order, self.layer.kernel, self.padding,
                               self.in_ept)

    def _estimate_window_mode(self, mode: str, device: str) -> dict:
        L = self.layer
        return cost.estimate_window(self.in_shape, self.in_type.bits, self.in_ept, self.tap_ept,
                                    device, mode=mode, kernel=L.kernel, stride=L.stride,
                                    padding=self.padding)

    @property
    def window_mode(self) -> str:
        """The window's memory: the ``window`` field, else the rule of the class docstring."""
        if self.window is not None:
            return self.window
        if self.lines_error():
            return "frame"
        L = self.layer
        frame = double_buffer_depth(self.in_transfers)
        lines = line_geometry(self.in_shape, L.kernel, L.stride, self.padding, self.in_ept,
                              self.tap_ept).depth
        big = frame * self.in_ept * self.in_type.bits > LINES_ABOVE_BITS
        return "lines" if big and 2 * lines <= frame else "frame"

    def _line(self, key: str) -> int:
        L = self.layer
        return line_cycles(self.in_shape, L.kernel, L.stride, self.padding, self.in_ept,
                           self.tap_ept)[key]

    @property
    def window_initiation_interval(self) -> int:
        if self.window_mode == "lines":
            return self._line("initiation_interval")
        return max(self.in_transfers,
                   self.window_out_transfers + (RELEASE_DELAY if self.late_release else 0))

    @property
    def window_tail_latency(self) -> int:
        """Last input transfer -> last tap transfer (input at full rate, output ready)."""
        if self.window_mode == "lines":
            return self._line("tail_latency")
        return self.window_out_transfers - 1 + WINDOW_LATENCY

    def estimate_window(self, device: str) -> dict:
        return self._estimate_window_mode(self.window_mode, device)

    def window_manifest(self) -> dict:
        """The manifest keys of a windowed op."""
        L = self.layer
        return {"frame": list(self.in_shape), "pixels": self.pixels,
                "out_frame": [self.rows, *self.out_hw], "tap_elements_per_transfer": self.tap_ept,
                "kernel": list(L.kernel), "stride": list(L.stride), "window": self.window_mode}

    def apply_window_entry(self, entry: dict, where: str):
        """The op with a plan entry's ``window`` (``"frame"`` or ``"lines"``), validated."""
        mode = entry.get("window")
        if mode is None:
            return self
        if mode not in MODES:
            raise PlanEntryError(f"{where}.window: {mode!r} is not a window memory (one of "
                                 f"{', '.join(MODES)})")
        op = dataclasses.replace(self, window=mode)
        why = op.lines_error() if mode == "lines" else None
        if why:
            raise PlanEntryError(f"{where}.window: \"lines\" is not possible here: {why}; "
                                 f"use \"frame\"")
        return op
