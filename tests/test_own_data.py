"""A user's own data, first class (issue 20): named DataFrame columns, task columns by name,
lam="auto" and the rank-one warning, the public subpackages, complete DataTrees, the CLI on a
CSV/Parquet file and its HTML report (checked in headless Chromium when installed)."""

import json
import shutil
import subprocess
import warnings

import numpy as np
import pandas as pd
import pytest
from conftest import run_python
from scipy import stats

from bayesmtl.errors import DataError, DegenerateRelationWarning, HyperparameterError


def two_group_frame(seed=0, n=60, d=5, noise=0.3):
    """Five tasks in two groups (tasks 0-2 share one model, 3-4 another) as a DataFrame with
    columns x1..x5, ``region`` (task) and ``score`` (target)."""
    rng = np.random.default_rng(seed)
    base = rng.normal(size=(d, 2))
    W = base[:, [0, 0, 0, 1, 1]] + 0.05 * rng.normal(size=(d, 5))
    frames = []
    for i in range(5):
        X = rng.normal(size=(n, d))
        df = pd.DataFrame(X, columns=[f"x{k + 1}" for k in range(d)])
        df["region"] = f"region{i}"
        df["score"] = X @ W[:, i] + noise * rng.normal(size=n)
        frames.append(df)
    return pd.concat(frames, ignore_index=True)


def test_dataframe_feature_names_survive_reordering_and_save_load(tmp_path):
    from bayesmtl.estimators import MTLRegressor, load_estimator

    df = two_group_frame()
    X, y = df[["x1", "x2", "x3", "x4", "x5", "region"]], df["score"].to_numpy()
    est = MTLRegressor(method="mtrl", lam=0.01, task_col="region").fit(X, y)
    assert list(est.feature_names_in_) == ["x1", "x2", "x3", "x4", "x5", "region"]
    assert list(est.idata_.posterior["W"].coords["feature"].values) == \
        ["x1", "x2", "x3", "x4", "x5"]
    reordered = X[["region", "x5", "x3", "x1", "x2", "x4"]]
    np.testing.assert_allclose(est.predict(reordered), est.predict(X), rtol=1e-12)
    with pytest.raises(DataError, match="x4"):
        est.predict(X.drop(columns="x4"))
    est.save(tmp_path / "m")
    back = load_estimator(tmp_path / "m")
    assert list(back.feature_names_in_) == list(est.feature_names_in_)
    np.testing.assert_allclose(back.predict(reordered), est.predict(X), rtol=1e-12)


def test_task_column_by_name_and_a_missing_one():
    from bayesmtl.estimators import MTLRegressor

    df = two_group_frame()
    est = MTLRegressor(method="stl", lam=0.1, task_col="region").fit(
        df.drop(columns="score"), df["score"])
    assert est.task_names_ == tuple(f"region{i}" for i in range(5))
    with pytest.raises(DataError, match="nope"):
        MTLRegressor(task_col="nope").fit(df.drop(columns="score"), df["score"])


def test_lam_auto_avoids_the_collapse_that_a_large_lam_warns_about():
    from bayesmtl.estimators import MTLRegressor

    df = two_group_frame()
    X, y, task = df.filter(like="x").to_numpy(), df["score"].to_numpy(), df["region"]
    with pytest.warns(DegenerateRelationWarning, match="rank one"):
        collapsed = MTLRegressor(method="mtrl", lam=10.0).fit(X, y, task=task)
    with warnings.catch_warnings():
        warnings.simplefilter("error", DegenerateRelationWarning)
        auto = MTLRegressor(method="mtrl", lam="auto").fit(X, y, task=task)
    assert auto.lam_ == auto.lam_cv_.best["lam"] and auto.lam_ in auto.lam_cv_.grid["lam"]
    assert auto.score(X, y, task=task) > collapsed.score(X, y, task=task) + 0.2
    corr = auto.idata_.posterior["omega_corr"].values[0, 0]
    assert corr[0, 1] > corr[0, 3]  # the two groups are told apart
    with pytest.raises(HyperparameterError, match="no MAP"):
        MTLRegressor(method="lkj", lam="auto").fit(X, y, task=task)


