r"""AMTL: asymmetric multi-task learning with a loss-weighted, directed transfer graph.

Lee, Yang & Hwang (ICML 2016). m tasks with d features; task t has rows (x_tj, y_tj),
parameters w_t (column t of W (d, m)) and an unpenalised intercept b_t. The transfer graph
B (m, m) (NumPyro site ``transfer_graph``) has B ≥ 0, zero diagonal; B[s, t] is the transfer
from source task s to target task t, column t (``b_t^i``) holds the incoming edges of t and
row s (``b_s^o``) the outgoing edges of s.

Objective (1) (λ = ``lam``, μ = ``mu``), with L_t the per-task mean loss (squared or
logistic; multiplied by c_t = 1/√n_t in the imbalance variant)::

    F(W, b, B) = Σ_t (1 + μ ‖b_t^o‖₁) L_t(w_t, b_t) + λ ‖W - W B‖²_F
               = Σ_t L_t + μ Σ_{s,t} Λ_s B[s, t] + λ Σ_t ‖w_t - W b_t^i‖²,   Λ = diag(L).

Bayesian reading (the MAP form, :func:`amtl_map_model`)
-------------------------------------------------------
* **Reconstruction prior** (a prior on W given B, unnormalised):
  ``p(W | B) ∝ Π_t N(w_t | Σ_s B[s, t] w_s, (1/2λ) I_d) ∝ exp(-λ ‖W(I - B)‖²_F)``.
  As a density in W its normaliser is ``(2λ/π)^{md/2} |det(I - B)|^d``; it depends on B and is
  dropped, so the factor is not a conditional density of W.
* **Tempered likelihood** (loss-based, unnormalised): task t's likelihood enters as the Gibbs
  factor ``exp(-(1 + μ ‖b_t^o‖₁) L_t)``, i.e. each row's log-likelihood is tempered by
  ``τ_t = (1 + μ ‖b_t^o‖₁) c_t / n_t``. For the logistic loss this is exactly
  ``Bernoulli(y | sigmoid(f))^τ_t``; for the squared loss it is the N(f, 1/2) kernel
  ``exp(-(y - f)²)`` without its normaliser, which would otherwise depend on B through τ_t.
  Equivalently, in the column form the same term is a **loss-dependent sparsity prior** on B:
  ``B[s, t] ~ Exponential(rate = μ Λ_s)`` (half-Laplace), whose rate depends on W through the
  source task's loss and whose normaliser ``μ Λ_s`` is dropped.
* W and b have flat (improper) priors.

Hence ``-log p(W, b, B, y)`` of the MAP form equals F up to a constant (tested), and MAP is
exactly the paper's estimator. Sampling that object is not sensible (improper, data-dependent
rates), so posterior sampling uses the **proper-prior variant** :func:`amtl_model`:

    B[s, t] ~ Exponential(μ Λ̂_s)  (s ≠ t),  Λ̂ = task losses of a MAP fit (empirical Bayes),
    W (I - B) = E,  E_{kt} ~ N(0, 1/(2λ))        (W = E (I - B)⁻¹: a linear SEM, proper;
                                                 density exp(-λ‖W(I-B)‖²) |det(I - B)|^d),
    b_t ~ N(0, intercept_scale²),  y_tj ~ N(f_tj, σ_t²) or Bernoulli(sigmoid(f_tj)).

At fixed Λ = Λ̂ its negative log joint differs from F only by the normalisers named above
(``-d log|det(I - B)|`` and constants) when the likelihood is given the MAP form's tempering.

Variants (the paper's ablations): ``"amtl"`` (Algorithm 1), ``"curriculum"`` (Algorithm 2 with
selection rule (5) and update (6)), ``"noloss"`` (Λ = I: plain ℓ1 on B, no tempering),
``"imbalance"`` (L_t → c_t L_t, c_t = 1/√n_t), ``"smtl"`` (symmetric B). The paper's SMTL asks
for a positive semidefinite B; a PSD matrix with zero diagonal is zero, so SMTL here keeps the
zero diagonal and imposes B = Bᵀ ≥ 0 (symmetric transfer, same objective (1)).

What (1) does and does not order (Theorem 1): the cost of an edge s → t is μ Λ_s, so the
*outgoing* mass ‖b_s^o‖₁ is ordered by the source loss (low-loss tasks send). The *incoming*
mass of a target t is set by column t of the B-step, in which L_t does not appear, so easy
targets receive about as much as hard ones (on the Section 4.1 set every task receives ≈ 1
and easy → easy edges carry about half of the mass; see benchmarks/results_amtl.md).

Existence of the MAP (logistic loss): μ‖b_s^o‖₁ is invariant to the scale of W, and
λ‖W(I - B)‖² is the only penalty on W. If every task's training rows are linearly separable
and W can be reconstructed from the other tasks (e.g. d < m), the path W → cW, c → ∞, with B
fitted to it, sends every L_t and the relative reconstruction residual to 0, so F keeps
decreasing towards the ℓ1 cost of B (towards 0 for the loss-weighted variants, where
μ Λ_s B[s, t] → 0 as well) and the MAP need not exist. Algorithm 1 then drifts: ‖W‖ grows
without bound and the alternation does not meet its tolerance. :func:`fit_amtl` says so in
its warning when it stops unconverged with every task separated; use a larger λ, fewer
features, or read the capped fit as early stopping (as on the GAMTL Synthetic set, n = 2d:
all 100 tasks separated, ‖W‖ 29 → 627 over 12 alternations at λ = 0.01, μ = 0.1).

Squared loss with more tasks than features: most columns of W then lie in the cone of the
others, so W ≈ WB costs little ℓ1 mass, and the prior holds W only where I - B is well
conditioned. Where I - B turns singular, the W-step's Hessian is singular on
{V : X̃_t v_t = 0 for every t, V(I - B) = 0}: directions that no training row sees and the
reconstruction does not penalise. On School (139 tasks, 27 features of rank 23, each task's
rows of rank 5–15 for 28 coefficients; λ = 1, μ = 0.1) Algorithm 1 drifts into them: ‖W‖
4.9e3 → 8.8e5 from 20 to 250 outer iterations, the smallest singular value of I - B 1e-11,
F still decreasing, and the test RMSE 10.25 → 23.3 (benchmarks/README.md). The MAP then looks
unattained (not proved), and the iteration count acts as a hyperparameter. :func:`fit_amtl`
says so in its warning when it stops unconverged with I - B numerically singular.
"""

from __future__ import annotations

import time
import warnings
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import numpyro
import numpyro.distributions as dist
from numpyro.distributions import constraints

from ..data import CLASSIFICATION, MultiTaskData, require_data
from ..errors import (
    ConvergenceWarning,
    HyperparameterError,
    TooFewSamplesError,
    TransferGraphError,
)
from ..inference.solvers import (
    CG_BEFORE_FACTORING,
    DENSE_SYSTEM_MAX,
    after,
    coupled_block_attempt,
    coupled_block_factor,
    coupled_block_solve,
    coupled_block_system,
    damped_newton,
    factor_solve,
    fista,
    nonnegative_active_set,
    nonnegative_qp,
    row_coordinate_descent,
)
from .losses import LOSSES, linear_predictor
from .reconstruction import reconstruction_residual, singular_span_hint, zero_diagonal

__all__ = ["VARIANTS", "AMTLResult", "amtl_objective", "amtl_map_model", "amtl_model",
           "map_model_inputs", "transfer_graph_step", "fit_amtl", "fit_stl", "predict_amtl",
           "task_losses", "check_task_sizes", "sample_amtl", "edge_summary",
           "amtl_datatree"]

VARIANTS = ("amtl", "curriculum", "noloss", "imbalance", "smtl")


