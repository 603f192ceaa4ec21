"""AMTL (Lee, Yang & Hwang 2016): objective (1), exact B-step, Theorem 1, curriculum, NUTS,
plot and bad inputs."""

import warnings

import cvxpy as cp
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy.optimize import minimize

import bayesmtl  # noqa: F401  (x64 before any JAX work)
from bayesmtl import MultiTaskData
from bayesmtl.data import SingleClassWarning
from bayesmtl.datasets.synthetic import (
    EASY_TASKS,
    GROUPS,
    HARD_TASKS,
    amtl_task_parameters,
    load_amtl_imbalanced,
    load_amtl_synthetic,
)
from bayesmtl.errors import (
    ConvergenceWarning,
    HyperparameterError,
    TooFewSamplesError,
    TransferGraphError,
)
from bayesmtl.inference.map import neg_log_joint
from bayesmtl.models import amtl as A
from bayesmtl.models.reconstruction import SparseReconstruction, singular_span_hint

# ----------------------------------------------------------------------------- helpers


def paper_objective_1(data, W, b, B, lam, mu, loss, variant):
    """Objective (1) written from the paper, task by task:
    Σ_t (1 + μ‖b_t^o‖₁) L'_t(w_t) + λ ‖w_t - Σ_{s≠t} B_st w_s‖²,  L'_t = c_t L_t, with the
    mean squared or logistic loss of Section 3; "noloss": Σ_t L_t + μ Σ B + λ‖…‖²."""
    m = data.n_tasks
    total = 0.0
    for t, (X, y) in enumerate(data.tasks()):
        f = X @ W[:, t] + b[t]
        if loss == "squared":
            L = np.mean((y - f) ** 2)
        else:  # (1 - y) <x, w> + log(1 + exp(-<x, w>)), written as in the paper
            L = np.mean((1 - y) * f + np.log1p(np.exp(-f)))
        if variant == "imbalance":
            L /= np.sqrt(len(y))
        outgoing = sum(B[t, s] for s in range(m) if s != t)
        recon = W[:, t] - sum(B[s, t] * W[:, s] for s in range(m) if s != t)
        if variant == "noloss":
            total += L + mu * outgoing
        else:
            total += (1 + mu * outgoing) * L
        total += lam * recon @ recon
    return total


def make_tasks(seed, kind="regression", sizes=(12, 15, 20, 9), d=4):
    rng = np.random.default_rng(seed)
    w = rng.normal(size=d)
    tasks = []
    for n in sizes:
        X = rng.normal(size=(n, d))
        f = X @ (w + 0.3 * rng.normal(size=d))
        y = f + rng.normal(size=n) if kind == "regression" else (
            rng.random(n) < 1 / (1 + np.exp(-f))).astype(float)
        if kind == "classification":
            y[:2] = [0.0, 1.0]  # both classes in every task
        tasks.append((X, y))
    return MultiTaskData.from_tasks(tasks, [f"t{i}" for i in range(len(sizes))], kind=kind)


def random_graph(rng, m, symmetric=False):
    B = rng.random((m, m)) * (rng.random((m, m)) < 0.6)
    if symmetric:
        B = np.triu(B, 1) + np.triu(B, 1).T
    np.fill_diagonal(B, 0.0)
    return B


# ----------------------------------------------------------------------------- objective (1)

OBJECTIVE_CASES = [("amtl", "regression"), ("amtl", "classification"),
                   ("imbalance", "regression"), ("noloss", "regression"),
                   ("smtl", "regression"), ("noloss", "classification")]


@pytest.mark.parametrize("variant,kind", OBJECTIVE_CASES)
def test_negative_log_joint_is_objective_1(variant, kind):
    """-log p(W, b, B, y) of the MAP form = objective (1) up to one additive constant, and the
    solvers' objective equals (1) exactly."""
    data = make_tasks(1, kind)
    loss = "logistic" if kind == "classification" else "squared"
    symmetric = variant == "smtl"
    args, kwargs = A.map_model_inputs(data, variant)
    kwargs.update(lam=0.7, mu=1.3, loss=loss, loss_dependent=variant != "noloss",
                  symmetric=symmetric)
    arrays = A.task_arrays(data, variant, True)
    rng = np.random.default_rng(2)
    m, d = data.n_tasks, data.n_features
    free = np.triu(np.ones((m, m), bool), 1) if symmetric else ~np.eye(m, dtype=bool)
    diffs = []
    for _ in range(4):
        W, b = rng.normal(size=(d, m)), rng.normal(size=m)
        B = random_graph(rng, m, symmetric)
        paper = paper_objective_1(data, W, b, B, 0.7, 1.3, loss, variant)
        params = {"W": jnp.asarray(W), "b": jnp.asarray(b),
                  A.graph_site_name(symmetric): jnp.asarray(B[free])}
        diffs.append(float(neg_log_joint(A.amtl_map_model, args, kwargs, params)) - paper)
        solver = A.amtl_objective(jnp.asarray(np.c_[W.T, b]), jnp.asarray(B), arrays, 0.7, 1.3,
                                  loss, d, variant != "noloss")
        assert float(solver) == pytest.approx(paper, rel=1e-12)
    assert np.ptp(diffs) < 1e-9 * max(1.0, abs(diffs[0]))


