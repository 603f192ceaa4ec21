r"""The task-relation family of L2MT (Table 1): members whose Ω-step is not spectral.

Every member instantiates objective (1) of L2MT,

    F(W, b, Ω) = Σ_i (1/n_i) Σ_j l(w_iᵀx_ij + b_i, y_ij) + (λ/2) tr(W P Wᵀ) + λ₂ g(Ω),

with the task precision P = Ω⁻¹ (or a pseudo-inverse/precision parameterisation where the paper
defines one), W (d, m), λ = the paper's λ₁ (argument ``lam``) and λ₂ a field of the member.

Bayesian reading (one for all members)
--------------------------------------
The members define the joint ("Gibbs") density

    p(W, b, Ω | y) ∝ exp(-F(W, b, Ω)),

i.e. a flat reference measure on W and b, the coupling factor exp(-(λ/2) tr(W P Wᵀ)), the
factor exp(-λ₂ g(Ω)) on the member's Ω-parameter (Lebesgue measure in the coordinates named
by each member), and the likelihood tempered by 1/n_i ("mean" scaling, Gaussian σ = 1/√2 for
the squared loss). MAP of this density is the paper's estimator by construction. Integrating W
gives ``c·|λP|^{-d/2}``, so the joint prior on (W, Ω) is proper exactly when
``∫ |P|^{-d/2} exp(-λ₂ g) dΩ < ∞``; each member's docstring says whether it is. NUTS samples
this density with :func:`family_model` (see :func:`sample_family`).

MAP (:func:`fit_family`) alternates exact block minimisations: the W-step is a
quadratic-coupled regression (exact linear solve by PCG for the Gaussian likelihood,
Newton–CG for the logistic one) and each member's ``omega_step(gram, lam, d, state,
previous_gram)`` is the exact minimiser of ``(λ/2) tr(P G) + λ₂ g`` given the Gram matrix
G = WᵀW (``state`` and ``previous_gram``, the Gram matrix ``state`` was computed from, only
warm-start it). For the jointly convex members (graph, clustered, SPATS) this block coordinate
descent reaches the global optimum; for glMTL and the reconstruction form it reaches a
stationary point of a biconvex problem. The alternation is extrapolated in W (Ang & Gillis
2019), with F kept monotone; glMTL's Gaussian fits end with Newton's method on the reduced
objective min_Ω F (:mod:`bayesmtl.inference.reduced_newton`).

Members here: :class:`GraphLaplacian` (RMTL, mean-regularised MTL), :class:`Clustered`
(Jacob et al.'s convex clustered MTL), :class:`SparsePrecision` (glMTL),
:class:`SparseCovariance` (SPATS), :class:`SparseReconstruction` (the sparse linear-span form
of [19], supplement eq. (9)), plus the STL and pooled baselines. MTRL is
:class:`bayesmtl.priors.MTRL` with :func:`bayesmtl.models.matrix_normal.fit_mtrl`, and the
Schatten members live in :mod:`bayesmtl.models.schatten`.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import numpyro
import numpyro.distributions as dist
from numpyro.distributions import constraints

from ..data import MultiTaskData
from ..inference.alternation import FamilyResult, _check_lam, family_objective, fit_family
from ..inference.profile import _inputs, w_step
from ..inference.stats import GaussianTerm, LogisticTerm, data_loss, data_term
from ..priors import OmegaPrior
from .clustered import Clustered
from .graph import GraphLaplacian, graph_laplacian, mean_regularised
from .likelihoods import BernoulliLogit, Gaussian
from .losses import linear_predictor
from .reconstruction import SparseReconstruction
from .sparse_covariance import SparseCovariance
from .sparse_precision import SparsePrecision

__all__ = ["GraphLaplacian", "mean_regularised", "Clustered", "SparsePrecision",
           "SparseCovariance", "SparseReconstruction", "FamilyResult", "fit_family",
           "fit_pooled", "pooled_model", "family_objective", "family_model", "sample_family",
           "graph_laplacian"]


# ----------------------------------------------------------------------------- MAP


def fit_pooled(data: MultiTaskData, lam: float = 1.0, *, loss_scale: str = "mean",
               noise: float | None = None) -> FamilyResult:
    """Pooled baseline: one shared (w, b) for all tasks (Ω → 11ᵀ), with the ridge prior
    (λ/2)‖w‖² and the same per-task loss scaling. Columns of W are identical."""
    _check_lam(lam)
    term = data_term(data, loss_scale, noise)
    if isinstance(term, GaussianTerm):  # one task: the sum of the task blocks
        pooled = GaussianTerm(term.H.sum(axis=0, keepdims=True),
                              term.rhs.sum(axis=0, keepdims=True), term.const)
    else:
        pooled = LogisticTerm(term.X, term.y, jnp.zeros_like(term.task), term.weights)
    d, m = data.n_features, data.n_tasks
    W, b = w_step(pooled, lam * jnp.eye(1), jnp.zeros((d, 1)), jnp.zeros(1))
    W, b = jnp.tile(W, (1, m)), jnp.tile(b, m)
    f = float(data_loss(term, W, b) + 0.5 * lam * jnp.sum(W[:, 0] ** 2))
    ones = np.ones((m, m))
    return FamilyResult(np.asarray(W), np.asarray(b), ones, np.full((m, m), np.nan), ones, f,
                        np.asarray([f]), 1, True, 0.0)


def pooled_model(X, task, n_tasks, y=None, *, lam, likelihood=None, weights=None):
    """The pooled baseline as a NumPyro model: one shared w ~ N(0, I/λ) (site ``w``, (d,)) and
    one flat intercept (site ``b_shared``), copied to every task (deterministic ``W`` (d, m),
    ``b`` (m,)). Its negative log joint is fit_pooled's objective up to a constant."""
    likelihood = Gaussian(1.0) if likelihood is None else likelihood
    d = X.shape[1]
    w = numpyro.sample("w", dist.Normal(0.0, lam ** -0.5).expand([d]).to_event(1))
    b0 = numpyro.sample("b_shared", dist.ImproperUniform(constraints.real, (), ()))
    W = numpyro.deterministic("W", jnp.tile(w[:, None], (1, n_tasks)))
    b = numpyro.deterministic("b", jnp.full((n_tasks,), b0))
    return likelihood(linear_predictor(X, task, W, b), task, n_tasks, y, weights)


