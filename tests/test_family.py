"""The L2MT task-relation family (graph, clustered, glMTL, SPATS, reconstruction, pooled):
objective equivalence with Table 1 coded independently, exact MAP against cvxpy, sampling,
bad input."""

import cvxpy as cp
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import make_regression

from bayesmtl import MultiTaskData
from bayesmtl.errors import ConvergenceWarning, PriorError
from bayesmtl.inference import omega_steps as OS
from bayesmtl.inference.map import neg_log_joint
from bayesmtl.models import family as F
from bayesmtl.models.likelihoods import PAPER_SQUARED_LOSS_NOISE, BernoulliLogit, Gaussian
from bayesmtl.models.losses import row_weights

LAM = 0.5


# -------------------------------------------------------------------- independent objectives


def data_term(data, W, b):
    """Σ_i (1/n_i) Σ_j (w_iᵀx_ij + b_i - y_ij)² (regression) or logistic loss, from the paper."""
    total = 0.0
    for i, (X, y) in enumerate(data.tasks()):
        f = X @ W[:, i] + b[i]
        if data.kind == "classification":
            total += np.mean(np.log1p(np.exp(-(2 * y - 1) * f)))
        else:
            total += np.mean((f - y) ** 2)
    return total


def objective_1(data, W, b, omega_inv, lam1, lam2_g):
    """Eq. (1): data term + (λ1/2) tr(W Ω⁻¹ Wᵀ) + λ2 g(Ω)."""
    return data_term(data, W, b) + lam1 / 2 * np.trace(W @ omega_inv @ W.T) + lam2_g


def g_table1(name, omega, lam1, lam2, d, A=None):
    """λ2 g(Ω) of Table 1 for each member, written from the paper."""
    if name == "glmtl":
        return lam2 * (lam1 * d / (2 * lam2) * np.linalg.slogdet(omega)[1]
                       + np.abs(np.linalg.inv(omega)).sum())
    if name == "spats":
        return lam2 * np.abs(omega).sum()
    if name == "reconstruction":
        return lam2 * np.abs(A).sum()
    return 0.0  # constraint members: 0 on the set


def spd(rng, m):
    A = rng.normal(size=(m, m))
    return A @ A.T / m + 0.3 * np.eye(m)


def nlj(data, member, params):
    X, y, task = jnp.asarray(data.X), jnp.asarray(data.y), jnp.asarray(data.task)
    w = jnp.asarray(row_weights(data.task, data.n_tasks, "mean"))
    lik = BernoulliLogit() if data.kind == "classification" else Gaussian(
        PAPER_SQUARED_LOSS_NOISE)
    return float(neg_log_joint(F.family_model, (X, task, data.n_tasks),
                               dict(y=y, member=member, lam=LAM, likelihood=lik, weights=w),
                               params))


@pytest.fixture(scope="module")
def reg():
    return make_regression(seed=1, d=5, sizes=(15, 20, 25, 30))[0]


def _draw(rng, data, name):
    """A random point (member params, Ω⁻¹ for eq. (1), λ2 g) in the member's domain."""
    m, d = data.n_tasks, data.n_features
    if name == "clustered":
        member = F.Clustered(a=1.0, b=0.05, c=0.9)
        raw = spd(rng, m)
        raw = raw / np.trace(raw) * 7.0  # fixed tr S: the Wishart(m+1) factor is constant
        omega = member.b * np.eye(m) + (member.a - m * member.b) * raw / np.trace(raw)
        return member, {"omega_raw": raw}, np.linalg.inv(omega), 0.0
    if name == "glmtl":
        member = F.SparsePrecision(lam2=0.3)
        P = spd(rng, m)
        return member, {"omega_inv": P}, P, g_table1(name, np.linalg.inv(P), LAM, 0.3, d)
    if name == "spats":
        member = F.SparseCovariance(lam2=0.3, eps=0.0)
        omega = spd(rng, m)
        return member, {"omega": omega}, np.linalg.inv(omega), g_table1(name, omega, LAM, 0.3,
                                                                         d)
    if name == "reconstruction":
        member = F.SparseReconstruction(lam2=0.3)
        A = rng.normal(size=(m, m))
        R = np.eye(m) - A
        # Laplace(0, 1/λ2) log-density = -λ2|A| + const: the factor λ2‖A‖₁ of Table 1
        return member, {"reconstruction": A}, R @ R.T, g_table1(name, None, LAM, 0.3, d, A)
    S = np.abs(rng.normal(size=(m, m)))
    S = (S + S.T) / 2
    member = F.GraphLaplacian(S)
    L = np.diag(S.sum(1) - np.diag(S)) - (S - np.diag(np.diag(S)))
    return member, {}, L, 0.0


