"""scikit-learn estimators over the method registry.

``MTLRegressor(method=NAME, **hyperparameters)`` and ``MTLClassifier(...)`` fit any
registered method (``bayesmtl.methods.names()``) by MAP or posterior sampling. The method's
hyperparameters are the estimator's own parameters (``get_params`` lists them, so
``GridSearchCV``, ``clone`` and save/load work for every method)::

    MTLRegressor(method="glmtl", lam=0.1, lam2=1.0)
    MTLClassifier(method="amtl", lam=1.0, mu=0.1)
    MTLRegressor(method="inverse_wishart", df=10, inference="nuts", num_chains=1)

How the task id reaches the estimator (decided once): ``fit(X, y, task=...)``,
``predict(X, task=...)`` and ``score(X, y, task=...)`` take per-row task labels. When ``task``
is None the labels are read from column ``task_col`` of X (an index, or a column name for a
DataFrame), which makes the estimators work unchanged inside ``Pipeline`` and
``GridSearchCV`` — use :class:`TaskKFold` so that every fold keeps rows of every task::

    GridSearchCV(MTLRegressor(method="mtrl", task_col=0), {"lam": [0.1, 1, 10]},
                 cv=TaskKFold(3)).fit(X_with_task, y, groups=X_with_task[:, 0])

With neither, all rows form one task (a plain single-task estimator).

Defaults follow the purpose of each inference: MAP uses the papers' per-task mean loss and
σ = 1/√2 (so it reproduces each paper's objective); NUTS and SVI use the proper likelihood
(``loss_scale="sum"``) and learn a shared noise scale where the model allows it.
"""

from __future__ import annotations

import time
import warnings

import jax
import jax.numpy as jnp
import numpy as np
from sklearn.base import BaseEstimator, ClassifierMixin, RegressorMixin
from sklearn.model_selection import BaseCrossValidator
from sklearn.utils.multiclass import check_classification_targets, type_of_target
from sklearn.utils.validation import check_array, check_is_fitted, column_or_1d

from . import methods as registry
from .data import (
    CLASSIFICATION,
    MULTICLASS,
    REGRESSION,
    MultiTaskData,
    TaskStatistics,
    check_features,
    task_index,
)
from .errors import (
    DataError,
    DegenerateRelationWarning,
    HyperparameterError,
    LabelError,
    MethodError,
    ModelFileError,
    ShapeMismatchError,
)
from .inference.export import omega_to_corr
from .io import read_model, write_model
from .methods.matrix_normal import LAM_GRID
from .methods.registry import RELATIONS, Settings, integer_at_least, one_of, positive, probability
from .models.matrix_normal import predict_linear

__all__ = ["MTLRegressor", "MTLClassifier", "TaskKFold", "load_estimator"]

SINGLE_TASK = "task"  # the task name when neither task= nor task_col is given


class TaskKFold(BaseCrossValidator):
    """K-fold within each task (``groups`` = task labels): every fold holds rows of every task,
    so no test row belongs to a task unseen in training."""

    def __init__(self, n_splits=5, shuffle=True, random_state=0):
        self.n_splits = n_splits
        self.shuffle = shuffle
        self.random_state = random_state

    def get_n_splits(self, X=None, y=None, groups=None):
        return self.n_splits

    def _iter_test_masks(self, X=None, y=None, groups=None):
        if groups is None:
            raise DataError("TaskKFold needs groups= (the task label of each row)")
        groups = np.asarray(groups)
        rng = np.random.default_rng(self.random_state)
        fold = np.empty(len(groups), dtype=int)
        for g in np.unique(groups):
            idx = np.flatnonzero(groups == g)
            if len(idx) < self.n_splits:
                raise DataError(f"task {g!r} has {len(idx)} rows, fewer than n_splits="
                                f"{self.n_splits}")
            if self.shuffle:
                idx = rng.permutation(idx)
            fold[idx] = np.arange(len(idx)) % self.n_splits
        for k in range(self.n_splits):
            yield fold == k