class AMTLResult(NamedTuple):
    """MAP of AMTL.

    W : (d, m) task parameters; b : (m,) intercepts (zeros without intercept);
    transfer_graph : (m, m) B, B[s, t] = transfer from source s to target t;
    task_loss : (m,) L_t at the result (c_t-scaled for "imbalance": the Λ of the B-step);
    objective : F at the result (objective (1)); history : F after every outer iteration
    (every curriculum step for "curriculum"); n_iter : outer iterations (or m);
    converged : relative change of F below tol (always True for the one-pass curriculum);
    order : (m,) task order π of Algorithm 2 for "curriculum", else None;
    variant, lam, mu, loss, fit_intercept : the settings used.
    """

    W: np.ndarray
    b: np.ndarray
    transfer_graph: np.ndarray
    task_loss: np.ndarray
    objective: float
    history: np.ndarray
    n_iter: int
    converged: bool
    order: np.ndarray | None
    variant: str
    lam: float
    mu: float
    loss: str
    fit_intercept: bool


# ----------------------------------------------------------------------------- validation


def check_hyperparameters(lam, mu) -> None:
    """λ must be positive and finite, μ non-negative and finite."""
    if not (np.isfinite(lam) and lam > 0):
        raise HyperparameterError(f"lam (λ, weight of the reconstruction prior) must be "
                                  f"positive and finite; got {lam}")
    if not (np.isfinite(mu) and mu >= 0):
        raise HyperparameterError(f"mu (μ, weight of the loss-weighted sparsity on the "
                                  f"transfer graph) must be non-negative and finite; got {mu}")


def check_task_sizes(data: MultiTaskData, loss: str, fit_intercept: bool) -> None:
    """Each task must have more rows than its unpenalised parameters can fit exactly.

    With an intercept, a squared-loss task needs n_t ≥ 2 and a logistic task both classes
    (so n_t ≥ 2); otherwise the intercept alone drives L_t to 0 (Λ_t = 0 makes the task a
    free source of transfer) or to -∞ (the logistic intercept diverges).
    """
    n = data.n_per_task
    need = 2 if (fit_intercept or loss == "logistic") else 1
    small = np.flatnonzero(n < need)
    if small.size:
        names = ", ".join(f"{data.task_names[i]} (n={n[i]})" for i in small[:10])
        raise TooFewSamplesError(f"task(s) with fewer than {need} rows for the {loss} loss"
                                 f"{' with an intercept' if fit_intercept else ''}: {names}")
    if loss == "logistic":
        pos = np.bincount(data.task, weights=data.y, minlength=data.n_tasks)
        single = np.flatnonzero((pos == 0) | (pos == n))
        if single.size:
            names = ", ".join(str(data.task_names[i]) for i in single[:10])
            raise TooFewSamplesError(f"task(s) with one class only cannot be fitted with the "
                                     f"logistic loss (the MAP diverges): {names}")


def check_transfer_graph(B, m: int, symmetric: bool = False) -> np.ndarray:
    """Validate a warm-start transfer graph: shape (m, m), finite, B ≥ 0, zero diagonal."""
    B = np.asarray(B, dtype=np.float64)
    if B.shape != (m, m):
        raise TransferGraphError(f"transfer_graph must have shape ({m}, {m}); got {B.shape}")
    if not np.all(np.isfinite(B)):
        raise TransferGraphError("transfer_graph holds NaN/inf values")
    if (B < 0).any():
        s, t = np.argwhere(B < 0)[0]
        raise TransferGraphError(f"transfer_graph must be non-negative (B ≥ 0); entry "
                                 f"[{s}, {t}] = {B[s, t]:.3g} (and {int((B < 0).sum()) - 1} more)")
    if np.any(np.diag(B) != 0):
        t = int(np.flatnonzero(np.diag(B) != 0)[0])
        raise TransferGraphError(f"transfer_graph must have a zero diagonal (a task never "
                                 f"transfers to itself); B[{t}, {t}] = {B[t, t]:.3g}")
    if symmetric and not np.allclose(B, B.T):
        raise TransferGraphError("SMTL needs a symmetric transfer_graph (B = Bᵀ)")
    return B


# ----------------------------------------------------------------------------- task arrays


class TaskArrays(NamedTuple):
    """Per-task padded arrays (m tasks, n_max rows each).

    X : (m, n_max, D) features with a trailing ones column when fitting intercepts (D = d + 1);
    y : (m, n_max); weight : (m, n_max) row weight c_t / n_t (0 on padding rows).
    """

    X: jax.Array
    y: jax.Array
    weight: jax.Array


def task_weights(data: MultiTaskData, variant: str) -> np.ndarray:
    """(m,) c_t: 1/√n_t for "imbalance", else 1."""
    n = data.n_per_task.astype(np.float64)
    return 1.0 / np.sqrt(n) if variant == "imbalance" else np.ones_like(n)


def task_arrays(data: MultiTaskData, variant: str, fit_intercept: bool) -> TaskArrays:
    m, n_max, d = data.n_tasks, int(data.n_per_task.max()), data.n_features
    D = d + int(fit_intercept)
    X = np.zeros((m, n_max, D))
    y = np.zeros((m, n_max))
    w = np.zeros((m, n_max))
    c = task_weights(data, variant)
    for t, (Xt, yt) in enumerate(data.tasks()):
        n = len(yt)
        X[t, :n, :d] = Xt
        if fit_intercept:
            X[t, :n, d] = 1.0
        y[t, :n] = yt
        w[t, :n] = c[t] / n
    return TaskArrays(jnp.asarray(X), jnp.asarray(y), jnp.asarray(w))



def _row_derivatives(f, y, loss):
    """Per-row loss and its first and second derivatives in f (squared or logistic)."""
    if loss == "squared":
        return (y - f) ** 2, 2.0 * (f - y), jnp.full_like(f, 2.0)
    p = jax.nn.sigmoid(f)
    return LOSSES["logistic"](f, y), p - y, p * (1.0 - p)


def task_scores(theta, arrays: TaskArrays):
    """(m, n_max) linear scores f_tj = x_tjᵀ θ_t (θ (m, D), row t = (w_t, b_t))."""
    return jnp.einsum("tnk,tk->tn", arrays.X, theta)


def task_losses(theta, arrays: TaskArrays, loss: str):
    """(m,) per-task (c_t-weighted) mean losses L_t at θ (m, D), row t = (w_t, b_t)."""
    f = task_scores(theta, arrays)
    return jnp.sum(arrays.weight * _row_derivatives(f, arrays.y, loss)[0], axis=1)


def tasks_separated(theta, arrays: TaskArrays):
    """(m,) bool: task t's (weighted) training rows are all strictly on their label's side."""
    correct = (task_scores(theta, arrays) > 0) == (arrays.y > 0.5)
    return jnp.all(correct | (arrays.weight == 0), axis=1)


def unpack(theta, d: int):
    """θ (m, D) → W (d, m), b (m,) (zeros when D = d, i.e. no intercept)."""
    b = theta[:, d] if theta.shape[1] > d else jnp.zeros(theta.shape[0], theta.dtype)
    return theta[:, :d].T, b


def amtl_objective(theta, B, arrays: TaskArrays, lam, mu, loss: str, d: int,
                   loss_dependent: bool = True):
    """Objective (1), ``Σ_t L_t + μ Σ_{s,t} Λ_s B[s,t] + λ ‖W - W B‖²_F``.

    θ (m, D) rows (w_t, b_t); B (m, m) (diagonal ignored); Λ = diag(L) for the loss-dependent
    variants (so the first two terms are Σ_t (1 + μ‖b_t^o‖₁) L_t), Λ = I for "noloss".
    """
    L = task_losses(theta, arrays, loss)
    W = unpack(theta, d)[0]
    B = zero_diagonal(B)
    source = L if loss_dependent else jnp.ones_like(L)
    return (jnp.sum(L) + mu * jnp.sum(source * jnp.sum(B, axis=1))
            + lam * jnp.sum(reconstruction_residual(W, B) ** 2))


