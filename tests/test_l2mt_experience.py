"""L2MT experience: problem sampler, the Dask engine and the experience builder."""

import json
import math
import os
import shutil

import numpy as np
import pytest
from conftest import run_python

from bayesmtl.errors import BayesMTLWarning, DataError, HyperparameterError, MethodError
from bayesmtl.l2mt import experience as E
from bayesmtl.l2mt.problems import (
    ProblemSpec,
    build_problem,
    load_pool,
    problem_rng,
    sample_spec,
    split_counts,
)
from bayesmtl.parallel import WorkItemError, map_completed

# one small shape for every fit here: usps, m = 4, 40 rows per class (12 train / 12 valid)
SMALL = {"pools": ("usps",), "m_range": (4, 4), "per_class": 40}
CANDS = (E.Candidate("STL", "stl", {}, {"lam": (0.1, 1.0)}),
         E.Candidate("MTRL", "mtrl", {}, {"lam": (0.1, 1.0)}))
ARRAYS = ("omegas", "o", "valid_error", "test_error")


def _spec(index=0, stream="train"):
    return sample_spec(0, index, stream=stream, **SMALL)


# ----------------------------------------------------------------------------- problems


def test_problems_are_deterministic_and_fixed_shape():
    n_train, n_valid, n_test = split_counts(160, (0.3, 0.3))
    assert (n_train, n_valid, n_test) == (48, 48, 64)
    shapes = {}
    for index in range(12):
        spec = sample_spec(5, index)
        assert spec == sample_spec(5, index)
        assert ProblemSpec.from_dict(json.loads(json.dumps(spec.to_dict()))) == spec
        assert 4 <= spec.m <= 8
        assert len({frozenset(p) for p in spec.pairs}) == spec.m
        pool = load_pool(spec.pool)
        problem = build_problem(spec)
        for data, rows, n in ((problem.train, spec.train, n_train),
                              (problem.valid, spec.valid, n_valid),
                              (problem.test, spec.test, n_test)):
            assert data.task_names == spec.task_names
            assert data.X.shape == (spec.m * 2 * n, pool.X.shape[1])
            np.testing.assert_array_equal(data.n_per_task, 2 * n)
            positives = np.bincount(data.task, weights=data.y, minlength=spec.m)
            np.testing.assert_array_equal(positives, n)  # balanced
            for (a, b), task_rows in zip(spec.pairs, rows, strict=True):
                labels = pool.labels[list(task_rows)]
                assert set(labels[:n]) == {a} and set(labels[n:]) == {b}
        for t in range(spec.m):  # splits of a task are disjoint
            parts = [set(spec.train[t]), set(spec.valid[t]), set(spec.test[t])]
            assert sum(map(len, parts)) == len(set().union(*parts)) == 320
        shape = tuple(d.X.shape for d in problem[1:])
        assert shapes.setdefault((spec.pool, spec.m), shape) == shape
    again = build_problem(sample_spec(5, 3))
    np.testing.assert_array_equal(again.train.X, build_problem(sample_spec(5, 3)).train.X)


def test_streams_are_disjoint_and_pools_standardised():
    train = [sample_spec(0, i, stream="train") for i in range(15)]
    test = [sample_spec(0, i, stream="test") for i in range(15)]
    assert not {(s.pool, s.pairs, s.train) for s in train} & {
        (s.pool, s.pairs, s.train) for s in test}
    assert problem_rng(0, 0, "train").integers(2**62) != problem_rng(0, 0, "test").integers(2**62)
    with pytest.raises(HyperparameterError, match="stream"):
        sample_spec(0, 0, stream="validation")
    with pytest.raises(DataError, match="smallest class"):
        sample_spec(0, 0, pools=("mnist",), per_class=200)
    pool = load_pool("digits")
    np.testing.assert_allclose(pool.X.mean(axis=0), 0, atol=1e-12)
    constant = np.ptp(pool.X, axis=0) == 0
    assert constant.any() and np.all(pool.scale[constant] == 1)


# ----------------------------------------------------------------------------- pieces