#: checks of the estimator's own (non-method) parameters
_SETTING_CHECKS = {
    "inference": one_of(*registry.INFERENCES),
    "loss_scale": lambda v: v if v is None else one_of("mean", "sum")(v),
    "noise": lambda v: v if v is None or v in ("shared", "task") else positive(v),
    "num_warmup": integer_at_least(0),
    "num_samples": integer_at_least(1),
    "num_chains": integer_at_least(1),
    "svi_steps": integer_at_least(1),
    "guide": one_of("normal", "lowrank", "last_layer"),
    "target_accept_prob": probability,
    "max_tree_depth": integer_at_least(1),
    "seed": integer_at_least(0),
}


class _MTLBase(BaseEstimator):
    _kind = REGRESSION

    def __init__(self, method="mtrl", *, inference="map", task_col=None, loss_scale=None,
                 noise=None, num_warmup=500, num_samples=500, num_chains=2, svi_steps=5000,
                 guide="normal", noncentered=False, target_accept_prob=0.8, max_tree_depth=10,
                 progress_bar=False, seed=0, **hyper):
        self.method = method
        self.inference = inference
        self.task_col = task_col
        self.loss_scale = loss_scale
        self.noise = noise
        self.num_warmup = num_warmup
        self.num_samples = num_samples
        self.num_chains = num_chains
        self.svi_steps = svi_steps
        self.guide = guide
        self.noncentered = noncentered
        self.target_accept_prob = target_accept_prob
        self.max_tree_depth = max_tree_depth
        self.progress_bar = progress_bar
        self.seed = seed
        self._hyper = dict(hyper)

    # --- the method's hyperparameters as estimator parameters ------------------------------
    def __getattr__(self, name):
        hyper = self.__dict__.get("_hyper")
        if hyper is not None:
            if name in hyper:
                return hyper[name]
            method = self._method_or_none()
            if method is not None and name in method.hyper_names:
                return method.defaults()[name]
        raise AttributeError(f"{type(self).__name__} has no attribute {name!r}")

    def _method_or_none(self):
        try:
            return registry.get(self.__dict__.get("method"))
        except MethodError:
            return None

    def _hyper_params(self) -> dict:
        method = self._method_or_none()
        params = {} if method is None else method.defaults()
        params.update(self.__dict__.get("_hyper", {}))
        return params

    def get_params(self, deep=True):
        params = super().get_params(deep=deep)
        params.update(self._hyper_params())
        return params

    def set_params(self, **params):
        if "method" in params:
            self.method = params.pop("method")
        own = set(self._get_param_names())
        method = self._method_or_none()
        for key, value in params.items():
            if key in own:
                setattr(self, key, value)
            elif method is None or key in method.hyper_names:
                self._hyper[key] = value
            else:
                raise HyperparameterError(
                    f"{method.name} has no hyperparameter {key!r}; its hyperparameters are: "
                    f"{', '.join(method.hyper_names) or '(none)'}", key, value)
        return self

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.non_deterministic = False
        return tags

    # --- input handling ----------------------------------------------------------------
    def _split_task(self, X, task):
        """(features (n, d) as an array or DataFrame, task labels (n,))."""
        if _is_sparse(X):
            raise DataError("sparse X is not supported; pass a dense array")
        if not hasattr(X, "columns"):
            X = np.asarray(X)
        if task is not None:
            return X, np.asarray(task)
        if self.task_col is None:
            return X, np.full(len(X) if X.ndim else 1, SINGLE_TASK, dtype=object)
        if hasattr(X, "columns"):
            if self.task_col in X.columns:
                col = self.task_col
            elif isinstance(self.task_col, (int, np.integer)) \
                    and -X.shape[1] <= self.task_col < X.shape[1]:
                col = X.columns[self.task_col]
            else:
                raise DataError(f"task_col={self.task_col!r} is not a column of X (columns: "
                                f"{', '.join(map(str, X.columns))})")
            return X.drop(columns=[col]), X[col].to_numpy()
        if X.ndim != 2:
            raise DataError(f"X must be 2-D (n_samples, n_features); got shape {X.shape}")
        keep = np.ones(X.shape[1], dtype=bool)
        try:
            keep[self.task_col] = False
        except IndexError:
            raise DataError(f"task_col={self.task_col!r} is not a column of X ({X.shape[1]} "
                            "columns)") from None
        return X[:, keep], X[:, self.task_col]

    def _features(self, X, reset):
        """Feature matrix (n, d) float; records (fit) or checks (predict) the column names of
        a DataFrame: the same columns in another order are reordered, others are an error."""
        names = [str(c) for c in X.columns] if hasattr(X, "columns") else None
        if reset:
            self._feature_names = names
        elif names is not None and getattr(self, "named_features_", False):
            expected = list(self.features_)
            if names != expected:
                if sorted(names) != sorted(expected):
                    missing = [n for n in expected if n not in names]
                    extra = [n for n in names if n not in expected]
                    raise DataError(f"X's columns differ from those seen in fit: missing "
                                    f"{missing or 'none'}, unexpected {extra or 'none'} "
                                    f"(fitted on {expected})")
                X = X[[X.columns[names.index(n)] for n in expected]]  # same columns, reordered
        return _sklearn_checked(lambda: check_array(X, dtype=np.float64,
                                                    ensure_all_finite=False))

    def _data(self, X, y, task, method):
        if y is None:
            raise DataError(f"{type(self).__name__} requires y to be passed, but the target y "
                            "is None")
        X, task = self._split_task(X, task)
        features = self._features(X, reset=True)
        y = _sklearn_checked(lambda: column_or_1d(y, warn=True))
        kind = self._kind
        if kind == CLASSIFICATION:
            y_type = _sklearn_checked(lambda: type_of_target(y, input_name="y",
                                                             raise_unknown=True))
            if y_type == "multiclass" and len(np.unique(y)) > 2:
                if MULTICLASS not in method.kinds:
                    raise LabelError(f"Only binary classification is supported by "
                                     f"{method.name}. The type of the target is {y_type}; "
                                     "build one-vs-rest tasks first (see "
                                     "bayesmtl.datasets.one_vs_rest) or use a method that "
                                     "fits multi-class tasks (dmtl)")
                kind = MULTICLASS
            elif y_type not in ("binary", "multiclass"):
                _sklearn_checked(lambda: check_classification_targets(y))
        return MultiTaskData.from_arrays(features, y, task, kind=kind,
                                         feature_names=self._feature_names)

    def _settings(self) -> Settings:
        values = {}
        for name in Settings._fields:
            if name in ("max_iter", "tol", "deadline"):
                continue
            value = getattr(self, name)
            check = _SETTING_CHECKS.get(name)
            if check is not None:
                try:
                    value = check(value)
                except (TypeError, ValueError) as err:
                    raise HyperparameterError(f"{name} {err}; got {value!r}", name,
                                              value) from None
            values[name] = value
        return Settings(**values)

    # --- fitting -------------------------------------------------------------------------
    def fit(self, X, y=None, task=None):
        """Fit on rows X (n, d) with targets y (n,) and task labels (argument or column), or
        on a :class:`~bayesmtl.data.TaskStatistics` alone (``fit(stats)``: regression, MAP,
        a method flagged ``statistics``; rows streamed in chunks, predictions as usual).

        ``lam="auto"`` chooses λ first (:meth:`_auto_lam`); ``lam_`` holds the λ used."""
        method = registry.get(self.method)
        settings = self._settings()
        values = self._hyper_params()
        auto = isinstance(values.get("lam"), str) and values["lam"] == "auto"
        hyper = registry.validate(method, {k: v for k, v in values.items()
                                           if not (auto and k == "lam")})
        if isinstance(X, TaskStatistics):
            data = self._statistics(X, y, task, auto)
        else:
            data = self._data(X, y, task, method)
        if auto:
            hyper = registry.validate(method, {**hyper, "lam": self._auto_lam(data, method,
                                                                              hyper, settings)})
        start = time.perf_counter()
        self.fit_result_, self.idata_ = registry.fit(data, method, hyper, settings)
        self.fit_time_ = time.perf_counter() - start
        self.idata_.attrs.update(method=method.name, inference=settings.inference)
        if "lam" in hyper:
            self.lam_ = hyper["lam"]
        self._set_fitted(data, method, self.idata_.posterior)
        self._warn_if_degenerate(method, hyper)
        self.n_features_in_ = data.n_features + (self.task_col is not None and task is None)
        self.named_features_ = self._feature_names is not None
        if hasattr(X, "columns"):
            self.feature_names_in_ = np.asarray([str(c) for c in X.columns], dtype=object)
        return self

    def _statistics(self, stats, y, task, auto):
        """``stats`` checked for :meth:`fit` (its feature names are matched by name when a
        DataFrame is predicted)."""
        if y is not None or task is not None:
            raise DataError("fit(stats) takes a TaskStatistics alone: its rows' targets and "
                            "tasks are in it; pass y and task only with rows")
        if self._kind != REGRESSION:
            raise DataError(f"{type(self).__name__} fits rows; TaskStatistics hold the "
                            "Gaussian likelihood's statistics (regression) only")
        if auto:
            raise HyperparameterError("lam='auto' cross-validates on rows, which "
                                      "TaskStatistics do not keep; give lam a number", "lam",
                                      "auto")
        self._feature_names = list(stats.feature_names)
        return stats

    def _auto_lam(self, data, method, hyper, settings) -> float:
        """λ by 3-fold task-stratified CV of MAP fits on the training rows over the method's
        λ grid, its other hyperparameters fixed at their values here (the CLI's rule; a
        choice on the grid's edge warns with GridEdgeWarning). Sets ``lam_cv_`` (CVResult)."""
        from .selection import cross_validate

        if method.fit_map is None or method.predictor is not None:
            why = "has no MAP" if method.fit_map is None else "is a network"
            raise HyperparameterError(f"lam='auto' chooses λ by cross-validating MAP fits, and "
                                      f"{method.name} {why}; give lam a number", "lam", "auto")
        grid = {"lam": method.grid.get("lam", LAM_GRID)}
        grid.update({k: (hyper[k],) for k in method.grid if k != "lam"})
        cv_settings = settings if settings.inference == "map" else Settings(seed=settings.seed)
        self.lam_cv_ = cross_validate(data, method, grid, hyper=hyper, settings=cv_settings,
                                      progress=bool(self.progress_bar))
        return float(self.lam_cv_.lam)

    def _warn_if_degenerate(self, method, hyper):
        """DegenerateRelationWarning when the learned Ω is numerically rank one while the
        tasks' weights differ (a rank-one Ω with identical columns of W is pooling, not a
        collapse; a capacity hyperparameter ``r`` = 1 makes rank one the model's choice)."""
        omega = getattr(self, "omega_", None)
        if omega is None or omega.shape[0] < 2 or not hasattr(self, "coef_") \
                or hyper.get("r", 2) < 2:
            return
        evals = np.linalg.eigvalsh(omega_to_corr(np.asarray(omega, dtype=np.float64)))
        tied = np.allclose(self.coef_, self.coef_[:, :1], rtol=1e-9, atol=1e-12)
        if evals[-2] <= 1e-6 * evals[-1] and not tied:
            lam = getattr(self, "lam_", None)
            warnings.warn(
                f"{method.name}: the learned task covariance Ω is numerically rank one (every "
                f"task correlation is ±1) although the tasks' weights differ; λ"
                f"{'' if lam is None else f' = {lam:g}'} is the likely cause (too strong a "
                "coupling): try lam='auto' or a smaller lam", DegenerateRelationWarning,
                stacklevel=3)

    def _set_fitted(self, data, method, post):
        def draws(name):
            v = post[name].values
            return v.reshape(-1, *v.shape[2:])

        self.method_name_ = method.name
        self.inference_ = post.attrs.get("inference", self.inference)
        if method.predictor is not None:  # a network: predictions come from the model
            self.model_ = method.predictor(self.fit_result_)
        else:
            self.W_, self.b_ = draws("W"), draws("b")  # (draws, d, m), (draws, m)
            self.coef_, self.intercept_ = self.W_.mean(0), self.b_.mean(0)
        var = RELATIONS[method.relation][0]
        if var is not None and var in post:
            setattr(self, f"{var}_", draws(var).mean(0))
        self.noise_ = draws("noise") if "noise" in post else None
        self.task_names_ = data.task_names
        self.features_ = data.feature_names
        if self._kind == CLASSIFICATION:
            self.classes_ = np.asarray(data.label_values)

    # --- prediction ----------------------------------------------------------------------
    def _inputs(self, X, task):
        """(features (n, d) float, task index (n,)) of prediction-time input."""
        check_is_fitted(self, "task_names_")
        self._check_width(X, task)
        X, task = self._split_task(X, task)
        X = check_features(self._features(X, reset=False), len(self.features_))
        return X, task_index(self.task_names_, task)

    def _draw_predictions(self, X, task, probability=True):
        """((draws, n) predictions per posterior draw, (n,) task index) of a linear method:
        the linear predictor f, or P(y = 1) for classification when ``probability``."""
        X, index = self._inputs(X, task)
        sigmoid = probability and self._kind == CLASSIFICATION
        f = jax.vmap(lambda W, b: predict_linear(X, index, W, b, sigmoid))(
            jnp.asarray(self.W_), jnp.asarray(self.b_))
        return np.asarray(f), index

    def _check_width(self, X, task):
        """X must have the fitted number of feature columns (plus the task column when the
        task labels come from ``task_col``)."""
        if _is_sparse(X):
            raise DataError("sparse X is not supported; pass a dense array")
        shape = X.shape if hasattr(X, "columns") else np.asarray(X).shape
        expected = len(self.features_) + (task is None and self.task_col is not None)
        if hasattr(X, "columns") and getattr(self, "named_features_", False):
            return  # named columns: _features checks them by name (and so their number)
        if len(shape) == 2 and shape[1] != expected:
            raise ShapeMismatchError(f"X has {shape[1]} features, but {type(self).__name__} "
                                     f"is expecting {expected} features as input")

    # --- persistence ---------------------------------------------------------------------
    def save(self, path):
        """Write the fitted model to a folder (JSON + npz; no pickle), atomically. A network's
        state (its state_dict as arrays, and JSON metadata) goes into the same two files."""
        check_is_fitted(self, "task_names_")
        params = self.get_params()
        if not isinstance(params["method"], str):
            raise ModelFileError("only registered methods (by name) can be saved; register "
                                 f"{params['method'].name!r} and pass its name")
        meta = {"class": type(self).__name__, "params": params, "method": self.method_name_,
                "inference": self.inference_, "task_names": [str(t) for t in self.task_names_],
                "features": list(self.features_), "named_features": self.named_features_,
                "feature_names_in": (None if getattr(self, "feature_names_in_", None) is None
                                     else [str(f) for f in self.feature_names_in_]),
                "fit_time": self.fit_time_, "n_features_in": int(self.n_features_in_),
                "lam_": getattr(self, "lam_", None)}
        arrays = {}
        if hasattr(self, "model_"):
            state_meta, state = self.model_.state()
            meta["state"] = state_meta
            arrays.update({f"state:{k}": v for k, v in state.items()})
        else:
            arrays.update(W=self.W_, b=self.b_)
        var = RELATIONS[registry.get(self.method_name_).relation][0]
        if var is not None and hasattr(self, f"{var}_"):
            arrays[var] = getattr(self, f"{var}_")
        if self.noise_ is not None:
            arrays["noise"] = self.noise_
        if self._kind == CLASSIFICATION:
            arrays["classes"] = np.asarray(self.classes_).astype(str)
            meta["class_kind"] = np.asarray(self.classes_).dtype.kind
        write_model(path, meta, arrays)