# ----------------------------------------------------------------------------- W-step (2)


def _penalty_selector(D: int, d: int):
    """(D,) 1 on the d feature coordinates, 0 on the intercept (not reconstructed)."""
    return jnp.concatenate([jnp.ones(d), jnp.zeros(D - d)])


def newton_system(blocks, coupling, selector):
    """(mD, mD) matrix ``blockdiag(blocks) + coupling ⊗ diag(selector)`` of the W-step.

    blocks (m, D, D) per-task loss Hessians; coupling (m, m) task coupling 2λ(I - B)(I - B)ᵀ;
    selector (D,) 1 on the penalised (w) coordinates. Row/column index t·D + k (θ (m, D)
    raveled). (:func:`~bayesmtl.inference.solvers.coupled_block_system`.)
    """
    return coupled_block_system(blocks, coupling, selector)


#: an alternation whose W-step factored its system tries CG again every this many iterations
CG_RETRY = 10


def w_step(theta0, B, arrays: TaskArrays, lam, mu, loss: str, d: int,
           loss_dependent: bool = True, solve: str = "auto", try_cg=True, full: bool = False):
    """Problem (2): argmin_θ Σ_t τ_t L_t(θ_t) + λ ‖W (I - B)‖²_F, all tasks jointly.

    τ_t = 1 + μ ‖b_t^o‖₁ (1 for "noloss"). Newton's method on the exact Hessian
    ``blockdiag(τ_t ∇²L_t) + 2λ (I - B)(I - B)ᵀ ⊗ E`` (E selects w from (w, b)), so for the
    squared loss the W-step is one linear solve. Each Newton system goes to
    :func:`~bayesmtl.inference.solvers.coupled_block_solve`: conjugate gradients
    preconditioned with the per-task diagonal blocks (relative residual 1e-12); with
    ``solve="auto"`` and m·D ≤ ``solvers.DENSE_SYSTEM_MAX``, a system CG has not solved to relative
    residual 1e-10 in ``CG_BEFORE_FACTORING`` steps (nor, at its rate so far, within
    ``CG_MORE`` times as many more) is factored instead (Cholesky of the (mD, mD) matrix,
    :func:`newton_system`); larger systems get up to 10 mD CG steps.
    ``solve="cg"`` / ``"factor"`` force one method (tests). Well-conditioned systems stay on
    CG (Synthetic-pos, m·D = 3100: 0.3–1 s per alternation, 8–13 s if always factored). The
    factorisation matters on drifting logistic problems (see "Existence of the MAP"): as the
    loss curvature vanishes the system is dominated by the coupling, which block-Jacobi CG
    does not see, and CG hits its cap at every Newton step (digits 1-vs-1, m·D = 2925: 150 s
    per W-step by capped CG, 6 s factored). Newton stops at a half decrement of
    1e-12 · max(1, |F|): late in a School fit (λ = 1, μ = 0.1) I - B is nearly singular
    (cond (I - B)(I - B)ᵀ ≈ 2e12), so the factored step is exact only to round-off in that
    flat direction and further steps creep along it (F changes < 1e-12 relative, W by O(1)).
    At 1e-14 one W-step took 14 Newton steps (5.3 s), each after the second gaining < 5e-10
    of F ≈ 12,247, and 12–19 at later states; at 1e-12 it takes 2–4 (rarely 12).

    For the squared loss the Hessian is the same at every Newton step, so CG or the
    factorisation is chosen once, on the first step, and one factor serves every step (School,
    λ = 1, μ = 0.1, late in a fit: 0.87 → 0.62 s per W-step). ``try_cg=False`` (a traced
    bool) factors without the CG attempt (0.47 s there): the alternation passes it while the
    previous W-step was factored, trying CG again every ``CG_RETRY`` outer iterations.
    ``full=True`` returns ``(θ, factored)``, ``factored`` whether the squared loss's system
    was factored (False for other losses).
    """
    m, D = theta0.shape
    if solve not in ("auto", "cg", "factor"):
        raise ValueError(f"solve must be 'auto', 'cg' or 'factor'; got {solve!r}")
    B = zero_diagonal(B)
    tempering = 1.0 + mu * jnp.sum(B, axis=1) if loss_dependent else jnp.ones(m)
    IB = jnp.eye(m) - B
    M = IB @ IB.T
    E = _penalty_selector(D, d)

    def value(theta):
        W = theta[:, :d].T
        return (jnp.sum(tempering * task_losses(theta, arrays, loss))
                + lam * jnp.sum((W @ IB) ** 2))

    def derivatives(theta):  # gradient (m, D) and loss Hessian blocks (m, D, D)
        _, g1, g2 = _row_derivatives(task_scores(theta, arrays), arrays.y, loss)
        scale = tempering[:, None] * arrays.weight
        g = (jnp.einsum("tn,tnk->tk", scale * g1, arrays.X)
             + 2.0 * lam * (M @ (theta * E)) * E)
        blocks = jnp.einsum("tni,tnj->tij", arrays.X * (scale * g2)[:, :, None], arrays.X)
        diagonal = blocks + 2.0 * lam * jnp.diag(M)[:, None, None] * jnp.diag(E)[None]
        jitter = 1e-13 * jnp.maximum(1.0, jnp.max(jnp.trace(diagonal, axis1=1, axis2=2)) / D)
        return g, blocks, jitter

    def direction(theta):
        g, blocks, jitter = derivatives(theta)
        delta = coupled_block_solve(blocks, 2.0 * lam * M, E, -g, tol=1e-12, solve=solve,
                                    cg_steps=CG_BEFORE_FACTORING, max_cg=10 * m * D,
                                    jitter=jitter, accept_tol=1e-10)
        return delta, jnp.vdot(g, delta)

    if loss != "squared" or solve == "cg" or m * D > DENSE_SYSTEM_MAX:
        theta = damped_newton(value, direction, theta0, tol=1e-12)
        return (theta, jnp.asarray(False)) if full else theta
    # squared loss: the steps after the first only correct round-off, with the same matrix
    g0, blocks, jitter = derivatives(theta0)

    def attempt(_):
        return coupled_block_attempt(blocks, 2.0 * lam * M, E, -g0, tol=1e-12,
                                     cg_steps=CG_BEFORE_FACTORING, jitter=jitter,
                                     accept_tol=1e-10)

    def skip(_):
        return jnp.zeros_like(theta0), jnp.asarray(False)

    if solve == "factor":
        delta0, by_cg = skip(None)
    elif try_cg is True:
        delta0, by_cg = attempt(None)
    else:
        delta0, by_cg = jax.lax.cond(try_cg, attempt, skip, None)

    def factored(delta0):
        L = coupled_block_factor(after(blocks, delta0), 2.0 * lam * M, E, jitter)

        def by_factor(theta):
            g = derivatives(theta)[0]
            delta = factor_solve(L, -g, jnp.zeros_like(g))
            return delta, jnp.vdot(g, delta)

        # a failed factorisation: every step by coupled_block_solve (its CG iterate)
        return jax.lax.cond(jnp.all(jnp.isfinite(L)),
                            lambda: damped_newton(value, by_factor, theta0, tol=1e-12),
                            lambda: damped_newton(value, direction, theta0, tol=1e-12))

    def iterated(delta0):
        return damped_newton(value, direction, theta0, tol=1e-12,
                             first=(delta0, jnp.vdot(g0, delta0)))

    theta = jax.lax.cond(by_cg, iterated, factored, delta0)
    return (theta, ~by_cg) if full else theta


