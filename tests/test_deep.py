"""bayesmtl.deep (issue 15): balancing strategies, MGDA's QP, the Pyro model's log joint against
objectives written from the paper, Theorem 2 on a linear network, fits, export, state, bad input.
Every fit is tiny; fits take device="auto", so on a GPU machine they run on CUDA (bitwise
repeatability is checked on the CPU; tests/test_cuda.py compares the devices)."""

import json
import math
import re

import cvxpy as cp
import numpy as np
import pytest
import torch
from conftest import run_python
from pyro.infer import Trace_ELBO

from bayesmtl import MultiTaskData
from bayesmtl.deep import balancing as B
from bayesmtl.deep import networks as N
from bayesmtl.deep.model import map_trace, neg_log_joint, shared_jacobian, task_means
from bayesmtl.deep.result import DeepResult, local_params, resolve_device
from bayesmtl.deep.standins import digit_domains, proportion_split, sarcos_like
from bayesmtl.deep.train import elbo_traces, fit_deep, make_guide, stratified_batches
from bayesmtl.errors import (
    DataError,
    HyperparameterError,
    ModelFileError,
    NonFiniteResultError,
    ShapeMismatchError,
    TooFewSamplesError,
)

torch.set_num_threads(1)
FAST = {"hidden": 8, "epochs": 4, "lam_heads": 1e-3}


def _data(kind="regression", m=3, d=4, seed=0, n=30, classes=3, names=None):
    rng = np.random.default_rng(seed)
    tasks = []
    for i in range(m):
        X = rng.normal(size=(n + 5 * i, d))
        s = X @ rng.normal(size=d)
        if kind == "regression":
            y = s + 0.3 * rng.normal(size=len(s)) + i
        elif kind == "classification":
            y = (s > 0).astype(float)
        else:
            y = np.digitize(s, np.quantile(s, np.linspace(0, 1, classes + 1)[1:-1]))
        tasks.append((X, y))
    return MultiTaskData.from_tasks(tasks, names or [f"t{i}" for i in range(m)], kind=kind)


# ----------------------------------------------------------------------------- strategies

L2 = torch.tensor([0.5, 2.0], dtype=torch.float64)
E = math.exp
SM = [E(0.5) / (E(0.5) + E(2.0)), E(2.0) / (E(0.5) + E(2.0))]          # softmax(L)
DWA = [2 * E(0.25) / (E(0.25) + E(0.5)), 2 * E(0.5) / (E(0.25) + E(0.5))]  # r = (.5, 1), T=2
CLW = [2 * E(-0.5) / (E(-0.5) + E(-2.0)), 2 * E(-2.0) / (E(-0.5) + E(-2.0))]
# (strategy, context extras, hand-computed objective, hand-computed weights)
CASES = [
    ("ds", B.DS(), {}, 2.5, [1, 1]),
    ("fixed", B.Fixed((2.0, 0.5)), {}, 2.0, [2, 0.5]),
    ("dwa-early", B.DWA(2.0), {"history": ((2.0, 2.0),)}, 2.5, [1, 1]),
    ("dwa", B.DWA(2.0), {"history": ((2.0, 2.0), (1.0, 2.0))},
     0.5 * DWA[0] + 2 * DWA[1], DWA),
    ("max", B.Max(), {}, 2.0, [0, 1]),
    ("smax", B.SMax(), {}, math.log(E(0.5) + E(2.0)), SM),
    ("cl", B.CL(1.0), {}, 0.5 * CLW[0] + 2 * CLW[1], CLW),
    ("bmtl", B.BMTL(B.exp_transform(50.0)), {}, E(0.01) + E(0.04), [E(0.01) / 50, E(0.04) / 50]),
    ("bmtl-poly", B.BMTL(B.polynomial_transform([0, 1, 1])), {}, 0.75 + 6.0, [2.0, 5.0]),
    ("bmtl-callable", B.BMTL(B.callable_transform(lambda z: torch.exp(z / 2))), {},
     E(0.25) + E(1.0), [E(0.25) / 2, E(1.0) / 2]),
    ("uncertainty", B.Uncertainty(), {"params": {"balance.log_var": [0.0, math.log(2.0)]}},
     0.5 + 1.0 + math.log(2.0), [1, 0.5]),
    # g1 = (1, 0), g2 = (0, 2): ‖α1 g1 + α2 g2‖² = α1² + 4 α2² → α = (4/5, 1/5)
    ("mgda", B.MGDA(), {"grads": [[1.0, 0.0], [0.0, 2.0]]}, 0.8 * 0.5 + 0.2 * 2.0, [0.8, 0.2]),
]


