import warnings

import numpy as np
import pandas as pd
import pytest

from bayesmtl.data import (
    EmptyTaskError,
    LabelError,
    MultiTaskData,
    NonFiniteError,
    ShapeMismatchError,
    SingleClassWarning,
    Standardizer,
    UnknownTaskError,
)
from bayesmtl.datasets import load_digits_split, load_school, load_sklearn_digits


def test_constructors_agree_and_keep_ragged_tasks():
    rng = np.random.default_rng(0)
    tasks = [(rng.normal(size=(n, 3)), rng.normal(size=n)) for n in (4, 7, 2)]
    a = MultiTaskData.from_tasks(tasks, task_names=["a", "b", "c"])
    X = np.concatenate([t[0] for t in tasks])
    y = np.concatenate([t[1] for t in tasks])
    labels = np.repeat(["a", "b", "c"], [4, 7, 2])
    perm = rng.permutation(len(y))
    b = MultiTaskData.from_arrays(X[perm], y[perm], labels[perm])
    df = pd.DataFrame(X[perm], columns=["u", "v", "w"]).assign(task=labels[perm], y=y[perm])
    c = MultiTaskData.from_dataframe(df, task_col="task", target_col="y")
    assert list(a.n_per_task) == list(b.n_per_task) == list(c.n_per_task) == [4, 7, 2]
    for i in range(3):
        Xa, ya = a.X[a.task_slice(i)], a.y[a.task_slice(i)]
        Xb, yb = b.X[b.task_slice(i)], b.y[b.task_slice(i)]
        order = np.argsort(ya)
        np.testing.assert_allclose(Xa[order], Xb[np.argsort(yb)])
    assert c.feature_names == ("u", "v", "w")
    assert len(a.y) == 13  # no row dropped


def test_split_is_per_task_and_stratified():
    rng = np.random.default_rng(1)
    tasks = [(rng.normal(size=(40, 2)), (rng.random(40) < 0.3).astype(float)) for _ in range(3)]
    data = MultiTaskData.from_tasks(tasks, kind="classification")
    train, test = data.train_test_split(0.25, seed=0)
    assert list(train.n_per_task + test.n_per_task) == [40, 40, 40]
    for i in range(3):
        pos_all = data.y[data.task_slice(i)].mean()
        pos_test = test.y[test.task_slice(i)].mean()
        assert abs(pos_all - pos_test) < 0.1


def test_standardizer_global_and_task():
    rng = np.random.default_rng(2)
    data = MultiTaskData.from_tasks([(rng.normal(3, 2, size=(50, 2)), rng.normal(size=50)),
                                     (rng.normal(-1, 5, size=(60, 2)), rng.normal(size=60))])
    g = Standardizer.fit(data, "global").transform(data)
    np.testing.assert_allclose(g.X.mean(0), 0, atol=1e-12)
    t = Standardizer.fit(data, "task").transform(data)
    for i in range(2):
        np.testing.assert_allclose(t.X[t.task_slice(i)].std(0), 1, atol=1e-12)


@pytest.mark.parametrize("bad, error, match", [
    (dict(X=np.array([[np.nan, 1.0]])), NonFiniteError, "NaN/inf"),
    (dict(y=np.array([np.inf])), NonFiniteError, "NaN/inf"),
    (dict(y=np.array([1.0, 2.0])), ShapeMismatchError, "same number of rows"),
])
def test_bad_arrays(bad, error, match):
    args = dict(X=np.ones((1, 2)), y=np.ones(1), task=np.array(["a"]))
    args.update(bad)
    with pytest.raises(error, match=match):
        MultiTaskData.from_arrays(args["X"], args["y"], args["task"])


def test_bad_tasks():
    with pytest.raises(ShapeMismatchError, match="different numbers of features"):
        MultiTaskData.from_tasks([(np.ones((2, 3)), np.ones(2)), (np.ones((2, 4)), np.ones(2))])
    with pytest.raises(EmptyTaskError, match="no rows"):
        MultiTaskData.from_tasks([(np.ones((2, 3)), np.ones(2)), (np.ones((0, 3)), np.ones(0))])
    with pytest.raises(ShapeMismatchError, match="X has 2 rows but y has 3"):
        MultiTaskData.from_tasks([(np.ones((2, 3)), np.ones(3))])
    data = MultiTaskData.from_arrays(np.ones((2, 1)), np.ones(2), ["a", "b"])
    with pytest.raises(UnknownTaskError, match="unknown task 'zzz'"):
        data.task_index(["a", "zzz"])


def test_labels():
    X = np.ones((4, 1))
    with pytest.raises(LabelError, match=r"\{0, 1\} or \{-1, \+1\}"):
        MultiTaskData.from_arrays(X, [0, 1, 2, 1], ["a"] * 4, kind="classification")
    pm = MultiTaskData.from_arrays(X, [-1, 1, 1, -1], ["a"] * 4, kind="classification")
    assert set(pm.y) == {0.0, 1.0} and pm.label_values == (-1.0, 1.0)
    with pytest.warns(SingleClassWarning, match="b"):
        MultiTaskData.from_arrays(X, [0, 1, 1, 1], ["a", "a", "b", "b"], kind="classification")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        MultiTaskData.from_arrays(X, [0, 1, 0, 1], ["a", "a", "b", "b"], kind="classification")


def test_school_loader_standard_split():
    train, test = load_school(1)
    assert train.n_tasks == test.n_tasks == 139
    assert len(train.y) + len(test.y) == 15362
    assert train.X.dtype == np.float64 and train.n_features == 27
    assert train.task_names[0] == "school_001"
    tr_b, _ = load_school(3, bias_column=True)
    assert tr_b.n_features == 28 and np.all(tr_b.X[:, -1] == 1.0)
    with pytest.raises(ValueError, match="1..10"):
        load_school(11)


def test_school_binary_protocol_drops_the_two_percentages_only():
    full, full_test = load_school(2)
    binary, binary_test = load_school(2, features="binary")
    kept = [j for j, name in enumerate(full.feature_names) if not name.startswith("pct_")]
    assert len(kept) == 25 and binary.feature_names == tuple(full.feature_names[j] for j in kept)
    for a, b in ((full, binary), (full_test, binary_test)):
        np.testing.assert_array_equal(b.X, a.X[:, kept])
        np.testing.assert_array_equal(b.y, a.y)
        np.testing.assert_array_equal(b.task, a.task)
    assert set(np.unique(binary.X)) == {0.0, 1.0}  # "26 binary-valued features" with the bias
    with_bias, _ = load_school(2, bias_column=True, features="binary")
    assert with_bias.n_features == 26 and np.all(with_bias.X[:, -1] == 1.0)
    with pytest.raises(ValueError, match="'all' or 'binary'"):
        load_school(1, features="percentages")


def test_digits_loaders():
    train, valid, test = load_digits_split("mnist")
    assert (train.n_tasks, len(train.y), train.n_features) == (10, 10000, 87)
    assert len(valid.y) == len(test.y) == 5000
    assert train.y[train.task_slice(3)].sum() > 50  # one-vs-rest positives present
    tr, te = load_sklearn_digits("ovo", n_train_per_class=60)
    assert tr.n_tasks == 45 and set(tr.n_per_task) == {120}
    tr, te = load_sklearn_digits("ovr")
    assert tr.n_tasks == 10
