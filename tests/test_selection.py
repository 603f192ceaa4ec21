"""Model selection over the registry: warm-started paths, task-stratified CV (scores, grid
edges, convergence), compare with a time limit, the evidence, estimators and the CLI."""

import json

import numpy as np
import pytest
from conftest import make_regression
from sklearn.model_selection import GridSearchCV

from bayesmtl import MultiTaskData
from bayesmtl import methods as M
from bayesmtl.errors import (
    ConvergenceWarning,
    DataError,
    GridEdgeWarning,
    HyperparameterError,
    MethodError,
)
from bayesmtl.estimators import MTLClassifier, MTLRegressor, TaskKFold
from bayesmtl.methods import Settings
from bayesmtl.models import family as F
from bayesmtl.selection import (
    compare,
    cross_validate,
    log_evidence,
    regularisation_path,
    select_by_evidence,
    task_folds,
)


@pytest.fixture(scope="module")
def reg():
    return make_regression(seed=2, d=4, sizes=(30, 36, 42, 48))[0]


@pytest.mark.parametrize("method, hyper", [("clustered", {}), ("glmtl", {"lam2": 0.1}),
                                           ("amtl", {"mu": 0.1})])
def test_path_warm_start_matches_cold_fits(reg, method, hyper):
    grid = [10.0, 1.0, 0.1]
    path = regularisation_path(reg, method, grid, hyper)
    for lam, warm in zip(grid, path, strict=True):
        cold, _ = M.fit(reg, method, {**hyper, "lam": lam})
        assert abs(warm.objective - cold.objective) <= 1e-7 * max(1.0, abs(cold.objective))