def _context(extra, present, keep=None):
    keep = slice(None) if keep is None else keep
    grads = extra.get("grads")
    params = {k: torch.tensor(v, dtype=torch.float64) for k, v in extra.get("params", {}).items()}
    return B.Context(present, tuple(np.asarray(h) for h in extra.get("history", ())),
                     (lambda: torch.tensor(grads, dtype=torch.float64)) if grads else None,
                     params)


@pytest.mark.parametrize("name,strategy,extra,objective,weights", CASES, ids=[c[0] for c in CASES])
def test_strategy_weights_equal_hand_computed(name, strategy, extra, objective, weights):
    L = L2.clone().requires_grad_(True)
    out = strategy(L, _context(extra, torch.tensor([True, True])))
    assert float(out.objective.detach()) == pytest.approx(objective, rel=1e-12)
    np.testing.assert_allclose(out.weights.numpy(), weights, rtol=1e-12, atol=1e-15)
    # the weights are what the objective puts on each loss: ∂objective/∂L_i
    grad = torch.autograd.grad(out.objective, L)[0]
    np.testing.assert_allclose(grad.numpy(), weights, rtol=1e-12, atol=1e-15)


def _with_absent(extra):
    """The two-task context with a third, absent task in the middle (garbage values)."""
    ext = dict(extra)
    if "history" in ext:
        ext["history"] = tuple((h[0], 7.0, h[1]) for h in ext["history"])
    if "params" in ext:
        ext["params"] = {k: [v[0], 5.0, v[1]] for k, v in ext["params"].items()}
    if "grads" in ext:
        ext["grads"] = [ext["grads"][0], [9.0, 9.0], ext["grads"][1]]
    return ext


@pytest.mark.parametrize("name,strategy,extra,objective,weights", CASES, ids=[c[0] for c in CASES])
def test_absent_task_is_ignored(name, strategy, extra, objective, weights):
    if name == "fixed":
        strategy = B.Fixed((2.0, 3.0, 0.5))
    L = torch.tensor([0.5, 99.0, 2.0], dtype=torch.float64)
    out = strategy(L, _context(_with_absent(extra), torch.tensor([True, False, True])))
    assert float(out.objective) == pytest.approx(objective, rel=1e-12)
    np.testing.assert_allclose(out.weights.numpy(), [weights[0], 0.0, weights[1]], rtol=1e-12)


def test_stratified_batches_cycle_and_absent():
    rows = [np.arange(0, 5), np.arange(5, 75)]
    rng = np.random.default_rng(0)
    cyc = list(stratified_batches(rows, 32, rng, "cycle"))
    assert len(cyc) == 3
    assert all(np.isin(rows[0], b).all() and np.isin(b, rows[0]).sum() == 5 for b in cyc)
    none = list(stratified_batches(rows, 32, rng, "none"))
    assert [np.isin(b, rows[0]).sum() for b in none] == [5, 0, 0]  # absent after batch 1
    np.testing.assert_array_equal(np.sort(np.concatenate(none)), np.arange(75))


def test_fit_with_absent_tasks_in_batches():
    data = _data(m=3, n=6)  # 6, 11, 16 rows; batch of 4 per task: t0 absent from later batches
    r = fit_deep(data, balancing="bmtl", fill="none", batch_size=4, valid_fraction=0.0,
                 patience=None, **FAST)
    assert np.all(np.isfinite(r.history["train_loss"]))
    net, values = r.net, r.values
    X, task, y, mean, scale = (torch.as_tensor(a, device=r.device) for a in (
        data.X[data.task > 0], data.task[data.task > 0], data.y[data.task > 0], r.x_mean,
        r.x_scale))
    strategy = B.make_strategy("bmtl", n_tasks=3)
    with local_params():
        tr = map_trace(values, ((X - mean) / scale).float(), task.long(), y.float(), net=net,
                       strategy=strategy)
    assert float(tr.nodes["task_weight"]["value"][0]) == 0.0
    assert torch.isfinite(tr.log_prob_sum())


# ----------------------------------------------------------------------------- MGDA's QP


def _cvxpy_min_norm(G):
    a = cp.Variable(len(G))
    prob = cp.Problem(cp.Minimize(cp.quad_form(a, cp.psd_wrap(G))), [a >= 0, cp.sum(a) == 1])
    prob.solve(solver=cp.CLARABEL, tol_gap_abs=1e-12, tol_gap_rel=1e-12, tol_feas=1e-12)
    return a.value


