r"""L2MT's multitask experience: tuples (problem S_i, task covariance Ω_i, relative error o_i).

For each random problem (:mod:`bayesmtl.l2mt.problems`) every candidate method is fitted (MAP,
:func:`bayesmtl.methods.registry.fit`) at every point of its grid on the training split; each
fit gives one tuple: its Ω normalised to tr Ω = 1 and o = ε_MTL / ε_STL, the mean over tasks
of its test error over that of STL tuned on the validation split (Zhang, Wei & Yang 2018,
Sections 3.1 and 4). Errors are 0/1 classification errors (predict 1 iff xᵀw_i + b_i > 0).
ε_STL is the mean task test error of STL at the λ with the lowest mean validation error (ties:
the first in grid order); when it is 0 it is floored at 0.5 / (test rows of the problem), and
``meta["eps_stl_floor"]`` holds the floor (None otherwise).

Ω of a fit: STL I; glMTL the inverse of its precision ``omega_inv``; the reconstruction form
(the paper's AMTL, eq. (9)) the inverse of (I - A)(I - A)ᵀ; every other method its ``omega``.
A fit whose Ω is not finite, not invertible (precision condition number above
:data:`MAX_CONDITION`) or not PSD within :data:`PSD_TOL`, and a fit that raised
:class:`~bayesmtl.errors.ResultError`, is skipped and listed in the meta data.

On disk (:func:`build_experience`): one ``problem_{index:05d}.npz`` per problem with arrays
``omegas (k, m, m)``, ``o (k,)``, ``valid_error (k, m)``, ``test_error (k, m)`` and ``meta``, a
JSON string (spec, candidates, settings, per-row label/hyper/convergence/warnings, skipped
fits, ε_STL, library and format version); readable with ``allow_pickle=False``.
"""

from __future__ import annotations

import contextlib
import functools
import itertools
import json
import time
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import NamedTuple

import numpy as np

from ..errors import BayesMTLWarning, DataError, HyperparameterError, MethodError, ResultError
from .problems import POOLS, ProblemSpec, build_problem, sample_spec

__all__ = ["Candidate", "DEFAULT_CANDIDATES", "LAM_GRID", "LAM2_GRID", "ExperienceProblem",
           "FORMAT", "FORMAT_VERSION", "experience_for_problem", "build_experience",
           "load_experience", "best_on_validation", "omega_from_relation", "task_errors",
           "expand_grid", "problem_path"]

FORMAT = "bayesmtl.l2mt.experience"
FORMAT_VERSION = 1
LAM_GRID = (0.01, 0.1, 1.0)
LAM2_GRID = (0.1, 1.0)
#: a precision whose condition number exceeds this is not inverted (the fit is skipped)
MAX_CONDITION = 1e12
#: Ω is PSD when its smallest eigenvalue is ≥ -PSD_TOL · its largest |eigenvalue|
PSD_TOL = 1e-8


class Candidate(NamedTuple):
    """A baseline of the experience: ``label`` (the paper's name), registry ``method``,
    ``fixed`` hyperparameters and ``grid`` {hyperparameter: values} (every combination is
    fitted; the first key varies slowest)."""

    label: str
    method: str
    fixed: Mapping
    grid: Mapping

    def to_dict(self) -> dict:
        return {"label": self.label, "method": self.method, "fixed": dict(self.fixed),
                "grid": {k: list(v) for k, v in self.grid.items()}}


def _with_lam2(label, method, **fixed):
    return Candidate(label, method, fixed, {"lam": LAM_GRID, "lam2": LAM2_GRID})


def _lam_only(label, method, **fixed):
    return Candidate(label, method, fixed, {"lam": LAM_GRID})


#: the 10 baselines of L2MT's Section 4 (AMTL is its eq. (9) variant: ``reconstruction``)
DEFAULT_CANDIDATES = (
    _lam_only("STL", "stl"),
    _lam_only("RMTL", "rmtl"),
    _with_lam2("SNR1", "schatten", r=1.0),
    _with_lam2("SNR2", "schatten", r=2.0),
    _lam_only("MTRL", "mtrl"),
    _lam_only("SSNR2", "squared_schatten", r=2.0),
    _lam_only("CMTL", "clustered"),
    _with_lam2("glMTL", "glmtl"),
    _with_lam2("SPATS", "spats"),
    _with_lam2("AMTL(9)", "reconstruction"),
)


