"""Atomic folders and files, and the model-file format (JSON + npz, no pickle).

Everything bayesmtl writes as a folder (a saved model, a CLI report) or as a single file (an
L2MT experience problem or model) is written into a temporary beside the target and renamed
into place at the end, so an interrupted write leaves either the old one or the new one,
never a mix. Loading checks every file
and wraps any failure in :class:`~bayesmtl.errors.ModelFileError`.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
import zipfile
from pathlib import Path

import numpy as np

from .errors import ModelFileError

__all__ = ["atomic_folder", "atomic_file", "write_model", "read_model", "FORMAT_VERSION"]

#: version of the model-file layout; bumped when a saved model can no longer be read
FORMAT_VERSION = 2


@contextlib.contextmanager
def atomic_folder(path, *, overwrite: bool = True):
    """Yield a temporary folder beside ``path``; on success it replaces ``path``.

    ``overwrite=False`` refuses (FileExistsError) when ``path`` exists and is not empty. On
    an exception (Ctrl-C included) the temporary folder is removed and ``path`` is untouched.
    """
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise FileExistsError(f"{path} exists and is not a folder")
    if not overwrite and path.exists() and any(path.iterdir()):
        raise FileExistsError(f"{path} exists and is not empty")
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent))
    try:
        yield tmp
        old = None
        if path.exists():
            old = path.with_name(f".{path.name}.{os.getpid()}.old")
            os.replace(path, old)
        os.replace(tmp, path)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


@contextlib.contextmanager
def atomic_file(path):
    """Yield a binary file handle of a temporary file beside ``path``; on success it is
    flushed to disk and replaces ``path``. On an exception it is removed and ``path`` is
    untouched."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as fh:
            yield fh
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def _to_json(value):
    if isinstance(value, (np.floating, np.integer, np.bool_)):
        return value.item()
    if isinstance(value, tuple):
        return list(value)
    return value


def write_model(path, meta: dict, arrays: dict) -> None:
    """Write ``model.json`` (``meta`` plus the format version) and ``arrays.npz`` atomically.

    Array-valued entries of ``meta["params"]`` are moved into the npz under ``param:<name>``.
    """
    meta = dict(meta, format_version=FORMAT_VERSION)
    params = dict(meta.get("params", {}))
    arrays = dict(arrays)
    for k, v in list(params.items()):
        if isinstance(v, (np.ndarray, list)) and np.asarray(v).ndim >= 1 and not isinstance(
                v, str):
            arrays[f"param:{k}"] = np.asarray(v)
            params[k] = {"array": f"param:{k}"}
    meta["params"] = {k: _to_json(v) for k, v in params.items()}
    text = json.dumps(meta, indent=2, default=_to_json)
    with atomic_folder(path) as tmp:
        (tmp / "model.json").write_text(text)
        np.savez_compressed(tmp / "arrays.npz", **arrays)


def read_model(path) -> tuple[dict, dict]:
    """``(meta, arrays)`` of a saved model; array-valued params restored into ``meta``.

    Raises :class:`ModelFileError` for a missing, truncated or malformed folder or a format
    version this library cannot read.
    """
    path = Path(path)
    try:
        meta = json.loads((path / "model.json").read_text())
        with np.load(path / "arrays.npz", allow_pickle=False) as npz:
            arrays = {k: npz[k] for k in npz.files}
    except FileNotFoundError as err:
        missing = Path(err.filename).name
        raise ModelFileError(f"{path} is not a saved model folder (missing {missing})") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise ModelFileError(f"{path}/model.json is corrupt: {err}") from None
    except (zipfile.BadZipFile, OSError, ValueError, EOFError) as err:
        raise ModelFileError(f"{path}/arrays.npz is corrupt or truncated: {err}") from None
    version = meta.get("format_version") if isinstance(meta, dict) else None
    if version != FORMAT_VERSION:
        raise ModelFileError(f"{path} was written by an incompatible version of bayesmtl "
                             f"(format {version}; this version reads {FORMAT_VERSION})")
    params = meta.get("params")
    if not isinstance(params, dict):
        raise ModelFileError(f"{path}/model.json has no parameter table")
    for k, v in list(params.items()):
        if isinstance(v, dict) and set(v) == {"array"}:
            if v["array"] not in arrays:
                raise ModelFileError(f"{path}/arrays.npz lacks {v['array']}")
            params[k] = arrays.pop(v["array"])
    return meta, arrays
