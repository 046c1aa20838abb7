"""The sweep spec: a TOML file naming the axes of a design-space sweep and the stages to run.

Example (``docs/sweep.md`` has the full reference)::

    name = "digits-mlp"
    stages = ["data", "train", "export", "golden", "rtl", "sim", "synth"]

    [fixed]                      # FlowOptions fields every point shares
    epochs = 60
    simulator = "verilator"

    [axes]                       # the cross product of these lists
    bits = [{weight_bits = 1, act_bits = 1}, {weight_bits = 4, act_bits = 4}]   # linked
    surrogate = ["ste", "sigmoid"]
    device = ["up5k", "ecp5-25f"]
    seed = [0]

    [[exclude]]                  # drop the points that match every key of a table
    device = "up5k"
    weight_bits = 8

    [pareto]
    mean_over = ["seed"]         # average these axes away before taking the front

Every axis maps onto :class:`softfloor.flow.FlowOptions` fields by name: an axis whose values are
scalars (or lists, for list-valued fields) sets the field of its name; an axis whose values are
tables sets several fields at once (a *linked* axis: its name is only a label). Names and value
types are checked against ``dataclasses.fields(FlowOptions)``, and values against the choices and
ranges of ``softfloor flow``'s options, before anything runs.

A point is identified by a stable hash of the fields it sets and the stages it runs, so a rerun
finds its directory and its row; adding a field to ``FlowOptions`` later does not change it.
"""
from __future__ import annotations

import argparse
import dataclasses
import hashlib
import itertools
import json
import tomllib
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path

#: Flow stages in chain order, and the stages each needs before it (the artifacts it reads).
STAGE_NEEDS = {"data": (), "train": ("data",), "export": ("train",), "golden": ("export", "data"),
               "rtl": ("export",), "sim": ("golden", "rtl"), "synth": ("rtl",)}
#: FlowOptions fields that the sweep sets itself.
RESERVED = ("out", "quiet", "synth", "synth_cache")
TOP_KEYS = ("name", "stages", "fixed", "axes", "exclude", "pareto")


class SpecError(ValueError):
    """A spec that cannot run; the message names the file and the key."""


@dataclass(frozen=True)
class Point:
    """One point of a sweep: the FlowOptions fields it sets (or a task's parameters)."""
    id: str
    label: str
    params: dict
    stages: tuple[str, ...] = ()

    def to_dict(self) -> dict:
        return {"id": self.id, "label": self.label, "params": self.params,
                "stages": list(self.stages)}


def point_id(params: dict, stages=()) -> str:
    """Stable 12-hex-digit id of a point: sha256 of its parameters and stages (canonical JSON)."""
    text = json.dumps({"params": params, "stages": list(stages)}, sort_keys=True,
                      separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:12]


@dataclass
class Spec:
    """A parsed, validated sweep spec."""
    path: Path
    text: str
    name: str
    stages: tuple[str, ...]
    fixed: dict
    axes: dict[str, list]
    exclude: list[dict] = field(default_factory=list)
    mean_over: tuple[str, ...] = ()

    def points(self) -> list[Point]:
        """Every point of the cross product of the axes, less the excluded ones, in spec order."""
        names = list(self.axes)
        out, seen = [], set()
        for combo in itertools.product(*(self.axes[n] for n in names)):
            params = dict(self.fixed)
            labels = []
            for name, value in zip(names, combo):
                if isinstance(value, dict):
                    params.update(value)
                    labels.append(name + "=" + ",".join(f"{k}={_show(v)}"
                                                        for k, v in value.items()))
                else:
                    params[name] = value
                    labels.append(f"{name}={_show(value)}")
            if any(all(params.get(k, _MISSING) == v for k, v in ex.items())
                   for ex in self.exclude):
                continue
            pid = point_id(params, self.stages)
            if pid in seen:        # two axis values giving the same options: one point
                continue
            seen.add(pid)
            out.append(Point(pid, " ".join(labels), params, self.stages))
        return out

    @property
    def synthesizes(self) -> bool:
        return "synth" in self.stages


_MISSING = object()


def _show(v) -> str:
    return ",".join(map(str, v)) if isinstance(v, (list, tuple)) else str(v)