@pytest.mark.parametrize("name", ["graph", "clustered", "glmtl", "spats", "reconstruction"])
def test_negative_log_joint_is_table1_objective(reg, name):
    """-log p(W, b, Ω | y) = eq. (1) with the member's g + a constant (mean scaling, σ=1/√2)."""
    rng = np.random.default_rng(0)
    diffs = []
    for _ in range(4):
        member, params, omega_inv, lam2_g = _draw(rng, reg, name)
        W = rng.normal(size=(reg.n_features, reg.n_tasks))
        b = rng.normal(size=reg.n_tasks)
        params = dict(params, W=W, b=b)
        value = nlj(reg, member, {k: jnp.asarray(v) for k, v in params.items()})
        diffs.append(value - objective_1(reg, W, b, omega_inv, LAM, lam2_g))
    assert np.ptp(diffs) < 1e-8 * max(1.0, abs(diffs[0])), diffs


# -------------------------------------------------------------------- exact MAP vs cvxpy


def _cvx_data_term(data, W, b):
    terms = []
    for i, (X, y) in enumerate(data.tasks()):
        f = X @ W[:, i] + b[i]
        if data.kind == "classification":
            terms.append(cp.sum(cp.logistic(cp.multiply(-(2 * y - 1), f))) / len(y))
        else:
            terms.append(cp.sum_squares(f - y) / len(y))
    return sum(terms)


def _solve(problem, tol=1e-11):
    problem.solve(solver=cp.CLARABEL, tol_gap_abs=tol, tol_gap_rel=tol, tol_feas=tol,
                  max_iter=500)
    assert problem.status == cp.OPTIMAL, problem.status
    return problem.value


def _rel(a, b):
    return abs(a - b) / max(1.0, abs(b))


def test_graph_map_equals_cvxpy(reg):
    rng = np.random.default_rng(2)
    m, d = reg.n_tasks, reg.n_features
    S = np.abs(rng.normal(size=(m, m)))
    member = F.GraphLaplacian((S + S.T) / 2)
    res = F.fit_family(reg, member, LAM)
    W, b = cp.Variable((d, m)), cp.Variable(m)
    L = F.graph_laplacian(member.similarity)
    root = np.linalg.cholesky(L + 1e-300 * np.eye(m) + 1e-12 * np.eye(m))
    ref = _solve(cp.Problem(cp.Minimize(_cvx_data_term(reg, W, b)
                                        + LAM / 2 * cp.sum_squares(W @ root))))
    ref_exact = ref - LAM / 2 * 1e-12 * np.sum(W.value**2)
    assert _rel(res.objective, ref_exact) < 1e-6
    assert np.max(np.abs(res.W - W.value)) < 1e-4


def test_mean_regularised_is_distance_to_mean(reg):
    member = F.mean_regularised(reg.n_tasks)
    W = np.random.default_rng(0).normal(size=(reg.n_features, reg.n_tasks))
    P = member.precision_matrix(reg.n_tasks)
    direct = np.sum((W - W.mean(axis=1, keepdims=True)) ** 2)
    assert np.trace(W @ P @ W.T) == pytest.approx(direct, rel=1e-12)
    assert member.n_components() == 1


def test_clustered_map_equals_cvxpy(reg):
    m, d = reg.n_tasks, reg.n_features
    member = F.Clustered(a=1.0, b=0.05, c=0.6)
    res = F.fit_family(reg, member, LAM)
    W, b, omega = cp.Variable((d, m)), cp.Variable(m), cp.Variable((m, m), PSD=True)
    ref = _solve(cp.Problem(
        cp.Minimize(_cvx_data_term(reg, W, b) + LAM / 2 * cp.matrix_frac(W.T, omega)),
        [cp.trace(omega) == member.a, omega >> member.b * np.eye(m),
         omega << member.c * np.eye(m)]))
    assert _rel(res.objective, ref) < 1e-6
    evals = np.linalg.eigvalsh(res.omega)
    assert np.trace(res.omega) == pytest.approx(1.0)
    assert evals.min() >= member.b - 1e-10 and evals.max() <= member.c + 1e-10


def test_clustered_omega_step_is_the_constrained_minimiser():
    """Ω-step (eigenvalue clipping with bisection) vs cvxpy on the Ω sub-problem."""
    rng = np.random.default_rng(5)
    m = 6
    Wt = rng.normal(size=(3, m))
    G = Wt.T @ Wt
    a, lo, hi = 2.0, 0.1, 0.7
    omega_ours = np.asarray(OS.clustered_omega_step(jnp.asarray(G), a, lo, hi))
    omega = cp.Variable((m, m), PSD=True)
    ref = _solve(cp.Problem(cp.Minimize(cp.matrix_frac(Wt.T, omega)),
                            [cp.trace(omega) == a, omega >> lo * np.eye(m),
                             omega << hi * np.eye(m)]))
    ours = np.trace(np.linalg.solve(omega_ours, G))
    assert _rel(ours, ref) < 1e-7
    assert np.trace(omega_ours) == pytest.approx(a, rel=1e-12)


