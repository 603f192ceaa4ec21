r"""Matrix-normal methods with a prior on the task covariance Ω (eq. (1) of L2MT).

Every method here is :func:`~bayesmtl.models.matrix_normal.mtl_model`:

    Ω ~ p(Ω),   W | Ω ~ MN(0, I_d, Ω/λ),   [× exp(-(ρ/2)‖W‖²_F)],   b flat,
    y_ij ~ N(w_iᵀx_ij + b_i, σ²) or Bernoulli(sigmoid(·)),

λ = ``lam`` (the paper's λ₁), ρ = ``ridge``. MAP uses the papers' mean per-task loss and
σ = 1/√2, so ``-log p(W, b, Ω | y)`` = Σ_i (1/n_i) Σ_j l + (λ/2) tr(W Ω⁻¹ Wᵀ) + [prior on Ω]
+ const.

========================  ==================================================================
``stl`` (``identity``)    Ω = I: independent tasks, (λ/2)‖W‖²_F (single-task ridge)
``fixed``                 Ω = a given positive definite matrix (``omega``)
``inverse_wishart``       Ω ~ IW(df, scale·I): conjugate (Gibbs sampler), MAP by L-BFGS
``lkj``                   Ω = diag(s) C diag(s), C ~ LKJ(eta): no joint MAP (unbounded)
``mtrl``                  MTRL (Zhang & Yeung): Ω ∈ {Ω ⪰ 0, tr Ω = 1}, p(Ω) ∝ |Ω|^{d/2}
========================  ==================================================================
"""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np

from .. import priors as P
from ..data import REGRESSION, TaskStatistics
from ..errors import MethodError
from ..inference.profile import gaussian_diagonal_solve, gaussian_w_step
from ..inference.stats import data_loss, data_term
from ..models.matrix_normal import bucketed_inputs, fit_mtrl, model_inputs, mtl_model
from .common import history_info, likelihood, map_noise, sample_mtl_model
from .registry import (
    Fit,
    Hyper,
    JointForm,
    Method,
    matrix_or_none,
    nonnegative,
    positive,
    positive_or_none,
    register,
)

LAM = Hyper("lam", 1.0, positive, "λ (the paper's λ₁): precision scale of W | Ω ~ MN(0, I, Ω/λ)")
RIDGE = Hyper("ridge", 0.0, nonnegative, "ρ: extra factor exp(-(ρ/2)‖W‖²_F) (MTRL's λ₁)")
LAM_GRID = (0.001, 0.01, 0.1, 1.0, 10.0)
SAMPLERS = frozenset({"nuts", "svi"})


def _joint(prior_of, sites_of):
    """JointForm of mtl_model with the prior ``prior_of(hyper)`` at ``sites_of(fit)``."""
    def joint(data, hyper, settings, fit):
        args, kw = model_inputs(data, settings.resolved_loss_scale())
        kw.update(omega_prior=prior_of(hyper), likelihood=likelihood(data, settings),
                  lam=hyper["lam"], ridge=hyper.get("ridge", 0.0))
        params = {"W": fit.W, "b": fit.b, **sites_of(fit)}
        return JointForm(mtl_model, args, kw, params)
    return joint


def _sampler(prior_of):
    def sample(data, hyper, settings):
        return sample_mtl_model(data, prior_of(hyper), hyper, settings)
    return sample


def _no_sites(fit):
    del fit
    return {}


# ----------------------------------------------------------------------------- fixed Ω


def _solve_fixed(term, precision, ridge):
    m = precision.shape[0]
    d = term.rhs.shape[1] - 1
    return gaussian_w_step(term, precision, ridge, jnp.zeros((d, m)), jnp.zeros(m))


def fit_fixed_omega(data, omega, lam, ridge, settings, seed=0) -> Fit:
    """MAP with Ω fixed: one exact linear solve (Gaussian) or L-BFGS (logistic)."""
    loss_scale = settings.resolved_loss_scale()
    if data.kind == REGRESSION:
        precision = lam * np.linalg.inv(omega)
        term = data_term(data, loss_scale, map_noise(settings))
        W, b = _solve_fixed(term, jnp.asarray(precision), float(ridge))
        objective = float(data_loss(term, W, b)
                          + 0.5 * lam * jnp.trace(W @ jnp.linalg.solve(omega, W.T))
                          + 0.5 * ridge * jnp.sum(W**2))
        return Fit(np.asarray(W), np.asarray(b), {"omega": np.asarray(omega)}, objective, True,
                   {"n_iter": 1})
    return _generic_map(data, P.Fixed(np.asarray(omega)), lam, ridge, settings, seed)