class MTLRegressor(RegressorMixin, _MTLBase):
    """Multi-task regression with any registered method (see the module docstring).

    Parameters: ``method`` (a registered name, default "mtrl") and its hyperparameters
    (e.g. ``lam``; ``lam="auto"``: 3-fold CV of MAP fits on the training rows over the
    method's λ grid), ``inference`` ("map", "nuts", "gibbs", "svi"), ``task_col``,
    ``loss_scale`` ("mean"/"sum"; default by inference), ``noise`` (σ, or "shared"/"task"
    for sampling), sampler settings, ``seed``.
    Fitted: ``W_`` (draws, d, m), ``b_`` (draws, m), ``coef_`` (d, m), ``intercept_`` (m,),
    the task relation's posterior mean (``omega_``, ``transfer_graph_`` or ``combination_``),
    ``idata_`` (ArviZ DataTree), ``fit_result_`` (the MAP fit, None when sampled),
    ``task_names_``, ``fit_time_``, ``lam_`` (the λ used; ``lam_cv_`` the CV behind "auto").
    A learned Ω of rank one warns with :class:`~bayesmtl.errors.DegenerateRelationWarning`.
    """

    def predict(self, X, task=None, return_std=False):
        """Posterior mean prediction (n,); with ``return_std`` also the posterior predictive
        standard deviation sqrt(Var f + E σ²) (sampled fits only: a MAP fit has none)."""
        if return_std and self.inference_ == "map":
            raise HyperparameterError(
                "return_std needs posterior draws; this is a MAP fit (inference='map'), which "
                "has no predictive uncertainty. Fit with inference='nuts', 'gibbs' or 'svi'",
                "return_std", True)
        if hasattr(self, "model_"):
            X, index = self._inputs(X, task)
            return self.model_.predict(X, index, return_std=return_std)
        f, index = self._draw_predictions(X, task)
        if not return_std:
            return f.mean(0)
        noise_var = 0.0
        if self.noise_ is not None:
            s2 = self.noise_**2
            noise_var = s2.mean() if s2.ndim == 1 else s2.mean(0)[index]
        elif isinstance(self.noise, (int, float)):
            noise_var = float(self.noise) ** 2
        return f.mean(0), np.sqrt(f.var(0) + noise_var)

    def score(self, X, y, task=None, sample_weight=None):
        from sklearn.metrics import r2_score

        return r2_score(y, self.predict(X, task), sample_weight=sample_weight)