# ----------------------------------------------------------------------------- B-step (3)


def cvxpy_b_step(W, source_loss, lam, mu, symmetric=False):
    """Problem (3) column by column (or the symmetric problem as a whole) with cvxpy."""
    d, m = W.shape
    if symmetric:
        B = cp.Variable((m, m), symmetric=True)
        obj = (mu * cp.sum(cp.multiply(np.outer(source_loss, np.ones(m)), B))
               + lam * cp.sum_squares(W - W @ B))
        cons = [B >= 0, cp.diag(B) == 0]
        prob = cp.Problem(cp.Minimize(obj), cons)
        prob.solve(solver=cp.CLARABEL)
        return B.value, prob.value
    out = np.zeros((m, m))
    total = 0.0
    for t in range(m):
        b = cp.Variable(m)
        prob = cp.Problem(cp.Minimize(mu * source_loss @ b + lam * cp.sum_squares(W[:, t] - W @ b)),
                          [b >= 0, b[t] == 0])
        prob.solve(solver=cp.CLARABEL)
        out[:, t] = b.value
        total += prob.value
    return out, total


def b_step_objective(W, B, source_loss, lam, mu):
    return mu * np.sum(source_loss[:, None] * B) + lam * np.sum((W - W @ B) ** 2)


B_STEP_CASES = [("random", False), ("collinear", False), ("random", True)]


@pytest.mark.parametrize("solve,cg_steps", [("factor", None), ("cg", None), ("auto", None),
                                            ("auto", 1)])
@pytest.mark.parametrize("kind", ["regression", "classification"])
def test_w_step_reaches_the_optimum_of_problem_2(kind, solve, cg_steps, monkeypatch):
    """The W-step (problem (2), B fixed), by the factored Newton system, by block-Jacobi CG
    and by the default (CG, factored when CG is slow), reaches the minimum that scipy's
    L-BFGS finds on problem (2) written from the paper (cg_steps = 1: "auto" falls back to
    the factored system after one CG step)."""
    if cg_steps is not None:
        monkeypatch.setattr(A, "CG_BEFORE_FACTORING", cg_steps)
    data = make_tasks(4, kind)
    m, d = data.n_tasks, data.n_features
    B = random_graph(np.random.default_rng(5), m)
    lam, mu, loss = 0.3, 0.5, "squared" if kind == "regression" else "logistic"
    arrays = A.task_arrays(data, "amtl", True)
    theta = A.w_step(jnp.zeros((m, d + 1)), jnp.asarray(B), arrays, lam, mu, loss, d,
                     solve=solve)

    def problem_2(x):  # W, b free; B and the tempering (1 + μ‖b_t^o‖₁) fixed
        theta_ = x.reshape(m, d + 1)
        return paper_objective_1(data, theta_[:, :d].T, theta_[:, d], B, lam, mu, loss, "amtl")

    reference = minimize(problem_2, np.zeros(m * (d + 1)), method="L-BFGS-B",
                         options={"ftol": 1e-15, "gtol": 1e-11, "maxiter": 10000})
    ours = problem_2(np.asarray(theta).ravel())
    assert ours <= reference.fun + 1e-10 * abs(reference.fun)
    np.testing.assert_allclose(np.asarray(theta).ravel(), reference.x, atol=1e-4)


