"""The package's Newton loop (``inference.solvers.damped_newton``): its stopping rule and
certificate, checked against an independent minimiser."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy.optimize import minimize

import bayesmtl  # noqa: F401  (x64 before any JAX work)
from bayesmtl.inference.solvers import (
    after,
    coupled_block_matvec,
    coupled_block_solve,
    coupled_block_system,
    damped_newton,
)


def _logistic_ridge(seed=0, n=40, p=5):
    """f(x) = Σ log(1 + exp(a_iᵀx)) - bᵀx + ½‖x‖² (smooth, strictly convex, not quadratic)."""
    rng = np.random.default_rng(seed)
    A = jnp.asarray(rng.normal(size=(n, p)))
    b = jnp.asarray(rng.normal(size=p))

    def value(x):
        return jnp.sum(jnp.logaddexp(0.0, A @ x)) - b @ x + 0.5 * x @ x

    grad = jax.grad(value)

    def direction(x):
        g = grad(x)
        s = jax.nn.sigmoid(A @ x)
        H = (A.T * (s * (1 - s))) @ A + jnp.eye(p)
        delta = -jnp.linalg.solve(H, g)
        return delta, g @ delta

    return value, grad, direction, p


@pytest.mark.parametrize("seed", [0, 1])
def test_damped_newton_certifies_the_minimum_of_a_smooth_convex_function(seed):
    value, grad, direction, p = _logistic_ridge(seed)
    x0 = jnp.full(p, 3.0)
    x, steps, converged = damped_newton(value, direction, x0, tol=1e-13, full=True)
    reference = minimize(lambda z: float(value(jnp.asarray(z))), np.asarray(x0),
                         jac=lambda z: np.asarray(grad(jnp.asarray(z))), method="BFGS",
                         options={"gtol": 1e-12})
    assert bool(converged) and 1 <= int(steps) < 50
    f, f_ref = float(value(x)), float(value(jnp.asarray(reference.x)))
    assert f <= f_ref + 1e-13 * max(1.0, abs(f_ref))  # the certificate: f - f* ≤ tol |f|
    np.testing.assert_allclose(np.asarray(x), reference.x, atol=1e-6)
    assert float(jnp.linalg.norm(grad(x))) < 1e-10


def test_damped_newton_is_exact_in_one_step_on_a_quadratic():
    rng = np.random.default_rng(3)
    B = rng.normal(size=(6, 6))
    Q = jnp.asarray(B @ B.T + np.eye(6))
    r = jnp.asarray(rng.normal(size=6))

    def direction(x):
        g = Q @ x - r
        delta = -jnp.linalg.solve(Q, g)
        return delta, g @ delta

    x, steps, converged = damped_newton(lambda x: 0.5 * x @ Q @ x - r @ x, direction,
                                        jnp.zeros(6), full=True)
    assert bool(converged) and int(steps) <= 2  # the step, then at most the polishing step
    np.testing.assert_allclose(np.asarray(x), np.linalg.solve(np.asarray(Q), np.asarray(r)),
                               rtol=1e-12)


def test_damped_newton_stops_uncertified_without_a_direction_or_at_its_cap():
    value, _, direction, p = _logistic_ridge(0)
    x0 = jnp.full(p, 3.0)

    def no_direction(x):  # e.g. the GAMTL C-step near a singular M
        delta, _ = direction(x)
        return delta, jnp.asarray(jnp.nan)

    x, steps, converged = damped_newton(value, no_direction, x0, full=True)
    assert not bool(converged) and int(steps) == 0
    np.testing.assert_array_equal(np.asarray(x), np.asarray(x0))
    _, steps, converged = damped_newton(value, direction, x0, max_iter=1, tol=1e-15, full=True)
    assert not bool(converged) and int(steps) == 1


def test_after_returns_its_argument_and_orders_the_computation():
    x = jnp.arange(3.0)
    np.testing.assert_array_equal(np.asarray(after(x, jnp.ones(2), jnp.asarray(-5.0))), x)
    np.testing.assert_array_equal(np.asarray(after(x)), x)
    # the dependence survives compilation: x's use reads the other computation's result
    hlo = jax.jit(lambda a, b: after(a, jnp.linalg.eigvalsh(b)) * 2.0).lower(
        x, jnp.eye(3)).compile().as_text()
    assert "tanh" in hlo


def test_projected_newton_follows_its_merit_where_the_value_is_flat_to_round_off():
    """On a box, minimise value(x) = 1e3 + 1e-18 ‖x - x*‖²: every decrease is below the
    round-off of 1e3, so the Armijo search alone stalls at x₀. With the merit ‖x - x*‖ the
    full Newton steps are taken (the value never rises by more than round-off) and the loop
    reaches the projection of x* onto the box."""
    from bayesmtl.inference.solvers import projected_newton

    target = jnp.asarray([0.3, -2.0, 0.7])  # outside the box in its second coordinate

    def value(x):
        return 1e3 + 1e-18 * jnp.sum((x - target) ** 2)

    def direction(x):  # the Newton step and the gradient
        return target - x, 2e-18 * (x - target)

    def project(x):
        return jnp.clip(x, -1.0, 1.0)

    def stop(x):
        return jnp.max(jnp.abs(x - project(target))) <= 1e-14

    x0 = jnp.zeros(3)
    x, _, stalled = projected_newton(value, direction, project, x0, stop=stop)
    assert bool(stalled) and np.array_equal(np.asarray(x), np.asarray(x0))
    merit = jax.jit(lambda x: jnp.linalg.norm(x - project(target)))
    x, steps, stalled = projected_newton(value, direction, project, x0, stop=stop, merit=merit)
    assert not bool(stalled) and int(steps) >= 1
    np.testing.assert_allclose(np.asarray(x), [0.3, -1.0, 0.7], atol=1e-14)


def _coupled_system(smallest, m=300, D=3, seed=0):
    """blockdiag(X_tᵀX_t) + 1e4·P ⊗ diag(1, 1, 0), P with eigenvalues geomspace(smallest, 1):
    the smaller ``smallest``, the more the coupling that block-Jacobi CG does not see
    dominates, and the slower CG converges."""
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(m, 3 * D, D))
    blocks = jnp.asarray(np.einsum("tni,tnj->tij", X, X))
    Q, _ = np.linalg.qr(rng.normal(size=(m, m)))
    coupling = jnp.asarray((Q * np.geomspace(smallest, 1.0, m)) @ Q.T * 1e4)
    selector = jnp.ones(D).at[-1].set(0.0)
    return blocks, coupling, selector, jnp.asarray(rng.normal(size=(m, D)))


@pytest.mark.parametrize("smallest, cg_steps, path", [(0.1, 10, "cg"), (1e-4, 20, "factor")])
def test_coupled_block_solve_goes_on_with_cg_where_its_rate_reaches_the_tolerance(
        smallest, cg_steps, path):
    """After ``cg_steps`` unsolved CG steps, a system whose CG rate so far reaches the
    tolerance within CG_MORE × cg_steps more is finished by CG (residual just below tol, not
    the factorisation's round-off); a crawling one is factored (residual at round-off)."""
    blocks, coupling, selector, rhs = _coupled_system(smallest)
    tol = 1e-8
    unsolved = coupled_block_solve(blocks, coupling, selector, rhs, tol=tol, solve="cg",
                                   max_cg=cg_steps)

    def residual(x):
        return float(jnp.linalg.norm(coupled_block_matvec(blocks, coupling, selector, x) - rhs)
                     / jnp.linalg.norm(rhs))

    assert residual(unsolved) > 100 * tol  # the first cg_steps do not solve it
    x = coupled_block_solve(blocks, coupling, selector, rhs, tol=tol, cg_steps=cg_steps)
    exact = np.linalg.solve(np.asarray(coupled_block_system(blocks, coupling, selector)),
                            np.asarray(rhs).ravel())
    assert residual(x) <= tol
    if path == "cg":
        assert residual(x) > 1e-12
        np.testing.assert_allclose(np.asarray(x).ravel(), exact, rtol=0, atol=1e-5)
    else:
        assert residual(x) <= 1e-12
        np.testing.assert_allclose(np.asarray(x).ravel(), exact, rtol=0, atol=1e-9)