class ExperienceProblem(NamedTuple):
    """One problem's experience: its spec, k rows of ``labels`` (str) and ``hypers`` (dict),
    ``omegas (k, m, m)`` (tr = 1), ``o (k,)``, ``valid_error (k, m)``, ``test_error (k, m)``
    and the file's ``meta`` dict."""

    spec: ProblemSpec
    labels: tuple
    hypers: tuple
    omegas: np.ndarray
    o: np.ndarray
    valid_error: np.ndarray
    test_error: np.ndarray
    meta: dict


# ----------------------------------------------------------------------------- pieces


def expand_grid(candidate: Candidate) -> list[dict]:
    """The candidate's hyperparameter dicts: ``fixed`` updated by each grid combination."""
    keys = list(candidate.grid)
    return [{**candidate.fixed, **dict(zip(keys, values, strict=True))}
            for values in itertools.product(*(candidate.grid[k] for k in keys))]


def _check_candidates(candidates: Sequence[Candidate]) -> tuple[Candidate, ...]:
    from ..methods import registry as R

    candidates = tuple(Candidate(*c) for c in candidates)
    labels = [c.label for c in candidates]
    if len(set(labels)) != len(labels):
        raise HyperparameterError(f"candidate labels must be unique; got {labels}",
                                  "candidates", labels)
    if not any(R.get(c.method).name == "stl" for c in candidates):
        raise HyperparameterError("the candidates need an 'stl' method: o is relative to STL",
                                  "candidates", labels)
    for c in candidates:
        method = R.get(c.method)
        if method.relation != "omega" or method.fit_map is None:
            raise MethodError(f"candidate {c.label}: {method.name} has no MAP task covariance",
                              "method", c.method)
        grid = expand_grid(c)
        if not grid:
            raise HyperparameterError(f"candidate {c.label}: empty grid", "grid", c.grid)
        for hyper in grid:
            R.validate(method, hyper)
    return candidates


def task_errors(W: np.ndarray, b: np.ndarray, data) -> np.ndarray:
    """(m,) classification error of each task: predict 1 iff xᵀw_t + b_t > 0 (W (d, m))."""
    from ..models.losses import linear_predictor

    score = np.asarray(linear_predictor(data.X, data.task, np.asarray(W), np.asarray(b)))
    wrong = (score > 0) != (data.y > 0.5)
    return np.bincount(data.task, weights=wrong, minlength=data.n_tasks) / data.n_per_task


def _stable_inverse(P: np.ndarray) -> tuple[np.ndarray | None, str]:
    """Inverse of a symmetric positive definite P by eigendecomposition, or (None, why)."""
    P = np.asarray(P, dtype=np.float64)
    if not np.all(np.isfinite(P)):
        return None, "precision not finite"
    eig, V = np.linalg.eigh(0.5 * (P + P.T))
    top = eig.max(initial=0.0)
    if top <= 0 or eig.min() <= top / MAX_CONDITION:
        return None, (f"precision not invertible (eigenvalues {eig.min():.3g}..{top:.3g}, "
                      f"condition limit {MAX_CONDITION:.0e})")
    return (V / eig) @ V.T, ""