def test_squared_w_step_shares_one_factor_and_can_skip_cg(monkeypatch):
    """Squared loss: the W-step without its CG attempt (``try_cg=False``, what the
    alternation passes after a factored step) factors once and lands where the forced
    factorisation and CG do; with CG first on a system CG solves it reports no factoring, and
    with a one-step CG budget it reports the factorisation."""
    data = make_tasks(4, "regression")
    m, d = data.n_tasks, data.n_features
    B = jnp.asarray(random_graph(np.random.default_rng(5), m))
    arrays = A.task_arrays(data, "amtl", True)
    theta0 = jnp.zeros((m, d + 1))
    args = (theta0, B, arrays, 0.3, 0.5, "squared", d)
    by_factor = A.w_step(*args, solve="factor")
    by_cg = A.w_step(*args, solve="cg")
    skipped, factored = A.w_step(*args, try_cg=jnp.asarray(False), full=True)
    assert bool(factored)
    np.testing.assert_allclose(skipped, by_factor, rtol=0, atol=1e-10)
    np.testing.assert_allclose(skipped, by_cg, rtol=0, atol=1e-8)
    theta, factored = A.w_step(*args, try_cg=jnp.asarray(True), full=True)
    assert not bool(factored)
    np.testing.assert_allclose(theta, by_cg, rtol=0, atol=1e-8)
    monkeypatch.setattr(A, "CG_BEFORE_FACTORING", 1)
    theta, factored = A.w_step(*args, full=True)
    assert bool(factored)
    np.testing.assert_allclose(theta, by_factor, rtol=0, atol=1e-10)


def test_singular_span_hint_names_a_singular_i_minus_b():
    """The drift hint of AMTL and the reconstruction member fires where I - B is singular
    (every column of B sums to one: 1ᵀ(I - B) = 0) and not where it is well conditioned."""
    m = 5
    B = (np.ones((m, m)) - np.eye(m)) / (m - 1)
    hint = singular_span_hint(B, "B")
    assert "I - B is numerically singular" in hint and "early stopping" in hint
    assert singular_span_hint(np.zeros((m, m))) == ""
    assert singular_span_hint(0.5 * B) == ""
    assert singular_span_hint((1 - 1e-6) * B) == ""  # smallest singular value 1e-6
    assert singular_span_hint((1 - 1e-10) * B) != ""
    assert SparseReconstruction().drift_hint(B) == singular_span_hint(B)


def test_newton_system_is_the_hessian_of_problem_2():
    """newton_system assembles blockdiag + coupling ⊗ diag(E) in θ's raveled order (checked
    against jax.hessian of problem (2))."""
    data = make_tasks(6, "classification")
    m, d = data.n_tasks, data.n_features
    B = jnp.asarray(random_graph(np.random.default_rng(7), m))
    arrays = A.task_arrays(data, "noloss", True)
    theta = jnp.asarray(np.random.default_rng(8).normal(size=(m, d + 1)))
    lam = 0.7

    def problem_2(x):
        theta_ = x.reshape(m, d + 1)
        W = theta_[:, :d].T
        return (jnp.sum(A.task_losses(theta_, arrays, "logistic"))
                + lam * jnp.sum((W - W @ B) ** 2))

    p = A.task_scores(theta, arrays)
    g2 = arrays.weight * jax.nn.sigmoid(p) * (1 - jax.nn.sigmoid(p))
    blocks = jnp.einsum("tni,tnj->tij", arrays.X * g2[:, :, None], arrays.X)
    IB = jnp.eye(m) - B
    E = jnp.concatenate([jnp.ones(d), jnp.zeros(1)])
    H = A.newton_system(blocks, 2 * lam * IB @ IB.T, E)
    np.testing.assert_allclose(H, jax.hessian(problem_2)(theta.ravel()), atol=1e-12)


@pytest.mark.parametrize("kind,symmetric", B_STEP_CASES)
def test_b_step_matches_cvxpy(kind, symmetric):
    rng = np.random.default_rng(5)
    d, m = 8, 6
    if kind == "random":
        W = rng.normal(size=(d, m))
    else:  # two groups of nearly collinear tasks, as in the synthetic set
        means = rng.normal(size=(d, 2)) * 3
        W = means[:, [0, 0, 0, 1, 1, 1]] + 0.3 * rng.normal(size=(d, m))
    source_loss = rng.uniform(0.5, 5.0, size=m)
    lam, mu = 0.8, 0.4
    B, res = A.transfer_graph_step(W, source_loss, lam, mu, symmetric=symmetric)
    B = np.asarray(B)
    ref, ref_value = cvxpy_b_step(W, source_loss, lam, mu, symmetric)
    ours = b_step_objective(W, B, source_loss, lam, mu)
    assert bool(res.converged)
    assert (B >= 0).all() and np.all(np.diag(B) == 0)
    if symmetric:
        np.testing.assert_allclose(B, B.T)
    assert abs(ours - ref_value) <= 1e-6 * abs(ref_value)
    assert ours <= b_step_objective(W, ref, source_loss, lam, mu) * (1 + 1e-6)



