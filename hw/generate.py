"""Integer model -> one Verilog file for the whole network + ``manifest.json``.

>>> from softfloor import intmodel
>>> from softfloor.hw.generate import generate, build_manifest
>>> result = generate(intmodel.load("digits.intmodel.json"), "build/rtl")   # doctest: +SKIP
>>> result.manifest["initiation_interval"], result.verilog                  # doctest: +SKIP

The manifest is the public contract with the testbenches and the synthesis flow. Guaranteed keys:
``top``, ``clock``, ``reset``, ``input`` / ``output`` (each ``tdata_width``, ``element_bits``,
``signed``, ``elements_per_beat``, ``beats_per_sample``, ``elements``), ``cycles_per_inference``,
``initiation_interval``, ``mac_units``, ``macs_per_inference``, ``layers`` (one entry per engine)
and ``model_layers`` (the model's own layer list, without weights); ``device`` and ``plan`` (the
folding planner's plan, :meth:`softfloor.hw.planner.Plan.to_dict`, or ``None`` for an explicit
folding). Each ``layers[i]`` has ``instance`` (``engine{i}_{name}``, the Verilog instance whose
``o__valid``/``o__ready``/``o__payload`` carry its output stream), ``pe``, ``simd``,
``in_elements_per_transfer``, ``out_elements_per_transfer`` (elements per ``o__payload``
transfer, element ``j`` at bits ``[j*b, (j+1)*b)``), ``out_element_bits``, ``out_signed``,
``cycles``, ``initiation_interval``, ``latency``, ``tail_latency`` and ``resources``; a dense
layer also has ``tree_levels`` and ``const_weights`` (fully unrolled: weights as constants).

A design with weights in SPRAM (no initial contents: loaded at run time through ``w_axis``, see
:class:`~softfloor.hw.top.SoftfloorTop`) also gets ``weights_spram.hex`` next to the Verilog
(one load byte per line, hex) and the manifest key ``weight_load``: ``file``,
``sha256``, ``port`` (``w_axis``), ``transfer_bits``, ``transfers`` and ``layers`` (per SPRAM
layer: ``layer``, ``offset``, ``transfers``, ``spram_blocks``, ``words``, ``word_bits``); its
layers' entries say ``memory: "spram"``, ``spram_blocks``, ``spram_words``, ``weight_word_bits``.
"""
from __future__ import annotations

import hashlib
import json
import os
import time
from dataclasses import dataclass
from pathlib import Path

from amaranth.back import verilog

from softfloor.intmodel import IntModel, atomic_write_text, load
from softfloor.hw import planner
from softfloor.hw.pipeline import ADAPTER_LATENCY, IO_PINS_UP5K_SG48, Pipeline
from softfloor.hw.rtl.elementwise import ELEMENTWISE_LATENCY
from softfloor.hw.rtl.mvu import MVU_CONST_LATENCY, MVU_LATENCY
from softfloor.hw.rtl.spram import LOAD_BITS, image_text
from softfloor.hw.top import SoftfloorTop, spram_ops, weight_image, weight_layout

__all__ = ["generate", "build_manifest", "make_top", "Generated", "MANIFEST_VERSION",
           "WEIGHT_IMAGE"]

MANIFEST_VERSION = 1
#: The SPRAM weight image a design with run-time weights gets next to its Verilog.
WEIGHT_IMAGE = "weights_spram.hex"


def _weight_image_text(pipeline: Pipeline) -> str | None:
    """The image file's text (one load byte per line), or None without SPRAM weights."""
    words = weight_image(pipeline.ops)
    return image_text(words) if spram_ops(pipeline.ops) else None


def _weight_load(pipeline: Pipeline, text: str) -> dict:
    return {"file": WEIGHT_IMAGE, "sha256": hashlib.sha256(text.encode()).hexdigest(),
            "port": "w_axis", "transfer_bits": LOAD_BITS,
            "transfers": sum(e["transfers"] for e in weight_layout(pipeline.ops)),
            "when": "after every reset, before the first sample (s_axis_tready stays low "
                    "until the last transfer is accepted)",
            "layers": weight_layout(pipeline.ops)}


@dataclass
class Generated:
    """What :func:`generate` wrote."""
    manifest: dict
    verilog: Path
    manifest_path: Path
    seconds: float


def _as_model(model) -> IntModel:
    if isinstance(model, IntModel):
        return model
    if isinstance(model, (str, os.PathLike)):
        return load(model)
    raise TypeError(f"model must be an IntModel or a model file path, got {type(model).__name__}")


def _check_name(name: str) -> str:
    if not isinstance(name, str) or not name.isidentifier():
        raise ValueError(f"name must be a Verilog identifier, got {name!r}")
    return name


