"""What the ops with a sliding window share (``conv2d``, ``maxpool2d``): its geometry, widths,
timing and estimate (:class:`~softfloor.hw.rtl.window.SlidingWindow`)."""
from __future__ import annotations

import numpy as np

from softfloor.hw.ops import cost
from softfloor.hw.rtl.window import (RELEASE_DELAY, im2col, release_hazard, window_taps)

__all__ = ["SlidingWindowOp", "MAX_TAP_LANES", "divisors"]

#: Most frame-memory read ports (window lanes) a conv/pool unit gets.
MAX_TAP_LANES = 8


def divisors(n: int) -> list[int]:
    return [d for d in range(1, n + 1) if n % d == 0]


class SlidingWindowOp:
    """Mixin of an op reading ``in_shape`` frames (in ``in_order``) through a sliding window of
    ``layer.kernel`` / ``layer.stride`` / :attr:`padding`, ``tap_ept`` taps per cycle; its
    output leaves pixel by pixel (``"hwc"``), ``rows`` channels per pixel."""

    @property
    def padding(self) -> tuple:
        return getattr(self.layer, "padding", (0, 0, 0, 0))

    @property
    def out_hw(self) -> tuple[int, int]:
        L = self.layer
        return window_taps(self.in_shape, L.kernel, L.stride, self.padding)[0]

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

    @property
    def window_initiation_interval(self) -> int:
        return max(self.in_transfers,
                   self.window_out_transfers + (RELEASE_DELAY if self.late_release else 0))

    def estimate_window(self, device: str) -> dict:
        return cost.estimate_window(self.in_shape, self.in_type.bits, self.in_ept, self.tap_ept,
                                    device)

    def window_manifest(self) -> dict:
        """The manifest keys of a windowed op."""
        L = self.layer
        return {"frame": list(self.in_shape), "pixels": self.pixels,
                "out_frame": [self.rows, *self.out_hw], "tap_elements_per_transfer": self.tap_ept,
                "kernel": list(L.kernel), "stride": list(L.stride)}