def test_spats_map_equals_cvxpy(reg):
    m, d = reg.n_tasks, reg.n_features
    member = F.SparseCovariance(lam2=0.2, eps=1e-3)
    res = F.fit_family(reg, member, LAM)
    W, b, omega = cp.Variable((d, m)), cp.Variable(m), cp.Variable((m, m), PSD=True)
    stacked = cp.hstack([W.T, np.sqrt(member.eps) * np.eye(m)])
    ref = _solve(cp.Problem(cp.Minimize(
        _cvx_data_term(reg, W, b) + LAM / 2 * cp.matrix_frac(stacked, omega)
        + member.lam2 * cp.sum(cp.abs(omega)))))
    assert _rel(res.objective, ref) < 1e-6
    assert np.max(np.abs(res.W - W.value)) < 1e-3


def test_spats_omega_step_handles_badly_scaled_entries():
    """The SPATS Ω-step has the closed form ω_i = √(λ G_ii / 2λ₂) (for any G ≻ 0; here G
    diagonal, where it is plain). With G_ii over 8 decades the entries' curvatures 2λ₂/ω_i
    differ by 10⁴: the former solver (scalar Barzilai–Borwein steps from Ω₀) did not reach
    the optimum from Ω₀ = 2 diag(ω) within 100 steps; the present one (closed-form start,
    certified by its own residual) does, to 1e-10."""
    m, lam, lam2 = 30, 2.0, 0.5
    g = np.logspace(-6.0, 2.0, m)
    exact = np.sqrt(lam * g / (2.0 * lam2))
    omega, residual, steps = OS.sparse_covariance_step(jnp.diag(g), lam, lam2,
                                                       jnp.diag(2.0 * exact), max_iter=100)
    assert int(steps) < 100 and float(residual) < 1e-9
    np.testing.assert_allclose(np.diag(omega), exact, rtol=1e-10)
    assert np.all(np.asarray(omega)[~np.eye(m, dtype=bool)] == 0.0)


def test_spats_omega_step_is_the_diagonal_closed_form():
    """For a non-diagonal, badly scaled G ≻ 0 the Ω-step's minimiser is diagonal with
    ω_i = √(λ G_ii / 2λ₂), certified by the KKT residual (independent of the solver)."""
    m, lam, lam2 = 30, 2.0, 0.5
    scale = np.logspace(-3.0, 1.0, m)
    index = np.arange(m)
    G = scale[:, None] * 0.8 ** np.abs(index[:, None] - index[None, :]) * scale[None, :]
    exact = np.diag(np.sqrt(lam * np.diag(G) / (2.0 * lam2)))
    assert float(OS.sparse_covariance_residual(jnp.asarray(G), lam, lam2, jnp.asarray(exact))) \
        < 1e-12
    omega, residual, _ = OS.sparse_covariance_step(jnp.asarray(G), lam, lam2, jnp.eye(m))
    assert float(residual) < 1e-9
    np.testing.assert_allclose(np.asarray(omega), exact, rtol=1e-10, atol=1e-14)


def test_spats_omega_step_reports_a_missing_minimiser():
    """With ε = 0 and a task whose weights are all zero (G_ii = 0) the diagonal start is not
    positive definite and no minimiser exists (ω_i → 0): the step iterates from Ω₀, stays
    finite and positive definite, and its residual says it is not exact."""
    G = jnp.diag(jnp.array([1.0, 2.0, 0.0]))
    omega, residual, steps = OS.sparse_covariance_step(G, 1.0, 0.5, jnp.eye(3), max_iter=50)
    assert int(steps) == 50 and float(residual) > 1e-6
    assert np.all(np.linalg.eigvalsh(np.asarray(omega)) > 0)


class _TruncatedSpats(F.SparseCovariance):
    """SPATS whose Ω-step returns its start (an inexact step, as at a solver's cap)."""

    def omega_step(self, gram, lam, d, state, previous_gram=None):
        return state


def test_spats_final_omega_step_is_certified(reg):
    """The exact fit's last Ω-step has a KKT residual ≤ 1e-9 (the step's own report agrees);
    an alternation that stops on an inexact Ω-step (the solver's cap) is reported
    unconverged with a ConvergenceWarning, not as the MAP."""
    member = F.SparseCovariance(lam2=0.2, eps=1e-3)
    res = F.fit_family(reg, member, LAM)
    gram = jnp.asarray(res.W.T @ res.W)
    assert res.converged
    assert float(member.omega_residual(gram, LAM, reg.n_features, jnp.asarray(res.omega))) < 1e-8
    m = reg.n_tasks
    _, reported, steps = OS.sparse_covariance_step(gram + member.eps * jnp.eye(m), LAM,
                                                   member.lam2, jnp.eye(m))
    assert float(reported) < 1e-8 and int(steps) < 20000
    with pytest.warns(ConvergenceWarning, match="Ω-step is not exact"):
        bad = F.fit_family(reg, _TruncatedSpats(lam2=0.2, eps=1e-3), LAM, extrapolation=0)
    assert not bad.converged