def _manifest(pipeline: Pipeline, plan, name: str, device: str = "up5k") -> dict:
    model = pipeline.model
    layers = [op.manifest_entry(n, device) for n, op in enumerate(pipeline.ops)]
    model_layers = []
    for layer in model.layers:
        d = layer.to_dict()
        d.pop("weight", None)
        d.pop("bias", None)
        model_layers.append(d)
    return {
        "manifest_version": MANIFEST_VERSION,
        "top": name,
        "model": model.name,
        "clock": "clk",
        "reset": "rst",
        "reset_active": "high",
        "reset_kind": "synchronous",
        "input": pipeline.in_layout.to_dict() | {
            "tlast": "ignored: a sample is always beats_per_sample beats (framing by count)"},
        "output": pipeline.out_layout.to_dict() | {"tlast": "high on the last beat of each sample"},
        "cycles_per_inference": pipeline.cycles_per_inference,
        "cycles_per_inference_definition": (
            "cycles from the first input beat accepted to the last output beat accepted, "
            "isolated sample, input presented back to back, output always ready"),
        "latency_formula": (
            f"input transfers - 1 + {ADAPTER_LATENCY} + (output beats_per_element - 1) + "
            f"sum over dense engines of "
            f"(ceil(rows/pe)*ceil(cols/simd) + tree_levels + {MVU_LATENCY} + "
            f"last row group's output transfers - 1; {MVU_CONST_LATENCY} instead of "
            f"{MVU_LATENCY} for a fully unrolled engine) + sum over requant engines of "
            f"{ELEMENTWISE_LATENCY}; tree_levels (per layer in layers[]) is "
            f"ceil(log2(simd * product terms)), or for a fully unrolled constant-weight engine "
            f"(pe = rows, simd = cols) the registered stages of its matrix's adder graph - 1 "
            f"(one register per 2 adder levels)"),
        "initiation_interval": pipeline.initiation_interval,
        "initiation_interval_formula": (
            "max over engines of max(ceil(rows/pe)*ceil(cols/simd), input transfers, output "
            "transfers); input transfers and beats; output transfers and beats"),
        "mac_units": pipeline.mac_units,
        "macs_per_inference": int(model.macs()),
        "io_pins": pipeline.io_pins,
        "fits_up5k_sg48_pins": pipeline.io_pins <= IO_PINS_UP5K_SG48,
        "device": device,
        "resources_estimate": pipeline.resources(device),
        "plan": plan.to_dict() if plan is not None else None,
        "layers": layers,
        "model_layers": model_layers,
    }


def _plan(model, *, elements_per_beat=None, device: str = "up5k",
          objective: str = "throughput", overrides: dict | None = None, folding=None):
    """``(pipeline, plan)``: the planner's plan unless ``folding`` is given."""
    model = _as_model(model)
    if folding is None:
        folding = planner.plan(model, device, objective, overrides,
                               elements_per_beat=elements_per_beat)
    elif overrides:
        raise ValueError("give either folding or overrides, not both")
    plan = folding if isinstance(folding, planner.Plan) else None
    return planner.realize(model, folding, elements_per_beat), plan


def make_top(model, *, elements_per_beat=None, device: str = "up5k",
             objective: str = "throughput", overrides: dict | None = None,
             folding=None) -> SoftfloorTop:
    """The top :func:`generate` emits: folded by ``folding`` if given, else by the planner."""
    pipeline, plan = _plan(model, elements_per_beat=elements_per_beat, device=device,
                           objective=objective, overrides=overrides, folding=folding)
    return SoftfloorTop(pipeline.model, elements_per_beat=elements_per_beat,
                        folding=plan or pipeline)


def build_manifest(model, *, elements_per_beat=None, name: str = "softfloor_top",
                   device: str = "up5k", objective: str = "throughput",
                   overrides: dict | None = None, folding=None) -> dict:
    """The manifest of the top that :func:`generate` would emit, without generating Verilog."""
    pipeline, plan = _plan(model, elements_per_beat=elements_per_beat, device=device,
                           objective=objective, overrides=overrides, folding=folding)
    manifest = _manifest(pipeline, plan, _check_name(name), device)
    img = _weight_image_text(pipeline)
    if img is not None:
        manifest["weight_load"] = _weight_load(pipeline, img)
    return manifest


def generate(model, out_dir, *, elements_per_beat=None, name: str = "softfloor_top",
             device: str = "up5k", objective: str = "throughput",
             overrides: dict | None = None, folding=None) -> Generated:
    """Write ``out_dir/<name>.v`` (the whole network, one module tree) and ``manifest.json``.

    Parameters
    ----------
    model : IntModel or path to a ``*.intmodel.json``
    out_dir : path-like
        Created if missing. Files are replaced atomically.
    elements_per_beat : int, (int, int), {"input": int, "output": int} or None
        See :class:`~softfloor.hw.top.SoftfloorTop`.
    name : str
        Verilog name of the top module.
    device, objective, overrides :
        The planner's inputs (:func:`softfloor.hw.planner.plan`): the default is the
        throughput plan for the UP5K. Ignored when ``folding`` is given.
    folding : None, Plan or dict
        Explicit folding (see :func:`softfloor.hw.planner.realize`); ``{}`` is fully folded.

    Returns
    -------
    Generated
        ``manifest`` (the dict written to ``manifest.json``), ``verilog`` and ``manifest_path``.
    """
    name = _check_name(name)
    t0 = time.monotonic()
    top = make_top(model, elements_per_beat=elements_per_beat, device=device,
                   objective=objective, overrides=overrides, folding=folding)
    manifest = _manifest(top.pipeline, top.plan, name, device)
    img = _weight_image_text(top.pipeline)
    if img is not None:
        manifest["weight_load"] = _weight_load(top.pipeline, img)
    text = verilog.convert(top, name=name, emit_src=False)
    out_dir = Path(out_dir)
    v_path = atomic_write_text(out_dir / f"{name}.v", text)
    if img is not None:
        atomic_write_text(out_dir / WEIGHT_IMAGE, img)
    elif (out_dir / WEIGHT_IMAGE).exists():      # a previous design's image: not this one's
        (out_dir / WEIGHT_IMAGE).unlink()
    manifest["verilog"] = v_path.name
    m_path = atomic_write_text(out_dir / "manifest.json", json.dumps(manifest, indent=1) + "\n")
    return Generated(manifest, v_path, m_path, time.monotonic() - t0)