# ----------------------------------------------------------------------------- sampling


def family_model(X, task, n_tasks, y=None, *, member, lam, likelihood=None, weights=None,
                 intercept_scale=None):
    """The Gibbs joint exp(-F) of ``member`` as a NumPyro model (module docstring).

    Sites: the member's Ω-parameter (``omega_raw``/``omega``/``omega_inv``/``reconstruction``),
    ``omega`` (deterministic where not a site), ``W`` (d, m) with flat reference measure and
    the factor ``w_coupling`` = -(λ/2) tr(W P Wᵀ), ``b`` (m,), ``y``.
    """
    likelihood = Gaussian(1.0) if likelihood is None else likelihood
    d = X.shape[1]
    state = member.sample_state(n_tasks, d, lam)
    P = member.precision(state)
    W = numpyro.sample("W", dist.ImproperUniform(constraints.real, (), (d, n_tasks)))
    numpyro.factor("w_coupling", -0.5 * lam * jnp.sum(W * (W @ P)))
    if intercept_scale is None:
        b = numpyro.sample("b", dist.ImproperUniform(constraints.real, (), (n_tasks,)))
    else:
        b = numpyro.sample("b", dist.Normal(0.0, intercept_scale).expand([n_tasks]).to_event(1))
    return likelihood(linear_predictor(X, task, W, b), task, n_tasks, y, weights)


def sample_family(data: MultiTaskData, member: OmegaPrior, lam: float = 1.0, *,
                  loss_scale: str = "mean", noise: float | None = None, num_warmup=500,
                  num_samples=500, num_chains=2, seed=0, init=None, **nuts_kwargs):
    """NUTS on :func:`family_model`; returns an ArviZ DataTree with task-named coordinates.

    ``init`` (a :class:`FamilyResult`) starts the chains at the MAP. The posterior holds W,
    b, the member's parameter, ``omega`` and ``omega_corr``; ``observed_data`` and
    ``log_likelihood`` hold y and log p(y_j | draw).
    """
    from ..inference.export import to_datatree
    from ..inference.mcmc import run_nuts

    _check_lam(lam)
    member.check(data.n_tasks)
    X, y, task, weights, classification, noise = _inputs(data, loss_scale, noise)
    likelihood = BernoulliLogit() if classification else Gaussian(noise)
    init_params = None
    if init is not None:
        init_params = {"W": jnp.asarray(init.W), "b": jnp.asarray(init.b)}
    mcmc = run_nuts(family_model, X, task, data.n_tasks, num_warmup=num_warmup,
                    num_samples=num_samples, num_chains=num_chains, seed=seed,
                    init_params=init_params, y=y, member=member, lam=lam,
                    likelihood=likelihood, weights=weights, **nuts_kwargs)
    samples = mcmc.get_samples(group_by_chain=True)
    samples = {k: np.asarray(v) for k, v in samples.items()}
    flat = {k: v.reshape((-1,) + v.shape[2:]) for k, v in samples.items()}
    state = member.state_from_samples(flat, data.n_tasks)
    omega = np.asarray(jax.vmap(member.covariance)(jnp.asarray(state)))
    samples["omega"] = omega.reshape(samples["W"].shape[:2] + omega.shape[1:])
    samples.pop("omega_raw", None)
    diverging = np.asarray(mcmc.get_extra_fields(group_by_chain=True)["diverging"])
    return to_datatree(samples, task_names=data.task_names, feature_names=data.feature_names,
                       dims={"reconstruction": ["source_task", "target_task"]},
                       sample_stats={"diverging": diverging},
                       attrs={"member": member.name, "lam": lam}, data=data,
                       likelihood=likelihood)
