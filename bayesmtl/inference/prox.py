"""Proximal operators: prox_f(v, t) = argmin_z f(z) + ‖z - v‖²/(2t), one function per penalty.

Every non-smooth penalty of the library enters its solver loop (FISTA, ADMM; see
:mod:`.solvers`) through one of these: ℓ1 and non-negative ℓ1 (soft-thresholding), the trace
norm and its square (singular values), Schatten-p^p and squared Schatten-p (scalar or vector
proxes on the singular values, exact also for p < 1), the clustered-MTL profile penalty and the
quadratic coupling tr(Z M Zᵀ)/2.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp


def prox_l1(x, threshold):
    """Soft-thresholding: prox of ``threshold * ||x||_1``."""
    return jnp.sign(x) * jnp.maximum(jnp.abs(x) - threshold, 0.0)


def prox_nonneg_l1(x, threshold):
    """Prox of ``threshold * ||x||_1`` plus the constraint x >= 0 (threshold may be an array)."""
    return jnp.maximum(x - threshold, 0.0)


def prox_trace_norm(W, threshold):
    """Singular-value soft-thresholding: prox of ``threshold * ||W||_*`` for W (d, m)."""
    U, s, Vt = jnp.linalg.svd(W, full_matrices=False)
    return (U * jnp.maximum(s - threshold, 0.0)) @ Vt


def prox_squared_l1_nonneg(s, tau):
    """Prox of ``(tau / 2) (sum_k s_k)^2`` over s >= 0 for a non-negative vector s.

    The solution is ``max(s - theta, 0)`` with ``theta = tau * sum(max(s - theta, 0))``; theta
    is found exactly from the sorted values.
    """
    u = jnp.sort(s)[::-1]
    k = jnp.arange(1, s.shape[0] + 1, dtype=s.dtype)
    thetas = tau * jnp.cumsum(u) / (1.0 + tau * k)  # theta if the top-k entries stay positive
    valid = u > thetas
    kstar = jnp.sum(valid)  # valid is a prefix of True values
    theta = jnp.where(kstar > 0, thetas[jnp.maximum(kstar - 1, 0)], 0.0)
    return jnp.maximum(s - theta, 0.0)


def prox_squared_trace_norm(W, tau, values=False):
    """Prox of ``(tau / 2) ||W||_*^2`` (the MTRL / squared-Schatten-1 penalty) for W (d, m);
    ``values=True``: also its singular values (see :func:`spectral_map`)."""
    return spectral_map(W, lambda s: prox_squared_l1_nonneg(s, tau), values)


def _prox_power_scalar(s, tau, p, max_iter=100):
    """Elementwise argmin_{x ≥ 0} ½(x - s)² + τ x^p for s ≥ 0 and 1 < p < 2.

    The minimiser is the root in (0, s] of h(x) = x + τ p x^{p-1} - s (h is increasing and
    concave); safeguarded Newton inside a shrinking bracket, to machine precision.
    """
    tiny = jnp.finfo(s.dtype).tiny

    def h_and_slope(x):
        xs = jnp.maximum(x, tiny)
        return x + tau * p * xs ** (p - 1.0) - s, 1.0 + tau * p * (p - 1.0) * xs ** (p - 2.0)

    def body(state):
        x, lo, hi, it, _ = state
        h, slope = h_and_slope(x)
        lo = jnp.where(h < 0, x, lo)
        hi = jnp.where(h > 0, x, hi)
        newton = x - h / slope
        x_new = jnp.where((newton > lo) & (newton < hi), newton, 0.5 * (lo + hi))
        x_new = jnp.where(h == 0, x, x_new)
        change = jnp.max(jnp.abs(x_new - x) / jnp.maximum(s, tiny))
        return x_new, lo, hi, it + 1, change

    def cond(state):
        return (state[3] < max_iter) & (state[4] > 1e-15)

    # start from the minimiser of the quadratic upper model around s (inside the bracket)
    x0 = s / (1.0 + tau * p * jnp.maximum(s, tiny) ** (p - 2.0))
    x, *_ = jax.lax.while_loop(cond, body, (x0, jnp.zeros_like(s), s, 0, jnp.inf))
    return jnp.where(s > 0, x, 0.0)


def _larger_root(s, c, p, max_iter=100):
    """Larger root of h(x) = x + c x^{p-1} - s (0 < p < 1, c ≥ 0), elementwise, and whether it
    exists. h is convex with its minimum at x_lo = (c (1 - p))^{1/(2-p)}; Newton from x = s
    decreases monotonically to the root."""
    x_lo = (c * (1.0 - p)) ** (1.0 / (2.0 - p))
    tiny = jnp.finfo(s.dtype).tiny

    def body(state):
        x, it, _ = state
        xs = jnp.maximum(x, tiny)
        # c = 0 where x = s = 0 would give 0 · ∞ = NaN, which stopped the shared loop for
        # every entry (hence the where)
        h = x + jnp.where(c > 0, c * xs ** (p - 1.0), 0.0) - s
        slope = 1.0 - jnp.where(c > 0, c * (1.0 - p) * xs ** (p - 2.0), 0.0)
        x_new = jnp.maximum(x - h / jnp.maximum(slope, tiny), x_lo)
        return x_new, it + 1, jnp.max(jnp.abs(x_new - x) / jnp.maximum(s, tiny))

    start = jnp.broadcast_to(jnp.maximum(s, x_lo), jnp.broadcast_shapes(s.shape, x_lo.shape))
    x, *_ = jax.lax.while_loop(lambda st: (st[1] < max_iter) & (st[2] > 1e-15), body,
                               (start, 0, jnp.asarray(jnp.inf, s.dtype)))
    exists = s > x_lo + c * jnp.maximum(x_lo, tiny) ** (p - 1.0)
    return x, exists


def _prox_power_nonconvex(s, tau, p):
    """Elementwise argmin_{x ≥ 0} ½(x - s)² + τ x^p for s ≥ 0 and 0 < p < 1 (generalised
    soft-thresholding; the objective is non-convex, the minimiser is exact): the larger
    root of x + τ p x^{p-1} = s when it exists and beats x = 0, else 0."""
    x, exists = _larger_root(s, tau * p, p)
    better = 0.5 * (x - s) ** 2 + tau * jnp.maximum(x, 0.0) ** p < 0.5 * s**2
    return jnp.where(exists & better, x, 0.0)


def _prox_squared_lp_nonconvex(s, tau, p, n_bisect=100):
    """argmin_{x ≥ 0} ½‖x - s‖² + (τ/2)(Σ x^p)^{2/p} for s ≥ 0 and 0 < p < 1 (non-convex).

    A minimiser keeps the k largest entries for some k. On that support, stationarity reads
    x_j + c x_j^{p-1} = s_j with c = τ(Σ x^p)^{2/p-1}; taking the larger roots x_j(c), the
    map c ↦ c - τ(Σ_{j≤k} x_j(c)^p)^{2/p-1} is increasing on the c for which the k-th root
    exists (c ≤ (s_k / K_p)^{2-p}, K_p = (1-p)^{1/(2-p)} + (1-p)^{(p-1)/(2-p)}), so each k has
    at most one candidate, found by bisection. The best candidate (or x = 0) is returned.
    """
    m = s.shape[0]
    order = jnp.argsort(-s)
    s_sorted = s[order]
    on_support = jnp.arange(m)[None, :] < jnp.arange(1, m + 1)[:, None]  # (k, j)
    K = (1.0 - p) ** (1.0 / (2.0 - p)) + (1.0 - p) ** ((p - 1.0) / (2.0 - p))
    c_max = (s_sorted / K) ** (2.0 - p)  # the k-th largest entry's root exists iff c < c_max

    def x_of(c):  # c (m,) one per support size → x (m, m)
        x, _ = _larger_root(s_sorted[None, :], c[:, None], p)
        return jnp.where(on_support, x, 0.0)

    def gap(c):
        return c - tau * jnp.sum(x_of(c) ** p, axis=1) ** (2.0 / p - 1.0)

    def body(i, bracket):
        lo, hi = bracket
        mid = 0.5 * (lo + hi)
        neg = gap(mid) < 0
        return jnp.where(neg, mid, lo), jnp.where(neg, hi, mid)

    lo, hi = jax.lax.fori_loop(0, n_bisect, body, (jnp.zeros(m), c_max))
    c = 0.5 * (lo + hi)
    x = x_of(c)
    feasible = (gap(c_max) >= 0) & (s_sorted > 0)
    value = 0.5 * jnp.sum((x - s_sorted[None, :]) ** 2, axis=1) + 0.5 * tau * jnp.sum(
        x**p, axis=1) ** (2.0 / p)
    value = jnp.where(feasible, value, jnp.inf)
    best = jnp.argmin(value)
    x_best = jnp.where(value[best] < 0.5 * jnp.sum(s**2), x[best], 0.0)
    return jnp.zeros_like(s).at[order].set(x_best)


def _prox_power(s, tau, p):
    """argmin_{x ≥ 0} ½‖x - s‖² + τ Σ x_k^p for 0 < p < 2 (p = 1: soft-thresholding;
    p < 1: non-convex, exact generalised thresholding)."""
    branch = jnp.where(p == 1.0, 0, jnp.where(p > 1.0, 1, 2))  # only one branch runs
    return jax.lax.switch(branch, [
        lambda: jnp.maximum(s - tau, 0.0),
        lambda: _prox_power_scalar(s, tau, jnp.maximum(p, 1.0 + 1e-12)),
        lambda: _prox_power_nonconvex(s, tau, jnp.minimum(p, 1.0 - 1e-12))])


def prox_schatten_pp(W, tau, p, values=False):
    """Prox of τ‖W‖_{S_p}^p = τ Σ σ_k^p for 0 < p < 2, W (d, m) (for p < 1 the penalty is
    non-convex and this is its exact, possibly set-valued, proximal map); ``values=True``:
    also its singular values (see :func:`spectral_map`)."""
    return spectral_map(W, lambda s: _prox_power(s, tau, p), values)


def _prox_squared_lp_nonneg(s, tau, p, n_bisect=200):
    """argmin_{x ≥ 0} ½‖x - s‖² + (τ/2)‖x‖_p² for s ≥ 0, 1 < p < 2.

    Stationarity: x = prox of (c/p)Σ|x|^p at s with c = τ‖x‖_p^{2-p}; c solves the monotone
    equation c = τ‖x(c)‖_p^{2-p} in [0, τ‖s‖_p^{2-p}], found by bisection.
    """
    norm_p = lambda v: jnp.sum(v**p) ** (1.0 / p)  # noqa: E731
    hi0 = tau * norm_p(s) ** (2.0 - p)

    def body(i, bracket):
        lo, hi = bracket
        c = 0.5 * (lo + hi)
        gap = c - tau * norm_p(_prox_power_scalar(s, c / p, p)) ** (2.0 - p)
        return jnp.where(gap < 0, c, lo), jnp.where(gap < 0, hi, c)

    lo, hi = jax.lax.fori_loop(0, n_bisect, body, (jnp.zeros_like(hi0), hi0))
    c = 0.5 * (lo + hi)
    return jnp.where(hi0 > 0, _prox_power_scalar(s, c / p, p), 0.0)


def prox_squared_schatten(W, tau, p, values=False):
    """Prox of (τ/2)‖W‖²_{S_p} for 0 < p < 2 (p = 1: MTRL's squared trace norm; p < 1:
    non-convex, exact global minimiser), W (d, m); ``values=True``: also its singular
    values (see :func:`spectral_map`)."""
    def fn(s):
        branch = jnp.where(p == 1.0, 0, jnp.where(p > 1.0, 1, 2))  # only one branch runs
        return jax.lax.switch(branch, [
            lambda: prox_squared_l1_nonneg(s, tau),
            lambda: _prox_squared_lp_nonneg(s, tau, jnp.maximum(p, 1.0 + 1e-12)),
            lambda: _prox_squared_lp_nonconvex(s, tau, jnp.minimum(p, 1.0 - 1e-12))])
    return spectral_map(W, fn, values)


@jax.jit
def clustered_spectrum(g, a, b, c):
    """σ (k,) minimising Σ g_i / σ_i over {Σ σ_i = a, b ≤ σ_i ≤ c} for g (k,) ≥ 0:
    σ_i = clip(√g_i / θ, b, c), θ > 0 by bisection on log θ (MALSAR's CMTL projection)."""
    s = jnp.sqrt(jnp.clip(g, 0.0))
    s = s + 1e-14 * jnp.max(s) + 1e-300  # ties at s = 0 broken harmlessly

    def total(log_theta):
        return jnp.sum(jnp.clip(s / jnp.exp(log_theta), b, c))

    # Σ clip(s/θ) decreases from k·c (θ small) to k·b (θ large)
    lo = jnp.log(jnp.min(s) / c) - 1.0
    hi = jnp.log(jnp.max(s) / b) + 1.0

    def body(_, bounds):
        lo, hi = bounds
        mid = 0.5 * (lo + hi)
        big = total(mid) > a
        return jnp.where(big, mid, lo), jnp.where(big, hi, mid)

    lo, hi = jax.lax.fori_loop(0, 200, body, (lo, hi))
    return jnp.clip(s / jnp.exp(0.5 * (lo + hi)), b, c)


def clustered_prox(V, step, args):
    """argmin_Z R(Z) + ‖Z - V‖²/(2 step) for the clustered profile penalty R.

    On singular values v (padded with zeros to m): minimising over Z first gives
    Σ λ v_i² / (2(σ_i + λt)), so σ' = σ + λt solves the same clustered problem on the
    shifted set {Σ σ' = a + mλt, b + λt ≤ σ' ≤ c + λt}; then z_i = v_i σ_i / (σ_i + λt).
    """
    lam, a, b, c = args
    m = V.shape[1]
    U, v, Vt = jnp.linalg.svd(V, full_matrices=False)
    k = v.shape[0]
    shift = lam * step
    v_pad = jnp.concatenate([v, jnp.zeros(m - k, v.dtype)])
    sigma_shifted = clustered_spectrum(v_pad**2, a + m * shift, b + shift, c + shift)[:k]
    return (U * (v * (sigma_shifted - shift) / sigma_shifted)) @ Vt


def quadratic_prox(V, step, args):
    """argmin_Z (1/2) tr(Z M Zᵀ) + ‖Z - V‖²/(2 step) = V Q diag(1/(1 + step·e)) Qᵀ."""
    Q, e = args
    return ((V @ Q) / (1.0 + step * e)) @ Q.T


def spectral_map(J, fn, values=False):
    """U diag(fn(s)) Vᵀ for J = U diag(s) Vᵀ (p, q), through the eigendecomposition of its
    smaller Gram matrix (JJᵀ or JᵀJ, k = min(p, q)); ``fn`` maps the k singular values (in no
    particular order) to the new ones, with fn(0) = 0 assumed. ``values=True`` returns the
    pair (result, its k singular values fn(s)), so a caller needs no second decomposition
    for the penalty at the result.

    Equal to the SVD route in exact arithmetic. The Gram eigenvalues are accurate to
    ``eps·s_max²``, i.e. s to ``eps·s_max²/s``; the result is as accurate as the SVD's where
    fn(s)/s is smooth, except that a singular value below ≈ √eps·s_max may read as 0 (its
    component then gets fn(s)/s = 0: an absolute error ≤ √eps·s_max·max fn(s)/s). About 2×
    faster than the SVD for the School- and GAMTL-sized matrices on CPU, where every proximal
    map of a spectral penalty is one of these per iteration.
    """
    p, q = J.shape
    gram = J @ J.T if p <= q else J.T @ J
    evals, vecs = jnp.linalg.eigh(gram)
    s = jnp.sqrt(jnp.maximum(evals, 0.0))
    positive = s > 0
    x = jnp.where(positive, fn(s), 0.0)
    ratio = x / jnp.where(positive, s, 1.0)
    if p <= q:
        out = vecs @ (ratio[:, None] * (vecs.T @ J))
    else:
        out = ((J @ vecs) * ratio[None, :]) @ vecs.T
    return (out, x) if values else out


def prox_trace_norm_gram(J, threshold):
    """Singular-value soft-thresholding of J (p, q) by :func:`spectral_map`: the prox of
    ``threshold * ‖J‖_*`` (singular values s ≤ threshold removed, the others scaled by
    ``1 - threshold/s``; equal to ``prox_trace_norm`` to rounding)."""
    return spectral_map(J, lambda s: jnp.maximum(s - threshold, 0.0))


# ----------------------------------------------------------------------------- sparse rows
# The MALSAR-family penalties (bayesmtl.models.sparse_rows): ℓ1 (prox_l1 above), the row
# norm ℓ2,1 and the dirty model's infimal convolution of ℓ1,∞ (rows) and ℓ1 (entries).


def prox_l21(W, threshold):
    """Row-wise group soft-thresholding: prox of ``threshold * Σ_r ‖w_r‖₂`` for W (d, m)
    (rows w_r (m,): one feature across the tasks)."""
    norms = jnp.linalg.norm(W, axis=1, keepdims=True)
    return W * jnp.maximum(1.0 - threshold / jnp.where(norms > 0, norms, 1.0), 0.0)


def _l1_box_threshold(a, radius, bound, n_bisect=200):
    """(d,) smallest θ ≥ 0 with Σ_j clip(a_rj - θ, 0, bound) ≤ radius for a (d, m) ≥ 0 (the
    sum decreases in θ; bisection to rounding)."""
    def l1(theta):
        return jnp.sum(jnp.clip(a - theta[:, None], 0.0, bound), axis=1)

    def body(_, bracket):
        lo, hi = bracket
        mid = 0.5 * (lo + hi)
        big = l1(mid) > radius
        return jnp.where(big, mid, lo), jnp.where(big, hi, mid)

    hi0 = jnp.max(a, axis=1)
    _, hi = jax.lax.fori_loop(0, n_bisect, body, (jnp.zeros_like(hi0), hi0))
    return jnp.where(l1(jnp.zeros_like(hi0)) <= radius, 0.0, hi)


def project_l1_box(V, radius, bound):
    """Row-wise Euclidean projection of V (d, m) onto {z : ‖z‖₁ ≤ radius, |z_j| ≤ bound}.

    KKT: z = sign(v) clip(|v| - θ, 0, bound) with the smallest θ ≥ 0 meeting the ℓ1 bound.
    ``bound`` may be ``jnp.inf`` (the ℓ1 ball alone).
    """
    a = jnp.abs(V)
    theta = _l1_box_threshold(a, radius, bound)
    return jnp.sign(V) * jnp.clip(a - theta[:, None], 0.0, bound)


def prox_dirty(V, step, lam, lam2):
    """Prox of ``step * R`` for the dirty model's penalty on W (d, m),

        R(W) = min_{P + Q = W} λ Σ_r ‖p_r‖_∞ + λ₂ ‖Q‖₁        (an infimal convolution).

    R* is the indicator of C = {Z : ‖z_r‖₁ ≤ λ for every row, |Z_ij| ≤ λ₂} (the sum of the
    conjugates), so by Moreau's decomposition prox_{tR}(V) = V - t·proj_C(V / t), the
    projection being row-wise (:func:`project_l1_box`). Written entry-wise, with θ the
    projection's threshold of row r: v (|v| ≤ tθ), sign(v)·tθ (the shared ℓ∞ level) or
    sign(v)(|v| - tλ₂) (beyond it), so zeros are exact. ``lam2 = inf`` gives the prox of
    λ‖·‖_{1,∞}; ``lam = inf`` that of λ₂‖·‖₁.
    """
    a = jnp.abs(V)
    level = step * _l1_box_threshold(a / step, lam, lam2)[:, None]
    out = jnp.where(a <= level, a, jnp.where(a - level >= step * lam2, a - step * lam2, level))
    return jnp.sign(V) * out
