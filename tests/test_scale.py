"""Scale paths give the same numbers as the direct computations (issue 19; no timing here)."""

import jax.numpy as jnp
import numpy as np
import pytest

from bayesmtl import MultiTaskData, methods
from bayesmtl.errors import UnknownTaskError
from bayesmtl.inference import stats


def _augmented(X):
    return np.c_[X, np.ones(len(X))]


@pytest.mark.parametrize("block_rows", [1, 7, 65536])
def test_task_moments_equal_per_task_products(monkeypatch, block_rows):
    """Blocks of one row, ragged blocks, one block."""
    monkeypatch.setattr(stats, "_BLOCK_ROWS", block_rows)
    rng = np.random.default_rng(0)
    task = rng.integers(0, 3, size=53)
    X, y = rng.normal(size=(53, 3)), rng.normal(size=53)
    data = MultiTaskData.from_arrays(X, y, task)
    moments = stats.task_moments(data)
    assert stats.task_moments(data) is moments  # computed once per data object
    for i, (Xi, yi) in enumerate(data.tasks()):
        A = _augmented(Xi)
        np.testing.assert_allclose(moments.gram[i], A.T @ A, rtol=1e-12, atol=1e-12)
        np.testing.assert_allclose(moments.cross[i], A.T @ yi, rtol=1e-12, atol=1e-12)
        np.testing.assert_allclose(moments.yy[i], yi @ yi, rtol=1e-12, atol=1e-12)
    assert moments.counts.tolist() == [np.sum(task == i) for i in range(3)]