def test_public_subpackages_are_attributes_and_torch_stays_unloaded():
    code = ("import sys, bayesmtl; assert 'torch' not in sys.modules; "
            "print(bayesmtl.priors.__name__, bayesmtl.methods.__name__, "
            "bayesmtl.plots.__name__); assert 'torch' not in sys.modules")
    assert run_python(code).split() == ["bayesmtl.priors", "bayesmtl.methods", "bayesmtl.plots"]


def test_sampled_fit_has_observed_data_and_pointwise_log_likelihood():
    from arviz_stats import loo

    from bayesmtl.estimators import MTLRegressor

    df = two_group_frame(n=15)
    X, y, task = df.filter(like="x").to_numpy(), df["score"].to_numpy(), df["region"]
    est = MTLRegressor(method="l21", lam=0.1, inference="nuts", num_warmup=150,
                       num_samples=100, num_chains=1, seed=1).fit(X, y, task=task)
    dt = est.idata_
    np.testing.assert_array_equal(np.sort(dt.observed_data["y"].values), np.sort(y))
    ll = dt.log_likelihood["y"]
    assert ll.dims == ("chain", "draw", "obs") and ll.shape == (1, 100, len(y))
    assert set(ll.coords["task"].values) == set(task)
    # independently: log N(y_j | x_jᵀ w_task + b_task, σ²) at one draw
    post = dt.posterior
    t = 3
    W, b, sigma = (post["W"].values[0, t], post["b"].values[0, t],
                   post["noise"].values[0, t])
    names = list(est.task_names_)
    obs_task = ll.coords["task"].values
    rows = np.flatnonzero(obs_task == names[2])
    Xi = X[np.asarray(task) == names[2]]
    yi = dt.observed_data["y"].values[rows]
    expected = stats.norm.logpdf(yi, Xi @ W[:, 2] + b[2], np.broadcast_to(sigma, (5,))[2])
    np.testing.assert_allclose(ll.values[0, t, rows], expected, rtol=1e-10)
    result = loo(dt)
    assert np.isfinite(result.elpd)


def _write_frames(tmp_path):
    df = two_group_frame(n=40)
    df.to_csv(tmp_path / "own.csv", index=False)
    df.to_parquet(tmp_path / "own.parquet")
    return df


@pytest.mark.parametrize("suffix", ["csv", "parquet"])
def test_cli_fit_on_a_users_file(tmp_path, suffix):
    from bayesmtl.cli import main

    _write_frames(tmp_path)
    out = tmp_path / f"rep-{suffix}"
    assert main(["fit", "--data", str(tmp_path / f"own.{suffix}"), "--task-col", "region",
                 "--target", "score", "--method", "mtrl", "--lam", "0.01", "--out",
                 str(out)]) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["data"].endswith(f"own.{suffix}") and metrics["task_col"] == "region"
    assert metrics["test_rmse"] < metrics["stl_test_rmse"] * 1.5
    sim = pd.read_csv(out / "covariance_similarity.csv", index_col=0)
    assert list(sim.index) == [f"region{i}" for i in range(5)]
    np.testing.assert_allclose(np.diag(sim.to_numpy()), 1.0)
    page = (out / "report.html").read_text()
    for name in ("task_relation.png", "covariance_similarity.png", "test_rmse", "converged"):
        assert name in page
    assert (out / "task_relation.png").stat().st_size > 0


