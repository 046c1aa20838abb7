"""PLL settings for iCE40 (``SB_PLL40``) and ECP5 (``EHXPLLL``): the searches of ``icepll`` and
``ecppll``, in Python, so the board top can be elaborated without running them.

:func:`ice40_pll` and :func:`ecp5_pll` give the setting closest to a requested frequency;
``at_most=True`` the fastest setting not above it (a clock that timing analysis supports).
Checked against the ``yowasp-icepll`` / ``yowasp-ecppll`` tools in the tests.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

__all__ = ["PLLSetting", "ice40_pll", "ecp5_pll"]


@dataclass(frozen=True)
class PLLSetting:
    family: str
    fin_mhz: float
    fout_mhz: float
    vco_mhz: float
    params: dict            # the primitive's divider parameters

    def __str__(self) -> str:
        p = ", ".join(f"{k}={v}" for k, v in self.params.items())
        return f"{self.family} PLL {self.fin_mhz:g} -> {self.fout_mhz:.4g} MHz ({p})"


def _pick(cands, target, at_most):
    if at_most:
        cands = [c for c in cands if c[0] <= target + 1e-9]
    if not cands:
        return None
    return min(cands, key=lambda c: (abs(c[0] - target), c[1]))


def ice40_pll(fin_mhz: float, fout_mhz: float, *, at_most: bool = False) -> PLLSetting:
    """``SB_PLL40_*`` in SIMPLE feedback: ``fout = fin * (DIVF + 1) / ((DIVR + 1) * 2**DIVQ)``
    with PFD 10..133 MHz, VCO 533..1066 MHz, output 16..275 MHz (iCE40 sysCLOCK PLL limits)."""
    cands = []
    order = 0
    for divr in range(16):
        pfd = fin_mhz / (divr + 1)
        if not 10 <= pfd <= 133:
            continue
        for divf in range(128):
            vco = pfd * (divf + 1)
            if not 533 <= vco <= 1066:
                continue
            for divq in range(1, 7):
                f = vco / (1 << divq)
                if 16 <= f <= 275:
                    cands.append((f, order, divr, divf, divq, pfd, vco))
                    order += 1
    best = _pick(cands, fout_mhz, at_most)
    if best is None:
        raise ValueError(f"no iCE40 PLL setting from {fin_mhz:g} MHz to "
                         f"{'at most ' if at_most else ''}{fout_mhz:g} MHz (output 16..275 MHz)")
    f, _, divr, divf, divq, pfd, vco = best
    fr = next(k for k, lim in enumerate((17, 26, 44, 66, 101, 1e9), start=1) if pfd < lim)
    return PLLSetting("ice40", fin_mhz, f, vco,
                      {"DIVR": divr, "DIVF": divf, "DIVQ": divq, "FILTER_RANGE": fr})


def ecp5_pll(fin_mhz: float, fout_mhz: float, *, at_most: bool = False) -> PLLSetting:
    """``EHXPLLL`` with CLKOP feedback: ``fout = fin * CLKFB_DIV / CLKI_DIV``, VCO
    ``fout * CLKOP_DIV`` in 400..800 MHz, PFD >= 3.125 MHz; ties go to the VCO nearest 600 MHz
    (as ``ecppll`` does)."""
    cands = []
    for idiv in range(1, 129):
        pfd = fin_mhz / idiv
        if not 3.125 <= pfd <= 400:
            continue
        for fbdiv in range(1, 81):
            f = pfd * fbdiv
            for odiv in range(max(1, math.ceil(400 / f)), min(128, math.floor(800 / f)) + 1):
                vco = f * odiv
                cands.append((f, abs(vco - 600), idiv, fbdiv, odiv, vco))
    best = _pick(cands, fout_mhz, at_most)
    if best is None:
        raise ValueError(f"no ECP5 PLL setting from {fin_mhz:g} MHz to "
                         f"{'at most ' if at_most else ''}{fout_mhz:g} MHz")
    f, _, idiv, fbdiv, odiv, vco = best
    return PLLSetting("ecp5", fin_mhz, f, vco,
                      {"CLKI_DIV": idiv, "CLKFB_DIV": fbdiv, "CLKOP_DIV": odiv,
                       "CLKOP_CPHASE": odiv - 1})