class _TruncatedGlmtl(F.SparsePrecision):
    """glMTL whose graphical lasso takes no Newton step (returns its start point's P)."""

    def omega_step(self, gram, lam, d, state, previous_gram=None, accuracy=None):
        return OS.graphical_lasso(gram / d, 2.0 * self.lam2 / (lam * d), state, max_iter=0)


def test_glmtl_final_omega_step_is_certified(reg):
    """glMTL's last Ω-step is certified like SPATS': the relative KKT residual of the exact
    fit's P is ≤ 1e-9, it equals the minimum-norm subgradient's norm over max(1, ‖P⁻¹‖_F)
    (coded here from the graphical-lasso optimality conditions), and a fit whose graphical
    lasso stops short is reported unconverged."""
    member = F.SparsePrecision(lam2=0.05)
    res = F.fit_family(reg, member, LAM)
    d = reg.n_features
    gram = res.W.T @ res.W
    P = res.precision
    assert res.converged
    S, alpha = gram / d, 2 * member.lam2 / (LAM * d)
    inverse = np.linalg.inv(P)
    G = S - inverse
    sub = np.where(P != 0, G + alpha * np.sign(P), np.sign(G) * np.maximum(np.abs(G) - alpha, 0))
    expected = np.linalg.norm(sub) / max(1.0, np.linalg.norm(inverse))
    got = float(member.omega_residual(jnp.asarray(gram), LAM, d, jnp.asarray(P)))
    assert got < 1e-9 and np.isclose(got, expected, rtol=1e-6, atol=1e-14)
    assert float(member.omega_residual(jnp.asarray(gram), LAM, d, jnp.eye(reg.n_tasks))) > 1e-3
    with pytest.warns(ConvergenceWarning, match="Ω-step is not exact"):
        bad = F.fit_family(reg, _TruncatedGlmtl(lam2=0.05), LAM, extrapolation=0)
    assert not bad.converged


def test_glmtl_unconverged_warning_reports_the_last_omega_steps_residual(reg):
    """An alternation stopped unconverged (here at max_iter, with the early, inexact Ω-steps)
    says in its warning how far its last Ω-step is from exact: the certificate's relative KKT
    residual of the returned P at the returned W."""
    member = F.SparsePrecision(lam2=0.05)
    with pytest.warns(ConvergenceWarning, match="stopped unconverged after 2") as caught:
        res = F.fit_family(reg, member, LAM, max_iter=2)
    assert not res.converged
    message = next(str(w.message) for w in caught if "unconverged" in str(w.message))
    reported = float(message.split("last Ω-step's relative KKT residual ")[1])
    gram = jnp.asarray(res.W.T @ res.W)
    expected = float(member.omega_residual(gram, LAM, reg.n_features, jnp.asarray(res.state)))
    assert np.isclose(reported, expected, rtol=1e-2)


def test_reconstruction_unconverged_warning_carries_its_drift_hint(reg, monkeypatch):
    """An unconverged reconstruction fit appends the member's drift hint for its returned A
    (here a marker; the singular-I - A check itself is tested in test_amtl.py)."""
    member = F.SparseReconstruction(lam2=0.05, zero_diagonal=True)
    seen = []
    monkeypatch.setattr(F.SparseReconstruction, "drift_hint",
                        lambda self, state: seen.append(np.asarray(state)) or "; MARKER")
    with pytest.warns(ConvergenceWarning, match="stopped unconverged after 2") as caught:
        res = F.fit_family(reg, member, LAM, max_iter=2)
    message = next(str(w.message) for w in caught if "unconverged" in str(w.message))
    assert message.endswith("; MARKER")
    np.testing.assert_array_equal(seen[-1], res.state)
    monkeypatch.undo()
    singular = (np.ones((reg.n_tasks,) * 2) - np.eye(reg.n_tasks)) / (reg.n_tasks - 1)
    assert "I - A is numerically singular" in member.drift_hint(singular)


def _glasso_objective(S, alpha, P):
    return np.sum(S * P) - np.linalg.slogdet(P)[1] + alpha * np.abs(P).sum()


@pytest.mark.parametrize("m,d,alpha,P0", [(6, 10, 0.15, "eye"), (20, 3, 0.01, "eye"),
                                          (20, 3, 0.01, "perturbed"), (20, 3, 0.01, "dual"),
                                          (60, 20, 0.02, "eye")],
                         ids=["full-rank", "rank-3", "rank-3-warm", "rank-3-dual-warm",
                              "m60-rank-20"])