def test_cli_compare_on_a_users_file_with_relation_free_methods(tmp_path):
    """compare on --data; l21 and dirty export no task × task relation (no panel, no crash)."""
    from bayesmtl.cli import main

    _write_frames(tmp_path)
    out = tmp_path / "cmp"
    assert main(["compare", "--data", str(tmp_path / "own.csv"), "--task-col", "region",
                 "--target", "score", "--methods", "stl,l21,dirty", "--grid", "lam=0.01,0.1",
                 "--grid", "dirty.lam2=0.01", "--out", str(out)]) == 0
    report = json.loads((out / "compare.json").read_text())
    assert report["data"].endswith("own.csv")
    assert [r["method"] for r in report["rows"]] == ["stl", "l21", "dirty"]
    assert all(r["status"] == "ok" for r in report["rows"])
    assert (out / "task_relations.png").stat().st_size > 0


def test_cli_own_data_errors(tmp_path, capsys):
    from bayesmtl.cli import main

    df = _write_frames(tmp_path)
    csv = str(tmp_path / "own.csv")
    base = ["fit", "--data", csv, "--task-col", "region", "--lam", "0.1", "--out",
            str(tmp_path / "r")]
    assert main([*base, "--target", "nope"]) == 1
    assert "no column 'nope'" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exit_:
        main(base)  # no --target
    assert exit_.value.code == 2
    with pytest.raises(SystemExit) as exit_:
        main(["fit", "--task-col", "region"])  # without --data
    assert exit_.value.code == 2
    df["x2"] = "text"
    df.to_csv(tmp_path / "bad.csv", index=False)
    assert main(["fit", "--data", str(tmp_path / "bad.csv"), "--task-col", "region",
                 "--target", "score", "--lam", "0.1", "--out", str(tmp_path / "r")]) == 1
    assert "'x2' are not numeric" in capsys.readouterr().err
    assert not (tmp_path / "r").exists()


@pytest.mark.parametrize("suffix", ["csv", "parquet"])
def test_cli_streamed_fit_equals_fit_on_the_training_rows(tmp_path, suffix):
    """fit --chunksize: the streamed MAP and its held-out RMSE equal an in-memory fit on the
    same training rows, scored on the same held-out rows (both passes checked)."""
    from bayesmtl.cli import _held_out, main
    from bayesmtl.estimators import MTLRegressor

    df = _write_frames(tmp_path)
    out = tmp_path / "stream"
    assert main(["fit", "--data", str(tmp_path / f"own.{suffix}"), "--task-col", "region",
                 "--target", "score", "--method", "mtrl", "--lam", "0.05", "--chunksize",
                 "37", "--seed", "3", "--out", str(out)]) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    test = np.concatenate([_held_out(len(df.iloc[lo:lo + 37]), lo, 3, 0.3)
                           for lo in range(0, len(df), 37)])
    features = [c for c in df.columns if c not in ("region", "score")]
    X, y, task = df[features].to_numpy(), df["score"].to_numpy(), df["region"].to_numpy()
    est = MTLRegressor(method="mtrl", lam=0.05).fit(X[~test], y[~test], task=task[~test])
    rmse = np.sqrt(np.mean((est.predict(X[test], task=task[test]) - y[test]) ** 2))
    np.testing.assert_allclose(metrics["test_rmse"], rmse, rtol=1e-8)
    assert metrics["test_rows"] == int(test.sum()) and metrics["chunksize"] == 37
    assert (out / "model").is_dir() and "test_rmse" in (out / "report.html").read_text()
    sim = pd.read_csv(out / "covariance_similarity.csv", index_col=0)  # from the moments
    np.testing.assert_allclose(np.diag(sim.to_numpy()), 1.0)


def test_cli_streamed_fit_errors(tmp_path, capsys):
    from bayesmtl.cli import main

    _write_frames(tmp_path)
    base = ["fit", "--data", str(tmp_path / "own.csv"), "--task-col", "region", "--target",
            "score", "--chunksize", "50", "--out", str(tmp_path / "r")]
    for extra, message in ((["--lam", "auto"], "give --lam a number"),
                           (["--lam", "0.1", "--method", "amtl"], "needs the rows"),
                           (["--lam", "0.1", "--inference", "nuts"], "MAP of a regression")):
        with pytest.raises(SystemExit) as exit_:
            main([*base, *extra])
        assert exit_.value.code == 2 and message in capsys.readouterr().err
    assert not (tmp_path / "r").exists()


