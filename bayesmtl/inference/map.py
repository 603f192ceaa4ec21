"""MAP for any NumPyro model: minimise the negative log joint in constrained space.

NumPyro's ``potential_fn`` adds the log-Jacobian of the unconstraining transform, so its
minimiser is not the MAP. Here the objective is ``-log p(T(u))`` — the joint density evaluated
at the constrained values ``T(u)`` with no Jacobian — optimised over the unconstrained ``u`` by
scipy's L-BFGS-B on a jitted value-and-gradient. A reparameterisation without a Jacobian does
not move the optimum, so the result is the MAP in the model's own coordinates.
"""

from __future__ import annotations

import warnings
from typing import NamedTuple

import jax
import numpy as np
import scipy.optimize
from jax.flatten_util import ravel_pytree
from numpyro.infer import init_to_median, init_to_value
from numpyro.infer.util import constrain_fn, initialize_model, log_density

from ..errors import ConvergenceWarning

__all__ = ["MAPResult", "map_estimate", "neg_log_joint"]


class MAPResult(NamedTuple):
    """params: constrained values of every latent and deterministic site; objective: the
    negative log joint at params; history: objective per iteration; n_iter; converged;
    grad_norm: max-norm of the gradient in unconstrained space; message: optimiser's word."""

    params: dict
    objective: float
    history: np.ndarray
    n_iter: int
    converged: bool
    grad_norm: float
    message: str


def neg_log_joint(model, model_args, model_kwargs, params) -> jax.Array:
    """``-log p(params, data)`` for constrained ``params`` (no Jacobian)."""
    return -log_density(model, model_args, model_kwargs, params)[0]


def map_estimate(model, *model_args, init_params=None, max_iter=5000, ftol=1e-15, gtol=1e-10,
                 seed=0, polish_max_dim=1500, **model_kwargs) -> MAPResult:
    """MAP of ``model(*model_args, **model_kwargs)`` by L-BFGS-B (deterministic given seed).

    Stops when the relative objective change falls below ``ftol`` or the projected gradient
    max-norm below ``gtol``; warns with :class:`ConvergenceWarning` when it hits ``max_iter``
    or fails otherwise. ``init_params`` (constrained values) start the search; other sites
    start at their prior median. Problems with at most ``polish_max_dim`` unconstrained
    parameters finish with safeguarded Newton steps on the exact Hessian.
    """
    init = init_to_value(values=init_params) if init_params else init_to_median(num_samples=15)
    info, *_ = initialize_model(jax.random.PRNGKey(seed), model, model_args=model_args,
                                model_kwargs=model_kwargs, init_strategy=init)
    u0, unravel = ravel_pytree(info.z)

    def objective(u):
        params = constrain_fn(model, model_args, model_kwargs, unravel(u))
        return neg_log_joint(model, model_args, model_kwargs, params)

    value_and_grad = jax.jit(jax.value_and_grad(objective))

    def fun(u):
        v, g = value_and_grad(u)
        return float(v), np.asarray(g, dtype=np.float64)

    history = []
    res = scipy.optimize.minimize(
        fun, np.asarray(u0, dtype=np.float64), jac=True, method="L-BFGS-B",
        callback=lambda intermediate_result: history.append(float(intermediate_result.fun)),
        options={"maxiter": max_iter, "ftol": ftol, "gtol": gtol, "maxcor": 30},
    )
    u, f, g = res.x, float(res.fun), np.asarray(res.jac)
    if u.size <= polish_max_dim:
        u, f, g = _newton_polish(objective, fun, u, f, g)
    grad_norm = float(np.max(np.abs(g))) if g.size else 0.0
    scale = max(1.0, abs(f))
    # L-BFGS-B can exhaust max_iter chasing round-off while the Newton polish has already
    # reached the optimum: a vanishing gradient counts as converged either way
    converged = (bool(res.success) and grad_norm <= 1e-5 * scale) or grad_norm <= 1e-9 * scale
    if not converged:
        warnings.warn(f"MAP optimiser stopped unconverged after {res.nit} iterations "
                      f"({res.message}); gradient max-norm {grad_norm:.2e}",
                      ConvergenceWarning, stacklevel=2)
    params = constrain_fn(model, model_args, model_kwargs, unravel(u),
                          return_deterministic=True)
    params = {k: np.asarray(v) for k, v in params.items() if k != "y"}
    return MAPResult(params, f, np.asarray(history), int(res.nit), converged, grad_norm,
                     str(res.message))


def _newton_polish(objective, fun, u, f, g, steps=3):
    """A few safeguarded Newton steps from L-BFGS's answer (exact Hessian; small problems).

    L-BFGS stops on relative objective change near machine precision while the gradient can
    still be ~1e-7; Newton steps take the iterate to the optimum to ~1e-12 where the
    objective is locally quadratic, and are rejected whenever they do not decrease it.
    """
    hessian = jax.jit(jax.hessian(objective))
    for _ in range(steps):
        H = np.asarray(hessian(u))
        try:
            delta = np.linalg.solve(H, -g)
        except np.linalg.LinAlgError:
            break
        f_new, g_new = fun(u + delta)
        if not (np.isfinite(f_new) and f_new <= f + 1e-12 * abs(f)):
            break
        u, f, g = u + delta, f_new, g_new
    return u, f, g
