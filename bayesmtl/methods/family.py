r"""The task-relation family of L2MT (Table 1) whose Ω-step is not spectral, and the pooled
baseline.

Every member is the Gibbs joint of :mod:`bayesmtl.models.family`,

    p(W, b, Ω | y) ∝ exp(-F),   F = Σ_i (1/n_i) Σ_j l + (λ/2) tr(W P Wᵀ) + λ₂ g(Ω),

with P = Ω⁻¹ (or the member's precision parameterisation), λ = ``lam`` (λ₁) and λ₂ =
``lam2``. MAP (exact block minimisation, extrapolated) is the paper's estimator; NUTS samples
the same density (needs a fixed Gaussian noise, ``noise=σ``).

================  ==========================================================================
``pooled``        one shared (w, b): w ~ N(0, I/λ)
``rmtl``          graph-regularised MTL: P = L_S + ρI (default S: complete graph 1/m, i.e.
                  mean-regularised MTL, (λ/2) Σ_i ‖w_i - w̄‖²)
``clustered``     Jacob et al.: Ω ∈ {tr Ω = a, bI ⪯ Ω ⪯ cI}
``glmtl``         sparse precision: λ₂ g = -(λd/2) ln|P| + λ₂‖P‖₁ (graphical lasso)
``spats``         sparse covariance: λ₂ g = λ₂‖Ω‖₁
``reconstruction`` Ω⁻¹ = (I - A)(I - A)ᵀ, λ₂ g = λ₂‖A‖₁ (sparse linear span)
================  ==========================================================================
"""

from __future__ import annotations

import math
import warnings

import numpy as np

from ..errors import ConvergenceWarning, HyperparameterError
from ..inference.prox import clustered_spectrum
from ..models import family as F
from ..models.clustered import padded_singular_values
from ..models.matrix_normal import model_inputs
from .common import fixed_noise, history_info, likelihood, map_noise
from .matrix_normal import LAM, LAM_GRID
from .registry import (
    Fit,
    Hyper,
    JointForm,
    Method,
    boolean,
    matrix_or_none,
    nonnegative,
    positive,
    positive_or_none,
    register,
)

LAM2 = Hyper("lam2", 1.0, positive, "λ₂: weight of the member's g(Ω)")
LAM2_GRID = (0.01, 0.1, 1.0)


def _solver_kw(settings):
    kw = {"max_iter": settings.max_iter, "tol": settings.tol}
    return {k: v for k, v in kw.items() if v is not None}


def _member_fit(member_of, relation_of=None):
    """fit_map of a family member built by ``member_of(hyper, data)``."""
    def fit_map(data, hyper, settings, init=None):
        member = member_of(hyper, data)
        raw_init = None if init is None else (init.raw.W, init.raw.b, init.raw.state)
        r = F.fit_family(data, member, hyper["lam"], loss_scale=settings.resolved_loss_scale(),
                         noise=map_noise(settings), init=raw_init,
                         deadline=settings.deadline, **_solver_kw(settings))
        relation = {"omega": r.omega}
        if relation_of is not None:
            relation.update(relation_of(r))
        info = history_info(r.history, r.n_iter, r.residual)
        if r.newton_steps:  # glMTL's end game (inference.reduced_newton)
            info["newton_steps"] = r.newton_steps
        return Fit(r.W, r.b, relation, r.objective, r.converged, info, r)
    return fit_map


def _member_joint(member_of, sites_of):
    def joint(data, hyper, settings, fit):
        args, kw = model_inputs(data, settings.resolved_loss_scale())
        kw.update(member=member_of(hyper, data), lam=hyper["lam"],
                  likelihood=likelihood(data, settings))
        return JointForm(F.family_model, args, kw,
                         {"W": fit.W, "b": fit.b, **sites_of(fit, hyper, data)})
    return joint


def _member_sample(member_of, name):
    def sample(data, hyper, settings):
        return F.sample_family(data, member_of(hyper, data), hyper["lam"],
                               loss_scale=settings.resolved_loss_scale(),
                               noise=fixed_noise(name, settings, data),
                               num_warmup=settings.num_warmup, num_samples=settings.num_samples,
                               num_chains=settings.num_chains, seed=settings.seed,
                               progress_bar=settings.progress_bar,
                               target_accept_prob=settings.target_accept_prob,
                               max_tree_depth=settings.max_tree_depth)
    return sample


def _relation_site(site, key):
    """The member's parameter site ``site`` at the fit's exported relation ``key``."""
    def sites(fit, hyper, data):
        del hyper, data
        return {site: fit.relation[key]}
    return sites


# ----------------------------------------------------------------------------- pooled


def _fit_pooled(data, hyper, settings, init=None):
    del init
    r = F.fit_pooled(data, hyper["lam"], loss_scale=settings.resolved_loss_scale(),
                     noise=map_noise(settings))
    return Fit(r.W, r.b, {"omega": r.omega}, r.objective, True, {"n_iter": 1}, r)


