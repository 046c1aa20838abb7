"""Provenance: which files each artifact was made from, by content hash, checked by every stage.

Every stage record ``DIR/stages/<stage>.json`` carries a ``provenance`` object::

    "provenance": {"writes":    {"model.intmodel.json": "<sha256>", ...},
                   "made_from": {"train:model.pt": "<sha256>", "data:inputs.npz": "...", ...}}

``writes`` are the files the stage wrote, ``made_from`` everything they were made from,
transitively, each keyed ``"<stage>:<file>"`` (the stage that wrote that version; a file two
stages write, e.g. ``inputs.npz`` by ``data`` and ``export``, has one key per writer) or
``"<option>:<path>"`` for a user's file (``--model``, ``--inputs``, ``--plan``).

A stage reads its inputs through a :class:`Lineage`. :meth:`Lineage.read` hashes the file and
finds the record that wrote exactly that content -- none means the file was changed, truncated,
or left by an interrupted run, and the stage refuses it, naming the stage to rerun (a file that no record mentions at all was put
there by the user and is recorded as ``user:<file>``; ``flow`` removes the files it rebuilds
before it starts, so an interrupted flow leaves none of them behind). It then merges
that record's ``made_from``: two inputs that descend from different runs of one stage (a model
exported before the inputs were re-made, vectors simulated on an older Verilog) are refused,
naming both files and the stage to rerun. ``report`` adopts the records it summarizes the same
way, so ``report.json`` never mixes records of different models or RTL.
"""
from __future__ import annotations

import hashlib
from pathlib import Path

from softfloor.artifacts import ArtifactError, load_json

#: The stages in chain order (the order in which a stale artifact's successors are rerun).
ORDER = ("model", "data", "train", "export", "golden", "rtl", "sim", "synth", "board")

#: The stages that may write each file of DIR, the usual writer first.
WRITERS = {"dataset.npz": ("data",), "inputs.npz": ("data", "export"),
           "model.pt": ("train",), "train.json": ("train",),
           "model.intmodel.json": ("export", "model"), "vectors.npz": ("golden", "sim"),
           "manifest.json": ("rtl",)}


#: The writer of a file in DIR that no stage record mentions (put there by the user).
USER = "user"


class StaleArtifact(ArtifactError):
    """An artifact does not match the records of the stages that made it."""