def test_omega_from_relation_conversions():
    rng = np.random.default_rng(0)
    B = rng.normal(size=(4, 4))
    P = B @ B.T + 4 * np.eye(4)
    omega, why = E.omega_from_relation("glmtl", {"omega": None, "omega_inv": P}, 4)
    np.testing.assert_allclose(omega, np.linalg.inv(P) / np.trace(np.linalg.inv(P)))
    A = 0.1 * rng.normal(size=(4, 4))
    R = np.eye(4) - A
    omega, _ = E.omega_from_relation("reconstruction", {"reconstruction": A}, 4)
    inv = np.linalg.inv(R @ R.T)
    np.testing.assert_allclose(omega, inv / np.trace(inv), rtol=1e-10)
    assert E.omega_from_relation("reconstruction", {"reconstruction": np.eye(4)}, 4)[0] is None
    assert E.omega_from_relation("mtrl", {"omega": np.diag([1.0, -1, 1, 1])}, 4)[0] is None
    assert E.omega_from_relation("mtrl", {"omega": np.full((4, 4), np.nan)}, 4)[0] is None
    np.testing.assert_array_equal(E.omega_from_relation("stl", {}, 4)[0], np.eye(4) / 4)
    assert len(E.DEFAULT_CANDIDATES) == 10
    assert sum(len(E.expand_grid(c)) for c in E.DEFAULT_CANDIDATES) == 45
    with pytest.raises(HyperparameterError, match="no hyperparameter"):
        E.experience_for_problem(_spec(), (E.Candidate("STL", "stl", {}, {"mu": (1.0,)}),))
    with pytest.raises(HyperparameterError, match="stl"):
        E.experience_for_problem(_spec(), CANDS[1:])


def test_experience_for_problem():
    spec = _spec()
    r = E.experience_for_problem(spec, CANDS)
    k, m = 4, spec.m
    assert r["omegas"].shape == (k, m, m) and r["o"].shape == (k,)
    assert r["valid_error"].shape == r["test_error"].shape == (k, m)
    np.testing.assert_allclose(np.trace(r["omegas"], axis1=1, axis2=2), 1, atol=1e-12)
    np.testing.assert_array_equal(r["omegas"], r["omegas"].transpose(0, 2, 1))
    assert np.linalg.eigvalsh(r["omegas"]).min() >= -1e-10
    np.testing.assert_array_equal(r["omegas"][:2], np.broadcast_to(np.eye(m) / m, (2, m, m)))
    meta = json.loads(json.dumps(r["meta"]))
    assert [row["label"] for row in meta["rows"]] == ["STL", "STL", "MTRL", "MTRL"]
    stl = meta["stl_row"]
    assert stl in (0, 1) and r["o"][stl] == 1.0
    assert r["valid_error"][stl].mean() <= r["valid_error"][1 - stl].mean()
    assert meta["eps_stl"] == r["test_error"][stl].mean() and meta["eps_stl_floor"] is None


def test_zero_stl_error_uses_the_floor(monkeypatch):
    monkeypatch.setattr(E, "task_errors", lambda W, b, data: np.zeros(data.n_tasks))
    r = E.experience_for_problem(_spec(), CANDS[:1])
    n_test = 4 * 2 * split_counts(40)[2]
    assert r["meta"]["eps_stl_floor"] == r["meta"]["eps_stl"] == 0.5 / n_test
    np.testing.assert_array_equal(r["o"], 0.0)


# ----------------------------------------------------------------------------- engine


def test_map_completed_serial_and_errors():
    assert sorted(map_completed(math.sqrt, [1.0, 4.0, 9.0], scheduler="serial",
                                progress=False)) == [(0, 1.0), (1, 2.0), (2, 3.0)]
    with pytest.raises(WorkItemError, match=r"job: item 1 \(-1.0\) failed with ValueError") as err:
        list(map_completed(math.sqrt, [4.0, -1.0], scheduler="serial", progress=False,
                           desc="job"))
    assert err.value.index == 1 and isinstance(err.value.__cause__, ValueError)
    with pytest.raises(HyperparameterError, match="scheduler"):
        list(map_completed(math.sqrt, [1.0], scheduler="nowhere"))


def test_map_completed_local_cluster_propagates_errors():
    with pytest.raises(WorkItemError, match=r"item 1 \(-1.0\) failed with ValueError"):
        list(map_completed(math.sqrt, [4.0, -1.0], scheduler=None, n_workers=1,
                           progress=False))


def test_import_is_light():
    code = ("import sys, bayesmtl, bayesmtl.parallel, bayesmtl.l2mt.experience; "
            "print(sorted({'dask', 'distributed', 'torch'} & set(sys.modules)))")
    assert run_python(code).strip() == "[]"


# ----------------------------------------------------------------------------- builder


@pytest.fixture(scope="module")
def serial_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("serial")
    paths = E.build_experience(out, 3, candidates=CANDS, scheduler="serial", progress=False,
                               **SMALL)
    assert [p.name for p in paths] == [f"problem_{i:05d}.npz" for i in range(3)]
    return out


def test_serial_and_local_cluster_write_identical_tuples(serial_dir, tmp_path):
    E.build_experience(tmp_path, 2, candidates=CANDS, scheduler=None, n_workers=2,
                       progress=False, **SMALL)
    serial, dask = E.load_experience(serial_dir)[:2], E.load_experience(tmp_path)
    assert len(dask) == 2
    for a, b in zip(serial, dask, strict=True):
        assert a.spec == b.spec and a.labels == b.labels and a.hypers == b.hypers
        for name in ARRAYS:
            np.testing.assert_array_equal(getattr(a, name), getattr(b, name))
    with np.load(tmp_path / "problem_00000.npz", allow_pickle=False) as z:
        assert json.loads(str(z["meta"]))["format_version"] == E.FORMAT_VERSION
    test_error, hyper = E.best_on_validation(serial[0], "STL")
    assert test_error == serial[0].meta["eps_stl"] and set(hyper) == {"lam"}
    with pytest.raises(MethodError, match="no fit labelled"):
        E.best_on_validation(serial[0], "SPATS")


