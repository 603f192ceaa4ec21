"""scikit-learn estimators over the matrix-normal task-covariance model.

How the task id reaches the estimator (decided once): ``fit(X, y, task=...)``,
``predict(X, task=...)`` and ``score(X, y, task=...)`` take per-row task labels. When ``task``
is None the labels are read from column ``task_col`` of X (and that column is removed), which
makes the estimators work unchanged inside ``Pipeline`` and ``GridSearchCV`` — use
:class:`TaskKFold` so that every fold keeps rows of every task::

    est = MTLRegressor(prior="mtrl", task_col=0)
    GridSearchCV(est, {"lam": [0.1, 1, 10]}, cv=TaskKFold(3)).fit(X_with_task, y,
                                                                  groups=X_with_task[:, 0])

With sklearn metadata routing enabled, ``task=`` is routed like any other metadata.

Defaults follow the purpose of each inference: MAP uses the papers' per-task mean loss and
σ = 1/√2 (so it reproduces eq. (1) exactly); NUTS and SVI use the proper likelihood
(``loss_scale="sum"``) and learn a shared noise scale.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
from sklearn.base import BaseEstimator, ClassifierMixin, RegressorMixin
from sklearn.model_selection import BaseCrossValidator
from sklearn.utils.validation import check_is_fitted

from . import priors as P
from .data import CLASSIFICATION, REGRESSION, MultiTaskData, check_features, task_index
from .inference.export import from_mcmc, from_point, to_datatree
from .inference.map import map_estimate
from .models.likelihoods import PAPER_SQUARED_LOSS_NOISE, BernoulliLogit, Gaussian
from .models.losses import row_weights
from .models.matrix_normal import fit_mtrl, gaussian_w_step, model_inputs, mtl_model, predict_linear

__all__ = ["MTLRegressor", "MTLClassifier", "TaskKFold", "resolve_prior", "load_estimator"]

PRIORS = {"identity": lambda: P.Fixed("identity"), "stl": lambda: P.Fixed("identity"),
          "inverse_wishart": P.InverseWishart, "lkj": P.LKJ, "mtrl": P.MTRL}


def resolve_prior(prior) -> P.OmegaPrior:
    """A prior name (``identity``/``stl``, ``inverse_wishart``, ``lkj``, ``mtrl``) or object."""
    if isinstance(prior, P.OmegaPrior):
        return prior
    if isinstance(prior, str) and prior in PRIORS:
        return PRIORS[prior]()
    raise ValueError(f"prior must be an OmegaPrior or one of {sorted(PRIORS)}; got {prior!r}")


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
            raise ValueError("TaskKFold needs groups= (the task label of each row)")
        groups = np.asarray(groups)
        rng = np.random.default_rng(self.random_state)
        fold = np.empty(len(groups), dtype=int)
        for g in np.unique(groups):
            idx = np.flatnonzero(groups == g)
            if len(idx) < self.n_splits:
                raise ValueError(f"task {g!r} has {len(idx)} rows, fewer than n_splits="
                                 f"{self.n_splits}")
            if self.shuffle:
                idx = rng.permutation(idx)
            fold[idx] = np.arange(len(idx)) % self.n_splits
        for k in range(self.n_splits):
            yield fold == k


class _MTLBase(BaseEstimator):
    _kind = REGRESSION

    def __init__(self, prior="mtrl", lam=1.0, ridge=0.0, lam2=1.0, inference="map",
                 loss_scale=None,
                 noise=None, task_col=None, num_warmup=500, num_samples=500, num_chains=2,
                 svi_steps=5000, guide="normal", noncentered=False, progress_bar=False, seed=0):
        self.prior = prior
        self.lam = lam
        self.lam2 = lam2
        self.ridge = ridge
        self.inference = inference
        self.loss_scale = loss_scale
        self.noise = noise
        self.task_col = task_col
        self.num_warmup = num_warmup
        self.num_samples = num_samples
        self.num_chains = num_chains
        self.svi_steps = svi_steps
        self.guide = guide
        self.noncentered = noncentered
        self.progress_bar = progress_bar
        self.seed = seed

    # --- input handling ----------------------------------------------------------------
    def _split_task(self, X, task):
        X = np.asarray(X)
        if task is not None:
            return X, np.asarray(task)
        if self.task_col is None:
            raise ValueError("pass task= (per-row task labels) or set task_col")
        keep = np.ones(X.shape[1], dtype=bool)
        keep[self.task_col] = False
        return X[:, keep], X[:, self.task_col]

    def _data(self, X, y, task):
        X, task = self._split_task(X, task)
        return MultiTaskData.from_arrays(X, y, task, kind=self._kind)

    def _settings(self):
        inference = self.inference
        if inference not in ("map", "nuts", "svi"):
            raise ValueError(f"inference must be 'map', 'nuts' or 'svi'; got {inference!r}")
        loss_scale = self.loss_scale or ("mean" if inference == "map" else "sum")
        if self._kind == CLASSIFICATION:
            likelihood = BernoulliLogit()
        else:
            noise = self.noise
            if noise is None:
                noise = PAPER_SQUARED_LOSS_NOISE if inference == "map" else "shared"
            likelihood = Gaussian(noise)
        likelihood.check()
        if not self.lam > 0:
            raise ValueError(f"lam must be positive; got {self.lam}")
        if not self.ridge >= 0:
            raise ValueError(f"ridge must be non-negative; got {self.ridge}")
        return inference, loss_scale, likelihood

    # --- fitting -------------------------------------------------------------------------
    def fit(self, X, y, task=None):
        """Fit on rows X (n, d) with targets y (n,) and task labels (argument or column)."""
        data = self._data(X, y, task)
        inference, loss_scale, likelihood = self._settings()
        start = time.perf_counter()
        member = self._family_member(data)
        if member is not False:
            prior = self._fit_family(data, member, inference, loss_scale, likelihood)
        else:
            prior = resolve_prior(self.prior)
            prior.check(data.n_tasks)
            self._fit_omega_prior(data, prior, inference, loss_scale, likelihood)
        self.fit_time_ = time.perf_counter() - start
        self.idata_.attrs.update(prior=getattr(prior, "name", "pooled"), lam=float(self.lam),
                                 ridge=float(self.ridge),
                                 inference=inference)
        post = self.idata_.posterior
        self.W_ = post["W"].values.reshape(-1, *post["W"].shape[2:])  # (draws, d, m)
        self.b_ = post["b"].values.reshape(-1, post["b"].shape[-1])  # (draws, m)
        self.omega_ = post["omega"].values.reshape(-1, *post["omega"].shape[2:]).mean(0)
        self.task_names_ = data.task_names
        self.feature_names_in_ = np.asarray(data.feature_names, dtype=object) \
            if hasattr(X, "columns") else None
        self.n_features_in_ = data.n_features + (self.task_col is not None and task is None)
        if self._kind == CLASSIFICATION:
            self.classes_ = np.asarray(data.label_values)
        return self

    def _fit_omega_prior(self, data, prior, inference, loss_scale, likelihood):
        """The matrix-normal model with an Ω prior: MAP, NUTS or SVI into ``idata_``."""
        if inference == "map":
            params = self._fit_map(data, prior, likelihood, loss_scale)
            self.idata_ = from_point(params, task_names=data.task_names,
                                     feature_names=data.feature_names)
        else:
            args, kw = model_inputs(data, loss_scale)
            kw.update(omega_prior=prior, likelihood=likelihood, lam=self.lam, ridge=self.ridge,
                      noncentered=self.noncentered)
            if inference == "nuts":
                from .inference.mcmc import run_nuts
                self.mcmc_ = run_nuts(mtl_model, *args, num_warmup=self.num_warmup,
                                      num_samples=self.num_samples, num_chains=self.num_chains,
                                      seed=self.seed, progress_bar=self.progress_bar, **kw)
                self.idata_ = from_mcmc(self.mcmc_, task_names=data.task_names,
                                        feature_names=data.feature_names,
                                        var_names=_reported(self.mcmc_.get_samples()))
            else:
                from .inference.svi import run_svi
                self.svi_result_, samples = run_svi(
                    mtl_model, *args, guide=self.guide, num_steps=self.svi_steps,
                    num_samples=self.num_samples, seed=self.seed,
                    progress_bar=self.progress_bar, **kw)
                self.idata_ = to_datatree({k: v for k, v in samples.items()
                                           if k in _reported(samples)},
                                          task_names=data.task_names,
                                          feature_names=data.feature_names)

    def _family_member(self, data):
        """The L2MT-family member named by ``prior`` (None = pooled), or False if ``prior`` is
        a matrix-normal Ω prior (see :mod:`bayesmtl.selection`)."""
        from .selection import MEMBERS, is_member, make_member

        if isinstance(self.prior, str) and self.prior in MEMBERS and self.prior not in PRIORS:
            return make_member(self.prior, data.n_tasks, self.lam2)
        if is_member(self.prior):
            return self.prior
        return False

    def _fit_family(self, data, member, inference, loss_scale, likelihood):
        """MAP by the member's exact solver; NUTS on the member's Gibbs joint."""
        from .models.family import sample_family
        from .selection import fit_member

        noise = getattr(likelihood, "noise", None)
        if isinstance(noise, str):
            raise ValueError("family members need a fixed noise (a float)")
        if inference == "map":
            fit = fit_member(data, member, float(self.lam), loss_scale=loss_scale, noise=noise)
            self.map_result_ = fit.raw
            self.idata_ = from_point({"W": fit.W, "b": fit.b, "omega": fit.omega},
                                     task_names=data.task_names,
                                     feature_names=data.feature_names)
        elif inference == "nuts" and hasattr(member, "omega_step"):
            self.idata_ = sample_family(data, member, float(self.lam), loss_scale=loss_scale,
                                        noise=noise, num_warmup=self.num_warmup,
                                        num_samples=self.num_samples,
                                        num_chains=self.num_chains, seed=self.seed,
                                        progress_bar=self.progress_bar)
        else:
            raise ValueError(f"inference={inference!r} is not available for the "
                             f"{getattr(member, 'name', 'pooled')} member; use 'map'"
                             + (" or 'nuts'" if hasattr(member, "omega_step") else ""))
        return member

    def _fit_map(self, data, prior, likelihood, loss_scale):
        if isinstance(prior, P.LKJ):
            raise ValueError(
                "the joint MAP of (W, Ω) does not exist under the LKJ prior: the density grows "
                "without bound as Ω becomes singular with W in its span. Use inference='nuts' "
                "or 'svi', or an InverseWishart prior")
        if isinstance(prior, P.MTRL):
            noise = likelihood.noise if isinstance(likelihood, Gaussian) else None
            if isinstance(noise, str):
                raise ValueError("MTRL MAP needs a fixed noise (a float)")
            r = fit_mtrl(data, self.lam, self.ridge, loss_scale=loss_scale, noise=noise)
            self.map_result_ = r
            return {"W": r.W, "b": r.b, "omega": r.omega}
        if (isinstance(prior, P.Fixed) and isinstance(likelihood, Gaussian)
                and not isinstance(likelihood.noise, str)):
            # conjugate: the MAP (= posterior mean) of W, b is one exact linear solve
            omega = prior.matrix(data.n_tasks)
            W, b = _exact_gaussian(data, omega, self.lam, self.ridge, likelihood.noise,
                                   loss_scale)
            return {"W": W, "b": b, "omega": omega}
        args, kw = model_inputs(data, loss_scale)
        r = map_estimate(mtl_model, *args, omega_prior=prior, likelihood=likelihood,
                         lam=self.lam, ridge=self.ridge, seed=self.seed, **kw)
        self.map_result_ = r
        return {k: v for k, v in r.params.items() if k in ("W", "b", "omega", "noise")}

    # --- prediction ----------------------------------------------------------------------
    def _draw_predictions(self, X, task):
        check_is_fitted(self, "W_")
        X, task = self._split_task(X, task)
        X = check_features(X, self.W_.shape[1])
        index = task_index(self.task_names_, task)
        clf = self._kind == CLASSIFICATION
        f = jax.vmap(lambda W, b: predict_linear(X, index, W, b, clf))(
            jnp.asarray(self.W_), jnp.asarray(self.b_))
        return np.asarray(f)  # (draws, n)

    def save(self, path):
        """Write the fitted model to a folder (JSON + npz; no pickle)."""
        check_is_fitted(self, "W_")
        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        params = self.get_params()
        if not isinstance(params["prior"], str):
            params["prior"] = _prior_to_json(params["prior"])
        meta = {"class": type(self).__name__, "params": params,
                "task_names": list(self.task_names_), "fit_time": self.fit_time_,
                "n_features_in": int(self.n_features_in_)}
        (path / "model.json").write_text(json.dumps(meta, indent=2))
        np.savez_compressed(path / "arrays.npz", W=self.W_, b=self.b_, omega=self.omega_,
                            classes=getattr(self, "classes_", np.zeros(0)))


def _prior_to_json(prior):
    d = {"name": prior.name}
    for k, v in vars(prior).items():
        d[k] = np.asarray(v).tolist() if not isinstance(v, str) else v
    return d


def _prior_from_json(d):
    if isinstance(d, str):
        return d
    from .models import family as F
    from .models.schatten import Schatten, SquaredSchatten

    d = dict(d)
    name = d.pop("name")
    classes = {"fixed": P.Fixed, "inverse_wishart": P.InverseWishart, "lkj": P.LKJ,
               "mtrl": P.MTRL, "graph": F.GraphLaplacian, "clustered": F.Clustered,
               "glmtl": F.SparsePrecision, "spats": F.SparseCovariance,
               "reconstruction": F.SparseReconstruction, "schatten": Schatten,
               "squared_schatten": SquaredSchatten}
    return classes[name](**d)


def load_estimator(path):
    """Load a model written by ``save`` (no pickle involved)."""
    path = Path(path)
    meta = json.loads((path / "model.json").read_text())
    cls = {"MTLRegressor": MTLRegressor, "MTLClassifier": MTLClassifier}[meta["class"]]
    params = meta["params"]
    params["prior"] = _prior_from_json(params["prior"])
    est = cls(**params)
    with np.load(path / "arrays.npz") as arrays:
        est.W_, est.b_, est.omega_ = arrays["W"], arrays["b"], arrays["omega"]
        if arrays["classes"].size:
            est.classes_ = arrays["classes"]
    est.task_names_ = tuple(meta["task_names"])
    est.fit_time_ = meta["fit_time"]
    est.n_features_in_ = meta["n_features_in"]
    return est


def _reported(samples):
    """Sites worth exporting (drop internal parameterisation sites)."""
    return [k for k in samples if k in ("W", "b", "omega", "noise", "omega_scale")]


@jax.jit(static_argnames=("m",))
def _solve_fixed(X, y, task, weights, noise, precision, ridge, m):
    d = X.shape[1]
    return gaussian_w_step(X, y, task, weights, noise, precision, ridge, jnp.zeros((d, m)),
                           jnp.zeros(m), m)


def _exact_gaussian(data, omega, lam, ridge, noise, loss_scale):
    precision = lam * np.linalg.inv(omega)
    weights = row_weights(data.task, data.n_tasks, loss_scale)
    W, b = _solve_fixed(jnp.asarray(data.X), jnp.asarray(data.y), jnp.asarray(data.task),
                        jnp.asarray(weights), float(noise), jnp.asarray(precision),
                        float(ridge), data.n_tasks)
    return np.asarray(W), np.asarray(b)


class MTLRegressor(RegressorMixin, _MTLBase):
    """Multi-task regression with a task-covariance prior (see ``bayesmtl.models``).

    Parameters: ``prior`` (name or OmegaPrior), ``lam`` (λ, prior precision scale),
    ``ridge`` (ρ), ``inference`` ("map", "nuts", "svi"), ``loss_scale`` ("mean"/"sum"),
    ``noise`` (σ or "shared"/"task"), ``task_col``, sampler settings, ``seed``.
    Fitted: ``W_`` (draws, d, m), ``b_`` (draws, m), ``omega_`` (m, m) posterior mean,
    ``idata_`` (ArviZ DataTree), ``task_names_``, ``fit_time_``.
    """

    def predict(self, X, task=None, return_std=False):
        """Posterior mean prediction (and its posterior standard deviation)."""
        f = self._draw_predictions(X, task)
        return (f.mean(0), f.std(0)) if return_std else f.mean(0)

    def score(self, X, y, task=None, sample_weight=None):
        from sklearn.metrics import r2_score

        return r2_score(y, self.predict(X, task), sample_weight=sample_weight)


class MTLClassifier(ClassifierMixin, _MTLBase):
    """Multi-task binary classification (Bernoulli-logit); labels {0, 1} or {-1, +1}."""

    _kind = CLASSIFICATION

    def predict_proba(self, X, task=None):
        p = self._draw_predictions(X, task).mean(0)
        return np.stack([1 - p, p], axis=1)

    def predict(self, X, task=None):
        return self.classes_[(self.predict_proba(X, task)[:, 1] > 0.5).astype(int)]

    def score(self, X, y, task=None, sample_weight=None):
        from sklearn.metrics import accuracy_score

        return accuracy_score(y, self.predict(X, task), sample_weight=sample_weight)