def _pooled_joint(data, hyper, settings, fit):
    args, kw = model_inputs(data, settings.resolved_loss_scale())
    kw.update(lam=hyper["lam"], likelihood=likelihood(data, settings))
    return JointForm(F.pooled_model, args, kw, {"w": fit.W[:, 0], "b_shared": fit.b[0]})


def _sample_pooled(data, hyper, settings):
    from .common import sample_model

    return sample_model(F.pooled_model, data, settings, ("W", "b", "noise"),
                        lam=hyper["lam"])


register(Method(
    name="pooled",
    statistics=True,
    summary="pooled baseline: one shared (w, b) for every task (Ω → 11ᵀ)",
    hyper=(LAM,),
    fit_map=_fit_pooled,
    joint=_pooled_joint,
    sample=_sample_pooled,
    samplers=frozenset({"nuts", "svi"}),
    grid={"lam": LAM_GRID},
    sampling_prior="w ~ N(0, I/λ), flat shared intercept: proper posterior",
))


# ----------------------------------------------------------------------------- RMTL


def _rmtl(hyper, data):
    m = data.n_tasks
    S = hyper["similarity"]
    member = (F.mean_regularised(m, hyper["ridge"]) if S is None
              else F.GraphLaplacian(np.asarray(S, dtype=np.float64), hyper["ridge"]))
    member.check(m)
    if hyper["ridge"] == 0:
        _check_identified(member, data)
    return member


def _check_identified(member, data):
    """With ρ = 0 each connected component's mean weight vector is unpenalised: the data of
    the component must determine it (more rows than d + 1), else the MAP is not unique."""
    P = member.precision_matrix(data.n_tasks)
    adjacency = (np.abs(P) > 0).astype(int)
    n = data.n_per_task
    seen = np.zeros(data.n_tasks, dtype=bool)
    for start in range(data.n_tasks):
        if seen[start]:
            continue
        component, frontier = [start], [start]
        seen[start] = True
        while frontier:
            nxt = [j for i in frontier for j in np.flatnonzero(adjacency[i]) if not seen[j]]
            for j in nxt:
                seen[j] = True
            component += nxt
            frontier = nxt
        if n[component].sum() <= data.n_features + 1:
            names = ", ".join(str(data.task_names[i]) for i in component[:5])
            raise HyperparameterError(
                f"rmtl: with ridge = 0 the mean weights of the graph component {{{names}}} are "
                f"unpenalised and its {int(n[component].sum())} rows cannot determine "
                f"{data.n_features + 1} coefficients; set ridge > 0 or connect these tasks",
                "ridge", 0.0)


register(Method(
    name="rmtl",
    statistics=True,
    aliases=("graph",),
    summary="graph-regularised MTL (Evgeniou et al.): P = L_S + ρI; default mean-regularised",
    hyper=(LAM, Hyper("ridge", 0.0, nonnegative, "ρ: precision L + ρI (ρ > 0: proper)"),
           Hyper("similarity", None, matrix_or_none,
                 "task graph S (m, m), symmetric, ≥ 0; None = complete graph 1/m")),
    fit_map=_member_fit(_rmtl),
    joint=_member_joint(_rmtl, lambda fit, hyper, data: {}),
    sample=_member_sample(_rmtl, "rmtl"),
    samplers=frozenset({"nuts"}),
    grid={"lam": LAM_GRID},
    sampling_prior=("Gaussian W with precision λ(L + ρI): proper for ρ > 0; with ρ = 0 flat "
                    "in each component's mean, proper posterior when the Gaussian likelihood "
                    "identifies it"),
))


# ----------------------------------------------------------------------------- clustered


def default_clusters(m: int, d: int) -> float:
    """Default a/c of the clustered member, k = min(⌈√m⌉, ⌈min(d, m)/2⌉): ⌈√m⌉ "effective
    clusters", kept below rank(W) ≤ min(d, m), where the set would clip every direction of W at
    c and reduce the member to STL."""
    return float(max(1, min(math.ceil(math.sqrt(m)), math.ceil(min(d, m) / 2))))


def _clustered(hyper, data):
    a = hyper["a"] if hyper["a"] is not None else (
        default_clusters(data.n_tasks, data.n_features) * hyper["c"])
    member = F.Clustered(a=a, b=hyper["b"], c=hyper["c"])
    member.check(data.n_tasks)
    return member


def _fit_clustered(data, hyper, settings, init=None):
    result = _member_fit(_clustered)(data, hyper, settings, init)
    _warn_if_reduced_to_stl(result, _clustered(hyper, data))
    return result