def test_b_step_is_exact_when_tasks_outnumber_features():
    """d < m makes every column's non-negative lasso degenerate (G = WᵀW has rank d): the
    directed B-step must still reach cvxpy's optimum to 1e-9 with a small KKT residual and
    exact zeros (coordinate descent alone was 5e-4 above it after its 1,000 sweeps here)."""
    rng = np.random.default_rng(0)
    d, m, lam, mu = 9, 29, 0.1, 0.01
    W = rng.normal(size=(d, m))
    source_loss = rng.uniform(0.3, 0.7, size=m)
    B, res = A.transfer_graph_step(W, source_loss, lam, mu)
    B = np.asarray(B)
    total = 0.0
    for t in range(m):
        b = cp.Variable(m)
        prob = cp.Problem(cp.Minimize(mu * source_loss @ b + lam * cp.sum_squares(W[:, t] - W @ b)),
                          [b >= 0, b[t] == 0])
        prob.solve(solver=cp.CLARABEL, tol_gap_abs=1e-12, tol_gap_rel=1e-12, tol_feas=1e-12)
        total += prob.value
    ours = b_step_objective(W, B, source_loss, lam, mu)
    assert bool(res.converged) and float(res.residual) <= 1e-8
    assert (B >= 0).all() and np.all(np.diag(B) == 0)
    assert 0 < np.mean(B == 0) < 1
    assert ours <= total + 1e-9 * total
    assert total - ours <= 1e-9 * total


def test_nonnegative_qp_batches_agree_and_certify():
    """The interior point gives the same solution in one batch and column by column, with
    its certificate (duality gap, dual residual) at the tolerance and x ≥ 0, s ≥ 0."""
    from bayesmtl.inference.solvers import nonnegative_qp

    rng = np.random.default_rng(3)
    V = rng.normal(size=(4, 12))
    Q = V.T @ V  # rank 4
    fixed = np.zeros((12, 5), bool)
    fixed[2, :] = True
    # c = Qz + |e|: bounded below (cᵀv = |e|ᵀv ≥ 0 for v ≥ 0 with Qv = 0)
    C = Q @ rng.normal(size=(12, 5)) + np.abs(rng.normal(size=(12, 5)))
    C[:, 0] = np.abs(C[:, 0])  # x = 0 is optimal for this column
    x, res = nonnegative_qp(V, C, fixed)
    x1, res1 = nonnegative_qp(V, C, fixed, max_entries=48)
    assert bool(res.converged) and bool(res1.converged)
    x, x1, s = np.asarray(x), np.asarray(x1), np.asarray(res.multiplier)
    assert (x >= 0).all() and (s[~fixed] >= 0).all() and np.all(x[fixed] == 0)
    value = lambda x: 0.5 * np.sum(x * (Q @ x)) + np.sum(C * x)  # noqa: E731
    assert value(x1) == pytest.approx(value(x), rel=1e-10, abs=1e-10)
    np.testing.assert_allclose((Q @ x + C - s)[~fixed], 0.0, atol=1e-9)
    for j in range(5):  # each column against cvxpy
        z = cp.Variable(12)
        prob = cp.Problem(cp.Minimize(0.5 * cp.quad_form(z, cp.psd_wrap(Q)) + C[:, j] @ z),
                          [z >= 0, z[2] == 0])
        prob.solve(solver=cp.CLARABEL, tol_gap_abs=1e-12, tol_gap_rel=1e-12, tol_feas=1e-12)
        mine = 0.5 * x[:, j] @ Q @ x[:, j] + C[:, j] @ x[:, j]
        assert mine == pytest.approx(prob.value, rel=1e-9, abs=1e-10)