@pytest.mark.parametrize("m", [2, 3, 5])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_mgda_min_norm_weights_equal_cvxpy(m, seed):
    rng = np.random.default_rng(seed)
    g = rng.normal(size=(m, 3 * m + 2)) + rng.normal(size=3 * m + 2)  # a common direction
    if seed == 2:
        g[-1] = 3.0 * g[0]  # dominated: its weight is 0
    G = g @ g.T
    alpha = B.min_norm_weights(G)
    np.testing.assert_allclose(alpha, _cvxpy_min_norm(G), atol=1e-6)
    assert alpha.min() >= 0 and alpha.sum() == pytest.approx(1.0, abs=1e-12)
    if seed == 2:
        assert alpha[-1] == pytest.approx(0.0, abs=1e-9)


def test_shared_jacobian_equals_autograd_per_task():
    data = _data("multiclass", m=4)
    net = N.DeepNet(N.task_layout(data), data.n_features, hidden=6)
    values = {k: v.requires_grad_(True) for k, v in N.init_values(net, 0).items()}
    net = net.double()
    perm = np.random.default_rng(0).permutation(len(data.y))  # rows not sorted by task
    X = torch.as_tensor(data.X[perm])
    task, y = torch.as_tensor(data.task[perm]).long(), torch.as_tensor(data.y[perm]).long()
    from pyro import poutine

    with local_params():
        out = poutine.condition(net, data=values)(X, task)
    L, _ = task_means(-net.row_log_lik(out, y), task, 4)
    J = shared_jacobian(L, out.shared, task)
    for i in range(4):
        gw, gb = torch.autograd.grad(L[i], [values["trunk.weight"], values["trunk.bias"]],
                                     retain_graph=True)
        np.testing.assert_allclose(J[i].numpy(), torch.cat([gw, gb[:, None]], 1).reshape(-1),
                                   atol=1e-12)


# ----------------------------------------------------------------------------- h admissibility


@pytest.mark.parametrize("h,condition", [
    (lambda z: z, "strongly convex"),                     # the identity (DS) is rejected
    ([0.0, 1.0], "strongly convex"),
    (lambda z: z ** 3 + z, "strongly convex"),            # h''(0) = 0
    ([0.0, 0.0, 0.0, 1.0], "strongly convex"),
    ([0.0, 1.0, 1.0, -0.1], "strongly convex"),           # eventually concave
    ([-1.0, 0.0, 1.0], "h(0) >= 0"),
    ([0.0, -1.0, 1.0], "h'(0) >= 0"),
    (lambda z: torch.exp(z) - 2, "h(0) >= 0"),
    (lambda z: (z - 1) ** 2, "h'(0) >= 0"),
])
def test_inadmissible_h_names_the_failed_condition(h, condition):
    with pytest.raises(HyperparameterError, match=re.escape(f"'{condition}")) as err:
        B.make_transform(h, 50.0)
    assert err.value.parameter == "h"


@pytest.mark.parametrize("h", [None, [0.0, 1.0, 0.5], [1.0, 0.0, 2.0, 3.0],
                               lambda z: torch.exp(z / 3) + z ** 2])
def test_admissible_h_accepted(h):
    t = B.make_transform(h, 50.0)
    z = torch.linspace(0, 5, 11, dtype=torch.float64)
    assert torch.all(t.grad(z) >= 0)


@pytest.mark.parametrize("T", [0, -1.0, math.nan, math.inf, "50"])
def test_bad_temperature(T):
    with pytest.raises(HyperparameterError, match="T must be") as err:
        fit_deep(_data(), T=T, **FAST)
    assert err.value.parameter == "T"


# ----------------------------------------------------------------------------- log joint


def _numpy_forward(values, X, layout):
    Z = np.maximum(X @ values["trunk.weight"].T + values["trunk.bias"], 0.0)
    W, b = values["heads.0.weight"], values["heads.0.bias"]  # (p, K, m), (K, m)
    return [Z[i] @ W[:, :, i] + b[:, i] for i in range(W.shape[-1])], Z