def omega_from_relation(method: str, relation: Mapping, m: int) -> tuple[np.ndarray | None, str]:
    """The (m, m) task covariance of a fit's relation normalised to trace 1, or (None, why).

    stl: I; ``omega_inv`` (glMTL): its inverse; ``reconstruction`` A: ((I - A)(I - A)ᵀ)⁻¹;
    otherwise ``omega``. Checks finiteness and PSD (:data:`PSD_TOL`).
    """
    why = ""
    if method == "stl":
        omega = np.eye(m)
    elif "omega_inv" in relation:
        omega, why = _stable_inverse(relation["omega_inv"])
    elif "reconstruction" in relation:
        R = np.eye(m) - np.asarray(relation["reconstruction"], dtype=np.float64)
        omega, why = _stable_inverse(R @ R.T)
    else:
        omega = np.asarray(relation["omega"], dtype=np.float64)
    if omega is None:
        return None, why
    if omega.shape != (m, m) or not np.all(np.isfinite(omega)):
        return None, f"Ω not finite or of shape {omega.shape}"
    omega = 0.5 * (omega + omega.T)
    eig = np.linalg.eigvalsh(omega)
    scale = np.abs(eig).max(initial=0.0)
    if scale == 0:
        return None, "Ω is zero (every task's weights shrunk to 0): no trace normalisation"
    if eig.min() < -PSD_TOL * scale:
        return None, f"Ω not PSD (eigenvalues {eig.min():.3g}..{eig.max():.3g})"
    return omega / np.trace(omega), ""


def _settings(settings: Mapping | None):
    from ..methods.registry import Settings

    settings = dict(settings or {})
    unknown = sorted(set(settings) - set(Settings._fields))
    if unknown:
        raise HyperparameterError(f"settings has no field {unknown[0]!r}; fields: "
                                  f"{', '.join(Settings._fields)}", unknown[0],
                                  settings[unknown[0]])
    if settings.get("inference", "map") != "map" or settings.get("deadline") is not None:
        raise HyperparameterError("experience fits are MAP without a deadline (a deadline would "
                                  "make them depend on the machine)", "settings", settings)
    return Settings(**settings)


def _best_row(valid_error: np.ndarray, rows: np.ndarray) -> int:
    """Of ``rows``, the one with the lowest mean validation error (ties: the first)."""
    means = valid_error[rows].mean(axis=1)
    return int(rows[int(np.argmin(means))])


def _warning_text(w) -> str:
    return f"{w.category.__name__}: {w.message}"


# ----------------------------------------------------------------------------- one problem


def experience_for_problem(spec: ProblemSpec, candidates=DEFAULT_CANDIDATES,
                           settings: Mapping | None = None) -> dict:
    """Fit every candidate at every grid point on ``spec``'s training split.

    settings : overrides of :class:`~bayesmtl.methods.registry.Settings` for every fit (e.g.
        ``{"max_iter": 100}``); None = the defaults (MAP).
    Returns ``{"omegas": (k, m, m), "o": (k,), "valid_error": (k, m), "test_error": (k, m),
    "meta": dict}`` for the k fits kept, in candidate then grid order; a pure function of its
    arguments (bar the timings in ``meta``).
    """
    from .. import __version__
    from ..methods import registry as R

    start = time.perf_counter()
    candidates = _check_candidates(candidates)
    fit_settings = _settings(settings)
    problem = build_problem(spec)
    m = spec.m
    rows, skipped, omegas, valid, test = [], [], [], [], []
    for cand in candidates:
        method = R.get(cand.method).name
        for hyper in expand_grid(cand):
            t0 = time.perf_counter()
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                try:
                    fit, _ = R.fit(problem.train, method, hyper, fit_settings)
                    omega, why = omega_from_relation(method, fit.relation, m)
                except (ResultError, np.linalg.LinAlgError) as err:
                    fit, omega, why = None, None, f"{type(err).__name__}: {err}"
            messages = sorted({_warning_text(w) for w in caught})
            record = {"label": cand.label, "method": method, "hyper": hyper,
                      "n_warnings": len(caught), "warnings": messages,
                      "seconds": round(time.perf_counter() - t0, 4)}
            if omega is None:
                skipped.append({**record, "reason": why})
                continue
            record["converged"] = bool(fit.converged)
            rows.append(record)
            omegas.append(omega)
            valid.append(task_errors(fit.W, fit.b, problem.valid))
            test.append(task_errors(fit.W, fit.b, problem.test))
    omegas = np.asarray(omegas, dtype=np.float64).reshape(len(rows), m, m)
    valid = np.asarray(valid, dtype=np.float64).reshape(len(rows), m)
    test = np.asarray(test, dtype=np.float64).reshape(len(rows), m)
    stl_rows = np.flatnonzero([r["method"] == "stl" for r in rows])
    if stl_rows.size == 0:
        raise ResultError(f"problem {spec.index}: every STL fit was skipped "
                          f"({'; '.join(s['reason'] for s in skipped[:3])}); o is undefined")
    stl = _best_row(valid, stl_rows)
    eps_stl = float(test[stl].mean())
    n_test = int(problem.test.n_per_task.sum())
    floor = None
    if eps_stl == 0:
        floor = 0.5 / n_test
        eps_stl = floor
    o = test.mean(axis=1) / eps_stl
    meta = {"format": FORMAT, "format_version": FORMAT_VERSION, "bayesmtl_version": __version__,
            "spec": spec.to_dict(), "candidates": [c.to_dict() for c in candidates],
            "settings": dict(settings or {}), "rows": rows, "skipped": skipped,
            "stl_row": stl, "eps_stl": eps_stl, "eps_stl_floor": floor,
            "n_test_rows": n_test, "seconds": round(time.perf_counter() - start, 3)}
    return {"omegas": omegas, "o": o, "valid_error": valid, "test_error": test, "meta": meta}