def test_nonnegative_active_set_reaches_the_kkt_point_from_wrong_supports():
    """The active-set polish reaches the optimum of min ½bᵀQb + cᵀb, b ≥ 0 (KKT conditions
    coded here; objective against Clarabel) on a degenerate Q (rank 4 of 12): from the
    interior point with its zeros set, from a start with an entry too many (it must leave the
    face) and from zero (entries must join it); masked entries stay 0, and with
    ``max_support`` 0 every column keeps its start."""
    from bayesmtl.inference.solvers import nonnegative_active_set, nonnegative_qp

    rng = np.random.default_rng(7)
    p, k = 12, 6
    V = rng.normal(size=(4, p))
    Q = V.T @ V
    C = Q @ rng.normal(size=(p, k)) + np.abs(rng.normal(size=(p, k)))
    mask = np.ones((p, k))
    mask[3, :] = 0.0
    x, qp = nonnegative_qp(V, C, mask == 0)
    interior = np.where(np.asarray(x) > np.asarray(qp.multiplier), np.asarray(x), 0.0)
    reference = []
    for j in range(k):
        z = cp.Variable(p)
        prob = cp.Problem(cp.Minimize(0.5 * cp.quad_form(z, cp.psd_wrap(Q)) + C[:, j] @ z),
                          [z >= 0, z[3] == 0])
        prob.solve(solver=cp.CLARABEL, tol_gap_abs=1e-12, tol_gap_rel=1e-12, tol_feas=1e-12)
        reference.append(prob.value)
    extra = interior.copy()  # one entry that must leave the face, where the face has room
    for j in range(k):
        zeros = np.flatnonzero((interior[:, j] == 0) & (mask[:, j] > 0))
        if (interior[:, j] > 0).sum() < 4 and zeros.size:
            extra[zeros[0], j] = 0.3
    assert (extra != interior).any()
    for start in (interior, extra, np.zeros((p, k))):
        B = np.asarray(nonnegative_active_set(jnp.asarray(Q), jnp.asarray(C),
                                              jnp.asarray(start), jnp.asarray(mask), 4))
        g = Q @ B + C
        assert (B >= 0).all() and np.all(B[3] == 0)
        free = mask > 0
        assert np.abs(g[(B > 0)]).max() <= 1e-9 and g[free & (B == 0)].min() >= -1e-9
        values = 0.5 * np.sum(B * (Q @ B), axis=0) + np.sum(C * B, axis=0)
        np.testing.assert_allclose(values, reference, rtol=1e-9, atol=1e-9)
    unchanged = nonnegative_active_set(jnp.asarray(Q), jnp.asarray(C), jnp.asarray(interior),
                                       jnp.asarray(mask), 0)
    np.testing.assert_array_equal(np.asarray(unchanged), interior)


# ----------------------------------------------------------------------------- Theorem 1


@pytest.fixture(scope="module")
def synthetic_fit():
    train, _, _ = load_amtl_synthetic(seed=0)
    return train, A.fit_amtl(train, lam=1.0, mu=1.0, fit_intercept=False, tol=1e-13)


def _mass_shares(B):
    """Shares of the total B mass: easy→hard, easy→easy, sent by hard tasks, across groups."""
    easy, hard = np.array(EASY_TASKS), np.array(HARD_TASKS)
    group = np.zeros(len(B), int)
    group[list(GROUPS[1])] = 1
    total = B.sum()
    return (B[np.ix_(easy, hard)].sum() / total, B[np.ix_(easy, easy)].sum() / total,
            B[hard].sum() / total, B[group[:, None] != group[None, :]].sum() / total)


def test_theorem_1_transfer_leaves_easy_tasks(synthetic_fit):
    """At the returned optimum of (1) on the synthetic set (seed 0; λ = μ = 1 is the point
    chosen on the validation part from λ, μ ∈ {0.1, 0.3, 1, 3, 10, 30} × {0.03, …, 10}):
    ≥ 99% of the B mass leaves low-noise tasks (Theorem 1: outgoing transfer ordered by loss;
    observed: 100%), so ≥ 99% of the easy↔hard mass goes easy → hard; no easy task sends less
    than every hard task of its group; ≤ 5% of the mass crosses the two groups (observed 2.6%).

    The issue's stricter reading, "≥ 90% of the *total* mass flows easy → hard", does not hold
    (observed 49%: the other 51% is easy → easy) and is not implied by (1) — see
    :func:`test_theorem_1_does_not_direct_incoming_mass`."""
    _, r = synthetic_fit
    B = r.transfer_graph
    easy = np.array(EASY_TASKS)
    assert B.sum() > 0
    easy_to_hard, _, hard_out, cross = _mass_shares(B)
    assert B[easy].sum() >= 0.99 * B.sum() and hard_out <= 0.01
    assert easy_to_hard >= 0.99 * (easy_to_hard + hard_out)
    assert cross <= 0.05
    outgoing = B.sum(axis=1)
    for g in GROUPS:
        e = [t for t in g if t in EASY_TASKS]
        h = [t for t in g if t in HARD_TASKS]
        assert outgoing[e].min() >= outgoing[h].max()
    assert np.all(r.task_loss[easy].max() < r.task_loss[np.array(HARD_TASKS)].min())