def _paper_losses(data, values):
    """L_i written from Section 2: (1/n_i) Σ_j l(f_i(x_ij), y_ij), squared loss or
    cross-entropy over the task's classes (all classes here)."""
    L = []
    for i, (X, y) in enumerate(data.tasks()):
        Z = np.maximum(X @ values["trunk.weight"].T + values["trunk.bias"], 0.0)
        f = Z @ values["heads.0.weight"][:, :, i] + values["heads.0.bias"][:, i]
        if data.kind == "regression":
            L.append(np.mean((f[:, 0] - y) ** 2))
        else:
            logp = f - np.log(np.exp(f).sum(1, keepdims=True))
            L.append(-np.mean(logp[np.arange(len(y)), y.astype(int)]))
    return np.array(L)


def _paper_objective(data, values, strategy, weights, T, lam, lam_h, heads, omega):
    """Problem (2)/(8) with r(Θ) = (λ/2)‖W1‖² + head penalty, written independently."""
    L = _paper_losses(data, values)
    loss = {"ds": lambda: L.sum(), "fixed": lambda: weights @ L,
            "bmtl": lambda: np.exp(L / T).sum()}[strategy]()
    W = values["heads.0.weight"]
    Wm = W.reshape(-1, W.shape[-1])
    head = {"normal": lam_h / 2 * np.sum(W ** 2),
            "omega": lam_h / 2 * np.trace(Wm @ np.linalg.solve(omega, Wm.T)),
            "trace": lam_h * np.linalg.norm(Wm, "nuc")}[heads]
    return loss + lam / 2 * np.sum(values["trunk.weight"] ** 2) + head


def _prior_constant(values, lam, lam_h, heads):
    """-log of the priors' normalisers: ½ log(2π/λ) per Gaussian entry (flat biases and the
    trace-norm prior's unknown normaliser contribute nothing here)."""
    c = 0.5 * math.log(2 * math.pi / lam) * values["trunk.weight"].size
    if heads in ("normal", "omega"):
        c += 0.5 * math.log(2 * math.pi / lam_h) * values["heads.0.weight"].size
    return c


@pytest.mark.parametrize("kind", ["regression", "multiclass"])
@pytest.mark.parametrize("heads", ["normal", "omega", "trace"])
@pytest.mark.parametrize("strategy", ["ds", "fixed", "bmtl"])
def test_negative_log_joint_equals_paper_objective(kind, heads, strategy):
    data = _data(kind, m=3, d=4)
    lam, lam_h, T = 0.3, 0.7, 2.0
    weights = np.array([0.5, 2.0, 1.5])
    layout = N.task_layout(data, classes="all" if kind == "multiclass" else None)
    net = N.DeepNet(layout, data.n_features, hidden=5, heads=heads, lam=lam,
                    lam_heads=lam_h).double()
    rng = np.random.default_rng(1)
    values = {k: torch.as_tensor(rng.normal(size=v.shape)) for k, v in
              N.init_values(net, 0).items()}
    A = rng.normal(size=(3, 3))
    omega = A @ A.T + np.eye(3)
    omega /= np.trace(omega)
    net.heads[0].omega.copy_(torch.as_tensor(omega))
    st = B.make_strategy(strategy, n_tasks=3, T=T,
                         weights=weights if strategy == "fixed" else None)
    X = torch.as_tensor(data.X)
    task = torch.as_tensor(data.task).long()
    y = torch.as_tensor(data.y) if kind == "regression" else torch.as_tensor(data.y).long()
    with local_params():
        nlj = float(neg_log_joint(values, X, task, y, net=net, strategy=st))
    np_values = {k: v.numpy() for k, v in values.items()}
    ref = _paper_objective(data, np_values, strategy, weights, T, lam, lam_h, heads, omega)
    assert nlj == pytest.approx(ref + _prior_constant(np_values, lam, lam_h, heads), rel=1e-10)


def test_log_joint_constant_does_not_depend_on_omega():
    """The hyperprior |Ω|^{D/2} cancels the matrix-normal normaliser: -log joint minus MTRL's
    objective is the same for two different Ω."""
    data = _data("regression")
    net = N.DeepNet(N.task_layout(data), 4, hidden=5, heads="omega").double()
    values = {k: v for k, v in N.init_values(net, 3).items()}
    st = B.DS()
    args = (torch.as_tensor(data.X), torch.as_tensor(data.task).long(), torch.as_tensor(data.y))
    gaps = []
    for seed in (0, 1):
        A = np.random.default_rng(seed).normal(size=(3, 3))
        omega = A @ A.T + 0.1 * np.eye(3)
        omega /= np.trace(omega)
        net.heads[0].omega.copy_(torch.as_tensor(omega))
        with local_params():
            nlj = float(neg_log_joint(values, *args, net=net, strategy=st))
        np_values = {k: v.numpy() for k, v in values.items()}
        gaps.append(nlj - _paper_objective(data, np_values, "ds", None, 1.0, 1e-4, 1.0,
                                           "omega", omega))
    assert gaps[0] == pytest.approx(gaps[1], rel=1e-12)