class MTLClassifier(ClassifierMixin, _MTLBase):
    """Multi-task classification with any registered method: binary (Bernoulli-logit) with
    any two labels per data set (``classes_`` holds them, the larger one is the positive
    class); multi-class tasks with the methods that fit them (the deep networks)."""

    _kind = CLASSIFICATION

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.classifier_tags.multi_class = False
        return tags

    def decision_function(self, X, task=None):
        """(n,) posterior mean of the linear predictor f (log-odds of the positive class);
        linear methods only."""
        if hasattr(self, "model_"):
            raise MethodError(f"{self.method_name_} is a network: use predict_proba",
                              "method", self.method_name_)
        return self._draw_predictions(X, task, probability=False)[0].mean(0)

    def predict_proba(self, X, task=None):
        """(n, K) posterior mean class probabilities in the order of ``classes_``."""
        if hasattr(self, "model_"):
            X, index = self._inputs(X, task)
            return self.model_.predict_proba(X, index)
        p = self._draw_predictions(X, task)[0].mean(0)
        return np.stack([1 - p, p], axis=1)

    def predict(self, X, task=None):
        check_is_fitted(self, "task_names_")
        return self.classes_[np.argmax(self.predict_proba(X, task), axis=1)]

    def score(self, X, y, task=None, sample_weight=None):
        from sklearn.metrics import accuracy_score

        return accuracy_score(y, self.predict(X, task), sample_weight=sample_weight)