def test_theorem_1_does_not_direct_incoming_mass(synthetic_fit):
    """Why "≥ 90% of the total mass easy → hard" fails at the optimum of (1).

    Theorem 1 orders *outgoing* mass ‖b_t^o‖₁ by the source loss. The incoming mass of a
    target t is set by column t of the B-step, ``min μ Σ_s Λ_s B[s,t] + λ‖w_t - W b_t^i‖²``,
    in which the target's own loss does not appear (and in the W-step the pull λ‖w_t - W b_t^i‖²
    is the same for easy and hard targets, since the mean squared loss has curvature 2XᵀX/n
    whatever the noise). So easy targets receive about as much as hard ones (≈ 1 each: every
    task ≈ the average of its easy group mates), and easy → easy carries about half of the
    mass. Checked here: incoming mass of easy and hard targets within a factor 1.5 of each
    other; and at fixed W the best B that obeys the strict reading (no easy → easy edge;
    cvxpy) raises (1) by more than 10% (observed +60%) and still sends < 90% of its mass
    easy → hard (it then routes hard → easy)."""
    train, r = synthetic_fit
    B, W, loss = r.transfer_graph, r.W, r.task_loss
    easy, hard = np.array(EASY_TASKS), np.array(HARD_TASKS)
    easy_to_hard, easy_to_easy, _, _ = _mass_shares(B)
    assert easy_to_hard < 0.9 and easy_to_easy > 0.3
    incoming = B.sum(axis=0)
    assert 1 / 1.5 < incoming[easy].mean() / incoming[hard].mean() < 1.5
    m = train.n_tasks
    strict = np.zeros((m, m))
    for t in range(m):
        b = cp.Variable(m)
        cons = [b >= 0, b[t] == 0] + ([b[easy] == 0] if t in EASY_TASKS else [])
        cp.Problem(cp.Minimize(loss @ b + cp.sum_squares(W[:, t] - W @ b)), cons).solve(
            solver=cp.CLARABEL)
        strict[:, t] = np.maximum(b.value, 0.0)
    arrays = A.task_arrays(train, "amtl", False)

    def objective(graph):
        return float(A.amtl_objective(jnp.asarray(W.T), jnp.asarray(graph), arrays, 1.0, 1.0,
                                      "squared", train.n_features))

    assert objective(strict) > 1.1 * objective(B)
    assert _mass_shares(strict)[0] < 0.9


def test_alternation_is_monotone_and_stationary(synthetic_fit):
    """Exact sub-steps: (1) never increases, and the result is a partial optimum — the
    W-gradient vanishes and a fresh B-step from zero returns the same B."""
    train, r = synthetic_fit
    assert r.converged
    assert np.all(np.diff(r.history) <= 1e-10 * np.abs(r.history[1:]))
    assert _w_step_gradient(train, r) < 1e-6 * _w_step_gradient(train, r, at_zero=True)
    B, _ = A.transfer_graph_step(r.W, r.task_loss, 1.0, 1.0)
    np.testing.assert_allclose(np.asarray(B), r.transfer_graph, atol=1e-4 * r.transfer_graph.max())


def _w_step_gradient(train, r, at_zero=False):
    """Max-norm of the gradient of problem (2) (B and the tempering fixed) at the result
    (or at W = 0, for scale)."""
    arrays = A.task_arrays(train, "amtl", False)
    B = jnp.asarray(r.transfer_graph)
    tempering = 1.0 + jnp.sum(B, axis=1)

    def problem_2(theta):
        return (jnp.sum(tempering * A.task_losses(theta, arrays, "squared"))
                + jnp.sum((theta.T - theta.T @ B) ** 2))

    theta = jnp.zeros_like(r.W.T) if at_zero else jnp.asarray(r.W.T)
    return float(jnp.max(jnp.abs(jax.grad(problem_2)(theta))))


def test_curriculum_order_and_dag():
    train, _, _ = load_amtl_synthetic(seed=0)
    r = A.fit_amtl(train, lam=1.0, mu=1.0, variant="curriculum", fit_intercept=False)
    order = r.order
    assert sorted(order.tolist()) == list(range(12))
    rank = np.empty(12, int)
    rank[order] = np.arange(12)
    s, t = np.nonzero(r.transfer_graph > 0)
    assert np.all(rank[s] < rank[t])  # edges only from earlier to later tasks: a DAG
    assert rank[list(EASY_TASKS)].mean() < rank[list(HARD_TASKS)].mean()
    assert r.objective == pytest.approx(r.history[-1])