def load_spec(path: str | Path) -> Spec:
    """Read and validate a sweep spec (raises :class:`SpecError` naming the file and key)."""
    path = Path(path)
    try:
        text = path.read_text()
    except OSError as e:
        raise SpecError(f"{path}: cannot read the sweep spec: {e.strerror}") from None
    except UnicodeDecodeError as e:
        raise SpecError(f"{path}: not a text file (byte {e.start} is not UTF-8); a sweep spec "
                        f"is TOML (docs/sweep.md)") from None
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise SpecError(f"{path}: not valid TOML: {e}") from None
    return parse_spec(data, path, text)


def parse_spec(data: dict, path: Path = Path("<spec>"), text: str = "") -> Spec:
    """Validate a spec given as a dict (as :func:`tomllib.loads` returns it)."""
    where = str(path)
    unknown = [k for k in data if k not in TOP_KEYS]
    if unknown:
        raise SpecError(f"{where}: unknown key {unknown[0]!r}; a spec has {', '.join(TOP_KEYS)}")
    fields = flow_fields()
    stages = data.get("stages", list(STAGE_NEEDS))
    _check_stages(stages, where)
    fixed = data.get("fixed", {})
    if not isinstance(fixed, dict):
        raise SpecError(f"{where}: [fixed] must be a table of FlowOptions fields")
    fixed = {k: _check_value(fields, k, v, f"{where}: [fixed] {k}") for k, v in fixed.items()}
    axes_in = data.get("axes", {})
    if not isinstance(axes_in, dict) or not axes_in:
        raise SpecError(f"{where}: [axes] must be a table with at least one axis, e.g. "
                        f"[axes] seed = [0, 1, 2]")
    axes: dict[str, list] = {}
    for name, values in axes_in.items():
        ctx = f"{where}: [axes] {name}"
        if not isinstance(values, list) or not values:
            raise SpecError(f"{ctx}: an axis is a non-empty list of values")
        if all(isinstance(v, dict) for v in values):
            axes[name] = [{k: _check_value(fields, k, x, f"{ctx}[{i}].{k}") for k, x in v.items()}
                          for i, v in enumerate(values)]
        elif any(isinstance(v, dict) for v in values):
            raise SpecError(f"{ctx}: mixes tables and plain values; a linked axis has only tables")
        else:
            if name not in fields and name not in RESERVED:
                raise SpecError(_unknown(name, fields, ctx, axis=True))
            axes[name] = [_check_value(fields, name, v, f"{ctx}[{i}]")
                          for i, v in enumerate(values)]
    set_by_axes = {k for vs in axes.values() for v in vs
                   for k in (v if isinstance(v, dict) else {})} | \
        {n for n, vs in axes.items() if not isinstance(vs[0], dict)}
    both = sorted(set_by_axes & set(fixed))
    if both:
        raise SpecError(f"{where}: {both[0]!r} is both in [fixed] and on an axis; keep one")
    exclude = data.get("exclude", [])
    if not isinstance(exclude, list) or not all(isinstance(e, dict) and e for e in exclude):
        raise SpecError(f"{where}: [[exclude]] entries are non-empty tables of field = value")
    exclude = [{k: _check_value(fields, k, v, f"{where}: [[exclude]] #{i + 1} {k}")
                for k, v in ex.items()} for i, ex in enumerate(exclude)]
    pareto = data.get("pareto", {})
    if not isinstance(pareto, dict):
        raise SpecError(f"{where}: [pareto] must be a table, e.g. [pareto] mean_over = [\"seed\"]")
    mean_over = pareto.get("mean_over", [])
    if not isinstance(mean_over, list) or not all(isinstance(k, str) for k in mean_over):
        raise SpecError(f"{where}: [pareto] mean_over must be a list of axis names, e.g. "
                        f"[\"seed\"]")
    mean_over = tuple(mean_over)
    for k in pareto:
        if k != "mean_over":
            raise SpecError(f"{where}: [pareto] {k}: unknown key; [pareto] has mean_over")
    for k in mean_over:
        if k not in axes and k not in set_by_axes:
            raise SpecError(f"{where}: [pareto] mean_over {k!r} is not an axis or a field set by "
                            f"one ({', '.join(axes)})")
    name = data.get("name", path.stem)
    if not isinstance(name, str):
        raise SpecError(f"{where}: name must be a string (the title of the outputs)")
    return Spec(path, text, str(name), tuple(s for s in STAGE_NEEDS if s in stages), fixed,
                axes, exclude, mean_over)