# ----------------------------------------------------------------------------- head priors


def test_omega_step_is_mtrl_minimiser():
    rng = np.random.default_rng(0)
    W = rng.normal(size=(12, 4))
    omega = N.omega_step(torch.as_tensor(W), eps=0.0).numpy()
    from scipy.linalg import sqrtm

    root = np.real(sqrtm(W.T @ W))
    np.testing.assert_allclose(omega, root / np.trace(root), atol=1e-12)
    value = np.trace(W @ np.linalg.solve(omega, W.T))
    assert value == pytest.approx(np.linalg.norm(W, "nuc") ** 2, rel=1e-10)  # min = ‖W‖²_*
    for _ in range(20):  # any other feasible Ω is worse
        A = rng.normal(size=(4, 4))
        other = A @ A.T + 1e-3 * np.eye(4)
        other /= np.trace(other)
        assert np.trace(W @ np.linalg.solve(other, W.T)) >= value


def test_trace_norm_gradient_is_u_vt():
    W = torch.tensor(np.random.default_rng(0).normal(size=(6, 3)), requires_grad=True)
    N.trace_norm(W).backward()
    U, _, Vt = np.linalg.svd(W.detach().numpy(), full_matrices=False)
    np.testing.assert_allclose(W.grad.numpy(), U @ Vt, atol=1e-12)


# ----------------------------------------------------------------------------- Theorem 2


def _cvxpy_problem8(data, lam, h):
    d, m = data.n_features, data.n_tasks
    W, b = cp.Variable((d, m)), cp.Variable(m)
    terms = [cp.sum_squares(X @ W[:, i] + b[i] - y) / len(y) for i, (X, y) in
             enumerate(data.tasks())]
    obj = sum(h(L) for L in terms) + lam / 2 * cp.sum_squares(W)
    prob = cp.Problem(cp.Minimize(obj))
    prob.solve(solver=cp.CLARABEL, tol_gap_abs=1e-10, tol_gap_rel=1e-10, tol_feas=1e-10)
    return prob.value, W.value


@pytest.mark.parametrize("h,cvx_h,kw", [
    (None, lambda L: cp.exp(L / 2.0), {"T": 2.0}),
    ([0.0, 1.0, 0.5], lambda L: L + 0.5 * cp.square(L), {}),
])
def test_theorem2_bmtl_linear_network_reaches_cvxpy_optimum(h, cvx_h, kw):
    """Convex losses + admissible h + convex r: problem (8) is convex, so the MAP of the linear
    network (hidden=0, full batch, L-BFGS) is the global optimum cvxpy finds."""
    data = _data("regression", m=3, d=4, n=20)
    lam = 0.5
    ref, W_ref = _cvxpy_problem8(data, lam, cvx_h)
    r = fit_deep(data, balancing="bmtl", h=h, hidden=0, lam_heads=lam, batch_size=64,
                 valid_fraction=0.0, patience=None, epochs=15, optimizer="lbfgs", lr=1.0,
                 dtype="float64", standardize=False, **kw)
    W = r.values["heads.0.weight"].detach().cpu().numpy()[:, 0, :]
    values = {k: v.detach().cpu().numpy() for k, v in r.values.items()}
    L = np.array([np.mean((X @ W[:, i] + values["heads.0.bias"][0, i] - y) ** 2)
                  for i, (X, y) in enumerate(data.tasks())])
    hL = np.exp(L / 2.0) if h is None else L + 0.5 * L ** 2
    objective = hL.sum() + lam / 2 * np.sum(W ** 2)
    assert objective == pytest.approx(ref, rel=1e-8)
    np.testing.assert_allclose(W, W_ref, atol=1e-5)


# ----------------------------------------------------------------------------- fits


def test_fit_is_reproducible_with_a_seed():
    data = _data("multiclass")
    runs = [fit_deep(data, balancing="mgda", seed=s, device="cpu", **FAST) for s in (3, 3, 4)]
    np.testing.assert_array_equal(runs[0].history["train_loss"], runs[1].history["train_loss"])
    np.testing.assert_array_equal(runs[0].predict_proba(data.X, data.task),
                                  runs[1].predict_proba(data.X, data.task))
    assert not np.array_equal(runs[0].history["train_loss"], runs[2].history["train_loss"])


