"""Reading and writing the flow's files: atomic writes, usual permissions, one-line errors.

Every file the flow writes goes through :func:`atomic_write_bytes`: a temporary file beside the
target, fsynced, given the permissions a plain ``open(..., "w")`` would give (``0666 & ~umask``,
so 0644 under the usual umask), then renamed over the target. A reader (or an interrupted run)
sees the old file or the new one, never a half. ``.npz`` archives are written deterministically
(fixed member timestamps), so equal arrays give equal bytes and equal content hashes.

Every file the flow reads goes through :func:`load_npz` or :func:`load_json` (artifacts of
earlier stages) or :func:`load_array` (a user's ``.npy``): a missing, truncated or malformed file
raises :class:`ArtifactError`, one line naming the file, the field and what to do.
"""
from __future__ import annotations

import io
import json
import os
import tempfile
import threading
import zipfile
from pathlib import Path

import numpy as np


class ArtifactError(ValueError):
    """A file is missing, unreadable, malformed or stale; the message names it and what to do."""


_umask_lock = threading.Lock()


def _file_mode() -> int:
    """``0666 & ~umask``: the mode ``open(path, "w")`` gives a new file."""
    with _umask_lock:
        mask = os.umask(0o022)
        os.umask(mask)
    return 0o666 & ~mask


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    """Write ``data`` to a temporary file beside ``path``, fsync it, then rename over ``path``;
    the file gets the usual permissions (``0666 & ~umask``)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fchmod(f.fileno(), _file_mode())
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def npz_bytes(**arrays) -> bytes:
    """An ``.npz`` archive of ``arrays`` (what ``np.savez`` writes, loadable by ``np.load``),
    with fixed member timestamps so that equal arrays give equal bytes."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_STORED) as z:
        for name, a in arrays.items():
            a = np.asanyarray(a)
            if a.dtype.hasobject:
                raise TypeError(f"{name}: object arrays are not written (dtype {a.dtype})")
            member = io.BytesIO()
            np.lib.format.write_array(member, a, allow_pickle=False)
            z.writestr(zipfile.ZipInfo(f"{name}.npy", date_time=(1980, 1, 1, 0, 0, 0)),
                       member.getvalue())
    return buf.getvalue()


def save_npz(path: str | os.PathLike, **arrays) -> Path:
    """Write ``arrays`` as an ``.npz`` archive atomically (see :func:`npz_bytes`)."""
    return atomic_write_bytes(path, npz_bytes(**arrays))


def _rerun(rerun: str | None) -> str:
    return f"; {rerun}" if rerun else ""


def load_npz(path: str | os.PathLike, keys: dict[str, str] | tuple = (),
             rerun: str | None = None) -> dict[str, np.ndarray]:
    """Every array of the ``.npz`` archive ``path``, read completely.

    ``keys`` maps required member names to their kind: ``"int"`` (integer dtype), ``"float"``
    (real, finite) or ``""`` (any numeric); a tuple requires the names with any numeric dtype.
    ``rerun`` is appended to every error (e.g. "rerun `softfloor golden --out DIR`").
    """
    path = Path(path)
    if isinstance(keys, tuple):
        keys = {k: "" for k in keys}
    try:
        with np.load(path, allow_pickle=False) as z:
            arrays = {k: z[k] for k in z.files}
    except FileNotFoundError:
        raise ArtifactError(f"{path}: not found{_rerun(rerun)}") from None
    except (OSError, ValueError, EOFError, zipfile.BadZipFile, zipfile.LargeZipFile,
            KeyError, AttributeError) as e:
        raise ArtifactError(f"{path}: truncated or not an .npz archive "
                            f"({type(e).__name__}: {_short(e)}){_rerun(rerun)}") from None
    if not isinstance(arrays, dict):
        raise ArtifactError(f"{path}: not an .npz archive{_rerun(rerun)}")
    for k, kind in keys.items():
        if k not in arrays:
            has = ", ".join(sorted(arrays)) or "nothing"
            raise ArtifactError(f"{path}: no array {k!r} (has {has}){_rerun(rerun)}")
        _check_kind(arrays[k], kind, f"{path}[{k!r}]", rerun)
    return arrays


def _check_kind(a: np.ndarray, kind: str, where: str, rerun: str | None) -> None:
    if a.dtype.kind not in "biuf":
        raise ArtifactError(f"{where}: dtype {a.dtype} is not numeric{_rerun(rerun)}")
    if kind == "int" and a.dtype.kind not in "biu":
        raise ArtifactError(f"{where}: dtype {a.dtype}, expected integer codes{_rerun(rerun)}")
    if kind == "float" and a.dtype.kind == "f" and not np.all(np.isfinite(a)):
        raise ArtifactError(f"{where}: holds NaN or infinite values{_rerun(rerun)}")


def load_json(path: str | os.PathLike, keys: tuple = (), rerun: str | None = None) -> dict:
    """The JSON object in ``path`` with the top-level ``keys`` present."""
    path = Path(path)
    try:
        d = json.loads(path.read_text())
    except FileNotFoundError:
        raise ArtifactError(f"{path}: not found{_rerun(rerun)}") from None
    except (OSError, UnicodeDecodeError, ValueError, RecursionError) as e:
        raise ArtifactError(f"{path}: truncated or not JSON ({_short(e)}){_rerun(rerun)}") \
            from None
    if not isinstance(d, dict):
        raise ArtifactError(f"{path}: expected a JSON object, got {type(d).__name__}"
                            f"{_rerun(rerun)}")
    missing = [k for k in keys if k not in d]
    if missing:
        raise ArtifactError(f"{path}: no field {missing[0]!r}{_rerun(rerun)}")
    return d


def load_array(path: str | os.PathLike, option: str, what: str) -> np.ndarray:
    """A user's ``.npy`` array given as ``option`` (e.g. ``--inputs``): non-empty, numeric,
    finite. ``what`` says what it should hold (used in the errors)."""
    path = Path(path)
    hint = f"give {option} a .npy file of {what} (numpy.save)"
    if not path.is_file():
        raise ArtifactError(f"{option} {path}: no such file; {hint}")
    try:
        a = np.load(path, allow_pickle=False)
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as e:
        raise ArtifactError(f"{option} {path}: not a readable .npy array ({_short(e)}); "
                            f"{hint}") from None
    if not isinstance(a, np.ndarray):
        if hasattr(a, "close"):
            a.close()
        raise ArtifactError(f"{option} {path}: an .npz archive, not an array; {hint}")
    if a.dtype.kind not in "biuf":
        raise ArtifactError(f"{option} {path}: dtype {a.dtype} is not numeric; {hint}")
    if a.size == 0:
        raise ArtifactError(f"{option} {path}: empty array (shape {a.shape}); {hint}")
    if a.dtype.kind == "f" and not np.all(np.isfinite(a)):
        bad = int(np.sum(~np.isfinite(a)))
        raise ArtifactError(f"{option} {path}: {bad} NaN or infinite values; {hint}")
    return a


def _short(e: BaseException, n: int = 160) -> str:
    s = " ".join(str(e).split()) or type(e).__name__
    return s if len(s) <= n else s[:n - 3] + "..."