def single_task_step(theta_t, X_t, y_t, weight_t, tempering, target, lam, loss: str, d: int):
    """Update (6) for one task: argmin τ L_t(θ_t) + λ ‖w_t - target‖² (θ_t (D,), target (d,))."""
    D = theta_t.shape[0]
    E = _penalty_selector(D, d)
    target = jnp.pad(target, (0, D - d))

    def value(theta):
        f = X_t @ theta[0]
        return (tempering * jnp.sum(weight_t * _row_derivatives(f, y_t, loss)[0])
                + lam * jnp.sum((E * (theta[0] - target)) ** 2))

    def direction(theta):
        f = X_t @ theta[0]
        _, g1, g2 = _row_derivatives(f, y_t, loss)
        g = tempering * X_t.T @ (weight_t * g1) + 2.0 * lam * E * (theta[0] - target)
        H = tempering * (X_t.T * (weight_t * g2)) @ X_t + 2.0 * lam * jnp.diag(E)
        jitter = 1e-13 * jnp.maximum(1.0, jnp.trace(H) / D)
        delta = jnp.linalg.solve(H + jitter * jnp.eye(D), -g)
        return delta[None], jnp.vdot(g, delta)

    return damped_newton(value, direction, theta_t[None])[0]


# ----------------------------------------------------------------------------- B-step (3)


def _graph_masks(m: int, symmetric: bool):
    """(m, m) mask of the free entries: off-diagonal, or strict upper triangle for SMTL."""
    return jnp.triu(jnp.ones((m, m)), 1) if symmetric else 1.0 - jnp.eye(m)


def _from_free(x, symmetric: bool):
    return x + x.T if symmetric else x


class BStepResult(NamedTuple):
    """Outcome of a B-step: n_iter (coordinate-descent sweeps after the interior point, or
    FISTA iterations), converged, residual (the largest projected-gradient (KKT) violation,
    relative to max(1, max |∇|))."""

    n_iter: jax.Array
    converged: jax.Array
    residual: jax.Array