def test_resume_rebuilds_only_missing_and_corrupt(serial_dir, tmp_path, monkeypatch):
    out = tmp_path / "exp"
    shutil.copytree(serial_dir, out)
    before = E.load_experience(out)
    (out / "problem_00000.npz").unlink()
    corrupt = out / "problem_00001.npz"
    corrupt.write_bytes(corrupt.read_bytes()[:100])
    kept = os.stat(out / "problem_00002.npz").st_mtime_ns
    calls = []
    original = E.experience_for_problem

    def counting(spec, *args, **kwargs):
        calls.append(spec.index)
        return original(spec, *args, **kwargs)

    monkeypatch.setattr(E, "experience_for_problem", counting)
    with pytest.warns(BayesMTLWarning, match="rebuilding problem 1"):
        E.build_experience(out, 3, candidates=CANDS, scheduler="serial", progress=False,
                           **SMALL)
    assert sorted(calls) == [0, 1]
    assert os.stat(out / "problem_00002.npz").st_mtime_ns == kept
    assert not list(out.glob(".*.tmp"))
    for a, b in zip(before, E.load_experience(out), strict=True):
        for name in ARRAYS:
            np.testing.assert_array_equal(getattr(a, name), getattr(b, name))
    with pytest.raises(DataError, match="another problem spec"):
        E.build_experience(out, 3, seed=1, candidates=CANDS, scheduler="serial",
                           progress=False, **SMALL)


def test_load_errors_are_typed(serial_dir, tmp_path):
    with pytest.raises(DataError, match="does not exist"):
        E.load_experience(tmp_path / "nowhere")
    with pytest.raises(DataError, match="no problem_"):
        E.load_experience(tmp_path)
    with np.load(serial_dir / "problem_00000.npz", allow_pickle=False) as z:
        arrays = dict(z)
    meta = json.loads(str(arrays["meta"]))
    meta["format_version"] = 99
    np.savez(tmp_path / "problem_00000.npz", **{**arrays, "meta": np.array(json.dumps(meta))})
    with pytest.raises(DataError, match="format version 99"):
        E.load_experience(tmp_path)
    (tmp_path / "problem_00000.npz").write_bytes(b"not a zip")
    with pytest.raises(DataError, match="not a readable experience file"):
        E.load_experience(tmp_path)


# ----------------------------------------------------------------------------- end to end


def test_train_evaluate_and_fit_through_the_cli(serial_dir, tmp_path):
    """experience → `bayesmtl l2mt train` → the test process on a held-out problem →
    `bayesmtl fit --method l2mt` on the bundled USPS tasks (same 64 features)."""
    from bayesmtl.cli import main
    from bayesmtl.l2mt.evaluate import evaluate_problem, relative_errors
    from bayesmtl.l2mt.model import L2MTResult

    model = tmp_path / "model.pt"
    assert main(["l2mt", "train", "--experience", str(serial_dir), "--out", str(model),
                 "--epochs", "3", "--hidden", "4", "--k", "3"]) == 0
    r = L2MTResult.load(model)
    assert r.config.hidden == 4 and r.n_tuples == sum(
        len(p.o) for p in E.load_experience(serial_dir))
    E.build_experience(tmp_path / "test", 1, stream="test", candidates=CANDS,
                       scheduler="serial", progress=False, **SMALL)
    test_problem, = E.load_experience(tmp_path / "test")
    assert test_problem.spec == _spec(0, stream="test")
    out = evaluate_problem(str(model), test_problem.spec, lam_grid=(0.1, 1.0))
    assert out.lam in (0.1, 1.0) and out.valid_error.shape == out.test_error.shape == (2, 4)
    assert np.trace(out.omega) == pytest.approx(1.0)
    # relative errors: STL is 1 by definition, L2MT's row comes from the outcomes
    rel = relative_errors([test_problem], ["STL", "MTRL"], {0: out})
    assert rel["STL"] == 1.0 and np.isfinite(rel["L2MT"])
    report = tmp_path / "report"
    assert main(["fit", "--dataset", "usps", "--method", "l2mt", "--param", f"model={model}",
                 "--lam", "0.1", "--out", str(report)]) == 0
    metrics = json.loads((report / "metrics.json").read_text())
    assert metrics["method"] == "l2mt" and np.isfinite(metrics["test_error_pct"])
    assert main(["l2mt", "train", "--experience", str(tmp_path / "none"), "--out",
                 str(model)]) == 1  # a typed error, reported