def _check_stages(stages, where: str) -> None:
    if not isinstance(stages, list) or not stages:
        raise SpecError(f"{where}: stages must be a list, e.g. {list(STAGE_NEEDS)}")
    for s in stages:
        if not isinstance(s, str) or s not in STAGE_NEEDS:
            raise SpecError(f"{where}: stages: unknown stage {s!r}; the flow's stages are "
                            f"{', '.join(STAGE_NEEDS)}")
        missing = [n for n in STAGE_NEEDS[s] if n not in stages]
        if missing:
            raise SpecError(f"{where}: stages: {s!r} needs {', '.join(map(repr, missing))} "
                            f"before it; add it to stages")


def flow_fields() -> dict[str, typing.Any]:
    """``{name: type}`` of the :class:`~softfloor.flow.FlowOptions` fields a spec may set."""
    from softfloor.flow import FlowOptions
    hints = typing.get_type_hints(FlowOptions)
    return {f.name: hints[f.name] for f in dataclasses.fields(FlowOptions)
            if f.name not in RESERVED}


def _unknown(name: str, fields: dict, ctx: str, axis: bool = False) -> str:
    import difflib
    near = difflib.get_close_matches(name, list(fields), n=1)
    hint = f" (did you mean {near[0]!r}?)" if near else ""
    what = "axis" if axis else "field"
    extra = (" -- to set several fields per value, make the values tables, e.g. "
             "bits = [{weight_bits = 4, act_bits = 4}]") if axis else ""
    return (f"{ctx}: unknown {what} {name!r}{hint}: not a FlowOptions field "
            f"({', '.join(fields)}){extra}")


def _check_value(fields: dict, name: str, value, ctx: str):
    """``value`` as the field ``name`` holds it (lists become tuples for tuple fields), or raise
    :class:`SpecError` naming ``ctx``."""
    if name in RESERVED:
        raise SpecError(f"{ctx}: {name!r} is set by the sweep itself (each point's directory, "
                        f"--synth-cache, the stages list); remove it")
    if name not in fields:
        raise SpecError(_unknown(name, fields, ctx))
    typ = fields[name]
    allowed = typing.get_args(typ) if isinstance(typ, types.UnionType) or \
        typing.get_origin(typ) is typing.Union else (typ,)
    ok = False
    for t in allowed:
        base = typing.get_origin(t) or t
        if t is type(None) and value is None:
            ok = True
        elif base is bool:
            ok = ok or isinstance(value, bool)
        elif base is int:
            ok = ok or (isinstance(value, int) and not isinstance(value, bool))
        elif base is float:
            ok = ok or (isinstance(value, (int, float)) and not isinstance(value, bool))
        elif base in (tuple, list):
            if isinstance(value, list):
                value, ok = tuple(value), True
        elif base is str or (isinstance(base, type) and issubclass(base, Path)):
            ok = ok or isinstance(value, str)
        elif isinstance(base, type) and isinstance(value, base):
            ok = True
    if not ok:
        raise SpecError(f"{ctx}: {value!r} is not a valid {name} (FlowOptions.{name}: "
                        f"{_type_name(typ)})")
    _check_cli_choice(name, value, ctx)
    return value


def _type_name(t) -> str:
    if t in (tuple, list) or typing.get_origin(t) in (tuple, list):
        return "a list, e.g. [\"fc1=8x4\"]" if t is tuple else "a list"
    return getattr(t, "__name__", None) or str(t).replace("typing.", "")


def _check_cli_choice(name: str, value, ctx: str) -> None:
    """The choices and range checks of ``softfloor flow``'s option for this field, if any."""
    if name == "fold" and isinstance(value, tuple):
        from softfloor.hw.planner import parse_fold
        for f in value:
            try:
                parse_fold(f if isinstance(f, str) else repr(f))
            except ValueError as e:
                raise SpecError(f"{ctx}: {e}") from None
    action = _flow_actions().get(name)
    if action is None or value is None or isinstance(value, (bool, tuple)):
        return
    if action.choices is not None:
        if value not in action.choices and str(value).replace("_", "-") not in action.choices:
            raise SpecError(f"{ctx}: {value!r} is not one of {', '.join(map(str, action.choices))}")
        return
    if callable(action.type) and isinstance(value, (int, float)):
        try:
            action.type(str(value))
        except (argparse.ArgumentTypeError, ValueError) as e:
            raise SpecError(f"{ctx}: {e}") from None


_ACTIONS: dict | None = None


def _flow_actions() -> dict:
    global _ACTIONS
    if _ACTIONS is None:
        from softfloor import cli
        sub = next(a for a in cli.parser()._actions
                   if isinstance(a, argparse._SubParsersAction))
        _ACTIONS = {a.dest: a for a in sub.choices["flow"]._actions}
    return _ACTIONS