def _b_step(W, source_loss, lam, mu, B0, symmetric=False, max_iter=20000, tol=1e-12,
            rtol=1e-8):
    """Problem (3) for every column: interior point + coordinate descent (directed B), FISTA
    (SMTL)."""
    if symmetric:
        B, res = _b_step_fista(W, source_loss, lam, mu, B0, max_iter, tol, rtol)
        return B, BStepResult(res.n_iter, res.converged, res.residual)
    return _b_step_directed(W, source_loss, lam, mu, max(1000, max_iter // 20), rtol)


@jax.jit(static_argnames=("max_sweeps",))
def _b_step_directed(W, source_loss, lam, mu, max_sweeps=1000, tol=1e-8):
    r"""The directed B-step: every column's non-negative lasso by an interior-point method,
    polished by coordinate descent.

    Column t solves ``min_{b ≥ 0, b_t = 0} λ‖w_t - W b‖² + Σ_s r_s b_s`` (r = μΛ), i.e. the
    QP ½bᵀQb + cᵀb with Q = 2λG, G = WᵀW, c = r - 2λ g_t. G has rank ≤ d, so for d < m the
    problem is degenerate: cyclic coordinate descent alone then crawls (on 29 tasks × 9
    features it was still 5e-4 above the optimum, KKT residual 5e-4, after 1,000 sweeps).
    :func:`~bayesmtl.inference.solvers.nonnegative_qp` (Mehrotra's interior point, ~15
    iterations whatever the rank) reaches the optimum to a duality gap of 1e-12; entries
    below their multiplier are set to zero, a primal active-set method from there
    (:func:`~bayesmtl.inference.solvers.nonnegative_active_set`: Newton steps on each
    column's face, ≤ d free entries) corrects the few entries the interior point misreads,
    and coordinate descent from there
    (:func:`~bayesmtl.inference.solvers.row_coordinate_descent`, one row of B for every
    column at once: b_s ← max(0, b_s - ∇_s/(2λG_ss)), ∇ = 2λ(GB - G) + r) fixes what the
    active set did not (School, λ = 1, μ = 0.1: 0 sweeps, 0.07 s; 922 to > 1,000 sweeps,
    2.1–2.3 s, without it). Stops when the largest violation of the KKT conditions (∇ = 2λR + r ≥ 0
    where b = 0, = 0 where b > 0) is below ``tol`` · max(1, max |∇|). No warm start: the
    interior point starts afresh (coordinate descent from the
    previous B rarely met the tolerance in 20 sweeps and made the alternation slower).
    """
    m = W.shape[1]
    G = W.T @ W
    r = mu * source_loss
    mask = 1.0 - jnp.eye(m, dtype=W.dtype)
    d = W.shape[0]
    factor = W if d <= m else jnp.linalg.qr(W, mode="r")  # G = factorᵀ factor, thin
    C = r[:, None] - 2.0 * lam * G
    x, qp = nonnegative_qp(jnp.sqrt(2.0 * lam) * factor, C, jnp.eye(m, dtype=bool))

    def violation(B, grad):  # largest KKT violation relative to max(1, max |∇|)
        kkt = jnp.where(B > 0, jnp.abs(grad), jnp.maximum(-grad, 0.0)) * mask
        return jnp.max(kkt) / jnp.maximum(1.0, jnp.max(jnp.abs(grad * mask)))

    start = nonnegative_active_set(2.0 * lam * G, C, jnp.where(x > qp.multiplier, x, 0.0),
                                   mask, d)
    B, _, res, it = row_coordinate_descent(2.0 * lam * G, C, start, mask,
                                           lambda v, step: jnp.maximum(v, 0.0), violation,
                                           max_sweeps=max_sweeps, tol=tol)
    return B, BStepResult(it, res <= tol, res)


@jax.jit(static_argnames=("max_iter",))
def _b_step_fista(W, source_loss, lam, mu, B0, max_iter=20000, tol=1e-12, rtol=1e-8):
    symmetric = True
    m = W.shape[1]
    mask = _graph_masks(m, symmetric)
    rate = mu * source_loss[:, None] * jnp.ones((1, m))
    threshold = mask * (rate + rate.T if symmetric else rate)
    x0 = (jnp.triu(B0, 1) if symmetric else B0) * mask

    def smooth(x):
        return lam * jnp.sum((W - W @ _from_free(x.reshape(m, m), symmetric)) ** 2)

    def prox(x, step):
        return (jnp.maximum(x.reshape(m, m) - step * threshold, 0.0) * mask).ravel()

    def penalty(x):
        return jnp.sum(threshold * x.reshape(m, m))

    lipschitz = 2.0 * lam * (4.0 if symmetric else 1.0) * jnp.linalg.norm(W, 2) ** 2
    res = fista(smooth, prox, penalty, x0.ravel(), step0=1.0 / jnp.maximum(lipschitz, 1e-300),
                max_iter=max_iter, tol=tol, rtol=rtol)
    return _from_free(res.x.reshape(m, m), symmetric), res


def transfer_graph_step(W, source_loss, lam, mu, B0=None, *, symmetric=False,
                        max_iter=20000, tol=1e-12, rtol=1e-8):
    """B-step: problem (3) for every column at once.

    ``argmin_{B ≥ 0, diag B = 0} Σ_t μ ‖Λ b_t^i‖₁ + λ ‖w_t - W b_t^i‖²`` (a weighted
    non-negative lasso per column; columns are independent, so one coordinate-descent sweep
    updates a row of B for all of them: :func:`_b_step_cd`). ``symmetric=True`` (SMTL) adds
    B = Bᵀ (then the columns couple; FISTA on the upper triangle).

    Parameters
    ----------
    W : (d, m) task parameters; source_loss : (m,) diagonal of Λ; lam, mu : λ, μ;
    B0 : (m, m) warm start of SMTL's FISTA (default zeros; the directed B-step's interior
    point starts afresh).

    Returns
    -------
    B : (m, m) jax array; BStepResult (sweeps, converged flag, KKT residual).
    """
    W = jnp.asarray(W)
    m = W.shape[1]
    B0 = jnp.zeros((m, m)) if B0 is None else jnp.asarray(B0)
    return _b_step(W, jnp.asarray(source_loss, W.dtype), lam, mu, B0, symmetric, max_iter, tol,
                   rtol)


# ----------------------------------------------------------------------------- Algorithm 1


#: outer iterations per jitted call when ``fit_amtl`` has a deadline (checked between calls)
_DEADLINE_CHUNK = 10


class _AlternatingState(NamedTuple):
    """The loop state of :func:`_alternating` (a pytree; resumable between calls)."""

    theta: jax.Array
    B: jax.Array
    f_prev: jax.Array
    f: jax.Array
    hist: jax.Array  # (max_iter,) objective after each outer iteration
    it: jax.Array
    b_ok: jax.Array  # the last B-step met its KKT tolerance
    previous: jax.Array  # the last W-step's result (the extrapolation's base)
    beta: jax.Array
    cap: jax.Array
    change: jax.Array  # relative change of θ in the last W-step
    factored: jax.Array  # the last W-step factored its system (squared loss)


@jax.jit(static_argnames=("loss", "d", "loss_dependent", "max_iter"))
def _alternating_start(theta0, B0, arrays, lam, mu, loss, d, loss_dependent, max_iter,
                       extrapolation) -> _AlternatingState:
    """The state of :func:`_alternating` before its first outer iteration."""
    f0 = amtl_objective(theta0, B0, arrays, lam, mu, loss, d, loss_dependent)
    one = jnp.asarray(1.0, theta0.dtype)
    return _AlternatingState(theta0, B0, jnp.inf * one, f0, jnp.full((max_iter,), jnp.nan),
                             jnp.asarray(0), jnp.asarray(True), theta0,
                             jnp.asarray(extrapolation, theta0.dtype), one, jnp.inf * one,
                             jnp.asarray(False))


def _stationary(s: _AlternatingState, tol):
    """Relative change of F ≤ tol and of θ in the W-step ≤ √tol."""
    return ((jnp.abs(s.f_prev - s.f) <= tol * jnp.maximum(1.0, jnp.abs(s.f)))
            & (s.change <= jnp.sqrt(tol)))


@jax.jit(static_argnames=("loss", "d", "loss_dependent", "symmetric"))
def _alternating(state: _AlternatingState, B0, arrays, lam, mu, loss, d, loss_dependent,
                 symmetric, limit, tol) -> _AlternatingState:
    """Algorithm 1 with the safeguarded extrapolation of
    :func:`~bayesmtl.inference.alternation.fit_family` (Ang & Gillis 2019): after the W-step
    θ_k+1, the point Y = θ_k+1 + β(θ_k+1 - θ_k) gets the B-step, and (Y, B(Y)) is kept when
    F(Y, B(Y)) ≤ F(θ_k+1, B_k) (β grows × 1.2 up to a cap that starts at 1 and grows × 1.01),
    else the plain B-step at θ_k+1 is taken (β ÷ 1.5, the cap drops to the failed β). F never
    increases. Runs from ``state`` until :func:`_stationary` or ``limit`` outer iterations in
    all (a traced bound: a fit with a deadline runs it in chunks without recompiling)."""
    def objective(theta, B):
        return amtl_objective(theta, B, arrays, lam, mu, loss, d, loss_dependent)

    def b_step(theta):
        L = task_losses(theta, arrays, loss)
        source = L if loss_dependent else jnp.ones_like(L)
        return _b_step(unpack(theta, d)[0], source, lam, mu, B0, symmetric)

    def body(s):
        theta, B, f, hist, it, previous, beta, cap = (s.theta, s.B, s.f, s.hist, s.it,
                                                      s.previous, s.beta, s.cap)
        # CG first unless the last W-step had to factor (then every CG_RETRY iterations)
        try_cg = ~s.factored | (it % CG_RETRY == 0)
        new, factored = w_step(theta, B, arrays, lam, mu, loss, d, loss_dependent,
                               try_cg=try_cg, full=True)
        change = jnp.linalg.norm(new - theta) / jnp.maximum(1.0, jnp.linalg.norm(new))
        Y = new + beta * (new - previous)
        try_it = (it > 0) & (beta > 0)
        unused = jax.tree.map(lambda a: jnp.zeros(a.shape, a.dtype), jax.eval_shape(b_step, Y))
        B_Y, res_Y = jax.lax.cond(try_it, b_step, lambda _: (B, unused[1]), Y)
        f_Y = jnp.where(try_it, objective(Y, B_Y), jnp.inf)
        took = try_it & jnp.isfinite(f_Y) & (f_Y <= objective(new, B))

        def kept(_):
            return Y, B_Y, f_Y, res_Y

        def plain(_):
            B_new, res = b_step(new)
            return new, B_new, objective(new, B_new), res

        theta, B, f_new, res = jax.lax.cond(took, kept, plain, None)
        failed = try_it & ~took
        beta, cap = (jnp.where(took, jnp.minimum(1.2 * beta, cap),
                               jnp.where(failed, beta / 1.5, beta)),
                     jnp.where(took, jnp.minimum(1.0, 1.01 * cap), jnp.where(failed, beta, cap)))
        return _AlternatingState(theta, B, f, f_new, hist.at[it].set(f_new), it + 1,
                                 res.converged, new, beta, cap, change, factored)

    def cond(s):
        return (s.it < limit) & ~_stationary(s, tol)

    return jax.lax.while_loop(cond, body, state)


# ----------------------------------------------------------------------------- Algorithm 2


def _selection_scores(W, R, L, source, untrained, lam, mu):
    """Rule (5) for every candidate t at once.

    W (d, m) current parameters, R (d, m) residuals r_s = w_s - Σ_j B[π(j), s] w_π(j) after
    the trained tasks, L (m,) losses, source (m,) Λ, untrained (m,) 0/1. Returns scores (m,)
    (+inf for trained tasks) and the candidate outgoing edges (m, m): row t holds the
    closed-form minimiser B[t, s] = max(0, (2λ⟨r_s, w_t⟩ - μΛ_t) / (2λ‖w_t‖²)) over s ∈ U∖t.
    """
    m = W.shape[1]
    C = W.T @ R  # C[t, s] = <w_t, r_s>
    sq = jnp.maximum(jnp.sum(W**2, axis=0), 1e-300)[:, None]
    targets = untrained[None, :] * (1.0 - jnp.eye(m))
    Bc = targets * jnp.maximum(0.0, (2.0 * lam * C - mu * source[:, None]) / (2.0 * lam * sq))
    r2 = jnp.sum(R**2, axis=0)[None, :]
    recon = jnp.sum(targets * (r2 - 2.0 * Bc * C + Bc**2 * sq), axis=1)
    scores = L + mu * source * jnp.sum(Bc, axis=1) + lam * recon
    return jnp.where(untrained > 0, scores, jnp.inf), Bc


@jax.jit(static_argnames=("loss", "d", "loss_dependent"))
def _curriculum(theta0, arrays, lam, mu, loss, d, loss_dependent):
    m = theta0.shape[0]

    def body(i, s):
        theta, B, untrained, order = s
        W = unpack(theta, d)[0]
        L = task_losses(theta, arrays, loss)
        source = L if loss_dependent else jnp.ones_like(L)
        scores, Bc = _selection_scores(W, reconstruction_residual(W, B), L, source, untrained,
                                       lam, mu)
        t = jnp.argmin(scores).astype(jnp.int32)
        B = B.at[t].set(Bc[t])
        tempering = 1.0 + mu * jnp.sum(Bc[t]) if loss_dependent else 1.0
        target = W @ B[:, t]  # incoming edges of t, all from trained tasks
        theta = theta.at[t].set(single_task_step(theta[t], arrays.X[t], arrays.y[t],
                                                 arrays.weight[t], tempering, target, lam,
                                                 loss, d))
        return theta, B, untrained.at[t].set(0.0), order.at[i].set(t)

    init = (theta0, jnp.zeros((m, m)), jnp.ones(m), jnp.zeros(m, dtype=jnp.int32))
    theta, B, _, order = jax.lax.fori_loop(0, m, body, init)
    return theta, B, order


@jax.jit(static_argnames=("loss", "d"))
def _stl(arrays, lam, loss, d):
    """Single-task learning: (2) with B = 0, i.e. each task with penalty λ‖w_t‖²."""
    m, _, D = arrays.X.shape
    step = jax.vmap(single_task_step, in_axes=(0, 0, 0, 0, None, 0, None, None, None))
    return step(jnp.zeros((m, D)), arrays.X, arrays.y, arrays.weight, 1.0, jnp.zeros((m, d)),
                lam, loss, d)


# ----------------------------------------------------------------------------- public fits


def _resolve(data: MultiTaskData, variant: str, loss: str | None, fit_intercept: bool):
    if variant not in VARIANTS:
        raise ValueError(f"variant must be one of {VARIANTS}; got {variant!r}")
    if loss is None:
        loss = "logistic" if data.kind == CLASSIFICATION else "squared"
    if loss not in ("squared", "logistic"):
        raise ValueError(f"loss must be 'squared' or 'logistic'; got {loss!r}")
    if loss == "logistic" and data.kind != CLASSIFICATION:
        raise ValueError("the logistic loss needs classification data (y in {0, 1})")
    check_task_sizes(data, loss, fit_intercept)
    return loss


def _initial_theta(data, init, fit_intercept, variant):
    d, m = data.n_features, data.n_tasks
    theta = jnp.zeros((m, d + int(fit_intercept)))
    B = jnp.zeros((m, m))
    if init is None:
        return theta, B
    W0, b0, B0 = init
    W0 = np.asarray(W0, dtype=np.float64)
    if W0.shape != (d, m):
        raise ValueError(f"init W must have shape ({d}, {m}); got {W0.shape}")
    theta = theta.at[:, :d].set(W0.T)
    if fit_intercept and b0 is not None:
        theta = theta.at[:, d].set(jnp.asarray(b0, dtype=jnp.float64).reshape(m))
    if B0 is not None:
        B = jnp.asarray(check_transfer_graph(B0, m, symmetric=variant == "smtl"))
    return theta, B


def fit_amtl(data: MultiTaskData, lam: float, mu: float, variant: str = "amtl",
             loss: str | None = None, *, fit_intercept: bool = True, max_iter: int = 300,
             tol: float = 1e-8, init=None, extrapolation: float = 0.5,
             deadline: float | None = None) -> AMTLResult:
    """MAP of AMTL (objective (1)) or one of its ablations on ``data``.

    Parameters
    ----------
    data : MultiTaskData with m tasks, d features.
    lam, mu : λ > 0 (reconstruction prior) and μ ≥ 0 (loss-weighted sparsity of B).
    variant : "amtl" (Algorithm 1: B = 0, then alternate the exact W-step (2) and B-step (3)
        until the relative change of (1) is below ``tol`` and the W-step's relative change
        below √tol), "curriculum" (Algorithm 2, one
        pass from STL, order returned), "noloss", "imbalance", "smtl" (see module docstring).
    loss : "squared" (default for regression) or "logistic" (default for classification).
    fit_intercept : unpenalised, unreconstructed intercepts b_t.
    max_iter, tol : outer iterations of Algorithm 1 and their relative tolerance.
    init : optional warm start ``(W (d, m), b (m,) or None, transfer_graph (m, m) or None)``;
        the graph must satisfy B ≥ 0 and zero diagonal (:class:`TransferGraphError`).
    extrapolation : initial β of the safeguarded extrapolation of the alternation (as in
        :func:`~bayesmtl.inference.alternation.fit_family`); 0 = plain Algorithm 1. On a
        Landmine-sized logistic problem (29 tasks × 9 features, λ = 0.1, μ = 0.01) the plain
        alternation needs > 300 outer iterations, the extrapolated one ~80.
    deadline : optional ``time.monotonic()`` value: Algorithm 1 runs in chunks of 10 outer
        iterations and stops (unconverged, with a ConvergenceWarning) after the first chunk
        that ends past it (CV and ``compare`` time limits).

    Returns
    -------
    AMTLResult
    """
    require_data(data, "fit_amtl")
    check_hyperparameters(lam, mu)
    if not (np.isscalar(extrapolation) and np.isfinite(extrapolation) and extrapolation >= 0):
        raise HyperparameterError(f"extrapolation (initial β) must be a number ≥ 0; got "
                                  f"{extrapolation!r}")
    loss = _resolve(data, variant, loss, fit_intercept)
    d = data.n_features
    theta, B = _initial_theta(data, init, fit_intercept, variant)
    arrays = task_arrays(data, variant, fit_intercept)
    loss_dependent = variant != "noloss"
    lam_, mu_ = jnp.asarray(float(lam)), jnp.asarray(float(mu))
    order = None
    if variant == "curriculum":
        if init is not None:
            raise ValueError("the curriculum (Algorithm 2) starts from STL; init is not used")
        theta0 = _stl(arrays, lam_, loss, d)
        theta, B, order = _curriculum(theta0, arrays, lam_, mu_, loss, d, loss_dependent)
        objective = amtl_objective(theta, B, arrays, lam_, mu_, loss, d, loss_dependent)
        history, n_iter, converged = np.asarray([objective]), data.n_tasks, True
        order = np.asarray(order)
    else:
        state = _alternating_start(theta, B, arrays, lam_, mu_, loss, d, loss_dependent,
                                   max_iter, float(extrapolation))
        chunk, timed_out = (max_iter if deadline is None else _DEADLINE_CHUNK), False
        while True:
            limit = min(int(state.it) + chunk, max_iter)
            state = _alternating(state, B, arrays, lam_, mu_, loss, d, loss_dependent,
                                 variant == "smtl", limit, float(tol))
            converged, n_iter = bool(_stationary(state, float(tol))), int(state.it)
            if converged or n_iter >= max_iter:
                break
            if time.monotonic() > deadline:  # a deadline is set: the loop stopped at limit
                timed_out = True
                break
        theta, B, objective, b_ok = state.theta, state.B, state.f, state.b_ok
        history = np.asarray(state.hist)[:n_iter]
        if not bool(b_ok):
            warnings.warn("the last B-step stopped at its iteration cap before its KKT tolerance",
                          ConvergenceWarning, stacklevel=2)
        if not converged:
            hint = ""
            if loss == "logistic" and bool(jnp.all(tasks_separated(theta, arrays))):
                hint = ("; every task's training rows are separated by the current W, so the "
                        "MAP may not exist (the objective decreases along growing ‖W‖; see "
                        "the module docstring): raise λ or read this fit as early stopping")
            elif loss == "squared":
                hint = singular_span_hint(zero_diagonal(B), "B")
            warnings.warn(f"AMTL alternation stopped after {n_iter} iterations"
                          f"{' (time limit)' if timed_out else ''} without a "
                          f"relative objective change below {tol} and a relative W-step "
                          f"change below {np.sqrt(tol):.1e}{hint}", ConvergenceWarning,
                          stacklevel=2)
    W, b = unpack(theta, d)
    L = task_losses(theta, arrays, loss)
    return AMTLResult(np.asarray(W), np.asarray(b), np.asarray(B), np.asarray(L),
                      float(objective), history, n_iter, converged, order, variant, float(lam),
                      float(mu), loss, fit_intercept)


def fit_stl(data: MultiTaskData, lam: float, loss: str | None = None, *,
            fit_intercept: bool = True) -> AMTLResult:
    """Single-task learning in the same family: (1) with B fixed at 0, i.e. each task
    minimises L_t + λ‖w_t‖² (ridge / L2-logistic). Also the start of Algorithm 2."""
    check_hyperparameters(lam, 0.0)
    loss = _resolve(data, "amtl", loss, fit_intercept)
    d = data.n_features
    arrays = task_arrays(data, "amtl", fit_intercept)
    lam_ = jnp.asarray(float(lam))
    theta = _stl(arrays, lam_, loss, d)
    B = jnp.zeros((data.n_tasks, data.n_tasks))
    objective = float(amtl_objective(theta, B, arrays, lam_, 0.0, loss, d))
    W, b = unpack(theta, d)
    return AMTLResult(np.asarray(W), np.asarray(b), np.asarray(B),
                      np.asarray(task_losses(theta, arrays, loss)), objective,
                      np.asarray([objective]), 1, True, None, "stl", float(lam), 0.0, loss,
                      fit_intercept)


def predict_amtl(result: AMTLResult, X, task):
    """(N,) predictions for rows ``X (N, d)`` of tasks ``task (N,)`` (int indices): the linear
    predictor for squared loss, P(y = 1) for logistic loss."""
    f = linear_predictor(jnp.asarray(X), jnp.asarray(task), jnp.asarray(result.W),
                         jnp.asarray(result.b))
    return np.asarray(jax.nn.sigmoid(f) if result.loss == "logistic" else f)


# ----------------------------------------------------------------------------- NumPyro models


def _offdiag_index(m: int, symmetric: bool):
    """Row-major (rows, cols) of the free entries of B: off-diagonal, or s < t for SMTL."""
    free = np.triu(np.ones((m, m), bool), 1) if symmetric else ~np.eye(m, dtype=bool)
    return np.nonzero(free)


def _transfer_graph(values, m: int, symmetric: bool):
    """(m, m) B from the vector of free entries; registers the deterministic site."""
    rows, cols = _offdiag_index(m, symmetric)
    B = jnp.zeros((m, m), values.dtype).at[rows, cols].set(values)
    return numpyro.deterministic("transfer_graph", _from_free(B, symmetric))


def graph_site_name(symmetric: bool) -> str:
    """Name of the latent site holding the free entries of B."""
    return "transfer_graph_upper" if symmetric else "transfer_graph_offdiag"


def amtl_map_model(X, task, n_tasks, y, *, lam, mu, weights, loss="squared",
                   loss_dependent=True, symmetric=False, fit_intercept=True):
    """The MAP form of AMTL (Gibbs posterior whose negative log density is objective (1)).

    Parameters
    ----------
    X : (N, d); task : (N,) int; n_tasks : m; y : (N,) targets (required: the tempered
        likelihood is a loss factor, not a generative site).
    lam, mu : λ, μ. weights : (N,) row weights c_t / n_t (see :func:`map_model_inputs`).
    loss : "squared" or "logistic"; loss_dependent : False for "noloss" (Λ = I);
    symmetric : SMTL (free entries = upper triangle); fit_intercept : intercept site ``b``.

    Sites: ``W`` (d, m) flat, ``b`` (m,) flat, ``transfer_graph_offdiag`` (m(m-1),) flat on
    [0, ∞) (``transfer_graph_upper`` for SMTL), deterministic ``transfer_graph`` (m, m);
    factors ``tempered_likelihood``, ``transfer_sparsity`` ("noloss"), ``reconstruction``.
    """
    d, m = X.shape[1], n_tasks
    W = numpyro.sample("W", dist.ImproperUniform(constraints.real, (), (d, m)))
    b = (numpyro.sample("b", dist.ImproperUniform(constraints.real, (), (m,)))
         if fit_intercept else jnp.zeros(m))
    k = len(_offdiag_index(m, symmetric)[0])
    free = numpyro.sample(graph_site_name(symmetric),
                          dist.ImproperUniform(constraints.nonnegative, (), (k,)))
    B = _transfer_graph(free, m, symmetric)
    rows = weights * LOSSES[loss](linear_predictor(X, task, W, b), y)
    L = jax.ops.segment_sum(rows, task, m)
    if loss_dependent:
        numpyro.factor("tempered_likelihood", -jnp.sum((1.0 + mu * jnp.sum(B, axis=1)) * L))
    else:
        numpyro.factor("tempered_likelihood", -jnp.sum(L))
        numpyro.factor("transfer_sparsity", -mu * jnp.sum(B))
    numpyro.factor("reconstruction", -lam * jnp.sum(reconstruction_residual(W, B) ** 2))


def map_model_inputs(data: MultiTaskData, variant: str = "amtl"):
    """``(X, task, n_tasks)`` and ``y``/``weights`` kwargs of :func:`amtl_map_model`."""
    c = task_weights(data, variant)
    weights = (c / data.n_per_task)[data.task]
    return (jnp.asarray(data.X), jnp.asarray(data.task), data.n_tasks), {
        "y": jnp.asarray(data.y), "weights": jnp.asarray(weights)}


def amtl_model(X, task, n_tasks, y=None, *, lam, mu, source_loss, likelihood,
               weights=None, intercept_scale=10.0, fit_intercept=True, symmetric=False):
    """The proper-prior AMTL model for posterior sampling (see module docstring).

    Parameters
    ----------
    X : (N, d); task : (N,) int; n_tasks : m; y : (N,) or None (prior predictive).
    lam : λ; the reconstruction residuals W (I - B) are N(0, 1/(2λ)) entry-wise.
    mu, source_loss : B[s, t] ~ Exponential(μ Λ̂_s) (half-Laplace) for the free entries,
        Λ̂ = ``source_loss`` (m,), e.g. the task losses of a MAP fit.
    likelihood : ``Gaussian(...)`` or ``BernoulliLogit()`` (bayesmtl.models.likelihoods).
    weights : (N,) optional per-row log-likelihood tempering (None: proper likelihood).
    intercept_scale : b_t ~ N(0, intercept_scale²); symmetric : SMTL's B = Bᵀ.

    Sites: ``transfer_graph_offdiag`` (or ``_upper``), deterministic ``transfer_graph``,
    ``W_raw`` (d, m) = W (I - B) (non-centred), deterministic ``W``, ``b``, likelihood sites.
    """
    d, m = X.shape[1], n_tasks
    rows, _ = _offdiag_index(m, symmetric)
    rate = mu * jnp.asarray(source_loss)
    if symmetric:
        cols = _offdiag_index(m, True)[1]
        rate_free = rate[rows] + rate[cols]  # μ(Λ_s + Λ_t) per pair
    else:
        rate_free = rate[rows]
    free = numpyro.sample(graph_site_name(symmetric), dist.Exponential(rate_free).to_event(1))
    B = _transfer_graph(free, m, symmetric)
    E = numpyro.sample("W_raw", dist.Normal(0.0, (2.0 * lam) ** -0.5).expand([d, m])
                       .to_event(2))
    W = numpyro.deterministic("W", jnp.linalg.solve((jnp.eye(m) - B).T, E.T).T)
    b = (numpyro.sample("b", dist.Normal(0.0, intercept_scale).expand([m]).to_event(1))
         if fit_intercept else jnp.zeros(m))
    return likelihood(linear_predictor(X, task, W, b), task, m, y, weights)


# ----------------------------------------------------------------------------- posterior


def sample_amtl(data: MultiTaskData, lam: float, mu: float, variant: str = "amtl", *,
                loss: str | None = None, fit_intercept: bool = True, tau: float = 0.05,
                source_loss=None, likelihood=None, loss_scale: str = "sum",
                intercept_scale: float | None = None, num_warmup: int = 500,
                num_samples: int = 500, num_chains: int = 2, seed: int = 0,
                target_accept_prob: float = 0.9, progress_bar: bool = False):
    """NUTS on the proper-prior model :func:`amtl_model`; returns an ArviZ DataTree.

    Parameters
    ----------
    data : MultiTaskData (small problems: the sampler sees m(m-1) + (d + 1) m parameters).
    lam, mu : λ > 0, μ > 0 (μ = 0 would make the exponential prior on B improper).
    variant : "amtl", "noloss", "imbalance" or "smtl" (the curriculum is an optimiser, not a
        model). Sets Λ̂ (task losses, ones for "noloss") and symmetry.
    tau : edge threshold τ; the posterior gets the indicator draws
        ``transfer_graph_inclusion = 1{B[s, t] > τ}``, whose mean is P(B[s, t] > τ | data).
    source_loss : (m,) Λ̂; default: task losses of the MAP fit ``fit_amtl(data, lam, mu,
        variant)`` (empirical Bayes).
    likelihood : default ``Gaussian("task")`` (per-task noise σ_t ~ HalfNormal(2 sd(y))) for
        regression, ``BernoulliLogit()`` for classification.
    loss_scale : "sum" (proper likelihood) or "mean" (rows tempered by c_t / n_t as in (1)).
    intercept_scale : prior s.d. of the intercepts (default 10 sd(y) for regression, 10).

    Returns
    -------
    DataTree with posterior ``transfer_graph`` and ``transfer_graph_inclusion``
    (chain, draw, source_task, target_task), ``W`` (feature, task), ``b`` (task);
    ``sample_stats`` with divergences; ``observed_data`` and ``log_likelihood`` (dim obs);
    attrs ``tau``, ``lam``, ``mu``, ``variant``.
    """
    from ..inference.export import to_datatree
    from ..inference.mcmc import run_nuts
    from .likelihoods import BernoulliLogit, Gaussian

    check_hyperparameters(lam, mu)
    if not mu > 0:
        raise HyperparameterError("mu (μ) must be positive for the proper exponential prior "
                                  "on the transfer graph")
    if variant == "curriculum" or variant not in VARIANTS:
        raise ValueError(f"variant must be 'amtl', 'noloss', 'imbalance' or 'smtl' for "
                         f"sampling; got {variant!r}")
    if loss_scale not in ("sum", "mean"):
        raise ValueError(f"loss_scale must be 'sum' or 'mean'; got {loss_scale!r}")
    loss = _resolve(data, variant, loss, fit_intercept)
    if source_loss is None:
        source_loss = fit_amtl(data, lam, mu, variant, loss,
                               fit_intercept=fit_intercept).task_loss
        if variant == "noloss":
            source_loss = np.ones(data.n_tasks)
    source_loss = np.asarray(source_loss, dtype=np.float64)
    if source_loss.shape != (data.n_tasks,) or not np.all(source_loss > 0):
        raise ValueError(f"source_loss must be {data.n_tasks} positive task losses")
    scale_y = float(np.std(data.y)) or 1.0
    if likelihood is None:
        likelihood = BernoulliLogit() if loss == "logistic" else Gaussian("task", 2.0 * scale_y)
    if intercept_scale is None:
        intercept_scale = 10.0 * (scale_y if loss == "squared" else 1.0)
    args, kwargs = map_model_inputs(data, variant)
    if loss_scale == "sum":
        kwargs["weights"] = None
    mcmc = run_nuts(amtl_model, *args, num_warmup=num_warmup, num_samples=num_samples,
                    num_chains=num_chains, seed=seed, progress_bar=progress_bar,
                    target_accept_prob=target_accept_prob, lam=float(lam), mu=float(mu),
                    source_loss=jnp.asarray(source_loss),
                    likelihood=likelihood, intercept_scale=intercept_scale,
                    fit_intercept=fit_intercept, symmetric=variant == "smtl", **kwargs)
    draws = mcmc.get_samples(group_by_chain=True)
    samples = {"transfer_graph": np.asarray(draws["transfer_graph"]),
               "W": np.asarray(draws["W"])}
    samples["transfer_graph_inclusion"] = (samples["transfer_graph"] > tau).astype(np.float64)
    if fit_intercept:
        samples["b"] = np.asarray(draws["b"])
    if "noise" in draws:
        samples["noise"] = np.asarray(draws["noise"])
    extra = mcmc.get_extra_fields(group_by_chain=True)
    return to_datatree(samples, task_names=data.task_names, feature_names=data.feature_names,
                       sample_stats={"diverging": np.asarray(extra["diverging"])},
                       attrs={"tau": float(tau), "lam": float(lam), "mu": float(mu),
                              "variant": variant, "model": "amtl"}, data=data,
                       likelihood=likelihood)


def edge_summary(dt, ci_prob: float = 0.9):
    """One row per directed edge s → t (s ≠ t): posterior mean of B[s, t], equal-tailed
    ``ci_prob`` credible interval and the inclusion probability P(B[s, t] > τ).

    ``dt`` is a DataTree from :func:`sample_amtl` (or any with ``transfer_graph`` and
    ``transfer_graph_inclusion`` over (source_task, target_task)).
    """
    import pandas as pd

    post = dt.posterior
    B = post["transfer_graph"].values
    inc = post["transfer_graph_inclusion"].values.mean(axis=(0, 1))
    lo, hi = np.quantile(B, [(1 - ci_prob) / 2, (1 + ci_prob) / 2], axis=(0, 1))
    names = [str(v) for v in post["transfer_graph"].coords["source_task"].values]
    s, t = np.nonzero(~np.eye(len(names), dtype=bool))
    pct = f"{int(round(100 * ci_prob))}%"
    return pd.DataFrame({"source_task": [names[i] for i in s],
                         "target_task": [names[j] for j in t],
                         "mean": B.mean(axis=(0, 1))[s, t], f"lower_{pct}": lo[s, t],
                         f"upper_{pct}": hi[s, t], "inclusion_prob": inc[s, t]})


def amtl_datatree(result: AMTLResult, data: MultiTaskData):
    """DataTree of a MAP result (one chain, one draw): ``W``, ``b``, ``transfer_graph``
    (source_task, target_task) and ``task_loss`` (task); attrs hold the settings and, for the
    curriculum, the task order."""
    from ..inference.export import from_point

    params = {"W": result.W, "b": result.b, "transfer_graph": result.transfer_graph,
              "task_loss": result.task_loss}
    attrs = {"variant": result.variant, "lam": result.lam, "mu": result.mu,
             "loss": result.loss, "objective": result.objective, "model": "amtl"}
    if result.order is not None:
        attrs["order"] = [data.task_names[i] for i in result.order]
    return from_point(params, task_names=data.task_names, feature_names=data.feature_names,
                      dims={"task_loss": ["task"]}, attrs=attrs)