# ----------------------------------------------------------------------------- files


def problem_path(out_dir, index: int) -> Path:
    """``out_dir/problem_{index:05d}.npz``."""
    return Path(out_dir) / f"problem_{index:05d}.npz"


def _write(path: Path, result: dict) -> None:
    """Write one problem's file atomically (:func:`bayesmtl.io.atomic_file`)."""
    from ..io import atomic_file

    with atomic_file(path) as fh:
        np.savez(fh, omegas=result["omegas"], o=result["o"],
                 valid_error=result["valid_error"], test_error=result["test_error"],
                 meta=np.array(json.dumps(result["meta"])))


def _read(path: Path) -> ExperienceProblem:
    """One experience file; :class:`DataError` when it is unreadable or of another format."""
    try:
        with np.load(path, allow_pickle=False) as z:
            arrays = {k: z[k] for k in ("omegas", "o", "valid_error", "test_error", "meta")}
        meta = json.loads(str(arrays.pop("meta")))
    except Exception as err:  # zip, npz, JSON and key errors: the file is not usable
        raise DataError(f"{path}: not a readable experience file ({type(err).__name__}: "
                        f"{err})") from err
    found = meta.get("format") if isinstance(meta, dict) else None
    if found != FORMAT:
        raise DataError(f"{path}: not an L2MT experience file (format {found!r})")
    if meta.get("format_version") != FORMAT_VERSION:
        raise DataError(f"{path}: experience format version {meta.get('format_version')!r}; "
                        f"this bayesmtl reads version {FORMAT_VERSION}: rebuild the experience")
    rows = meta["rows"]
    k, m = len(rows), len(meta["spec"]["pairs"])
    shapes = {"omegas": (k, m, m), "o": (k,), "valid_error": (k, m), "test_error": (k, m)}
    bad = [n for n, s in shapes.items() if arrays[n].shape != s]
    if bad:
        raise DataError(f"{path}: arrays {bad} do not match the meta data ({k} rows, {m} tasks)")
    return ExperienceProblem(ProblemSpec.from_dict(meta["spec"]),
                             tuple(r["label"] for r in rows), tuple(r["hyper"] for r in rows),
                             arrays["omegas"], arrays["o"], arrays["valid_error"],
                             arrays["test_error"], meta)


def load_experience(out_dir) -> list[ExperienceProblem]:
    """Every ``problem_*.npz`` of ``out_dir`` in index order.

    Raises :class:`DataError` for a missing or empty folder, an unreadable file or one of
    another format version.
    """
    folder = Path(out_dir)
    if not folder.is_dir():
        raise DataError(f"experience folder {folder} does not exist")
    paths = sorted(folder.glob("problem_*.npz"))
    if not paths:
        raise DataError(f"experience folder {folder} holds no problem_*.npz files")
    return [_read(p) for p in paths]