def test_glmtl_omega_step_is_graphical_lasso(m, d, alpha, P0):
    """The graphical lasso (all entries penalised) matches CVXPY, also for a singular S
    (d < m, small α: an ill-conditioned solution), from a warm start near the optimum, and
    from the solution for a nearby S0 given with its S0 (the dual warm start)."""
    rng = np.random.default_rng(7)
    Wt = rng.normal(size=(d, m))
    S = Wt.T @ Wt / d
    P = cp.Variable((m, m), PSD=True)
    ref = _solve(cp.Problem(cp.Minimize(cp.trace(S @ P) - cp.log_det(P)
                                        + alpha * cp.sum(cp.abs(P)))))
    start, S0 = np.eye(m), None
    if P0 == "perturbed":
        start = P.value + 0.1 * np.diag(np.diag(P.value))
    if P0 == "dual":  # the previous outer iteration's S and its solution
        W0 = Wt + 0.01 * rng.normal(size=Wt.shape)
        S0 = jnp.asarray(W0.T @ W0 / d)
        start = OS.graphical_lasso(S0, alpha, jnp.eye(m))
    P_ours = np.asarray(OS.graphical_lasso(jnp.asarray(S), alpha, jnp.asarray(start), S0))
    assert _rel(_glasso_objective(S, alpha, P_ours), ref) < 1e-9
    assert np.array_equal(P_ours, P_ours.T)
    assert np.linalg.eigvalsh(P_ours).min() > 0
    kkt = np.asarray(OS.graphical_lasso_subgradient(S, alpha, P_ours))
    assert np.linalg.norm(kkt) < 1e-5 * np.linalg.norm(np.linalg.inv(P_ours))
    assert np.sum(P_ours == 0) > 0  # exact zeros (complementary slackness)


def test_reconstruction_step_is_a_lasso():
    rng = np.random.default_rng(8)
    m = 6
    Wt = rng.normal(size=(4, m))
    G = Wt.T @ Wt
    lam2 = 0.3
    for zero_diag in (False, True):
        mask = 1.0 - np.eye(m) if zero_diag else np.ones((m, m))
        A_ours = np.asarray(OS.reconstruction_step(jnp.asarray(G), LAM, lam2, jnp.zeros((m, m)),
                                                  jnp.asarray(mask)))
        A = cp.Variable((m, m))
        cons = [cp.diag(A) == 0] if zero_diag else []
        ref = _solve(cp.Problem(cp.Minimize(LAM / 2 * cp.sum_squares(Wt - Wt @ A)
                                            + lam2 * cp.sum(cp.abs(A))), cons))
        ours = LAM / 2 * np.sum((Wt - Wt @ A_ours) ** 2) + lam2 * np.abs(A_ours).sum()
        assert _rel(ours, ref) < 1e-7


def test_column_lassos_by_working_sets_match_cvxpy_and_the_interior_point():
    """40 column lassos sharing a singular Gram matrix (rank 6), with sets of 4 entries so that
    the sets are refreshed and grown over several rounds; cold and warm (another λ₂'s
    support) starts; the free and the zero diagonal. The objective matches cvxpy and the A
    matches the interior point on every entry (the former A-step)."""
    from bayesmtl.inference.solvers import column_lassos

    rng = np.random.default_rng(11)
    m, d, lam2 = 40, 6, 0.05
    Wt = rng.normal(size=(d, 3)) @ rng.normal(size=(3, m)) + 0.3 * rng.normal(size=(d, m))
    G = Wt.T @ Wt
    H = jnp.asarray(LAM * G)
    for zero_diag in (False, True):
        mask = ~np.eye(m, dtype=bool) if zero_diag else np.ones((m, m), bool)
        A = cp.Variable((m, m))
        cons = [cp.diag(A) == 0] if zero_diag else []
        ref = _solve(cp.Problem(cp.Minimize(LAM / 2 * cp.sum_squares(Wt - Wt @ A)
                                            + lam2 * cp.sum(cp.abs(A))), cons))
        other, *_ = column_lassos(H, -H, 10 * lam2, mask)
        A_ip = np.asarray(OS._reconstruction_interior_point(jnp.asarray(G), LAM, lam2,
                                                           jnp.asarray(mask, float), d))
        for start in (None, other):
            A_ws, stopped, rounds = column_lassos(H, -H, lam2, mask, start, size=4)
            A_ws = np.asarray(A_ws)
            assert stopped and rounds > 1
            assert np.all(A_ws[~mask] == 0)
            ours = LAM / 2 * np.sum((Wt - Wt @ A_ws) ** 2) + lam2 * np.abs(A_ws).sum()
            assert _rel(ours, ref) < 1e-9
            assert np.max(np.abs(A_ws - A_ip)) < 1e-8