def sha256(path: str | Path) -> str:
    """The SHA-256 of a file's content, hex."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def writers(name: str) -> tuple[str, ...]:
    """The stages that may write ``name`` (a Verilog file: ``rtl``)."""
    return WRITERS.get(name, ("rtl",) if name.endswith(".v") else ())


class Lineage:
    """What one stage has read so far: every ancestor version, keyed ``stage:file``.

    Parameters
    ----------
    out : Path
        The flow's output directory.
    stage : str
        The stage reading (named in the errors).
    reads : dict, optional
        Where to also note ``{file: sha256}`` of every file of ``out`` read
        (``stages/made_from.json``).
    """

    def __init__(self, out: str | Path, stage: str, reads: dict | None = None):
        self.out = Path(out)
        self.stage = stage
        self.reads = {} if reads is None else reads
        self.made_from: dict[str, str] = {}
        # key -> (the file or record it came through, the stages of that one's ancestry)
        self._via: dict[str, tuple[str, set[str]]] = {}

    def _cmd(self, stage: str) -> str:
        if stage == "model":  # the record of `flow --model FILE`: no subcommand of its own
            return f"`softfloor flow --model FILE --out {self.out}`"
        if stage == "board":
            return f"`softfloor board --board BOARD --out {self.out}`"
        return f"`softfloor {stage} --out {self.out}`"

    def record_of(self, stage: str) -> dict | None:
        """The provenance of ``stages/<stage>.json`` (None: no record)."""
        path = self.out / "stages" / f"{stage}.json"
        if not path.exists():
            return None
        rec = load_json(path, rerun=f"rerun {self._cmd(stage)}")
        prov = rec.get("provenance")
        if not (isinstance(prov, dict) and isinstance(prov.get("writes"), dict)
                and isinstance(prov.get("made_from"), dict)):
            raise StaleArtifact(f"{path}: no provenance (written by an older softfloor or by "
                                f"hand): rerun {self._cmd(stage)}")
        return prov

    def read(self, name: str, stage: str | None = None, only: tuple[str, ...] | None = None
             ) -> Path:
        """``DIR/name`` after checking it is what a stage record says it wrote, and that what
        it was made from agrees with everything read before; ``stage``: who should write it
        (default: its usual writer); ``only``: the stages of its ancestry this reader depends
        on (``export`` re-makes the codes of ``inputs.npz`` from the data stage's real inputs,
        whatever an earlier export made them from)."""
        path = self.out / name
        first = stage or (writers(name) or ("flow",))[0]
        if not path.is_file():
            raise ArtifactError(f"{path} not found: run {self._cmd(first)} first")
        h = sha256(path)
        self.reads[name] = h
        found, known = [], []
        for s in writers(name) or (first,):
            prov = self.record_of(s)
            if prov is None or name not in prov["writes"]:
                continue
            known.append(s)
            if prov["writes"][name] == h:
                found.append((s, prov))
        if not found and known:
            raise StaleArtifact(
                f"{path} is not the file `softfloor {known[-1]}` recorded writing (changed "
                f"since, truncated, or left by an interrupted run): rerun "
                f"{self._cmd(known[0])} (a file of your own: `softfloor flow --model FILE`)")
        if not found:  # no stage of DIR wrote any version of it: the user's own file
            self._merge({"writes": {name: h}, "made_from": {}}, f"{USER}:{name}", str(path))
        for s, prov in found:
            if only is not None:
                prov = {"writes": prov["writes"] if s in only else {},
                        "made_from": {k: v for k, v in prov["made_from"].items()
                                      if k.split(":", 1)[0] in only}}
            self._merge(prov, f"{s}:{name}", str(path))
        return path

    def adopt(self, stage: str, descends: bool = True) -> dict | None:
        """Merge the record of ``stage`` (for the report); its full record, or None if the stage
        has not run. A record made from other versions than those read so far is refused, and
        so is one whose files are not among the ancestors of those read (a training that is
        not the model file's, a simulation of older vectors), unless ``descends`` is False
        (nothing read could descend from it: a training before any export)."""
        prov = self.record_of(stage)
        if prov is None:
            return None
        path = self.out / "stages" / f"{stage}.json"
        for f, fh in prov["writes"].items() if descends else ():
            if self.made_from.get(f"{stage}:{f}") != fh:
                rerun = ORDER[ORDER.index(stage) + 1] if stage in ("data", "train") else stage
                raise StaleArtifact(
                    f"{path} records a `{stage}` run whose {f} is not the one the artifacts in "
                    f"{self.out} were made from: rerun {self._cmd(rerun)} and the stages after "
                    f"it, or the whole `softfloor flow`")
        self._merge(prov, None, str(path), stage)
        return load_json(path)

    def source(self, path: str | Path, option: str) -> Path:
        """A user's file (``--model``, ``--inputs``, ...): recorded by content hash."""
        path = Path(path)
        self.made_from[f"{option}:{path.resolve()}"] = sha256(path)
        return path

    def _merge(self, prov: dict, key: str | None, via: str, stage: str | None = None) -> None:
        owner = stage or key.split(":", 1)[0]
        items = dict(prov["made_from"])
        for f, fh in prov["writes"].items():  # the versions its own run wrote, siblings included
            items[f"{owner}:{f}"] = fh
        stages = {k.split(":", 1)[0] for k in items} | {owner}
        for k, v in items.items():
            old = self.made_from.get(k)
            if old is not None and old != v:
                self._conflict(k, v, via, stages)
            self.made_from.setdefault(k, v)
            self._via.setdefault(k, (via, stages))

    def _conflict(self, key: str, new: str, via: str, stages: set[str]):
        """Two inputs descend from different versions of ``key``: name both and the rerun."""
        writer, _, name = key.partition(":")
        prov = self.record_of(writer) if writer in ORDER else None
        current = prov["writes"].get(name) if prov else None
        first, first_stages = self._via[key]
        # The side that disagrees with the latest run of `writer` is the stale one; rerun its
        # first stage after `writer`.
        stale = first_stages if current == new else stages
        after = [s for s in ORDER if s in stale and writer in ORDER
                 and ORDER.index(s) > ORDER.index(writer)]
        rerun = (f"rerun {self._cmd(after[0])} and the stages after it" if after
                 else f"rerun the stages after `{writer}`")
        raise StaleArtifact(f"{first} and {via} were made from different versions of {name} "
                            f"(written by `softfloor {writer}`): {rerun}, or the whole "
                            f"`softfloor flow`")

    def record(self, writes: list[str]) -> dict:
        """The ``provenance`` object of a stage that read this lineage and wrote ``writes``
        (file names in DIR)."""
        return {"writes": {w: sha256(self.out / w) for w in writes},
                "made_from": dict(sorted(self.made_from.items()))}