def test_streamed_moments_equal_one_pass():
    """Moments accumulated over chunks of rows in any order equal those of all rows."""
    rng = np.random.default_rng(1)
    task = rng.integers(0, 5, size=200)
    X, y = rng.normal(size=(200, 4)), rng.normal(size=200)
    whole = stats.task_moments(MultiTaskData.from_arrays(X, y, task, task_names=range(5)))
    streamed = stats.TaskMoments.zeros(5, 4)
    for lo in range(0, 200, 37):
        streamed = streamed.update(X[lo:lo + 37], y[lo:lo + 37], task[lo:lo + 37])
    for a, b in zip(whole, streamed, strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("block_rows", [1, 4, 65536])
def test_chunk_without_some_tasks_adds_only_its_own(monkeypatch, block_rows):
    """A streamed chunk that lacks tasks (first, middle and last) leaves their moments alone,
    and a task whose rows span several copy blocks is summed over all of them."""
    monkeypatch.setattr(stats, "_BLOCK_ROWS", block_rows)
    rng = np.random.default_rng(4)
    task = np.array([1, 1, 1, 1, 1, 3, 1, 3, 3])  # unsorted; tasks 0, 2 and 4 absent
    X, y = rng.normal(size=(9, 2)), rng.normal(size=9)
    start = stats.TaskMoments.zeros(5, 2)
    start.gram[:] = 1.0
    seen = []  # the chunk's products cover its own range of tasks (1…3), not all m
    segments = stats._segment_moments
    monkeypatch.setattr(stats, "_segment_moments",
                        lambda X, y, offsets: seen.append(len(offsets) - 1) or
                        segments(X, y, offsets))
    out = start.update(X, y, task)
    assert seen == [3]
    for i in range(5):
        A = _augmented(X[task == i])
        np.testing.assert_allclose(out.gram[i], 1.0 + A.T @ A, rtol=1e-12, atol=1e-12)
        np.testing.assert_allclose(out.cross[i], A.T @ y[task == i], rtol=1e-12, atol=1e-12)
    assert np.all(start.gram == 1.0)  # update returns new moments
    for bad in (5, -1):  # an index outside [0, m) is an error, not a row dropped or wrapped
        with pytest.raises(UnknownTaskError, match="task indices"):
            start.update(X, y, np.r_[task[:-1], bad])


def test_gaussian_term_loss_equals_row_loss():
    """The quadratic data loss from the moments equals Σ_j w_j (y_j - f_j)²/(2σ²) on the rows,
    with and without intercepts, for both loss scales."""
    from conftest import make_regression

    data = make_regression(seed=2, d=3, sizes=(9, 14, 6))[0]
    rng = np.random.default_rng(3)
    W, b = rng.normal(size=(3, 3)), rng.normal(size=3)
    for loss_scale in ("sum", "mean"):
        for fit_intercept in (True, False):
            term = stats.data_term(data, loss_scale, 0.4, fit_intercept)
            bb = b if fit_intercept else np.zeros(3)
            f = np.sum(data.X * W.T[data.task], axis=1) + bb[data.task]
            w = 1.0 / data.n_per_task[data.task] if loss_scale == "mean" else 1.0
            expected = np.sum(w * (data.y - f) ** 2) / (2 * 0.4**2)
            np.testing.assert_allclose(float(stats.data_loss(term, W, b)), expected,
                                       rtol=1e-12)


def test_stl_is_per_task_ridge():
    """STL's MAP (λ/2)‖w_i‖² + (1/n_i) Σ (y - xᵀw_i - b_i)² per task, by its normal equations."""
    from conftest import make_regression

    data = make_regression(seed=3, d=4, sizes=(30, 50, 20))[0]
    lam = 0.3
    fit, _ = methods.fit(data, "stl", {"lam": lam})
    for i, (X, y) in enumerate(data.tasks()):
        n = len(y)
        A = np.c_[X, np.ones(n)]
        reg = np.diag([lam] * X.shape[1] + [0.0])
        theta = np.linalg.solve(2 / n * A.T @ A + reg, 2 / n * A.T @ y)
        np.testing.assert_allclose(fit.W[:, i], theta[:-1], rtol=1e-8, atol=1e-10)
        np.testing.assert_allclose(fit.b[i], theta[-1], rtol=1e-8, atol=1e-10)


def test_omega_from_thin_svd_equals_eigendecomposition():
    """With more tasks than features Ω comes from the thin SVD of W; it equals the m × m
    eigendecomposition route for the MTRL, Schatten and clustered spectra."""
    import jax.numpy as jnp

    from bayesmtl.inference.profile import omega_from_W_spectrum
    from bayesmtl.models import clustered, matrix_normal, schatten

    W = jnp.asarray(np.random.default_rng(4).normal(size=(3, 7)))
    spectra = [(matrix_normal._mtrl_omega_spectrum, (), 1e-9),
               (schatten._schatten_spectrum, schatten._schatten_args(1.0, 0.5, 0.2), 0.0),
               (clustered._clustered_omega_spectrum, (0.3, 2.0, 0.01, 1.0), 0.0)]
    for spectrum, args, eps in spectra:
        evals, evecs = np.linalg.eigh(np.asarray(W.T @ W))
        evals[:4] = 0.0  # rank 3: the exact zeros (eigh leaves ±1e-16, whose root is 1e-8)
        direct = (evecs * spectrum(jnp.asarray(evals + eps), args)) @ evecs.T
        np.testing.assert_allclose(omega_from_W_spectrum(W, spectrum, args, eps), direct,
                                   rtol=1e-9, atol=1e-11)


#: glMTL's W against the reference: its alternation stopped when W moved by less than
#: √tol·‖W‖ (1e-7 at tol = 1e-14) on a flat valley of F, 2.8e-7 from the stationary point that
#: Newton on the reduced objective now reaches (reduced gradient 7e-8 against the reference's
#: 2.3e-7; the objectives agree to 1e-14)
GLMTL_W_ATOL = 1e-6


def test_same_W_as_the_row_based_solvers():
    """The sufficient-statistics solvers give the W, b and objective of the row-based ones
    they replaced (commit 6a90738; reference written by benchmarks/make_scale_reference.py),
    to 1e-8, for every Gaussian member; glMTL's W to ``GLMTL_W_ATOL``."""
    import pathlib
    import sys
    import warnings

    sys.path.insert(0, str(pathlib.Path(__file__).parents[1] / "benchmarks"))
    import make_scale_reference as ref

    expected = np.load(pathlib.Path(__file__).parent / "data" / "scale_reference_6a90738.npz")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        got = ref.fit_all(ref.problem())
    for key in ref.CASES:
        W, b = expected[f"{key}_W"], expected[f"{key}_b"]
        atol = (GLMTL_W_ATOL if key == "glmtl" else 1e-8) * max(1.0, np.abs(W).max())
        np.testing.assert_allclose(got[f"{key}_W"], W, rtol=0, atol=atol, err_msg=key)
        np.testing.assert_allclose(got[f"{key}_b"], b, rtol=0, atol=atol, err_msg=key)
        np.testing.assert_allclose(got[f"{key}_objective"], expected[f"{key}_objective"],
                                   rtol=1e-8, err_msg=key)


def test_profile_refit_reuses_the_block_spectrum():
    """The ADMM's per-task eigendecompositions are computed once per data term and kept on
    the data: a refit reuses them (same object) and gives the W of a fit that computes them
    afresh, bitwise; a different loss scale (another term) gets its own."""
    from bayesmtl.models.schatten import Schatten, fit_schatten

    rng = np.random.default_rng(3)
    sizes = (30, 25, 40, 35)
    X = rng.normal(size=(sum(sizes), 4))
    y = X @ rng.normal(size=4) + rng.normal(size=len(X))
    data = MultiTaskData.from_arrays(X, y, np.repeat(np.arange(4), sizes))
    prior = Schatten(1.0, 0.5)
    first = fit_schatten(data, prior, 0.1)
    term, spectrum = data._cache["centred_spectrum"]
    assert term is stats.data_term(data)
    again = fit_schatten(data, prior, 0.1)
    assert data._cache["centred_spectrum"][1] is spectrum
    data._cache.clear()
    fresh = fit_schatten(data, prior, 0.1)
    np.testing.assert_array_equal(again.W, first.W)
    np.testing.assert_array_equal(fresh.W, first.W)
    fit_schatten(data, prior, 0.1, loss_scale="sum")
    assert data._cache["centred_spectrum"][0] is stats.data_term(data, "sum")


def test_alternating_w_steps_reuse_the_block_spectrum(monkeypatch):
    """The alternating members' large-system W-step (the profile ADMM, forced here by a
    small dense-system limit and one CG step) takes the block spectrum kept on the data:
    factored once per fit, and the fit's W equals that of W-steps that factor the blocks
    every time (1e-10)."""
    from bayesmtl.inference import profile
    from bayesmtl.models import family as F

    rng = np.random.default_rng(4)
    sizes = (30, 25, 40, 35, 28)
    X = rng.normal(size=(sum(sizes), 3))
    y = X @ rng.normal(size=3) + rng.normal(size=len(X))
    data = MultiTaskData.from_arrays(X, y, np.repeat(np.arange(5), sizes))
    monkeypatch.setattr(profile, "DENSE_SYSTEM_MAX", 0)
    monkeypatch.setattr(profile, "CG_BEFORE_FACTORING", 1)  # CG does not finish: the ADMM
    calls = []
    spectrum_of = profile.centred_spectrum
    monkeypatch.setattr(profile, "centred_spectrum",
                        lambda term, d: calls.append(d) or spectrum_of(term, d))
    member = F.SparseReconstruction(lam2=0.2, zero_diagonal=True)
    cached = F.fit_family(data, member, 0.5)
    assert len(cached.history) > 2 and len(calls) == 1
    assert data._cache["centred_spectrum"][0] is stats.data_term(data)
    from bayesmtl.inference import alternation

    monkeypatch.setattr(alternation, "_cached_spectrum", lambda data, term, d: None)
    fresh = F.fit_family(data, member, 0.5)  # every ADMM W-step factors the blocks itself
    np.testing.assert_allclose(cached.W, fresh.W, rtol=0, atol=1e-10)


def test_large_w_step_by_cg_equals_the_admm_and_the_dense_solve(monkeypatch):
    """The large-system W-step (forced by a small dense-system limit) by block-Jacobi CG,
    by the profile ADMM (one CG step, then the ADMM) and by the dense Cholesky give the same
    W and b (1e-8), with a nearly singular coupling P and a task with fewer rows than
    coefficients (a singular block)."""
    from bayesmtl.inference import profile

    rng = np.random.default_rng(5)
    sizes = (30, 3, 40, 35, 28, 33)
    m, d = len(sizes), 4
    X = rng.normal(size=(sum(sizes), d))
    y = X @ rng.normal(size=d) + rng.normal(size=len(X))
    term = stats.data_term(MultiTaskData.from_arrays(X, y, np.repeat(np.arange(m), sizes)))
    A = 0.9 * np.eye(m) + 0.02 * rng.normal(size=(m, m))
    P = jnp.asarray((np.eye(m) - A) @ (np.eye(m) - A).T)  # eigenvalues down to ~1e-4
    W0, b0 = jnp.zeros((d, m)), jnp.zeros(m)
    W_dense, b_dense = profile._gaussian_w_step(term, P, W0, b0)  # m·(d+1) ≤ the limit
    monkeypatch.setattr(profile, "DENSE_SYSTEM_MAX", 0)
    W_cg, b_cg = profile._gaussian_w_step(term, P, W0, b0)
    assert float(profile.gaussian_w_residual(term, P, W_cg, b_cg)) <= 1e-12
    monkeypatch.setattr(profile, "CG_BEFORE_FACTORING", 1)
    W_admm, b_admm = profile._gaussian_w_step(term, P, W0, b0)
    for W, b in ((W_cg, b_cg), (W_admm, b_admm)):
        np.testing.assert_allclose(W, W_dense, rtol=0, atol=1e-8)
        np.testing.assert_allclose(b, b_dense, rtol=0, atol=1e-8)


def _classification(seed, sizes=(40, 37, 45)):
    rng = np.random.default_rng(seed)
    tasks = []
    for n in sizes:
        X = rng.normal(size=(n, 3))
        tasks.append((X, (X @ rng.normal(size=3) + rng.normal(size=n) > 0).astype(int)))
    return MultiTaskData.from_tasks(tasks, kind="classification")


def test_padded_rows_leave_the_log_joint_unchanged():
    """Rows padded to the bucket size carry the smallest positive weight: the negative log
    joint is the same to round-off."""
    import jax.numpy as jnp

    from bayesmtl import priors
    from bayesmtl.inference.map import neg_log_joint
    from bayesmtl.models.likelihoods import BernoulliLogit
    from bayesmtl.models.matrix_normal import bucketed_inputs, model_inputs, mtl_model

    data = _classification(0)
    rng = np.random.default_rng(1)
    params = {"W": jnp.asarray(rng.normal(size=(3, 3))), "b": jnp.asarray(rng.normal(size=3))}
    values = []
    for inputs in (model_inputs, bucketed_inputs):
        args, kw = inputs(data, "mean")
        kw.update(omega_prior=priors.Fixed("identity"), likelihood=BernoulliLogit(), lam=0.5)
        values.append(float(neg_log_joint(mtl_model, args, kw, params)))
    assert bucketed_inputs(data, "mean")[0][0].shape[0] == 128 > data.X.shape[0] == 122
    np.testing.assert_allclose(values[0], values[1], rtol=1e-15)


def test_generic_map_compiles_once_for_folds_and_refits():
    """The L-BFGS MAP (here: logistic, fixed Ω) reuses its compiled objective for another
    fold of the same bucket size and for a refit with an equal Ω given as a new array."""
    from bayesmtl.inference import map as map_module

    data = _classification(2)
    omega = np.array([[1.0, 0.3, 0.0], [0.3, 1.0, 0.3], [0.0, 0.3, 1.0]])
    folds = [data.subset(np.flatnonzero(np.arange(len(data.y)) % k != 0)) for k in (5, 6)]
    assert folds[0].X.shape[0] != folds[1].X.shape[0]
    methods.fit(folds[0], "fixed", {"lam": 0.5, "omega": omega})
    compiled = map_module._value_and_grad._cache_size()
    first = methods.fit(folds[1], "fixed", {"lam": 0.5, "omega": omega.copy()})[0]
    assert map_module._value_and_grad._cache_size() == compiled
    assert first.converged


@pytest.mark.parametrize("d", [2, 6])
def test_clustered_precision_is_the_inverse_covariance(d):
    """The clustered member's precision (from the spectrum, no m × m inverse) inverts its Ω,
    with fewer and with more features than tasks."""
    from conftest import make_regression

    from bayesmtl.models.family import Clustered, fit_family

    data = make_regression(seed=5, d=d, sizes=(12, 15, 9, 20))[0]
    r = fit_family(data, Clustered(a=2.0, b=0.05, c=1.0), 0.5)
    np.testing.assert_allclose(r.precision @ r.omega, np.eye(4), atol=1e-9)


def _streamed(data, chunk=17, seed=0):
    """TaskStatistics of ``data`` from its rows shuffled and cut into chunks (task names as
    labels)."""
    from bayesmtl.data import TaskStatistics

    order = np.random.default_rng(seed).permutation(len(data.y))
    names = np.asarray(data.task_names)
    chunks = ((data.X[order[lo:lo + chunk]], data.y[order[lo:lo + chunk]],
               names[data.task[order[lo:lo + chunk]]]) for lo in range(0, len(order), chunk))
    return TaskStatistics.from_chunks(chunks, data.task_names, data.feature_names)


def test_fit_from_streamed_statistics_equals_fit_from_rows():
    """Every method flagged ``statistics`` fits TaskStatistics streamed in shuffled chunks to
    the W, b, relation and objective of the fit on the rows (the reference members to the
    stored reference, as above; the others against their own row fit)."""
    import pathlib
    import sys
    import warnings

    from bayesmtl.methods import Settings

    sys.path.insert(0, str(pathlib.Path(__file__).parents[1] / "benchmarks"))
    import make_scale_reference as ref

    data = ref.problem()
    streamed = _streamed(data)
    for a, b in zip(stats.task_moments(data), streamed.moments, strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-12)
    expected = np.load(pathlib.Path(__file__).parent / "data" / "scale_reference_6a90738.npz")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        got = ref.fit_all(streamed)
    for key in ref.CASES:
        W = expected[f"{key}_W"]
        atol = (GLMTL_W_ATOL if key == "glmtl" else 1e-8) * max(1.0, np.abs(W).max())
        np.testing.assert_allclose(got[f"{key}_W"], W, rtol=0, atol=atol, err_msg=key)
        np.testing.assert_allclose(got[f"{key}_b"], expected[f"{key}_b"], rtol=0, atol=atol,
                                   err_msg=key)
        np.testing.assert_allclose(got[f"{key}_objective"], expected[f"{key}_objective"],
                                   rtol=1e-8, err_msg=key)
    others = [n for n in methods.names() if methods.get(n).statistics and n not in ref.CASES]
    assert set(others) >= {"inverse_wishart", "squared_schatten", "l21", "lasso", "dirty",
                           "gamtl"}
    for name in others:
        # GAMTL's alternation at its default tolerance (the same path on both inputs)
        settings = Settings() if name == "gamtl" else Settings(tol=1e-14, max_iter=20000)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            rows, _ = methods.fit(data, name, None, settings)
            fit, dt = methods.fit(streamed, name, None, settings)
        if name == "gamtl":  # bi-convex: rounding-level differences take another path down
            # a flat valley; the stop is F's relative change ≤ 1e-6
            assert fit.converged and rows.converged
            np.testing.assert_allclose(fit.objective, rows.objective, rtol=1e-5)
            continue
        atol = 1e-8 * max(1.0, np.abs(rows.W).max())
        np.testing.assert_allclose(fit.W, rows.W, rtol=0, atol=atol, err_msg=name)
        np.testing.assert_allclose(fit.objective, rows.objective, rtol=1e-10, err_msg=name)
        for key, value in rows.relation.items():
            np.testing.assert_allclose(fit.relation[key], value, rtol=0, atol=1e-8, err_msg=name)
        assert list(dt.posterior["W"].coords["task"].values) == list(data.task_names)


def test_task_statistics_reject_bad_input():
    """Typed errors: unknown task, NaN, wrong width, a task without rows at fit time, a method
    that needs the rows, and sampling."""
    from bayesmtl.data import TaskStatistics
    from bayesmtl.errors import (
        EmptyTaskError,
        MethodError,
        NonFiniteError,
        ShapeMismatchError,
        UnknownTaskError,
    )
    from bayesmtl.methods import Settings

    rng = np.random.default_rng(4)
    s = TaskStatistics(["a", "b", "c"], n_features=2)
    with pytest.raises(UnknownTaskError, match="'z'"):
        s.add(rng.normal(size=(3, 2)), np.zeros(3), ["a", "z", "b"])
    with pytest.raises(NonFiniteError):
        s.add(np.array([[0.0, np.nan]]), np.zeros(1), ["a"])
    with pytest.raises(ShapeMismatchError):
        s.add(rng.normal(size=(3, 3)), np.zeros(3), ["a", "b", "c"])
    assert s.n_per_task.tolist() == [0, 0, 0]  # rejected chunks add nothing
    s.add(rng.normal(size=(8, 2)), rng.normal(size=8), ["a", "b"] * 4)
    with pytest.raises(EmptyTaskError, match="c"):
        methods.fit(s, "mtrl")
    s.add(rng.normal(size=(4, 2)), rng.normal(size=4), ["c"] * 4)
    assert s.n_per_task.tolist() == [4, 4, 4]
    with pytest.raises(MethodError, match="needs the rows"):
        methods.fit(s, "amtl")
    with pytest.raises(MethodError, match="needs the rows"):
        methods.fit(s, "mtrl", None, Settings(inference="nuts"))
    with pytest.raises(MethodError, match="L-BFGS on the rows"):
        methods.fit(s, "inverse_wishart", {"ridge": 0.1})


def test_estimator_fits_task_statistics():
    """MTLRegressor.fit(stats) gives the coefficients and predictions of fit(X, y, task);
    DataFrames are matched by the statistics' feature names; rows-only requests are errors."""
    import pandas as pd

    from bayesmtl import TaskStatistics
    from bayesmtl.errors import DataError, HyperparameterError, MethodError
    from bayesmtl.estimators import MTLClassifier, MTLRegressor

    rng = np.random.default_rng(5)
    X, site = rng.normal(size=(90, 3)), np.repeat(["a", "b", "c"], 30)
    y = X @ [1.0, -0.5, 0.2] + rng.normal(size=90)
    stats = TaskStatistics(["a", "b", "c"], feature_names=["u", "v", "w"])
    for lo in range(0, 90, 25):
        stats.add(X[lo:lo + 25], y[lo:lo + 25], site[lo:lo + 25])
    streamed = MTLRegressor(method="mtrl", lam=0.1).fit(stats)
    rows = MTLRegressor(method="mtrl", lam=0.1).fit(X, y, task=site)
    np.testing.assert_allclose(streamed.coef_, rows.coef_, atol=1e-10)
    np.testing.assert_allclose(streamed.omega_, rows.omega_, atol=1e-10)
    frame = pd.DataFrame(X, columns=["u", "v", "w"])[["w", "u", "v"]]
    np.testing.assert_allclose(streamed.predict(frame, task=site), rows.predict(X, task=site),
                               atol=1e-10)
    with pytest.raises(MethodError, match="needs the rows"):
        MTLRegressor(method="amtl").fit(stats)
    with pytest.raises(HyperparameterError, match="auto"):
        MTLRegressor(lam="auto").fit(stats)
    with pytest.raises(DataError, match="alone"):
        MTLRegressor().fit(stats, y)
    with pytest.raises(DataError, match="regression"):
        MTLClassifier().fit(stats)


def test_task_statistics_merge_save_load(tmp_path):
    """Shards merged equal the whole; save/load round-trips exactly; a foreign or corrupt
    folder is a ModelFileError; mismatched shards are a ShapeMismatchError."""
    from bayesmtl import TaskStatistics
    from bayesmtl.errors import ModelFileError, ShapeMismatchError

    rng = np.random.default_rng(6)
    X, y, task = rng.normal(size=(60, 2)), rng.normal(size=60), rng.choice(["p", "q"], 60)
    whole = TaskStatistics(["p", "q"], n_features=2).add(X, y, task)
    shards = [TaskStatistics(["p", "q"], n_features=2).add(X[s], y[s], task[s])
              for s in (slice(0, 25), slice(25, 60))]
    merged = shards[0].merge(shards[1])
    for a, b in zip(merged.moments, whole.moments, strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-13, atol=1e-13)
    merged.save(tmp_path / "stats")
    back = TaskStatistics.load(tmp_path / "stats")
    assert back.task_names == ("p", "q") and back.feature_names == ("x0", "x1")
    for a, b in zip(back.moments, merged.moments, strict=True):
        np.testing.assert_array_equal(a, b)
    with pytest.raises(ShapeMismatchError):
        merged.merge(TaskStatistics(["q", "p"], n_features=2))
    (tmp_path / "stats" / "arrays.npz").write_bytes(b"not a zip")
    with pytest.raises(ModelFileError):
        TaskStatistics.load(tmp_path / "stats")
    from bayesmtl.io import write_model

    write_model(tmp_path / "other", {"kind": "model", "params": {}}, {"W": np.zeros(2)})
    with pytest.raises(ModelFileError, match="does not hold"):
        TaskStatistics.load(tmp_path / "other")


def test_admm_loop_neither_copies_nor_transposes_its_anderson_buffers():
    """The ADMM's Anderson memory, two (memory, 2dm) buffers, is read and updated in place in
    its loop: no whole-buffer copy or transpose per iteration (``dX.T @ γ`` had XLA transpose
    both buffers every iteration, 17 % of the School trace-norm fit's CPU time)."""
    from hlo_hazards import moved_in_loops

    from bayesmtl.inference.profile import profile_admm
    from bayesmtl.models.schatten import _schatten_args, _schatten_penalty, _schatten_prox

    rng = np.random.default_rng(5)
    d, m, memory = 28, 139, 10  # School's size (a small problem is not transposed)
    A = rng.normal(size=(m, d, d))
    term = stats.GaussianTerm(jnp.asarray(A @ A.transpose(0, 2, 1) + np.eye(d)),
                              jnp.asarray(rng.normal(size=(m, d))), jnp.asarray(1.0))
    text = profile_admm.lower(term, 0.0, _schatten_prox, _schatten_penalty,
                              _schatten_args(1.0, 1.0, 0.5), jnp.zeros((d, m)), jnp.zeros(m),
                              100, 1e-12, memory=memory).compile().as_text()
    moved = moved_in_loops(text, [(memory, 2 * d * m)])
    assert not moved, moved