def _json_normal(value):
    return json.loads(json.dumps(value))


def _check_same_configuration(path, found: ExperienceProblem, spec: ProblemSpec,
                              candidates_json, settings_json) -> None:
    mismatch = [what for what, same in (
        ("problem spec", found.spec == spec),
        ("candidates", found.meta["candidates"] == candidates_json),
        ("settings", found.meta["settings"] == settings_json)) if not same]
    if mismatch:
        raise DataError(f"{path} was built with another {' and '.join(mismatch)} (seed, stream, "
                        "pools, sizes or candidates differ): use another out_dir")


def build_experience(out_dir, q: int, *, seed: int = 0, stream: str = "train", pools=POOLS,
                     candidates=DEFAULT_CANDIDATES, settings: Mapping | None = None,
                     m_range=(4, 8), per_class: int = 160, fractions=(0.3, 0.3),
                     scheduler=None, n_workers: int = 2, progress: bool = True) -> list[Path]:
    """Build (or complete) the experience of problems 0..q-1 of ``stream`` in ``out_dir``.

    Problems are :func:`~bayesmtl.l2mt.problems.sample_spec` (seed, index, stream, pools,
    m_range, per_class, fractions); each is :func:`experience_for_problem` (candidates,
    settings) run through :func:`bayesmtl.parallel.map_completed` (``scheduler``,
    ``n_workers``, ``progress``) and written atomically by this process as soon as it
    finishes. A file that exists and loads is kept (a killed run loses no finished problem);
    an unreadable one is rebuilt with a warning; one built with another configuration raises
    :class:`DataError`. One run per folder at a time (stale temporary files are removed).
    Returns the q paths in index order.
    """
    from ..parallel import map_completed

    if isinstance(q, bool) or not isinstance(q, int) or q < 0:
        raise HyperparameterError(f"q must be an integer ≥ 0; got {q!r}", "q", q)
    candidates = _check_candidates(candidates)
    _settings(settings)  # a bad field fails before any work
    folder = Path(out_dir)
    folder.mkdir(parents=True, exist_ok=True)
    for stale in folder.glob(".problem_*.tmp"):
        with contextlib.suppress(OSError):
            stale.unlink()
    specs = [sample_spec(seed, i, stream=stream, pools=pools, m_range=m_range,
                         per_class=per_class, fractions=fractions) for i in range(q)]
    candidates_json = _json_normal([c.to_dict() for c in candidates])
    settings_json = _json_normal(dict(settings or {}))
    todo = []
    for spec in specs:
        path = problem_path(folder, spec.index)
        if not path.exists():
            todo.append(spec)
            continue
        try:
            found = _read(path)
        except DataError as err:
            warnings.warn(f"rebuilding problem {spec.index}: {err}", BayesMTLWarning,
                          stacklevel=2)
            todo.append(spec)
            continue
        _check_same_configuration(path, found, spec, candidates_json, settings_json)
    work = functools.partial(experience_for_problem, candidates=candidates, settings=settings)
    for i, result in map_completed(work, todo, scheduler=scheduler, n_workers=n_workers,
                                   progress=progress, desc="L2MT experience"):
        _write(problem_path(folder, todo[i].index), result)
    return [problem_path(folder, spec.index) for spec in specs]


# ----------------------------------------------------------------------------- baselines


def best_on_validation(problem: ExperienceProblem, label: str) -> tuple[float, dict]:
    """Baseline ``label`` tuned on validation: (its mean task test error, the chosen hyper)
    at the grid point with the lowest mean validation error (ties: first in grid order)."""
    rows = np.flatnonzero([lab == label for lab in problem.labels])
    if rows.size == 0:
        raise MethodError(f"no fit labelled {label!r} in problem {problem.spec.index}; labels: "
                          f"{sorted(set(problem.labels))}", "label", label)
    best = _best_row(problem.valid_error, rows)
    return float(problem.test_error[best].mean()), dict(problem.hypers[best])
