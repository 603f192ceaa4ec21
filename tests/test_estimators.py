"""sklearn estimators, SVI, ArviZ export, save/load and the CLI."""

import json

import numpy as np
import pytest
from conftest import make_regression
from sklearn.model_selection import GridSearchCV

from bayesmtl.errors import HyperparameterError, MethodError, NonFiniteError, UnknownTaskError
from bayesmtl.estimators import MTLClassifier, MTLRegressor, TaskKFold, load_estimator


def _xy(data):
    return data.X, data.y, np.asarray(data.task_names)[data.task]


def test_regressor_map_matches_model_and_predicts(small_regression):
    X, y, task = _xy(small_regression)
    est = MTLRegressor(method="identity", lam=2.0).fit(X, y, task=task)
    assert est.W_.shape == (1, 5, 4) and est.idata_.posterior["W"].dims[-2:] == ("feature", "task")
    # identity Ω + Gaussian is conjugate: the per-task solve equals the fixed-Ω linear solve
    generic = MTLRegressor(method="fixed", omega=np.eye(4) * 1.0000001, lam=2.0).fit(
        X, y, task=task)
    np.testing.assert_allclose(est.W_, generic.W_, atol=1e-6)
    assert est.predict(X, task=task).shape == y.shape
    with pytest.raises(HyperparameterError, match="MAP fit"):
        est.predict(X, task=task, return_std=True)
    assert est.score(X, y, task=task) > 0.5
    with pytest.raises(UnknownTaskError, match="unknown task 'nope'"):
        est.predict(X[:2], task=["t0", "nope"])
    with pytest.raises(NonFiniteError):
        est.predict(np.full((1, 5), np.nan), task=["t0"])


def test_gridsearch_with_task_column(small_regression):
    X, y, _ = _xy(small_regression)
    Xt = np.column_stack([small_regression.task, X])
    search = GridSearchCV(MTLRegressor(method="mtrl", task_col=0), {"lam": [0.01, 1.0]},
                          cv=TaskKFold(3), scoring="neg_mean_squared_error")
    search.fit(Xt, y, groups=small_regression.task)
    assert search.best_params_["lam"] in (0.01, 1.0)
    assert search.predict(Xt).shape == y.shape


def test_save_load_roundtrip_without_pickle(tmp_path, small_regression):
    X, y, task = _xy(small_regression)
    est = MTLRegressor(method="mtrl", lam=0.3).fit(X, y, task=task)
    est.save(tmp_path / "m")
    assert sorted(p.name for p in (tmp_path / "m").iterdir()) == ["arrays.npz", "model.json"]
    json.loads((tmp_path / "m" / "model.json").read_text())
    again = load_estimator(tmp_path / "m")
    np.testing.assert_allclose(again.predict(X, task=task), est.predict(X, task=task))


def test_classifier_map_and_labels():
    rng = np.random.default_rng(0)
    X = rng.normal(size=(120, 3))
    task = np.repeat(["a", "b", "c"], 40)
    y = np.where(X @ np.array([1.0, -1.0, 0.5]) + 0.3 * rng.normal(size=120) > 0, 1, -1)
    clf = MTLClassifier(method="mtrl", lam=0.1).fit(X, y, task=task)
    assert set(np.unique(clf.predict(X, task=task))) <= {-1.0, 1.0}
    assert clf.score(X, y, task=task) > 0.85
    assert clf.predict_proba(X, task=task).shape == (120, 2)


def test_lkj_map_is_refused_with_reason(small_regression):
    X, y, task = _xy(small_regression)
    with pytest.raises(MethodError, match="does not exist under the LKJ prior"):
        MTLRegressor(method="lkj").fit(X, y, task=task)
    with pytest.raises(HyperparameterError, match="lam must be positive") as err:
        MTLRegressor(lam=-1.0).fit(X, y, task=task)
    assert err.value.parameter == "lam" and err.value.value == -1.0
    with pytest.raises(MethodError, match="unknown method 'wishart..'; registered: stl"):
        MTLRegressor(method="wishart??").fit(X, y, task=task)


def test_svi_lowrank_exports_task_dims():
    data, _ = make_regression(seed=2, d=3, sizes=(30, 30, 30))
    X, y, task = _xy(data)
    est = MTLRegressor(method="lkj", inference="svi", guide="lowrank", svi_steps=1500,
                       num_samples=200).fit(X, y, task=task)
    corr = est.idata_.posterior["omega_corr"]
    assert corr.dims == ("chain", "draw", "task", "task_") and corr.shape == (1, 200, 3, 3)
    mean, sd = est.predict(X, task=task, return_std=True)
    assert np.all(np.isfinite(mean)) and np.all(sd > 0)
    # predictive sd = sqrt(Var f + E σ²): above the learned noise, which dominates here
    assert np.all(sd >= np.sqrt(np.mean(est.noise_**2)) - 1e-12)


def test_cli_writes_report(tmp_path):
    from bayesmtl.cli import main

    out = tmp_path / "rep"
    assert main(["fit", "--dataset", "sklearn-digits", "--method", "mtrl", "--lam", "0.1",
                 "--out", str(out)]) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert 0 <= metrics["test_error_pct"] < 20 and "stl_test_error_pct" in metrics
    for name in ("summary.csv", "posterior.nc", "task_relation.png", "model/model.json"):
        assert (out / name).exists()
    import xarray as xr

    dt = xr.open_datatree(out / "posterior.nc", engine="h5netcdf")
    assert list(dt.posterior["omega_corr"].coords["task"].values)[:2] == ["class_0", "class_1"]