def test_smtl_and_noloss_and_imbalance_run():
    train, _, _ = load_amtl_imbalanced(seed=0, n_features=4)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        rs = {v: A.fit_amtl(train, 1.0, 0.02, v, fit_intercept=False, max_iter=30)
              for v in ("smtl", "noloss", "imbalance")}
    np.testing.assert_allclose(rs["smtl"].transfer_graph, rs["smtl"].transfer_graph.T)
    n = train.n_per_task
    raw = np.array([np.mean((y - X @ rs["imbalance"].W[:, t]) ** 2)
                    for t, (X, y) in enumerate(train.tasks())])
    np.testing.assert_allclose(rs["imbalance"].task_loss, raw / np.sqrt(n), rtol=1e-10)
    for r in rs.values():  # exact alternating minimisation never increases (1)
        assert np.all(np.diff(r.history) <= 1e-10 * np.abs(r.history[1:]))
        assert r.transfer_graph.sum() > 0


# ----------------------------------------------------------------------------- data set


def test_synthetic_sets_follow_section_4():
    train, valid, test = load_amtl_synthetic(seed=3)
    assert train.n_tasks == 12 and all(np.all(p.n_per_task == 30) for p in (train, valid, test))
    W = amtl_task_parameters(seed=3)
    resid = np.array([np.std(y - X @ W[:, t]) for t, (X, y) in enumerate(test.tasks())])
    assert resid[list(EASY_TASKS)].max() < 10 < 15 < resid[list(HARD_TASKS)].min()
    imb_train, imb_valid, _ = load_amtl_imbalanced(seed=3)
    assert np.all(imb_train.n_per_task[list(EASY_TASKS)] == 500)
    assert np.all(imb_train.n_per_task[list(HARD_TASKS)] == 5)
    assert np.all(imb_valid.n_per_task == 50)
    again, _, _ = load_amtl_synthetic(seed=3)
    np.testing.assert_array_equal(again.X, train.X)


# ----------------------------------------------------------------------------- posterior


def test_nuts_smoke_and_export_dims():
    data = make_tasks(4, sizes=(15, 15, 15), d=2)
    dt = A.sample_amtl(data, 1.0, 1.0, tau=0.1, source_loss=np.array([1.0, 1.0, 4.0]),
                       num_warmup=100, num_samples=100, num_chains=2, seed=1)
    for name in ("transfer_graph", "transfer_graph_inclusion"):
        da = dt.posterior[name]
        assert da.dims == ("chain", "draw", "source_task", "target_task")
        assert list(da.coords["target_task"].values) == list(data.task_names)
    assert dt.posterior["W"].dims == ("chain", "draw", "feature", "task")
    B = dt.posterior["transfer_graph"].values
    assert np.all(B >= 0) and np.all(B[..., [0, 1, 2], [0, 1, 2]] == 0)
    table = A.edge_summary(dt, ci_prob=0.8)
    assert len(table) == 6
    assert np.all((table["lower_80%"] <= table["mean"]) & (table["mean"] <= table["upper_80%"]))
    expected = (B > 0.1).mean(axis=(0, 1))[~np.eye(3, dtype=bool)]
    np.testing.assert_allclose(table["inclusion_prob"], expected)


def test_plot_transfer_graph_draws_one_arrow_per_edge():
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib.patches import FancyArrowPatch

    from bayesmtl.plots.graph import plot_transfer_graph

    data = make_tasks(6)
    B = np.array([[0, 1.0, 0.5, 0], [0, 0, 0, 0], [0, 0.2, 0, 0.001], [0, 0, 0, 0]])
    r = A.fit_stl(data, 1.0)._replace(transfer_graph=B, variant="amtl")
    fig = plot_transfer_graph(A.amtl_datatree(r, data), min_weight=0.01)
    arrows = [p for p in fig.axes[0].patches if isinstance(p, FancyArrowPatch)]
    assert len(arrows) == 3  # 0→1, 0→2, 2→1; 2→3 is below 1% of the largest weight


# ----------------------------------------------------------------------------- bad inputs


@pytest.mark.parametrize("lam,mu,word", [(-1.0, 1.0, "lam"), (1.0, -0.1, "mu"),
                                         (0.0, 1.0, "lam"), (np.nan, 1.0, "lam")])