def test_classification_file_keeps_the_users_labels(tmp_path):
    from bayesmtl.cli import read_table
    from bayesmtl.estimators import MTLClassifier

    df = two_group_frame(n=40)
    df["label"] = np.where(df["score"] > 0, "spam", "ham")
    df.drop(columns="score").to_csv(tmp_path / "c.csv", index=False)
    data = read_table(tmp_path / "c.csv", "region", "label")
    assert data.kind == "classification"
    X = df.filter(like="x")
    est = MTLClassifier(method="mtrl", lam=0.1).fit(X, df["label"], task=df["region"])
    assert list(est.classes_) == ["ham", "spam"]
    proba = est.predict_proba(X, task=df["region"])
    assert proba.shape == (len(df), 2) and np.allclose(proba.sum(1), 1)
    margin = est.decision_function(X, task=df["region"])
    np.testing.assert_array_equal(est.predict(X, task=df["region"]),
                                  np.where(margin > 0, "spam", "ham"))
    assert est.coef_.shape == (5, 5) and est.intercept_.shape == (5,)


def test_heatmap_names_tasks_when_there_are_many():
    import matplotlib

    matplotlib.use("Agg")
    from bayesmtl.inference.export import from_point
    from bayesmtl.plots import plot_task_correlation

    m = 100
    rng = np.random.default_rng(0)
    A = rng.normal(size=(m, 3))
    names = [f"school{k:03d}" for k in range(m)]
    dt = from_point({"omega": A @ A.T + np.eye(m)}, task_names=names)
    fig = plot_task_correlation(dt)
    ax = fig.axes[0]
    labels = [t.get_text() for t in ax.get_xticklabels()]
    assert 30 <= len(labels) <= 40 and set(labels) <= set(names)
    assert fig.axes[1].get_ylabel() == "posterior mean correlation"


def _chromium():
    return shutil.which("chromium") or shutil.which("chromium-browser")


@pytest.mark.skipif(_chromium() is None, reason="Chromium is not installed (apt install "
                                                "chromium); see bayesmtl/report.py")
def test_html_report_renders_its_heatmaps_in_headless_chromium(tmp_path):
    from matplotlib.image import imread

    from bayesmtl.cli import main

    _write_frames(tmp_path)
    out = tmp_path / "rep"
    assert main(["fit", "--data", str(tmp_path / "own.csv"), "--task-col", "region",
                 "--target", "score", "--lam", "0.01", "--out", str(out)]) == 0
    shot = tmp_path / "shot.png"
    subprocess.run([_chromium(), "--headless", "--no-sandbox", "--disable-gpu",
                    "--disable-background-networking", "--disable-component-update",
                    "--disable-sync", "--no-first-run", "--disable-quic",
                    f"--user-data-dir={tmp_path / 'profile'}", "--window-size=1200,2600",
                    f"--screenshot={shot}", (out / "report.html").as_uri()],
                   capture_output=True, timeout=120, check=True)
    img = imread(shot)[..., :3]
    # the correlation heatmap's diagonal is RdBu_r's darkest red (≈ 0.40, 0.00, 0.12);
    # the similarity heatmap's diagonal viridis yellow (≈ 0.99, 0.91, 0.14)
    red = (img[..., 0] > 0.35) & (img[..., 1] < 0.1) & (img[..., 2] < 0.2)
    yellow = (img[..., 0] > 0.9) & (img[..., 1] > 0.85) & (img[..., 2] < 0.25)
    assert red.sum() > 2000 and yellow.sum() > 2000
    blank = imread(shot)[..., :3].min(axis=2) > 0.98
    assert blank.mean() < 0.95  # the page rendered, not an empty screen