def _generic_map(data, prior, lam, ridge, settings, seed=0, init=None) -> Fit:
    """MAP of mtl_model by L-BFGS on the negative log joint (no closed form)."""
    from ..inference.map import map_estimate

    if isinstance(data, TaskStatistics):
        raise MethodError(f"{type(prior).__name__}: this MAP is L-BFGS on the rows (ridge > 0 or a "
                          "user prior); fit a MultiTaskData, not TaskStatistics",
                          "data", type(data).__name__)

    args, kw = bucketed_inputs(data, settings.resolved_loss_scale())
    init_params = None if init is None else {"W": init.W, "b": init.b, **_init_sites(init)}
    r = map_estimate(mtl_model, *args, omega_prior=prior, likelihood=likelihood(data, settings),
                     lam=lam, ridge=ridge, seed=seed, init_params=init_params, **kw)
    omega = r.params["omega"]
    return Fit(r.params["W"], r.params["b"], {"omega": omega}, r.objective, r.converged,
               {"n_iter": r.n_iter, "grad_norm": r.grad_norm}, r)


def _init_sites(init):
    """The previous fit's Ω as a warm start of the prior's ``omega`` site (when it has one)."""
    omega = init.relation.get("omega")
    return {} if omega is None else {"omega": omega}


def _fit_stl(data, hyper, settings, init=None):
    from ..models.family import GraphLaplacian, fit_family

    del init
    m, lam = data.n_tasks, hyper["lam"]
    if data.kind == REGRESSION:  # m independent ridge regressions, no m × m matrix
        term = data_term(data, settings.resolved_loss_scale(), map_noise(settings))
        W, b = gaussian_diagonal_solve(term, jnp.full(m, float(lam)))
        objective = float(data_loss(term, W, b) + 0.5 * lam * jnp.sum(W**2))
        return Fit(np.asarray(W), np.asarray(b), {"omega": np.eye(m)}, objective, True,
                   {"n_iter": 1})
    member = GraphLaplacian(np.zeros((m, m)), ridge=1.0)  # precision I: independent tasks
    r = fit_family(data, member, lam, loss_scale=settings.resolved_loss_scale(),
                   noise=map_noise(settings))
    return Fit(r.W, r.b, {"omega": np.eye(m)}, r.objective, r.converged, {"n_iter": r.n_iter},
               r)


def _fixed_prior(hyper):
    return P.Fixed("identity" if hyper.get("omega") is None else hyper["omega"])


def _fit_fixed(data, hyper, settings, init=None):
    del init
    prior = _fixed_prior(hyper)
    prior.check(data.n_tasks)
    return fit_fixed_omega(data, prior.matrix(data.n_tasks), hyper["lam"], hyper["ridge"],
                           settings, settings.seed)


register(Method(
    name="stl",
    statistics=True,
    aliases=("identity",),
    summary="single-task learning: Ω = I, each task a ridge regression / L2 logistic",
    hyper=(LAM,),
    fit_map=_fit_stl,
    joint=_joint(lambda h: P.Fixed("identity"), _no_sites),
    sample=_sampler(lambda h: P.Fixed("identity")),
    samplers=SAMPLERS,
    grid={"lam": LAM_GRID},
    sampling_prior="W ~ MN(0, I, I/λ): a proper Gaussian prior",
))

register(Method(
    name="fixed",
    statistics=True,
    summary="a given task covariance Ω (e.g. the inverse of a graph Laplacian plus ridge)",
    hyper=(LAM, RIDGE, Hyper("omega", None, matrix_or_none,
                             "Ω (m, m) positive definite; None = identity")),
    fit_map=_fit_fixed,
    joint=_joint(_fixed_prior, _no_sites),
    sample=_sampler(_fixed_prior),
    samplers=SAMPLERS,
    grid={"lam": LAM_GRID},
    sampling_prior="W ~ MN(0, I, Ω/λ): proper",
))


# ----------------------------------------------------------------------------- user priors


def omega_prior_method(name: str, prior, hyper=(), *, summary: str = "",
                       sampling_prior: str = "", samplers=SAMPLERS, map_form: bool = True,
                       grid=None, sites=None) -> Method:
    """A :class:`Method` for a user's own prior on Ω in the matrix-normal model.

    ``prior(hyper) -> OmegaPrior`` builds the prior (an object with ``check(m)`` and
    ``__call__(m, d) -> Ω`` registering its NumPyro sites, see :mod:`bayesmtl.priors`) from
    the method's hyperparameters; ``hyper`` declares them (λ = ``lam`` and ρ = ``ridge`` are
    added). MAP is L-BFGS on the negative log joint (``map_form=False`` when the joint MAP
    does not exist); NUTS and SVI sample :func:`~bayesmtl.models.matrix_normal.mtl_model`.
    ``sites(fit) -> {site: value}`` gives the prior's latent sites at a fit (default: a site
    ``omega`` holding Ω itself). Register the result with :func:`~bayesmtl.methods.register`.
    """
    def prior_of(values):
        return prior({k: v for k, v in values.items() if k not in ("lam", "ridge")})

    def fit_map(data, values, settings, init=None):
        p = prior_of(values)
        p.check(data.n_tasks)
        return _generic_map(data, p, values["lam"], values["ridge"], settings, settings.seed,
                            init)

    def omega_site(fit):
        return {"omega": fit.relation["omega"]}

    return Method(name=name, summary=summary or f"user prior {name} on Ω",
                  hyper=(LAM, RIDGE, *hyper), fit_map=fit_map if map_form else None,
                  joint=_joint(prior_of, sites or omega_site), sample=_sampler(prior_of),
                  samplers=frozenset(samplers), grid=grid or {"lam": LAM_GRID},
                  sampling_prior=sampling_prior or "the user's prior on Ω",
                  no_map=None if map_form else f"{name} was declared without a MAP.")