def test_bad_hyperparameters(lam, mu, word):
    data = make_tasks(0)
    with pytest.raises(HyperparameterError, match=word) as err:
        A.fit_amtl(data, lam, mu)
    assert isinstance(err.value, ValueError)


def test_task_with_too_few_samples():
    data = make_tasks(0, sizes=(12, 1, 10))
    with pytest.raises(TooFewSamplesError, match="t1 \\(n=1\\)"):
        A.fit_amtl(data, 1.0, 1.0)
    A.fit_amtl(data, 1.0, 1.0, fit_intercept=False)  # w alone cannot fit one row exactly
    cls = make_tasks(0, "classification", sizes=(12, 10, 10))
    y = cls.y.copy()
    y[cls.task_slice(2)] = 1.0
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", SingleClassWarning)
        one_class = MultiTaskData.from_arrays(cls.X, y, cls.task, kind="classification")
    with pytest.raises(TooFewSamplesError, match="one class"):
        A.fit_amtl(one_class, 1.0, 1.0)
    with pytest.raises(ValueError, match="logistic"):
        A.fit_amtl(data, 1.0, 1.0, loss="logistic")


@pytest.mark.parametrize("edit,variant,word", [
    (lambda B: B.__setitem__((0, 1), -0.5), "amtl", "non-negative"),
    (lambda B: B.__setitem__((2, 2), 0.3), "amtl", "zero diagonal"),
    (lambda B: B.__setitem__((0, 1), 0.3), "smtl", "symmetric"),
])
def test_warm_start_violating_graph_constraints(edit, variant, word):
    data = make_tasks(0)
    m, d = data.n_tasks, data.n_features
    B = np.zeros((m, m))
    edit(B)
    with pytest.raises(TransferGraphError, match=word) as err:
        A.fit_amtl(data, 1.0, 1.0, variant, init=(np.zeros((d, m)), None, B))
    assert isinstance(err.value, ValueError)


def _unconverged_warning(data, init=None, max_iter=6):
    with pytest.warns(ConvergenceWarning) as record:
        r = A.fit_amtl(data, 0.01, 0.01, "noloss", max_iter=max_iter, tol=1e-12, init=init)
    return r, " ".join(str(w.message) for w in record)


def test_separable_tasks_warn_that_the_map_may_not_exist():
    """n ≤ d logistic tasks: ‖W‖ grows along the alternation and the warning names the cause;
    the same cap on non-separable tasks gives the plain warning."""
    separable = make_tasks(0, "classification", sizes=(4,) * 6, d=4)
    short, _ = _unconverged_warning(separable)
    long, message = _unconverged_warning(separable, (short.W, short.b, short.transfer_graph))
    assert np.linalg.norm(long.W) > 1.5 * np.linalg.norm(short.W)
    assert "MAP may not exist" in message
    noisy = make_tasks(0, "classification", sizes=(200,) * 4, d=2)
    _, message = _unconverged_warning(noisy, max_iter=1)
    assert "without a relative objective change" in message
    assert "MAP may not exist" not in message


def test_deadline_stops_between_chunks_and_chunks_do_not_change_the_fit():
    """With a deadline, Algorithm 1 runs in chunks of outer iterations (one compiled loop,
    resumed from its state): a deadline already past stops after the first chunk with the
    state of a max_iter = chunk fit, and a far deadline gives the fit without one."""
    import time

    from bayesmtl.errors import ConvergenceWarning

    data = make_tasks(3, kind="classification")
    chunk = A._DEADLINE_CHUNK
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        stopped = A.fit_amtl(data, 0.1, 0.01, tol=1e-14, deadline=time.monotonic() - 1.0)
        capped = A.fit_amtl(data, 0.1, 0.01, tol=1e-14, max_iter=chunk)
    assert stopped.n_iter == chunk and not stopped.converged
    assert any(issubclass(w.category, ConvergenceWarning) and "time limit" in str(w.message)
               for w in caught)
    np.testing.assert_array_equal(stopped.W, capped.W)
    np.testing.assert_array_equal(stopped.history, capped.history)
    whole = A.fit_amtl(data, 0.1, 0.01)
    chunked = A.fit_amtl(data, 0.1, 0.01, deadline=time.monotonic() + 3600.0)
    assert whole.converged and chunked.converged and chunked.n_iter == whole.n_iter
    np.testing.assert_allclose(chunked.W, whole.W, rtol=0, atol=1e-12)