def test_column_lassos_reports_a_round_limit(monkeypatch):
    """A limit on the rounds or on the set size that leaves violations is reported, not
    hidden, and the A-step then falls back on the interior point on every entry (same A)."""
    from bayesmtl.inference import solvers

    rng = np.random.default_rng(12)
    m = 30
    Wt = rng.normal(size=(5, m))
    G = jnp.asarray(Wt.T @ Wt)
    ones = jnp.ones((m, m))
    _, stopped, rounds = solvers.column_lassos(LAM * G, -LAM * G, 0.01, ones > 0, size=2,
                                               max_rounds=1)
    assert not stopped and rounds == 1
    _, stopped, _ = solvers.column_lassos(LAM * G, -LAM * G, 0.01, ones > 0, size=2,
                                          max_size=3)  # supports of 5 need sets of 8
    assert not stopped
    monkeypatch.setattr(OS, "_WORKING_SET_MIN_WORK", 0)  # working sets even at this size,
    monkeypatch.setattr(OS, "_WORKING_SET_SIZE", 4)  # within their size limit (m·m²/2)^⅓
    calls = []

    def recorded(*args, **kwargs):
        calls.append((kwargs, solvers.column_lassos(*args, **kwargs)))
        return calls[-1][1]

    monkeypatch.setattr(OS, "column_lassos", recorded)
    A_ws = np.asarray(OS.reconstruction_step(G, LAM, 0.01, jnp.zeros((m, m)), ones))
    [(kwargs, (_, stopped, _))] = calls
    assert kwargs == {"size": 4, "max_size": 23} and stopped
    monkeypatch.setattr(OS, "column_lassos", lambda H, C, *a, **k: (C * 0, False, 50))
    A_ip = np.asarray(OS.reconstruction_step(G, LAM, 0.01, jnp.zeros((m, m)), ones))
    assert np.max(np.abs(A_ws - A_ip)) < 1e-8


def test_reconstruction_fit_with_working_set_a_steps(monkeypatch):
    """A reconstruction fit whose A-steps go through the working sets (40 tasks, warm-started
    from the previous A): F never rises, and the returned A is the interior point's on the
    final Gram matrix (1e-7), i.e. the alternation ends at an exact A-step."""
    from bayesmtl.inference import solvers

    rng = np.random.default_rng(13)
    m, d = 40, 6
    Wt = rng.normal(size=(d, 2)) @ rng.normal(size=(2, m)) + 0.3 * rng.normal(size=(d, m))
    tasks = []
    for i in range(m):
        X = rng.normal(size=(25, d))
        tasks.append((X, X @ Wt[:, i] + rng.normal(size=25)))
    data = MultiTaskData.from_tasks(tasks)
    monkeypatch.setattr(OS, "_WORKING_SET_MIN_WORK", 0)  # the sets, at a test's size
    monkeypatch.setattr(OS, "_WORKING_SET_SIZE", 4)
    outcomes = []

    def recorded(*args, **kwargs):
        out = solvers.column_lassos(*args, **kwargs)
        outcomes.append(out[1])
        return out

    monkeypatch.setattr(OS, "column_lassos", recorded)
    res = F.fit_family(data, F.SparseReconstruction(lam2=0.05), LAM)
    assert res.converged and len(outcomes) > 3 and all(outcomes)
    assert np.all(np.diff(res.history) <= 1e-10 * np.abs(res.history[:-1]))
    G = jnp.asarray(res.W.T @ res.W)
    ones = jnp.ones((m, m))
    A_ip = OS._reconstruction_polish(LAM * G, 0.05, OS._reconstruction_interior_point(
        G, LAM, 0.05, ones, d), ones, 1000, 1e-6)
    np.testing.assert_allclose(res.state, A_ip, rtol=0, atol=1e-7)


@pytest.mark.parametrize("member", [F.SparsePrecision(lam2=0.2),
                                    F.SparseReconstruction(lam2=0.2)], ids=["glmtl", "recon"])
def test_biconvex_members_reach_a_blockwise_optimum(reg, member):
    """Biconvex members: at the returned point, W is optimal given Ω (cvxpy) and Ω optimal
    given W (its own exactly-checked step), and the objective history never increases."""
    m, d = reg.n_tasks, reg.n_features
    res = F.fit_family(reg, member, LAM)
    assert res.converged
    assert np.all(np.diff(res.history) <= 1e-10 * np.abs(res.history[:-1]))
    W, b = cp.Variable((d, m)), cp.Variable(m)
    P = res.precision
    root = np.linalg.cholesky(P + 1e-12 * np.eye(m))
    ref = _solve(cp.Problem(cp.Minimize(_cvx_data_term(reg, W, b)
                                        + LAM / 2 * cp.sum_squares(W @ root))))
    ours = data_term(reg, res.W, res.b) + LAM / 2 * np.trace(res.W @ P @ res.W.T)
    assert _rel(ours, ref) < 1e-6
    # Ω-step at the returned W does not move Ω
    state = member.omega_step(jnp.asarray(res.W.T @ res.W), LAM, d, jnp.asarray(res.state))
    assert np.max(np.abs(np.asarray(state) - res.state)) < 1e-5 * max(1, np.abs(res.state).max())


