"""The deep methods through the registry: multi-class tasks in MTLClassifier, SVI predictive
sd, save/load of the network, and ``bayesmtl fit --method dmtl --balancing …``."""

import json

import numpy as np
import pytest
import torch
from sklearn.datasets import load_digits

from bayesmtl.errors import HyperparameterError, LabelError
from bayesmtl.estimators import MTLClassifier, MTLRegressor, load_estimator

torch.set_num_threads(1)


@pytest.fixture(scope="module")
def digits():
    X, y = load_digits(return_X_y=True)
    return X[:450] / 16.0, y[:450], np.repeat(["a", "b", "c"], 150)


def test_multiclass_tasks_with_a_network(digits, tmp_path):
    X, y, task = digits
    clf = MTLClassifier(method="dmtl", hidden=24, epochs=15, balancing="ds", lr=0.01,
                        lr_decay=0.0).fit(X, y, task=task)
    assert list(clf.classes_) == list(range(10))
    proba = clf.predict_proba(X, task=task)
    assert proba.shape == (450, 10) and np.allclose(proba.sum(1), 1.0)
    assert clf.score(X, y, task=task) > 0.6
    clf.save(tmp_path / "m")
    again = load_estimator(tmp_path / "m")
    np.testing.assert_array_equal(again.predict(X, task=task), clf.predict(X, task=task))
    with pytest.raises(LabelError, match="Only binary classification is supported by mtrl"):
        MTLClassifier(method="mtrl").fit(X, y, task=task)
    with pytest.raises(HyperparameterError, match="balancing must be one of"):
        MTLClassifier(method="dmtl", balancing="sum").fit(X, y, task=task)


def test_svi_network_gives_a_predictive_sd():
    rng = np.random.default_rng(0)
    X = rng.normal(size=(90, 3))
    task = np.repeat(["a", "b", "c"], 30)
    y = X @ np.array([1.0, -1.0, 0.5]) + 0.3 * rng.normal(size=90)
    est = MTLRegressor(method="dmtl_omega", hidden=8, epochs=10, inference="svi",
                       num_samples=20).fit(X, y, task=task)
    mean, sd = est.predict(X, task=task, return_std=True)
    assert mean.shape == sd.shape == (90,) and np.all(sd > 0)
    assert est.omega_.shape == (3, 3)
    with pytest.raises(HyperparameterError, match="MAP fit"):
        MTLRegressor(method="dmtl", hidden=8, epochs=2).fit(X, y, task=task).predict(
            X, task=task, return_std=True)


def test_cli_fits_a_balanced_network(tmp_path):
    from bayesmtl.cli import main

    out = tmp_path / "rep"
    assert main(["fit", "--dataset", "sklearn-digits", "--method", "dmtl", "--balancing",
                 "bmtl", "--param", "hidden=16", "--param", "epochs=5", "--out", str(out)]) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["method"] == "dmtl" and metrics["hyper"]["balancing"] == "bmtl"
    assert (out / "model" / "model.json").exists() and (out / "posterior.nc").exists()