# ----------------------------------------------------------------------------- IW, LKJ


def _iw(hyper):
    return P.InverseWishart(df=hyper["df"], scale=hyper["scale"])


def _fit_iw(data, hyper, settings, init=None):
    """Joint MAP of (W, b, Ω): block minimisation with the closed-form Ω-step (any
    likelihood, no ridge); L-BFGS on the joint when ρ > 0."""
    from ..inference.alternation import fit_family

    prior = _iw(hyper)
    prior.check(data.n_tasks)
    if hyper["ridge"] > 0:
        return _generic_map(data, prior, hyper["lam"], hyper["ridge"], settings,
                            settings.seed, init)
    kw = {k: v for k, v in (("max_iter", settings.max_iter), ("tol", settings.tol))
          if v is not None}
    raw_init = None if init is None else (init.W, init.b, init.relation["omega"])
    r = fit_family(data, prior, hyper["lam"], loss_scale=settings.resolved_loss_scale(),
                   noise=map_noise(settings), init=raw_init, deadline=settings.deadline, **kw)
    return Fit(r.W, r.b, {"omega": r.omega}, r.objective, r.converged,
               history_info(r.history, r.n_iter, r.residual), r)


register(Method(
    name="inverse_wishart",
    statistics=True,
    summary="Ω ~ inverse-Wishart(df, scale·I): conjugate; MAP, NUTS, SVI and blocked Gibbs",
    hyper=(LAM, RIDGE,
           Hyper("df", None, positive_or_none, "degrees of freedom ν > m - 1; None = m + 2"),
           Hyper("scale", 1.0, positive, "Ψ = scale · I")),
    fit_map=_fit_iw,
    joint=_joint(_iw, lambda fit: {"omega": fit.relation["omega"]}),
    sample=_sampler(_iw),
    samplers=frozenset({"nuts", "svi", "gibbs"}),
    grid={"lam": LAM_GRID},
    sampling_prior="Ω ~ IW(ν, Ψ): proper",
))


def _lkj(hyper):
    return P.LKJ(eta=hyper["eta"], scale=hyper["scale"])


register(Method(
    name="lkj",
    summary="Ω = diag(s) C diag(s), C ~ LKJ(eta), s ~ HalfNormal(scale): sampling only",
    hyper=(LAM, RIDGE, Hyper("eta", 2.0, positive, "LKJ concentration η"),
           Hyper("scale", 1.0, positive, "HalfNormal scale of the task standard deviations")),
    fit_map=None,
    no_map=("the joint MAP of (W, Ω) does not exist under the LKJ prior: the density grows "
            "without bound as Ω becomes singular with W in its span."),
    sample=_sampler(_lkj),
    samplers=SAMPLERS,
    grid={"lam": LAM_GRID},
    sampling_prior="LKJ(η) correlation and HalfNormal scales: proper",
))


# ----------------------------------------------------------------------------- MTRL


def _fit_mtrl(data, hyper, settings, init=None):
    kw = {} if settings.max_iter is None else {"max_iter": max(settings.max_iter, 5000)}
    r = fit_mtrl(data, hyper["lam"], hyper["ridge"], loss_scale=settings.resolved_loss_scale(),
                 noise=map_noise(settings), init=None if init is None else (init.W, init.b),
                 **kw)
    return Fit(r.W, r.b, {"omega": r.omega}, r.objective, r.converged,
               history_info(r.history, r.n_iter, r.residual), r)


def _mtrl_sites(fit):
    # Ω = S / tr S with S ~ Wishart: at S = Ω (tr Ω = 1) the Wishart factor is constant
    return {"omega_raw": fit.relation["omega"]}


register(Method(
    name="mtrl",
    statistics=True,
    summary="MTRL (Zhang & Yeung 2010): Ω ⪰ 0, tr Ω = 1, learned with W",
    hyper=(LAM, RIDGE),
    fit_map=_fit_mtrl,
    joint=_joint(lambda h: P.MTRL(), _mtrl_sites),
    sample=_sampler(lambda h: P.MTRL()),
    samplers=SAMPLERS,
    grid={"lam": LAM_GRID},
    sampling_prior="p(Ω) ∝ |Ω|^{d/2} on the spectraplex {Ω ⪰ 0, tr Ω = 1}: proper (compact)",
))