def test_extrapolated_alternation_reaches_the_plain_alternations_point():
    """glMTL with more tasks than features and a task-level feature (School's regime, where
    the plain alternation drifts slowly): the extrapolated alternation stops at the point the
    plain one reaches, with F monotone, in under half the outer iterations."""
    rng = np.random.default_rng(11)
    m, d = 20, 4
    base = rng.normal(size=d)
    tasks = []
    for i in range(m):
        X = rng.normal(size=(8, d))
        X[:, 0] = 1.0 + 0.1 * i  # constant within the task
        tasks.append((X, X @ (base + 0.5 * rng.normal(size=d)) + 0.5 * rng.normal(size=8)))
    data = MultiTaskData.from_tasks(tasks)
    member = F.SparsePrecision(lam2=0.1)
    plain = F.fit_family(data, member, 1.0, extrapolation=0.0, max_iter=5000, tol=1e-12)
    fast = F.fit_family(data, member, 1.0, max_iter=5000, tol=1e-12)
    assert plain.converged and fast.converged
    assert not plain.extrapolated.any() and fast.extrapolated.sum() > fast.n_iter // 2
    assert np.all(np.diff(fast.history) <= 1e-12 * np.abs(fast.history[:-1]))
    assert _rel(fast.objective, plain.objective) < 1e-9
    assert np.max(np.abs(fast.W - plain.W)) < 1e-4 * np.abs(plain.W).max()
    assert fast.n_iter < plain.n_iter / 2
    with pytest.raises(ValueError, match="extrapolation"):
        F.fit_family(data, member, 1.0, extrapolation=-0.5)


def test_logistic_member_equals_cvxpy():
    rng = np.random.default_rng(4)
    m, d = 3, 4
    tasks = []
    w_true = rng.normal(size=d)
    for i in range(m):
        X = rng.normal(size=(30 + 5 * i, d))
        p = 1 / (1 + np.exp(-(X @ (w_true + 0.3 * rng.normal(size=d)))))
        tasks.append((X, (rng.uniform(size=len(p)) < p).astype(float)))
    data = MultiTaskData.from_tasks(tasks, kind="classification")
    member = F.Clustered(a=1.0, b=0.1, c=0.8)
    res = F.fit_family(data, member, 0.2)
    W, b, omega = cp.Variable((d, m)), cp.Variable(m), cp.Variable((m, m), PSD=True)
    ref = _solve(cp.Problem(
        cp.Minimize(_cvx_data_term(data, W, b) + 0.2 / 2 * cp.matrix_frac(W.T, omega)),
        [cp.trace(omega) == 1.0, omega >> 0.1 * np.eye(m), omega << 0.8 * np.eye(m)]),
        tol=1e-9)
    assert _rel(res.objective, ref) < 1e-6


def test_pooled_is_one_ridge_regression(reg):
    res = F.fit_pooled(reg, LAM)
    assert np.allclose(res.W, res.W[:, :1])
    # closed form of Σ_i (1/n_i) Σ_j (xᵀw + b - y)² + (λ/2)‖w‖²
    Xa = np.column_stack([reg.X, np.ones(len(reg.y))])
    wts = row_weights(reg.task, reg.n_tasks, "mean")
    H = 2 * (Xa * wts[:, None]).T @ Xa + LAM * np.diag([1.0] * reg.n_features + [0.0])
    theta = np.linalg.solve(H, 2 * (Xa * wts[:, None]).T @ reg.y)
    assert np.max(np.abs(res.W[:, 0] - theta[:-1])) < 1e-7
    assert np.max(np.abs(res.b - theta[-1])) < 1e-7


# -------------------------------------------------------------------- sampling


@pytest.mark.parametrize("member", [F.Clustered(a=1.0, b=0.05, c=0.9),
                                    F.SparseCovariance(lam2=1.0, eps=0.0)],
                         ids=["clustered", "spats"])
def test_sampling_exports_task_coords(member):
    data = make_regression(seed=3, d=2, sizes=(20, 25, 30))[0]
    mapfit = F.fit_family(data, member, 1.0)
    dt = F.sample_family(data, member, 1.0, num_warmup=200, num_samples=200, num_chains=2,
                         seed=1, init=mapfit, target_accept_prob=0.9)
    post = dt["posterior"]
    assert list(post["omega_corr"].coords["task"].values) == list(data.task_names)
    assert post["W"].shape == (2, 200, 2, 3)
    omega = post["omega"].values
    if isinstance(member, F.Clustered):
        assert np.allclose(np.trace(omega, axis1=-2, axis2=-1), 1.0)
        assert np.linalg.eigvalsh(omega).max() <= member.c + 1e-9
    from arviz_stats import rhat
    assert float(rhat(dt, var_names=["W"])["W"].max()) < 1.05


