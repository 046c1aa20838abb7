"""``python -m softfloor.benchmarks [--out DIR] [--quick] [SECTION ...]``"""
from __future__ import annotations

import argparse
import importlib
import json
import platform
import sys
import time
from pathlib import Path

from . import SECTIONS


def markdown_table(rows: list[dict]) -> str:
    if not rows:
        return "(no rows)\n"
    cols = list(dict.fromkeys(k for r in rows for k in r))

    def fmt(v):
        if isinstance(v, float):
            return f"{v:.4g}"
        return "" if v is None else str(v)
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    lines += ["| " + " | ".join(fmt(r.get(c)) for c in cols) + " |" for r in rows]
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="softfloor-bench")
    ap.add_argument("sections", nargs="*", default=list(SECTIONS), choices=[[], *SECTIONS])
    ap.add_argument("--out", type=Path, default=Path("build/bench"))
    ap.add_argument("--quick", action="store_true", help="fewer seeds/samples: a smoke run")
    args = ap.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    summary = [f"# softfloor benchmarks\n\nmachine: {platform.machine()}, "
               f"python {platform.python_version()}, quick={args.quick}\n"]
    failed = []
    for name in args.sections or SECTIONS:
        try:
            mod = importlib.import_module(f"softfloor.benchmarks.{name}")
        except ModuleNotFoundError as e:
            print(f"[bench {name}] not available: {e}", file=sys.stderr)
            failed.append(name)
            continue
        print(f"[bench {name}]", flush=True)
        t0 = time.monotonic()
        res = mod.run(args.out, args.quick)
        res["seconds"] = round(time.monotonic() - t0, 1)
        (args.out / f"{name}.json").write_text(json.dumps(res, indent=1) + "\n")
        md = f"## {name}\n\n" + markdown_table(res.get("rows", []))
        for extra_name, extra_rows in res.get("tables", {}).items():
            md += f"\n### {extra_name}\n\n" + markdown_table(extra_rows)
        md += "".join(f"\n- {n}" for n in res.get("notes", [])) + "\n"
        (args.out / f"{name}.md").write_text(md)
        summary.append(md)
        print(md, flush=True)
    (args.out / "README.md").write_text("\n".join(summary))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