def test_omega_heads_export_omega_with_task_names():
    data = _data("regression", names=["north", "south", "east"])
    r = fit_deep(data, network="omega", **FAST)
    omega = r.omega
    assert omega.shape == (3, 3) and np.allclose(omega, omega.T)
    assert np.trace(omega) == pytest.approx(1.0) and np.linalg.eigvalsh(omega).min() > 0
    W = r.values["heads.0.weight"].detach()
    np.testing.assert_allclose(omega, N.omega_step(N.head_matrix(W), 1e-8).double().cpu().numpy(),
                               atol=1e-6)  # the last Ω-step at the returned heads
    dt = r.to_datatree()
    assert list(dt.posterior["omega"].coords["task"].values) == ["north", "south", "east"]
    np.testing.assert_allclose(dt.posterior["omega"].values[0, 0], omega)
    assert fit_deep(data, network="dmtl", **FAST).omega is None


def test_early_stopping_keeps_the_best_epoch():
    data = _data("regression", n=40)
    r = fit_deep(data, balancing="ds", hidden=16, epochs=60, patience=3, lr=0.05, lr_decay=0.0,
                 lam_heads=1e-3)
    h = r.history
    assert len(h["epoch_time"]) < 60
    best = h["best_epoch"]
    assert np.mean(h["valid_loss"][best]) == np.mean(h["valid_loss"], 1).min()
    assert len(h["epoch_time"]) == best + 1 + 3  # stopped after `patience` worse epochs


def test_learning_rate_schedule_is_papers():
    data = _data("regression", n=40)  # ⌈(40+10)·0.8 / 32⌉ = 2 steps per epoch
    r = fit_deep(data, patience=None, lr=0.02, lr_decay=1.0, **{**FAST, "epochs": 3})
    steps = np.array([2, 4, 6])
    np.testing.assert_allclose(r.history["lr"], 0.02 / (1 + steps))


def test_classification_probabilities_over_global_classes():
    rng = np.random.default_rng(0)
    X = rng.normal(size=(60, 3))
    y = np.r_[rng.integers(0, 3, 30), rng.integers(1, 3, 30)]  # task b never has class 0
    task = np.r_[["a"] * 30, ["b"] * 30]
    data = MultiTaskData.from_arrays(X, y, task, kind="multiclass")
    r = fit_deep(data, **FAST)
    P = r.predict_proba(X, task)
    assert P.shape == (60, 3)
    np.testing.assert_allclose(P.sum(1), 1.0, rtol=1e-6)
    assert np.all(P[30:, 0] == 0.0) and np.all(P[:30, 0] > 0)
    np.testing.assert_array_equal(r.predict(X, task), P.argmax(1))
    binary = fit_deep(_data("classification"), **FAST)
    assert binary.predict_proba(np.zeros((2, 4)), 0).shape == (2, 2)


def test_svi_predictive_sd_and_draws():
    data = _data("regression", names=["a", "b", "c"])
    r = fit_deep(data, inference="svi", balancing="uncertainty", guide="last_layer",
                 num_samples=15, **FAST)
    mean, sd = r.predict(data.X, data.task, return_std=True)
    assert mean.shape == sd.shape == (len(data.y),) and np.all(sd > 0)
    dt = r.to_datatree()
    assert dt.posterior["head_weight"].shape == (1, 15, 8, 3)
    assert list(dt.posterior["log_var"].coords["task"].values) == ["a", "b", "c"]
    assert np.ptp(dt.posterior["head_weight"].values, axis=1).max() > 0  # real draws
    with pytest.raises(HyperparameterError, match="return_std"):
        fit_deep(data, **FAST).predict(data.X, 0, return_std=True)