# -------------------------------------------------------------------- bad input


@pytest.mark.parametrize("member, message", [
    (F.GraphLaplacian(np.array([[0, 1, 0], [0, 0, 1], [0, 1, 0], [1, 1, 1.0]])), "square"),
    (F.GraphLaplacian(np.array([[0, 1, 0, 0], [0, 0, 1, 0], [0, 1, 0, 0], [0, 0, 0, 0.]])),
     "symmetric"),
    (F.GraphLaplacian(-np.ones((4, 4))), "non-negative"),
    (F.GraphLaplacian(np.ones((3, 3))), "3×3 but there are 4 tasks"),
    (F.GraphLaplacian(np.ones((4, 4)), ridge=-1.0), "ridge"),
    (F.Clustered(a=1.0, b=0.5, c=0.2), "b < c"),
    (F.Clustered(a=10.0, b=0.1, c=0.5), "m·b ≤ a ≤ m·c"),
    (F.Clustered(a=1.0, b=0.0, c=0.5), "b must be a positive"),
    (F.SparsePrecision(lam2=0.0), "λ₂"),
    (F.SparseCovariance(lam2=-1.0), "λ₂"),
    (F.SparseReconstruction(lam2=np.nan), "λ₂"),
])
def test_bad_member_raises(reg, member, message):
    with pytest.raises(PriorError, match=message):
        F.fit_family(reg, member, LAM)


def test_negative_lambda_raises(reg):
    with pytest.raises(ValueError, match="λ₁"):
        F.fit_family(reg, F.mean_regularised(reg.n_tasks), -1.0)


@pytest.mark.parametrize("member", [F.GraphLaplacian(np.ones((3, 3)), ridge=0.5),
                                    F.SparsePrecision(lam2=1.0),
                                    F.SparseReconstruction(lam2=2.0, zero_diagonal=True)],
                         ids=["graph", "glmtl", "recon"])
def test_sampling_other_members(member):
    """NUTS on the remaining members' Gibbs joints (proper here: ridge > 0; λ > 1 - 2/d for
    glMTL; Gaussian likelihood with full-rank designs for the reconstruction form)."""
    data = make_regression(seed=4, d=2, sizes=(20, 25, 30))[0]
    dt = F.sample_family(data, member, 1.0, num_warmup=100, num_samples=100, num_chains=1,
                         seed=2, init=F.fit_family(data, member, 1.0))
    post = dt["posterior"]
    omega = post["omega"].values
    assert omega.shape == (1, 100, 3, 3) and np.all(np.isfinite(omega))
    assert list(post["omega"].coords["task_"].values) == list(data.task_names)
    if isinstance(member, F.SparseReconstruction):
        assert post["reconstruction"].dims[-2:] == ("source_task", "target_task")
    # draws move: the posterior is not stuck at the MAP start
    assert float(post["W"].std(("chain", "draw")).min()) > 1e-3


class _RoundoffGlmtl(F.SparsePrecision):
    """glMTL whose warm-started Ω-steps return the exact P with one zero pair moved off zero
    by 1e-14: F the same to round-off, the KKT residual of the order of α (a solver stop at
    round-off, as a warm-started graphical lasso gave on a Landmine-sized CV fold)."""

    def omega_step(self, gram, lam, d, state, previous_gram=None, accuracy=None):
        P = super().omega_step(gram, lam, d, state, previous_gram, accuracy)
        if previous_gram is None:
            return P
        i, j = np.argwhere(np.triu(np.asarray(P) == 0, 1))[0]
        return P.at[i, j].add(1e-14).at[j, i].add(1e-14)


def test_glmtl_uncertified_last_omega_step_is_solved_again_from_the_start(reg):
    """An alternation that stops with a warm-started Ω-step stuck at round-off gets its last
    Ω-step solved again from the initial state: certified, F unchanged to round-off, the fit
    converged (before, it warned and reported unconverged)."""
    member = _RoundoffGlmtl(lam2=0.5)
    res = F.fit_family(reg, member, LAM)
    exact = F.fit_family(reg, F.SparsePrecision(lam2=0.5), LAM)
    d = reg.n_features
    assert res.converged
    assert float(member.omega_residual(jnp.asarray(res.W.T @ res.W), LAM, d,
                                       jnp.asarray(res.precision))) <= 1e-6
    assert abs(res.objective - exact.objective) <= 1e-9 * abs(exact.objective)
