"""Nothing silent: bad input raises one typed error, unusable results never come back quietly,
files are written atomically, loading checks what it reads; property-based tests of the data
layer, save/load round trips and the CLI's argument checks."""

import json
import zipfile

import numpy as np
import pytest
from conftest import make_regression
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bayesmtl import MultiTaskData
from bayesmtl.errors import (
    ConvergenceWarning,
    DataError,
    HyperparameterError,
    LabelError,
    ModelFileError,
    NonFiniteError,
    NonFiniteResultError,
    SamplingWarning,
)
from bayesmtl.estimators import MTLClassifier, MTLRegressor, load_estimator


@pytest.fixture(scope="module")
def reg():
    data = make_regression(seed=4, d=3, sizes=(20, 22, 24))[0]
    return data, np.asarray(data.task_names)[data.task]


# ----------------------------------------------------------------------------- silent before


@pytest.mark.parametrize("method", ["mtrl", "schatten", "stl"])
def test_infinite_lambda_is_rejected(reg, method):
    data, task = reg
    with pytest.raises(HyperparameterError, match="lam must be finite") as err:
        MTLRegressor(method=method, lam=float("inf")).fit(data.X, data.y, task=task)
    assert err.value.parameter == "lam"


def test_overflowing_features_raise_naming_the_cause(reg):
    data, task = reg
    with pytest.raises(NonFiniteResultError, match="standardise X"):
        MTLRegressor(method="mtrl", lam=0.1).fit(data.X * 1e200, data.y, task=task)


def test_isolated_task_without_ridge_is_not_identified():
    rng = np.random.default_rng(0)
    tasks = [(rng.normal(size=(n, 6)), rng.normal(size=n)) for n in (30, 30, 4)]
    data = MultiTaskData.from_tasks(tasks, task_names=["a", "b", "c"])
    task = np.asarray(data.task_names)[data.task]
    graph = np.array([[0, 1, 0], [1, 0, 0], [0, 0, 0.0]])  # task c has no edge, 4 rows, d = 6
    with pytest.raises(HyperparameterError, match=r"component \{c\}.*ridge > 0") as err:
        MTLRegressor(method="rmtl", similarity=graph).fit(data.X, data.y, task=task)
    assert err.value.parameter == "ridge"
    MTLRegressor(method="rmtl", similarity=graph, ridge=0.1).fit(data.X, data.y, task=task)


def test_save_is_atomic(reg, tmp_path, monkeypatch):
    data, task = reg
    old = MTLRegressor(method="stl", lam=1.0).fit(data.X, data.y, task=task)
    old.save(tmp_path / "m")
    new = MTLRegressor(method="mtrl", lam=0.01).fit(data.X, data.y, task=task)

    def crash(*args, **kwargs):
        raise KeyboardInterrupt  # between model.json and arrays.npz

    monkeypatch.setattr(np, "savez_compressed", crash)
    with pytest.raises(KeyboardInterrupt):
        new.save(tmp_path / "m")
    monkeypatch.undo()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m"]  # no temporary left over
    again = load_estimator(tmp_path / "m")
    assert again.method_name_ == "stl"
    np.testing.assert_array_equal(again.predict(data.X, task=task), old.predict(data.X, task=task))


def _rewrite_arrays(folder, edit):
    with np.load(folder / "arrays.npz") as npz:
        arrays = {k: npz[k] for k in npz.files}
    edit(arrays)
    np.savez_compressed(folder / "arrays.npz", **arrays)


@pytest.mark.parametrize("edit, match", [
    (lambda a: a.update(W=a["W"][:, :, :-1]), "array W has shape"),  # a task column fewer
    (lambda a: a.update(W=a["W"][:, :-1]), "array W has shape"),     # a feature fewer
    (lambda a: a.pop("b"), "corrupt or from an incompatible version"),
])
def test_load_checks_every_array(reg, tmp_path, edit, match):
    data, task = reg
    MTLRegressor(method="mtrl", lam=0.1).fit(data.X, data.y, task=task).save(tmp_path / "m")
    _rewrite_arrays(tmp_path / "m", edit)
    with pytest.raises(ModelFileError, match=match):
        load_estimator(tmp_path / "m")