@pytest.mark.parametrize("kind", ["regression", "multiclass"])
def test_model_samples_y_when_unobserved(kind):
    """y=None: the same model function samples the targets (posterior predictive at a point)."""
    from pyro import poutine

    from bayesmtl.deep.model import deep_model

    rng = np.random.default_rng(0)
    X = rng.normal(size=(40, 3))
    y = np.r_[rng.integers(0, 3, 20), rng.integers(1, 3, 20)] if kind == "multiclass" \
        else rng.normal(size=40)
    data = MultiTaskData.from_arrays(X, y, np.r_[["a"] * 20, ["b"] * 20], kind=kind)
    net = N.DeepNet(N.task_layout(data), 3, hidden=4).double()
    values = N.init_values(net, 0)
    args = (torch.as_tensor(data.X), torch.as_tensor(data.task).long(), None)
    tr = poutine.trace(poutine.condition(deep_model, data=values)).get_trace(
        *args, net=net, strategy=B.DS())
    sites = [k for k, v in tr.nodes.items() if v["type"] == "sample" and k.startswith("y")]
    if kind == "regression":
        assert sites == ["y"] and tr.nodes["y"]["value"].shape == (40,)
    else:  # two head groups (classes {0, 1, 2} and {1, 2}): local class indices per group
        assert sites == ["y_0", "y_1"]
        assert tr.nodes["y_1"]["value"].max() <= 1
        assert "task_loss" not in tr.nodes


def test_written_out_elbo_is_trace_elbo():
    data = _data("regression")
    net = N.DeepNet(N.task_layout(data), 4, hidden=5).double()
    init = N.init_values(net, 0)
    args = (torch.as_tensor(data.X), torch.as_tensor(data.task).long(), torch.as_tensor(data.y))
    import functools

    import pyro

    from bayesmtl.deep.model import deep_model

    model = functools.partial(deep_model, net=net, strategy=B.DS())
    with local_params():
        guide = make_guide(model, "normal", init, 0.1)
        guide(*args)
        pyro.set_rng_seed(5)
        ours, _ = elbo_traces(model, guide, *args)
        pyro.set_rng_seed(5)
        ref = Trace_ELBO().differentiable_loss(model, guide, *args)
    assert float(ours.detach()) == pytest.approx(float(ref.detach()), rel=1e-12)


@pytest.mark.parametrize("inference,network,kind,balancing", [
    ("map", "omega", "multiclass", "dwa"),
    ("map", "trace", "regression", "uncertainty"),
    ("svi", "dmtl", "regression", "bmtl"),
    ("svi", "omega", "classification", "uncertainty"),
])
def test_state_restore_gives_identical_predictions(inference, network, kind, balancing):
    data = _data(kind)
    r = fit_deep(data, inference=inference, network=network, balancing=balancing,
                 num_samples=10, **FAST)
    meta, arrays = r.state()
    meta = json.loads(json.dumps(meta))  # JSON round trip
    assert all(isinstance(v, np.ndarray) for v in arrays.values())
    back = DeepResult.restore(meta, {k: v.copy() for k, v in arrays.items()}, device=r.device)
    np.testing.assert_array_equal(back.predict(data.X, data.task), r.predict(data.X, data.task))
    if kind != "regression":
        np.testing.assert_array_equal(back.predict_proba(data.X, data.task),
                                      r.predict_proba(data.X, data.task))
    if inference == "svi":
        np.testing.assert_array_equal(back.predict(data.X, data.task, return_std=True)[1],
                                      r.predict(data.X, data.task, return_std=True)[1])
    if network == "omega":
        np.testing.assert_array_equal(back.omega, r.omega)


def test_restore_rejects_broken_state():
    meta, arrays = fit_deep(_data(), **FAST).state()
    with pytest.raises(ModelFileError, match="not a bayesmtl.deep state"):
        DeepResult.restore({**meta, "format": "other"}, arrays)
    with pytest.raises(ModelFileError, match="x_mean"):
        DeepResult.restore(meta, {k: v for k, v in arrays.items() if k != "x_mean"})
    with pytest.raises(ModelFileError, match="do not fit"):
        DeepResult.restore(meta, {**arrays, "value/trunk.weight": np.zeros((2, 2))})


# ----------------------------------------------------------------------------- bad input


def test_nan_loss_names_task_and_epoch():
    data = _data("regression", names=["calm", "wild", "mild"])
    y = data.y.copy()
    y[data.task == 1] *= 1e25  # finite float64, but the squared loss overflows float32
    bad = MultiTaskData.from_arrays(data.X, y, np.asarray(data.task_names)[data.task],
                                    task_names=data.task_names)
    with pytest.raises(NonFiniteResultError, match=r"'wild'.*epoch 1"):
        fit_deep(bad, balancing="ds", **FAST)


class _NanGradient(B.Strategy):
    """Finite objective, NaN gradient (d√x/dx at 0 times 0)."""

    def __call__(self, L, ctx):
        return B.Balanced(L.sum() + torch.sqrt(L[0] * 0.0), torch.ones_like(L))


def test_nonfinite_parameters_are_reported():
    with pytest.raises(NonFiniteResultError, match="parameters became non-finite before epoch 1 "
                                                   "step 2"):
        fit_deep(_data(n=80), balancing=_NanGradient(), **FAST)


