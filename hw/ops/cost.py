"""Resource-model pieces the ops share: per-family coefficients, block RAM packing, windows.

Every op's ``estimate(device)`` counts the datapath its unit emits with these per-family
coefficients, fitted to Yosys + nextpnr results (``tests/hw/test_planner.py`` and the
``hardware`` benchmark report estimate / synthesized ratios). An estimate is
``{"lc", "ff", "ram", "dsp"}``: logic cells (iCE40 LCs, ECP5 LUT4s), flip-flops, RAM blocks
(iCE40 4 kbit EBR, ECP5 18 kbit DP16KD) and DSP blocks; ops that can use the UP5K's SPRAM add
``"spram"`` (256 kbit blocks; a missing key counts 0).
"""
from __future__ import annotations

import math

from softfloor.intmodel import ChannelRequant
from softfloor.hw.rtl.linebuffer import line_geometry
from softfloor.hw.rtl.mvu import requant_params
from softfloor.hw.rtl.tables import double_buffer_depth
from softfloor.hw.synth import get_device

__all__ = ["COEFFS", "SCALE", "family", "ram_blocks", "mem_blocks", "logic_cells",
           "estimate_window", "requant_mults", "requant_lane_luts", "add"]

#: Per-family coefficients of the logic-cell model (fitted against Yosys 0.23 + nextpnr).
COEFFS = {
    "ice40": {"lut_per_pp": 1.0, "lut_per_add_bit": 1.0, "ff_unpaired": 0.3, "control": 10,
              "rom_lut_per_word": 0.1, "const_lut_per_add_bit": 1.0, "xbuf_lut_per_bit": 1.0,
              "block_cost": 64, "lutram": False, "lut_per_dpr16x4": 0,
              "spram_load_luts": 40},
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
             "narrow_scale": 0.55, "spram_load_luts": 40},
}
COEFFS["ice40"].update(const_ff=COEFFS["ice40"]["ff_unpaired"], const_scale=1.08,
                       const_narrow=0.65, narrow_scale=1.0)
#: Scale applied to the whole estimate of a unit (fitted).
SCALE = {"ice40": 1.08, "ecp5": 1.2}


def family(device: str) -> str:
    """The device family (``"ice40"``, ``"ecp5"``): the key of :data:`COEFFS`."""
    return get_device(device).family


def ram_blocks(depth: int, width: int, family: str) -> int:
    """Block RAMs for a ``depth x width`` memory (iCE40 4 kbit modes, ECP5 18 kbit modes)."""
    if depth * width <= 0:
        return 0
    modes = (((256, 16), (512, 8), (1024, 4), (2048, 2)) if family == "ice40"
             else ((512, 36), (1024, 18), (2048, 9), (4096, 4), (8192, 2), (16384, 1)))
    return min(math.ceil(depth / d) * math.ceil(width / w) for d, w in modes)


def mem_blocks(depth: int, width: int, family: str) -> int:
    """RAM blocks a memory is expected to take; tiny memories go to logic (0 blocks)."""
    if depth * width < 512 or depth <= 2:
        return 0
    return ram_blocks(depth, width, family)


def logic_cells(luts: float, ffs: float, family: str) -> int:
    """Logic cells of a small unit: its LUTs plus the unpaired share of its FFs, scaled."""
    return int(round((luts + COEFFS[family]["ff_unpaired"] * ffs) * SCALE[family]))


def estimate_window(frame, in_bits: int, in_ept: int, lanes: int, device: str, *,
                    mode: str = "frame", kernel=(1, 1), stride=(1, 1),
                    padding=(0, 0, 0, 0)) -> dict:
    """A :class:`~softfloor.hw.rtl.window.SlidingWindow` on a ``(C, H, W)`` frame of
    ``in_bits`` codes: its memory (``"frame"``: 2 banks; ``"lines"``: the line buffer's ring;
    one copy per read lane), address generation per lane (adders, constant multiplies or ring
    wrap, bounds), control (``"lines"``: word counters, need / release tables)."""
    fam = family(device)
    C, H, W = frame
    xb = in_bits
    words = (C * H * W) // in_ept
    if mode == "lines":
        g = line_geometry(tuple(frame), tuple(kernel), tuple(stride), tuple(padding), in_ept,
                          lanes)
        depth = g.depth
        aw = max(1, (depth - 1).bit_length())
        rb = (words + depth).bit_length() + 1
        bw = (max(H, W) + 2 * max(kernel)).bit_length() + 2
        tables = (len(g.row_need) + len(g.col_need)) * 3 * g.words.bit_length() // 4
        per_lane = 3 * aw + 4 * bw + 8 + (in_ept - 1) * xb
        ctrl = 6 * rb + 6 * aw + tables + 60
        ffs_ctrl = 4 * rb + 3 * aw + 2 * bw + 10
        lane_ffs = 2 * aw + 2 * bw + xb + 6
    else:
        depth = double_buffer_depth(words)
        ew = (C * H * W).bit_length() + 3
        per_lane = 4 * ew + 12 + (in_ept - 1) * xb
        ctrl, ffs_ctrl, lane_ffs = 60, 6 * ew + 10, xb + 4
    ram = lanes * mem_blocks(depth, in_ept * xb, fam)
    mem_luts = 0 if ram else lanes * in_ept * xb * max(1, depth // 16)
    luts = lanes * per_lane + mem_luts + ctrl
    ffs = lanes * lane_ffs + ffs_ctrl
    lc = (luts + COEFFS[fam]["ff_unpaired"] * ffs) * SCALE[fam]
    return {"lc": int(round(lc)), "ff": int(ffs), "ram": int(ram), "dsp": 0}


def add(a: dict, b: dict) -> dict:
    """Two estimates summed key by key (the keys of ``a``; a key ``b`` lacks counts 0)."""
    return {k: a[k] + b.get(k, 0) for k in a}


def requant_mults(rq, channels: int) -> tuple[list[int], int]:
    """Multipliers per channel and the common shift of ``rq`` (as the hardware applies them)."""
    return requant_params(rq, rq.channels if isinstance(rq, ChannelRequant) else channels)


def requant_lane_luts(rq, rows: int, ab: int) -> int:
    """Logic of one requantizer lane after an ``ab``-bit accumulator (scale, round, saturate);
    ``rq`` None: the raw accumulator passes (``ab``)."""
    if rq is None:
        return ab
    mults, shift = requant_mults(rq, rows)
    m = max(mults)
    sb = ab + m.bit_length()
    if len(set(mults)) > 1:
        scale = (ab + 1) * m.bit_length() + m.bit_length() * 2
    else:
        scale = 0 if m & (m - 1) == 0 else sb * (bin(m).count("1") - 1)
    return (scale + (sb + 1 if shift else 0)
            + (2 * sb if rq.rounding == "half_even" else 0) // 2 + 2 * sb + rq.bits)