def _warn_if_reduced_to_stl(result, member):
    s = np.asarray(padded_singular_values(result.W))
    rank = int(np.sum(s > 1e-8 * max(s.max(initial=0.0), 1e-300)))
    if rank == 0:
        return
    # Ω's eigenvalues are the clustered spectrum of WᵀW's (no m × m eigendecomposition)
    omega_eigs = np.asarray(clustered_spectrum(s**2, member.a, member.b, member.c))
    if np.sum(omega_eigs >= member.c * (1 - 1e-6)) >= rank:
        warnings.warn(
            f"clustered: every direction of W (rank {rank}) sits at the upper bound c = "
            f"{member.c}, so the penalty is (λ/2c)‖W‖²: the member reduced to STL. Lower a "
            f"(now {member.a}) below rank(W)·c", ConvergenceWarning, stacklevel=4)


register(Method(
    name="clustered",
    statistics=True,
    summary="clustered MTL (Jacob et al. 2008): tr Ω = a, bI ⪯ Ω ⪯ cI (convex)",
    hyper=(LAM,
           Hyper("a", None, positive_or_none,
                 "tr Ω = a; None = c·min(⌈√m⌉, ⌈min(d, m)/2⌉) (effective clusters)"),
           Hyper("b", 1e-3, positive, "lower eigenvalue bound b"),
           Hyper("c", 1.0, positive, "upper eigenvalue bound c")),
    fit_map=_fit_clustered,
    joint=_member_joint(_clustered, lambda fit, hyper, data: {
        "omega_raw": _clustered_raw(fit, _clustered(hyper, data))}),
    sample=_member_sample(_clustered, "clustered"),
    samplers=frozenset({"nuts"}),
    grid={"lam": LAM_GRID},
    sampling_prior="uniform on the compact set (S ~ Wishart, trace-normalised): proper",
))


def _clustered_raw(fit, member):
    """The ``omega_raw`` site S (tr S = 1) with Ω = bI + (a - mb) S / tr S."""
    m = fit.W.shape[1]
    return (fit.relation["omega"] - member.b * np.eye(m)) / (member.a - m * member.b)


# ----------------------------------------------------------------------------- glMTL, SPATS


def _glmtl(hyper, data):
    del data
    return F.SparsePrecision(hyper["lam2"])


register(Method(
    name="glmtl",
    statistics=True,
    summary="glMTL: sparse task precision (graphical lasso on W), biconvex",
    hyper=(LAM, LAM2),
    fit_map=_member_fit(_glmtl, lambda r: {"omega_inv": r.precision}),
    joint=_member_joint(_glmtl, _relation_site("omega_inv", "omega_inv")),
    sample=_member_sample(_glmtl, "glmtl"),
    samplers=frozenset({"nuts"}),
    grid={"lam": LAM_GRID, "lam2": LAM2_GRID},
    sampling_prior=("Gibbs joint with Lebesgue measure on P and Laplace(λ₂) entries: proper "
                    "iff λ > 1 - 2/d"),
))


def _spats(hyper, data):
    del data
    return F.SparseCovariance(hyper["lam2"], hyper["eps"])


register(Method(
    name="spats",
    statistics=True,
    summary="SPATS: sparse task covariance ‖Ω‖₁ (jointly convex)",
    hyper=(LAM, LAM2, Hyper("eps", 1e-8, nonnegative, "ε of the barrier (λε/2) tr Ω⁻¹")),
    fit_map=_member_fit(_spats),
    joint=_member_joint(_spats, _relation_site("omega", "omega")),
    sample=_member_sample(_spats, "spats"),
    samplers=frozenset({"nuts"}),
    grid={"lam": LAM_GRID, "lam2": LAM2_GRID},
    sampling_prior="|Ω|^{d/2} exp(-λ₂‖Ω‖₁) after integrating W: proper",
))


# ----------------------------------------------------------------------------- reconstruction


def _reconstruction(hyper, data):
    del data
    return F.SparseReconstruction(hyper["lam2"], hyper["zero_diagonal"])


register(Method(
    name="reconstruction",
    statistics=True,
    summary="sparse linear span: Ω⁻¹ = (I - A)(I - A)ᵀ, ‖A‖₁ (biconvex)",
    hyper=(LAM, LAM2, Hyper("zero_diagonal", False, boolean,
                            "fix A's diagonal at 0 (AMTL's convention) instead of shrinking it")),
    fit_map=_member_fit(_reconstruction, lambda r: {"reconstruction": r.state}),
    joint=_member_joint(_reconstruction, _relation_site("reconstruction", "reconstruction")),
    sample=_member_sample(_reconstruction, "reconstruction"),
    samplers=frozenset({"nuts"}),
    grid={"lam": LAM_GRID, "lam2": LAM2_GRID},
    sampling_prior=("A ~ Laplace(0, 1/λ₂) (proper); the joint prior is improper, the posterior "
                    "proper when the Gaussian likelihood identifies W"),
))