def test_load_wraps_every_failure(reg, tmp_path):
    data, task = reg
    est = MTLRegressor(method="mtrl", lam=0.1).fit(data.X, data.y, task=task)
    folder = tmp_path / "m"
    est.save(folder)
    meta = json.loads((folder / "model.json").read_text())
    for text, match in ((b"{not json", "model.json is corrupt"),
                        (json.dumps({**meta, "class": "Nope"}).encode(), "incompatible"),
                        (json.dumps({**meta, "format_version": 1}).encode(), "incompatible"),
                        (json.dumps({**meta, "params": {**meta["params"], "zz": 1}}).encode(),
                         "incompatible")):
        est.save(folder)
        (folder / "model.json").write_bytes(text)
        with pytest.raises(ModelFileError, match=match):
            load_estimator(folder)
    est.save(folder)
    raw = (folder / "arrays.npz").read_bytes()
    (folder / "arrays.npz").write_bytes(raw[: len(raw) // 2])  # truncated
    with pytest.raises(ModelFileError, match="corrupt or truncated"):
        load_estimator(folder)
    with pytest.raises(ModelFileError, match="missing"):
        load_estimator(tmp_path / "nothing")


def test_cli_report_is_atomic_and_interrupt_exits_nonzero(tmp_path, monkeypatch):
    from bayesmtl import cli

    small = make_regression(seed=6, d=3, sizes=(24, 27, 30))[0]
    test = make_regression(seed=7, d=3, sizes=(10, 10, 10))[0]
    monkeypatch.setattr(cli, "_load", lambda dataset, split, features: (small, test))
    out = tmp_path / "rep"
    assert cli.main(["fit", "--method", "stl", "--lam", "1", "--out", str(out)]) == 0
    (out / "stale.txt").write_text("from an older run")
    assert cli.main(["fit", "--method", "mtrl", "--lam", "0.1", "--out", str(out)]) == 0
    assert not (out / "stale.txt").exists()  # replaced as a whole, never mixed
    before = json.loads((out / "metrics.json").read_text())

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(cli, "task_relation_summary", interrupted, raising=False)
    monkeypatch.setattr("bayesmtl.inference.export.task_relation_summary", interrupted)
    assert cli.main(["fit", "--method", "rmtl", "--lam", "1", "--out", str(out)]) == 130
    assert json.loads((out / "metrics.json").read_text()) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["rep"]


def test_unconverged_fits_and_unmixed_chains_warn(reg):
    from bayesmtl.datasets.synthetic_clusters import make_synthetic_clusters
    from bayesmtl.models.gamtl import fit_gamtl

    synth = make_synthetic_clusters((2, 2), n_features=5, n_train=20, seed=0)
    with pytest.warns(ConvergenceWarning, match="GAMTL stopped unconverged after 2"):
        assert not fit_gamtl(synth.train, 0.1, 0.05, max_outer=2).converged
    data, task = reg
    with pytest.warns(ConvergenceWarning, match="SVI has not converged"):
        MTLRegressor(method="lkj", inference="svi", svi_steps=60, num_samples=10).fit(
            data.X, data.y, task=task)
    with pytest.warns(SamplingWarning, match="have not mixed"):
        est = MTLRegressor(method="mtrl", inference="nuts", num_warmup=20, num_samples=20,
                           num_chains=2).fit(data.X, data.y, task=task)
    assert est.idata_.attrs["max_rhat"] > 1.0 and est.idata_.attrs["min_ess"] > 0


def test_task_ids_of_mixed_type_or_missing_raise():
    X, y = np.ones((4, 1)), np.arange(4.0)
    with pytest.raises(DataError, match="mix types"):
        MultiTaskData.from_arrays(X, y, np.array([1, "1", 1, 2], dtype=object))
    with pytest.raises(DataError, match="NaN or None"):
        MultiTaskData.from_arrays(X, y, np.array([1.0, np.nan, 1.0, 2.0]))
    with pytest.raises(DataError, match="mix types"):
        MTLRegressor(method="stl").fit(X, y, task=np.array([1, "a", 1, "a"], dtype=object))


def test_clustered_default_does_not_collapse_to_stl():
    rng = np.random.default_rng(1)
    m, d = 40, 3  # few features, many tasks: ⌈√m⌉ = 7 > d
    W = rng.normal(size=(d, 2))[:, rng.integers(0, 2, m)]
    tasks = [(X := rng.normal(size=(15, d)), X @ W[:, i] + 0.1 * rng.normal(size=15))
             for i in range(m)]
    data = MultiTaskData.from_tasks(tasks)
    task = np.asarray(data.task_names)[data.task]
    clustered = MTLRegressor(method="clustered", lam=1.0).fit(data.X, data.y, task=task)
    stl = MTLRegressor(method="stl", lam=1.0).fit(data.X, data.y, task=task)
    assert np.max(np.abs(clustered.coef_ - stl.coef_)) > 1e-3
    with pytest.warns(ConvergenceWarning, match="reduced to STL"):
        MTLRegressor(method="clustered", lam=1.0, a=30.0).fit(data.X, data.y, task=task)


# ----------------------------------------------------------------------------- unclear before


def test_any_two_labels_and_clear_errors_for_the_rest(reg):
    rng = np.random.default_rng(2)
    X = rng.normal(size=(60, 2))
    task = np.repeat(["a", "b"], 30)
    y = np.where(X[:, 0] > 0, "yes", "no")
    clf = MTLClassifier(method="stl", lam=0.01).fit(X, y, task=task)
    assert set(clf.predict(X, task=task)) <= {"yes", "no"} and clf.score(X, y, task=task) > 0.8
    data, dtask = reg
    for kwargs, match in (({"lam": "0.1"}, "lam must be a number"),
                          ({"method": "inverse_wishart", "df": float("nan")}, "df must be"),
                          ({"num_chains": 0, "inference": "nuts"}, "num_chains must be ≥ 1")):
        with pytest.raises(HyperparameterError, match=match):
            MTLRegressor(**{"method": "mtrl", **kwargs}).fit(data.X, data.y, task=dtask)
    one = data.select_tasks([0])
    MTLRegressor(method="clustered").fit(one.X, one.y, task=np.zeros(len(one.y)))
    from bayesmtl.models.amtl import fit_amtl

    with pytest.raises(DataError, match="takes a MultiTaskData"):
        fit_amtl(data.X, 1.0, 0.1)
    with pytest.raises(LabelError, match="Only binary classification"):
        MTLClassifier(method="stl").fit(X, np.arange(60) % 3, task=task)


@pytest.mark.parametrize("argv", [
    ["fit", "--split", "11"], ["fit", "--lam", "abc"], ["fit", "--lam", "-1"],
    ["compare", "--grid", "lam=a,b"], ["compare", "--methods", "stl,nope"],
    ["compare", "--folds", "1"], ["fit", "--method", "nope"], ["fit", "--param", "lam"],
])
def test_cli_rejects_bad_arguments_in_one_line(argv, tmp_path, capsys):
    from bayesmtl.cli import main

    out = tmp_path / "out"
    with pytest.raises(SystemExit) as err:
        main(argv + ["--out", str(out)])
    assert err.value.code == 2 and not out.exists()
    message = capsys.readouterr().err.strip().splitlines()[-1]
    assert message.startswith("bayesmtl") and "error:" in message and "Traceback" not in message


def test_cli_rejects_a_file_as_out(tmp_path, capsys):
    from bayesmtl.cli import main

    path = tmp_path / "file"
    path.write_text("x")
    with pytest.raises(SystemExit):
        main(["fit", "--out", str(path)])
    assert "is not a folder" in capsys.readouterr().err


# ----------------------------------------------------------------------------- properties

ids = st.one_of(st.lists(st.integers(0, 5), min_size=1, max_size=4, unique=True),
                st.lists(st.text("abc", min_size=1, max_size=3), min_size=1, max_size=4,
                         unique=True))


@settings(max_examples=40, deadline=None)
@given(names=ids, sizes=st.lists(st.integers(1, 6), min_size=4, max_size=4),
       d=st.integers(1, 3), seed=st.integers(0, 1000))
def test_ragged_data_round_trips_any_row_order(names, sizes, d, seed):
    rng = np.random.default_rng(seed)
    sizes = sizes[:len(names)]
    task = np.repeat(np.asarray(names, dtype=object), sizes)
    X, y = rng.normal(size=(len(task), d)), rng.normal(size=len(task))
    perm = rng.permutation(len(task))
    a = MultiTaskData.from_arrays(X, y, task)
    b = MultiTaskData.from_arrays(X[perm], y[perm], task[perm])
    assert a.task_names == b.task_names == tuple(str(n) for n in sorted(names))
    assert list(a.n_per_task) == [sizes[names.index(n)] for n in sorted(names)]
    for i in range(a.n_tasks):
        s = a.task_slice(i)
        assert sorted(a.y[s]) == sorted(b.y[b.task_slice(i)])
    assert len(a.y) == len(y)  # no row dropped
    bad = X.copy()
    bad[rng.integers(len(X)), rng.integers(d)] = rng.choice([np.nan, np.inf, -np.inf])
    with pytest.raises(NonFiniteError):
        MultiTaskData.from_arrays(bad, y, task)


@settings(max_examples=25, deadline=None)
@given(labels=st.sampled_from([(0, 1), (-1, 1), ("no", "yes"), (2.5, 7.0), (True, False)]),
       seed=st.integers(0, 1000))
def test_any_two_labels_keep_their_coding(labels, seed):
    rng = np.random.default_rng(seed)
    y = np.asarray(labels, dtype=object)[rng.integers(0, 2, 12)]
    y[:2] = labels  # both classes present
    data = MultiTaskData.from_arrays(np.ones((12, 1)), y, np.repeat(["a", "b"], 6),
                                     kind="classification")
    assert set(data.y) <= {0.0, 1.0}
    assert list(data.labels()) == list(y)
    rows = [0, 1, 2, 6, 7, 8]  # rows of both tasks (a subset must keep every task)
    assert list(data.subset(rows).labels()) == list(y[rows])


@settings(max_examples=12, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(method=st.sampled_from(["stl", "pooled", "mtrl", "rmtl", "amtl"]),
       cut=st.floats(0.05, 0.95), seed=st.integers(0, 100))
def test_save_load_round_trip_and_any_truncation(reg, tmp_path_factory, method, cut, seed):
    data, task = reg
    est = MTLRegressor(method=method, lam=0.5).fit(data.X, data.y, task=task)
    folder = tmp_path_factory.mktemp("model")
    est.save(folder / "m")
    again = load_estimator(folder / "m")
    np.testing.assert_array_equal(again.predict(data.X, task=task), est.predict(data.X, task=task))
    assert again.get_params() == est.get_params()
    name = ("arrays.npz", "model.json")[seed % 2]
    raw = (folder / "m" / name).read_bytes()
    (folder / "m" / name).write_bytes(raw[: int(cut * len(raw))])
    with pytest.raises(ModelFileError):
        load_estimator(folder / "m")


@settings(max_examples=20, deadline=None)
@given(split=st.integers(-5, 30).filter(lambda s: not 1 <= s <= 10))
def test_cli_split_outside_the_standard_ones(split, tmp_path_factory):
    from bayesmtl.cli import main

    out = tmp_path_factory.mktemp("cli") / "out"
    with pytest.raises(SystemExit):
        main(["fit", "--split", str(split), "--out", str(out)])
    assert not out.exists()


def test_npz_is_not_pickled(reg, tmp_path):
    data, task = reg
    MTLRegressor(method="stl").fit(data.X, data.y, task=task).save(tmp_path / "m")
    with zipfile.ZipFile(tmp_path / "m" / "arrays.npz") as z:
        for info in z.infolist():
            with z.open(info) as fh:
                assert b"pickle" not in fh.read(200)