def test_wrong_number_of_classes():
    rng = np.random.default_rng(0)
    X = rng.normal(size=(40, 3))
    y = np.r_[rng.integers(0, 3, 20), np.full(20, 2)]
    task = np.r_[["a"] * 20, ["b"] * 20]
    data = MultiTaskData.from_arrays(X, y, task, kind="multiclass")
    with pytest.raises(TooFewSamplesError, match="'b' has 1 class"):
        fit_deep(data, **FAST)
    assert fit_deep(data, classes="all", **FAST).layout.task_classes[1] == (0, 1, 2)
    with pytest.raises(DataError, match=r"'a' has labels \[2\] outside"):
        fit_deep(data, classes=[[0, 1], [1, 2]], **FAST)
    with pytest.raises(ShapeMismatchError):
        fit_deep(data, classes=[[0, 1, 2]], **FAST)
    with pytest.raises(DataError, match="not a class"):
        fit_deep(data, classes=[[0, 1, 2], [2, 7]], **FAST)


@pytest.mark.parametrize("param,value", [
    ("hidden", -1), ("lam", 0.0), ("lam_heads", -1.0), ("epochs", 0), ("batch_size", 0),
    ("lr", 0.0), ("lr_decay", -1.0), ("valid_fraction", 1.0), ("patience", 0),
    ("inference", "nuts"), ("guide", "lowrank"), ("network", "mrn"), ("balancing", "gradnorm"),
    ("dtype", "float16"), ("device", "tpu:0"), ("num_samples", 0), ("eta", -1.0),
    ("optimizer", "sgd"), ("fill", "pad"), ("dwa_T", 0.0), ("cl_T", -2.0), ("seed", -1),
    ("weights", [1.0, 1.0, 1.0]), ("h", [0.0, 1.0]), ("classes", "some"),
])
def test_bad_hyperparameters_are_named(param, value):
    with pytest.raises(HyperparameterError) as err:
        fit_deep(_data("multiclass"), **{**FAST, param: value})
    assert err.value.parameter == param


def test_bad_combinations_and_data():
    data = _data()
    with pytest.raises(HyperparameterError, match="weights must be 3"):
        fit_deep(data, balancing="fixed", weights=[1.0, -1.0, 1.0], **FAST)
    with pytest.raises(HyperparameterError, match="hidden=0"):
        fit_deep(data, balancing="mgda", **{**FAST, "hidden": 0})
    with pytest.raises(HyperparameterError, match="lbfgs"):
        fit_deep(data, balancing="dwa", optimizer="lbfgs", **FAST)
    with pytest.raises(HyperparameterError, match="lbfgs"):
        fit_deep(data, inference="svi", optimizer="lbfgs", **FAST)
    with pytest.raises(DataError):
        fit_deep((data.X, data.y), **FAST)
    r = fit_deep(data, **FAST)
    with pytest.raises(ShapeMismatchError):
        r.predict(np.zeros((2, 5)), 0)
    with pytest.raises(DataError):
        r.predict(np.zeros((2, 4)), 3)
    with pytest.raises(DataError, match="classification"):
        r.predict_proba(np.zeros((2, 4)), 0)


def test_device_auto_and_lazy_import():
    assert resolve_device("auto").type == ("cuda" if torch.cuda.is_available() else "cpu")
    code = "import sys, bayesmtl, bayesmtl.deep; assert 'torch' not in sys.modules"
    run_python(code)


# ----------------------------------------------------------------------------- stand-ins


def test_standins():
    d = digit_domains(seed=0)
    assert d.kind == "multiclass" and d.n_tasks == 5 and d.n_classes == 10
    assert all(len(np.unique(y)) == 10 for _, y in d.tasks())
    np.testing.assert_array_equal(d.X, digit_domains(seed=0).X)
    assert d.task_names == ("clean", "noise", "blur", "rotate", "occlude")
    s = sarcos_like(n=300, seed=1)
    assert s.n_tasks == 7 and np.all(s.n_per_task == 300)
    np.testing.assert_array_equal(s.X[s.task_slice(0)], s.X[s.task_slice(6)])  # shared inputs
    sd = np.array([y.std() for _, y in s.tasks()])
    assert sd[0] / sd[-1] > 30  # very different scales
    train, test = proportion_split(s, 0.6, 0)
    np.testing.assert_array_equal(train.n_per_task, 180)