def _sklearn_checked(check):
    """Run a scikit-learn input check, re-raising its ValueError as DataError (same text)."""
    try:
        return check()
    except ValueError as err:
        if isinstance(err, DataError):
            raise
        raise DataError(str(err)) from None


def _is_sparse(X) -> bool:
    import scipy.sparse

    return scipy.sparse.issparse(X)


def load_estimator(path):
    """Load a model written by ``save`` (no pickle involved).

    Raises :class:`~bayesmtl.errors.ModelFileError` when the folder is corrupt, incomplete,
    from an incompatible version or inconsistent (array shapes against the metadata), and
    :class:`~bayesmtl.errors.MethodError` when its method is not registered in this session.
    """
    meta, arrays = read_model(path)
    try:
        cls = {"MTLRegressor": MTLRegressor, "MTLClassifier": MTLClassifier}[meta["class"]]
        method = registry.get(meta["method"])
        est = cls(**meta["params"])
        values = est._hyper_params()
        if isinstance(values.get("lam"), str) and values["lam"] == "auto":  # chosen at fit
            values["lam"] = meta["lam_"]
        registry.validate(method, values)
        est._settings()
        tasks = tuple(meta["task_names"])
        features = tuple(meta["features"])
        fit_time, n_features_in = float(meta["fit_time"]), int(meta["n_features_in"])
        if method.restore is not None:
            state = {k[len("state:"):]: v for k, v in arrays.items() if k.startswith("state:")}
            est.model_ = method.restore(meta["state"], state)
        else:
            W, b = arrays["W"], arrays["b"]
    except MethodError:
        raise
    except (KeyError, TypeError, ValueError, HyperparameterError) as err:
        raise ModelFileError(f"{path} is corrupt or from an incompatible version: "
                             f"{type(err).__name__}: {err}") from None
    m, d = len(tasks), len(features)
    expected = {}
    if method.restore is None:
        n_draws = W.shape[0] if W.ndim == 3 else -1
        expected = {"W": (n_draws, d, m), "b": (n_draws, m)}
    elif est.model_.n_tasks != m:
        raise ModelFileError(f"{path}: the network has {est.model_.n_tasks} task heads, but the "
                             f"model has {m} tasks")
    var = RELATIONS[method.relation][0]
    if var is not None and var in arrays:
        expected[var] = (m, m)
    if "noise" in arrays and method.restore is None:
        expected["noise"] = (n_draws, m) if arrays["noise"].ndim == 2 else (n_draws,)
    for name, shape in expected.items():
        if arrays[name].shape != shape:
            raise ModelFileError(f"{path}: array {name} has shape {arrays[name].shape}, but the "
                                 f"model has {m} tasks and {d} features (expected {shape})")
    if method.restore is None:
        est.W_, est.b_ = W, b
        est.coef_, est.intercept_ = W.mean(0), b.mean(0)
    if var is not None and var in arrays:
        setattr(est, f"{var}_", arrays[var])
    est.noise_ = arrays.get("noise")
    est.method_name_ = method.name
    est.task_names_, est.features_ = tasks, features
    est.fit_time_, est.n_features_in_ = fit_time, n_features_in
    est.fit_result_ = None
    est.inference_ = meta.get("inference", "map")
    est.named_features_ = bool(meta.get("named_features", False))
    if meta.get("lam_") is not None:
        est.lam_ = float(meta["lam_"])
    if meta.get("feature_names_in") is not None:
        est.feature_names_in_ = np.asarray(meta["feature_names_in"], dtype=object)
    if cls is MTLClassifier:
        classes = arrays.get("classes")
        if classes is None or classes.ndim != 1 or len(classes) < 2:
            raise ModelFileError(f"{path}: a classifier needs its class labels")
        est.classes_ = _restore_labels(classes, meta.get("class_kind", "U"))
    return est


def _restore_labels(classes, kind):
    """Class labels saved as str back to their dtype kind (i, u, f, b, U, O)."""
    if kind in "iu":
        return classes.astype(np.int64)
    if kind == "f":
        return classes.astype(np.float64)
    if kind == "b":
        return classes == "True"
    return classes