def test_task_folds_keep_every_task_and_class_in_every_fold():
    rng = np.random.default_rng(0)
    tasks = [(rng.normal(size=(n, 3)), np.r_[np.zeros(n // 3), np.ones(n - n // 3)])
             for n in (12, 15, 18)]
    data = MultiTaskData.from_tasks(tasks, kind="classification")
    fold = task_folds(data, 3)
    for k in range(3):
        for i in range(data.n_tasks):
            rows = (fold == k) & (data.task == i)
            assert set(np.unique(data.y[rows])) == {0.0, 1.0}


def test_task_folds_reject_tiny_tasks():
    data = MultiTaskData.from_tasks([(np.ones((2, 1)), np.ones(2)),
                                     (np.ones((9, 1)), np.ones(9))])
    with pytest.raises(DataError, match="too few for 3-fold"):
        task_folds(data, 3)
    with pytest.raises(HyperparameterError, match="n_folds must be an integer ≥ 2"):
        task_folds(data, 1)


def test_cross_validation_picks_the_grid_minimum(reg):
    cv = cross_validate(reg, "reconstruction", {"lam": [0.01, 1.0, 30.0], "lam2": [0.1, 1.0]},
                        n_folds=3, n_jobs=2, settings=Settings(tol=1e-8))
    assert cv.grid["lam"] == (30.0, 1.0, 0.01) and cv.scores.shape == (3, 2)
    j, a = np.unravel_index(np.argmin(cv.scores), cv.scores.shape)
    assert (cv.lam, cv.lam2) == (cv.grid["lam"][j], cv.grid["lam2"][a])
    assert cv.best_score == cv.scores.min()
    # λ = 30 shrinks W strongly: worse than the best on this informative data
    assert cv.scores[0].min() > cv.scores.min()


def test_cross_validation_on_the_engine_equals_serial(reg):
    """Folds on threads, on a 2-process local Dask cluster and serially: identical scores."""
    grid = {"lam": [0.1, 1.0], "lam2": [0.1, 1.0]}
    serial = cross_validate(reg, "spats", grid, n_folds=3)
    threads = cross_validate(reg, "spats", grid, n_folds=3, n_jobs=2)
    local = cross_validate(reg, "spats", grid, n_folds=3, n_jobs=2, scheduler="local")
    np.testing.assert_array_equal(threads.scores, serial.scores)
    np.testing.assert_array_equal(local.scores, serial.scores)
    assert local.best == serial.best
    with pytest.raises(HyperparameterError, match="scheduler must be"):
        cross_validate(reg, "stl", n_jobs=2, scheduler="nowhere")


def test_cross_validation_scores_edges_and_convergence():
    rng = np.random.default_rng(8)
    w = rng.normal(size=3)
    tasks = []
    for i in range(3):
        X = rng.normal(size=(60, 3))
        tasks.append((X, (X @ w + 0.5 * rng.normal(size=60) > 0.3 * i).astype(float)))
    clf = MultiTaskData.from_tasks(tasks, kind="classification")
    with pytest.warns(GridEdgeWarning, match="on the edge of the grid"):
        cv = cross_validate(clf, "mtrl", {"lam": [100.0, 1000.0]}, scoring="log_loss")
    assert cv.scoring == "log_loss" and cv.on_edge == ("lam",) and cv.lam == 100.0
    auc = cross_validate(clf, "stl", {"lam": [0.01, 0.1, 1.0]}, scoring="auc")
    assert 0.5 < auc.best_score <= 1.0 and auc.best_score == auc.scores.max()
    with pytest.raises(HyperparameterError, match="scoring must be one of"):
        cross_validate(clf, "stl", scoring="rmse")
    with pytest.raises(HyperparameterError, match="stl has no hyperparameter 'mu'"):
        cross_validate(clf, "stl", {"mu": [1.0]})
    reg = make_regression(seed=3, d=3, sizes=(20, 22, 24))[0]
    with pytest.warns(ConvergenceWarning, match="CV fits stopped before their tolerance"):
        capped = cross_validate(reg, "glmtl", {"lam": [0.1], "lam2": [0.01]},
                                settings=Settings(max_iter=2))
    assert not capped.converged and capped.n_unconverged == capped.n_fits == 3


def test_compare_lists_every_method_and_skips_over_time():
    train = make_regression(seed=6, d=3, sizes=(24, 27, 30))[0]
    test = make_regression(seed=7, d=3, sizes=(10, 10, 10))[0]
    rows, fits = compare(train, test, ["stl", "glmtl"], grids={"glmtl": {"lam": [1.0, 0.1]}},
                         time_limit=1e-6)
    assert [r["method"] for r in rows] == ["stl", "glmtl"]
    assert all(r["status"].startswith("skipped: time limit") for r in rows) and not fits
    rows, fits = compare(train, test, ["stl", "amtl"],
                         grids={"stl": {"lam": [1.0]}, "amtl": {"lam": [1.0], "mu": [0.1]}})
    assert [r["status"] for r in rows] == ["ok", "ok"] and set(fits) == {"stl", "amtl"}
    assert rows[1]["hyper"] == {"lam": 1.0, "mu": 0.1} and np.isfinite(rows[1]["test_rmse"])
    with pytest.raises(MethodError, match="unknown method 'nope'"):
        compare(train, test, ["stl", "nope"])


def test_log_evidence_equals_dense_gaussian_marginal():
    """Evidence via the posterior precision = log N(y; 0, X Σ_w Xᵀ + σ²I), with intercepts
    given a very wide normal prior instead of flat (the λ-independent constant then differs
    only by the intercept prior's normaliser)."""
    data = make_regression(seed=5, d=2, sizes=(6, 7, 8))[0]
    rng = np.random.default_rng(1)
    A = rng.normal(size=(3, 3))
    P = A @ A.T + 0.5 * np.eye(3)
    noise, tau = 0.7, 1e4
    diffs = []
    for lam in (0.3, 3.0):
        cov_w = np.kron(np.linalg.inv(lam * P), np.eye(2))  # task-major (m·d)
        rows = []
        for i, (X, _) in enumerate(data.tasks()):
            Z = np.zeros((len(X), 6))
            Z[:, 2 * i:2 * i + 2] = X
            rows.append(Z)
        Xbig = np.vstack(rows)
        onehot = np.eye(3)[data.task]
        C = Xbig @ cov_w @ Xbig.T + tau**2 * onehot @ onehot.T + noise**2 * np.eye(len(data.y))
        sign, logdet = np.linalg.slogdet(C)
        dense = -0.5 * (data.y @ np.linalg.solve(C, data.y) + logdet
                        + len(data.y) * np.log(2 * np.pi))
        diffs.append(log_evidence(data, P, lam, noise) - dense)
    # flat b (measure db) vs N(0, τ²): the evidences differ by m·log τ, the same for every λ
    assert np.allclose(diffs, 3 * np.log(tau), atol=1e-5)


def test_evidence_selects_a_strong_prior_for_pure_noise():
    rng = np.random.default_rng(3)
    tasks = [(rng.normal(size=(40, 3)), rng.normal(size=40)) for _ in range(3)]
    data = MultiTaskData.from_tasks(tasks)
    lam, values = select_by_evidence(data, np.eye(3), [0.01, 1.0, 100.0], noise=1.0)
    assert lam == 100.0 and np.all(np.diff(values) > 0)


def test_estimator_with_member_name_and_gridsearch(reg):
    X = np.column_stack([reg.task.astype(float), reg.X])
    est = MTLRegressor(method="spats", lam=0.5, lam2=0.1, task_col=0)
    search = GridSearchCV(est, {"lam": [0.1, 1.0]}, cv=TaskKFold(3),
                          scoring="neg_mean_squared_error")
    search.fit(X, reg.y, groups=reg.task)
    assert search.best_params_["lam"] in (0.1, 1.0)
    fit = F.fit_family(reg, F.SparseCovariance(0.1), search.best_params_["lam"])
    W = search.best_estimator_.W_[0]
    assert np.max(np.abs(W - fit.W)) < 1e-6


def test_classifier_with_member(tmp_path):
    rng = np.random.default_rng(4)
    w = rng.normal(size=3)
    tasks = []
    for _ in range(3):
        X = rng.normal(size=(40, 3))
        tasks.append((X, (X @ w + 0.3 * rng.normal(size=40) > 0).astype(float)))
    data = MultiTaskData.from_tasks(tasks, kind="classification")
    clf = MTLClassifier(method="clustered", lam=0.1).fit(data.X, data.y, task=data.task)
    assert clf.score(data.X, data.y, task=data.task) > 0.8
    with pytest.raises(MethodError, match="not available for clustered; it supports map, nuts"):
        MTLClassifier(method="clustered", inference="svi").fit(data.X, data.y, task=data.task)


def test_compare_cli_writes_table_and_heatmaps(tmp_path, monkeypatch, capsys):
    from bayesmtl import cli

    small = make_regression(seed=6, d=3, sizes=(24, 27, 30, 33))[0]
    test = make_regression(seed=7, d=3, sizes=(10, 10, 10, 10))[0]
    monkeypatch.setattr(cli, "_load", lambda dataset, split, features: (small, test))
    rc = cli.main(["compare", "--methods", "stl,pooled,rmtl,clustered,glmtl,spats,"
                   "reconstruction,amtl,gamtl", "--grid", "lam=0.1,1", "--grid", "lam2=0.1",
                   "--grid", "mu=0.1", "--grid", "gamma=0.1", "--folds", "3",
                   "--out", str(tmp_path)])
    assert rc == 0
    report = json.loads((tmp_path / "compare.json").read_text())
    assert [r["method"] for r in report["rows"]][:3] == ["stl", "pooled", "rmtl"]
    assert all(np.isfinite(r["test_rmse"]) for r in report["rows"])
    assert report["rows"][-2]["hyper"]["mu"] == 0.1
    assert (tmp_path / "task_relations.png").stat().st_size > 1000
    out = capsys.readouterr().out
    assert "clustered" in out and "gamma=0.1" in out


def test_cli_school_features_option(tmp_path):
    from bayesmtl import cli

    train, test = cli._load("school", 4, "binary")
    assert train.n_features == test.n_features == 25
    assert not any(name.startswith("pct_") for name in train.feature_names)
    with pytest.raises(SystemExit):
        cli.main(["compare", "--dataset", "usps", "--features", "binary", "--out", str(tmp_path)])


def test_member_estimator_save_load(tmp_path, reg):
    from bayesmtl.estimators import load_estimator

    S = np.ones((reg.n_tasks, reg.n_tasks))
    for method, hyper in (("rmtl", {"similarity": S, "ridge": 0.1}),
                          ("clustered", {"a": 1.0, "b": 0.01, "c": 0.9}),
                          ("glmtl", {"lam2": 0.2})):
        est = MTLRegressor(method=method, lam=0.5, **hyper).fit(reg.X, reg.y, task=reg.task)
        est.save(tmp_path / "m")
        again = load_estimator(tmp_path / "m")
        assert np.allclose(again.predict(reg.X, task=reg.task), est.predict(reg.X, task=reg.task))
        assert again.get_params().keys() == est.get_params().keys()
        if method == "rmtl":
            assert np.array_equal(again.similarity, S)
