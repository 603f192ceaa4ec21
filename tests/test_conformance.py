"""One table-driven conformance test over the method registry.

For every registered method (a method without a row here fails: add its row):

1. the negative log joint of its MAP-form NumPyro model equals the paper's objective, coded
   below independently from each paper's equation, up to an additive constant (scale 1: the
   mean per-task squared loss with σ = 1/√2), at the MAP and at perturbed feasible points;
2. MAP reaches the optimum: the whole problem by cvxpy where it is convex, each block by
   cvxpy (or its closed form) where it is biconvex;
3. a bad value of every hyperparameter, and an unknown hyperparameter, raise
   HyperparameterError naming it;
4. the ArviZ export has task names as coordinates of W and of the task relation;
5. the estimator fits, predicts, scores, clones, and saves → loads to identical predictions.
"""

from dataclasses import dataclass, replace

import cvxpy as cp
import numpy as np
import pytest
from conftest import make_regression, solve_cvxpy
from sklearn.base import clone

from bayesmtl import methods as M
from bayesmtl.errors import HyperparameterError, MethodError
from bayesmtl.estimators import MTLRegressor, load_estimator
from bayesmtl.inference.map import neg_log_joint
from bayesmtl.methods import registry as R

# -------------------------------------------------------------------- independent objectives
# Written from the papers with cvxpy atoms, so that one function gives the value at a point
# (numpy arrays → a constant expression) and the problem to solve (cvxpy variables).


def loss(data, W, b, task_scale=None):
    """Per-task mean squared losses L_i = (1/n_i) Σ_j (w_iᵀx_ij + b_i - y_ij)², as a list."""
    out = []
    for i, (X, y) in enumerate(data.tasks()):
        term = cp.sum_squares(X @ W[:, i] + b[i] - y) / len(y)
        out.append(term if task_scale is None else task_scale[i] * term)
    return out


def frac(W, omega):
    """tr(W Ω⁻¹ Wᵀ): cvxpy's jointly convex matrix_frac(Wᵀ, Ω) for a variable Ω, else
    ‖W L⁻ᵀ‖²_F with Ω = L Lᵀ."""
    if isinstance(omega, cp.Expression):
        return cp.matrix_frac(W.T if isinstance(W, cp.Expression) else np.asarray(W).T, omega)
    L = np.linalg.cholesky(np.asarray(omega))
    return cp.sum_squares(W @ np.linalg.inv(L).T)


def objective_l2mt(lam, g):
    """L2MT eq. (1): Σ_i L_i + (λ/2) tr(W Ω⁻¹ Wᵀ) + λ₂ g(Ω), ``g(rel, data)`` = λ₂ g(Ω)."""
    def F(data, W, b, rel):
        omega = rel["omega"]
        return cp.sum(cp.hstack(loss(data, W, b))) + lam / 2 * frac(W, omega) + g(rel, data)
    return F


def objective_amtl(lam, mu, variant="amtl"):
    """AMTL eq. (1): Σ_t (1 + μ‖b_t^o‖₁) L_t + λ‖W - WB‖²_F (noloss: Σ L_t + μ‖B‖₁;
    imbalance: L_t scaled by 1/√n_t)."""
    def F(data, W, b, rel):
        B = rel["transfer_graph"]
        scale = 1 / np.sqrt(data.n_per_task) if variant == "imbalance" else None
        L = loss(data, W, b, scale)
        if variant == "noloss":
            data_part = cp.sum(cp.hstack(L)) + mu * cp.sum(B)
        else:
            data_part = sum((1 + mu * cp.sum(B[t, :])) * L[t] for t in range(len(L)))
        return data_part + lam * cp.sum_squares(W - W @ B)
    return F


def objective_gamtl(lam, gamma):
    """GAMTL eq. (1): Σ L_i + (λ/2) Σ_i ‖w_i - W c_i‖² + γ Σ_i ‖W Diag(c_i)‖_* (c_ii = 0)."""
    def F(data, W, b, rel):
        C = rel["combination"]
        m = data.n_tasks
        trace_lasso = sum(cp.normNuc(W @ cp.diag(C[:, i]) if isinstance(C, cp.Expression)
                                     else W @ np.diag(C[:, i])) for i in range(m))
        return (cp.sum(cp.hstack(loss(data, W, b))) + lam / 2 * cp.sum_squares(W - W @ C)
                + gamma * trace_lasso)
    return F


def objective_malsar(lam, penalty, lam2=None):
    """MALSAR's Least_L21, Least_Lasso and Least_Dirty (Jalali et al. 2010) with the mean
    per-task loss: Σ L_i + λ Σ_r ‖w_r‖₂ | λ Σ_ij |W_ij| | λ Σ_r max_j |P_rj| + λ₂ Σ_ij |Q_ij|,
    Q = W - P (the relation holds P)."""
    def F(data, W, b, rel):
        data_part = cp.sum(cp.hstack(loss(data, W, b)))
        if penalty == "l21":
            return data_part + lam * cp.sum(cp.norm(W, 2, axis=1))
        if penalty == "lasso":
            return data_part + lam * cp.sum(cp.abs(W))
        P = rel["P"]
        return (data_part + lam * cp.sum(cp.max(cp.abs(P), axis=1))
                + lam2 * cp.sum(cp.abs(W - P)))
    return F


def value(expr):
    return float(expr.value if isinstance(expr, cp.Expression) else expr)


# -------------------------------------------------------------------- optimum certificates
# Each returns the reference optimum the MAP must reach (≤ ours up to tolerance).


def whole(constraints_of):
    """Convex in (W, b, relation) jointly: cvxpy over everything."""
    def certify(F, data, fit):
        d, m = data.n_features, data.n_tasks
        W, b = cp.Variable((d, m)), cp.Variable(m)
        rel, cons = constraints_of(data, fit)
        return solve_cvxpy(F(data, W, b, rel), cons)
    return certify


def blocks(relation_block):
    """Biconvex: the W-block (relation fixed) by cvxpy and the relation block (W, b fixed)."""
    def certify(F, data, fit):
        d, m = data.n_features, data.n_tasks
        W, b = cp.Variable((d, m)), cp.Variable(m)
        w_block = solve_cvxpy(F(data, W, b, fit.relation))
        rel, cons = relation_block(data, fit)
        r_block = solve_cvxpy(F(data, fit.W, fit.b, rel), cons)
        return max(w_block, r_block)
    return certify


def psd_omega(extra=lambda omega, data: []):
    def make(data, fit):
        del fit
        omega = cp.Variable((data.n_tasks, data.n_tasks), PSD=True)
        return {"omega": omega}, extra(omega, data)
    return make


def fixed_relation(data, fit):
    return dict(fit.relation), []


def nonneg_graph(symmetric=False):
    def make(data, fit):
        del fit
        m = data.n_tasks
        B = cp.Variable((m, m), symmetric=symmetric)
        return {"transfer_graph": B}, [B >= 0, cp.diag(B) == 0]
    return make


def combination_block(data, fit):
    del fit
    C = cp.Variable((data.n_tasks, data.n_tasks))
    return {"combination": C}, [cp.diag(C) == 0]


def iw_certify(hyper):
    """IW MAP: W-block by cvxpy; Ω-block closed form Ω* = (Ψ + λWᵀW)/(ν + m + 1 + d)."""
    def certify(F, data, fit):
        d, m = data.n_features, data.n_tasks
        W, b = cp.Variable((d, m)), cp.Variable(m)
        w_block = solve_cvxpy(F(data, W, b, fit.relation))
        nu = m + 2 if hyper["df"] is None else hyper["df"]
        omega = (hyper["scale"] * np.eye(m) + hyper["lam"] * fit.W.T @ fit.W) / (nu + m + 1 + d)
        return max(w_block, value(F(data, fit.W, fit.b, {"omega": omega})))
    return certify


# -------------------------------------------------------------------- the table


@dataclass
class Case:
    hyper: dict
    objective: object = None       # F(data, W, b, relation); None: the method has no MAP
    certify: object = None         # (F, data, fit) -> reference optimum; None: not a MAP
    perturb: object = None         # relation -> a nearby feasible relation
    tol: float = 1e-6
    note: str = ""
    reports_objective: bool = True  # Fit.objective is the paper's value (not the full -log p)
    boundary: bool = False  # the MAP lies on the boundary of the sampler's parameterisation
    tied: bool = False      # W's columns are tied (pooled): perturb them together
    covered_by: str = ""    # where the objective and optimum are tested instead (networks)


def _blend(key, toward):
    def perturb(rel, data):
        return {**rel, key: 0.6 * rel[key] + 0.4 * toward(data.n_tasks)}
    return perturb


def _eye(m):
    return np.eye(m)


def _zeros(m):
    return np.zeros((m, m))


LAM = 0.5
IW = {"lam": LAM, "ridge": 0.0, "df": None, "scale": 1.0}
OMEGA0 = np.array([[1.0, 0.3, 0.1], [0.3, 1.0, 0.2], [0.1, 0.2, 1.0]])
S_COMPLETE = np.full((3, 3), 1.0 / 3)
CLUSTERED = {"lam": LAM, "a": 1.5, "b": 0.05, "c": 0.9}
DEEP = {"hidden": 8, "epochs": 5, "lam_heads": 0.01}

CASES = {
    "stl": Case({"lam": LAM}, objective_l2mt(LAM, lambda r, d: 0),
                whole(lambda data, fit: ({"omega": np.eye(data.n_tasks)}, []))),
    "fixed": Case({"lam": LAM, "ridge": 0.1, "omega": OMEGA0},
                  lambda data, W, b, rel: (objective_l2mt(LAM, lambda r, d: 0)(data, W, b, rel)
                                           + 0.05 * cp.sum_squares(W)),
                  whole(lambda data, fit: ({"omega": OMEGA0}, []))),
    "inverse_wishart": Case(
        IW, lambda data, W, b, rel: (
            objective_l2mt(LAM, lambda r, d: 0)(data, W, b, rel)
            # -log IW(Ω; ν, Ψ) - (d/2) log|Ω| of the matrix-normal prior's normaliser
            + (data.n_tasks + 2 + data.n_tasks + 1 + data.n_features) / 2
            * np.linalg.slogdet(rel["omega"])[1]
            + 0.5 * np.trace(np.linalg.inv(rel["omega"]))),
        iw_certify(IW), _blend("omega", _eye)),
    "lkj": Case({"lam": LAM}, note="no MAP (density unbounded)"),
    "mtrl": Case({"lam": 0.05, "ridge": 0.1},
                 lambda data, W, b, rel: (objective_l2mt(0.05, lambda r, d: 0)(data, W, b, rel)
                                          + 0.05 * cp.sum_squares(W)),
                 whole(psd_omega(lambda o, data: [cp.trace(o) == 1])),
                 _blend("omega", lambda m: np.eye(m) / m)),
    # λ₂ small enough that the MAP Ω is positive definite (the joint lives on Ω ≻ 0)
    "schatten": Case({"lam": LAM, "lam2": 0.05, "r": 1.0, "ridge": 0.0},
                     objective_l2mt(LAM, lambda r, d: 0.05 * cp.trace(r["omega"])),
                     whole(psd_omega()), _blend("omega", _eye), tol=1e-5),
    "squared_schatten": Case({"lam": LAM, "r": 2.0, "ridge": 0.0},
                             objective_l2mt(LAM, lambda r, d: 0),
                             whole(psd_omega(lambda o, data: [cp.norm(o, "fro") <= 1])),
                             tol=1e-5),
    "pooled": Case({"lam": LAM},
                   lambda data, W, b, rel: (cp.sum(cp.hstack(loss(data, W, b)))
                                            + LAM / 2 * cp.sum_squares(W[:, 0])),
                   lambda F, data, fit: _pooled_reference(data), tied=True),
    "rmtl": Case({"lam": LAM, "ridge": 0.0, "similarity": None},
                 # mean-regularised: (λ/4) Σ_st S_st ‖w_s - w_t‖², S = 1/m
                 lambda data, W, b, rel: (cp.sum(cp.hstack(loss(data, W, b))) + LAM / 4 * sum(
                     S_COMPLETE[s, t] * cp.sum_squares(W[:, s] - W[:, t])
                     for s in range(3) for t in range(3))),
                 whole(lambda data, fit: ({}, []))),
    "clustered": Case(CLUSTERED, objective_l2mt(LAM, lambda r, d: 0),
                      whole(psd_omega(lambda o, data: [
                          cp.trace(o) == 1.5, o >> 0.05 * np.eye(3), o << 0.9 * np.eye(3)])),
                      _blend("omega", lambda m: np.eye(m) * 1.5 / m),
                      # eigenvalues at b make S = (Ω - bI)/(a - mb) singular: check inside
                      boundary=True),
    "glmtl": Case({"lam": LAM, "lam2": 0.2},
                  lambda data, W, b, rel: (
                      cp.sum(cp.hstack(loss(data, W, b)))
                      + LAM / 2 * _quad_precision(W, rel["omega_inv"])
                      - LAM * data.n_features / 2 * _logdet(rel["omega_inv"])
                      + 0.2 * cp.sum(cp.abs(rel["omega_inv"]))),
                  blocks(lambda data, fit: _precision_block(data)),
                  _blend("omega_inv", _eye), tol=1e-6),
    "spats": Case({"lam": LAM, "lam2": 0.2, "eps": 1e-8},
                  lambda data, W, b, rel: (
                      objective_l2mt(LAM, lambda r, d: 0.2 * cp.sum(cp.abs(r["omega"])))(
                          data, W, b, rel)
                      + LAM * 1e-8 / 2 * frac(np.eye(3), rel["omega"])),
                  whole(psd_omega()), _blend("omega", _eye), tol=1e-5),
    "reconstruction": Case({"lam": LAM, "lam2": 0.2, "zero_diagonal": False},
                           lambda data, W, b, rel: (
                               cp.sum(cp.hstack(loss(data, W, b)))
                               + LAM / 2 * cp.sum_squares(W - W @ rel["reconstruction"])
                               + 0.2 * cp.sum(cp.abs(rel["reconstruction"]))),
                           blocks(lambda data, fit: _free_block(data, "reconstruction")),
                           _blend("reconstruction", _zeros)),
    "amtl": Case({"lam": LAM, "mu": 0.1}, objective_amtl(LAM, 0.1),
                 blocks(nonneg_graph()), _blend("transfer_graph", _zeros)),
    "amtl_curriculum": Case({"lam": LAM, "mu": 0.1}, objective_amtl(LAM, 0.1),
                            note="Algorithm 2 is an optimiser of (1), not its MAP",
                            perturb=_blend("transfer_graph", _zeros)),
    "amtl_noloss": Case({"lam": LAM, "mu": 0.1}, objective_amtl(LAM, 0.1, "noloss"),
                        blocks(nonneg_graph()), _blend("transfer_graph", _zeros)),
    "amtl_imbalance": Case({"lam": LAM, "mu": 0.1}, objective_amtl(LAM, 0.1, "imbalance"),
                           blocks(nonneg_graph()), _blend("transfer_graph", _zeros)),
    "smtl": Case({"lam": LAM, "mu": 0.1}, objective_amtl(LAM, 0.1),
                 blocks(nonneg_graph(symmetric=True)), _blend("transfer_graph", _zeros)),
    # networks: objective (8) = negative log joint and Theorem 2's cvxpy optimum in test_deep
    "dmtl": Case(DEEP, covered_by="tests/test_deep.py (nlj = objective, Theorem 2)"),
    "dmtl_omega": Case(DEEP, covered_by="tests/test_deep.py (nlj = objective, Ω-step)"),
    "dmtl_trace": Case(DEEP, covered_by="tests/test_deep.py (nlj = objective, trace heads)"),
    "gamtl": Case({"lam": LAM, "gamma": 0.1}, objective_gamtl(LAM, 0.1),
                  blocks(combination_block), _blend("combination", _zeros), tol=1e-5),
    # test-time L2MT: problem (1) at the Ω = (1 - ε)Ω̃ + εI/m its trained model gives
    # (model: a tiny model trained in the l2mt_model fixture; Theorem 3 in test_l2mt_theorem3)
    "l2mt": Case({"lam": LAM, "eps": 1e-3}, objective_l2mt(LAM, lambda r, d: 0),
                 whole(lambda data, fit: ({"omega": fit.relation["omega"]}, []))),
    "l21": Case({"lam": 0.3}, objective_malsar(0.3, "l21"), whole(lambda data, fit: ({}, []))),
    "lasso": Case({"lam": 0.3}, objective_malsar(0.3, "lasso"),
                  whole(lambda data, fit: ({}, []))),
    "dirty": Case({"lam": 0.3, "lam2": 0.15}, objective_malsar(0.3, "dirty", 0.15),
                  whole(lambda data, fit: ({"P": cp.Variable(fit.W.shape)}, [])),
                  lambda rel, data: {**rel, "P": 0.5 * rel["P"]}),
}


def _quad_precision(W, P):
    """tr(W P Wᵀ) for a PSD precision P (convex in W for constant P, linear in P)."""
    if isinstance(P, cp.Expression):
        return cp.trace(P @ (np.asarray(W).T @ np.asarray(W)))
    return cp.sum_squares(W @ np.linalg.cholesky(P + 1e-300 * np.eye(len(P))))


def _logdet(P):
    return cp.log_det(P) if isinstance(P, cp.Expression) else np.linalg.slogdet(P)[1]


def _precision_block(data):
    P = cp.Variable((data.n_tasks, data.n_tasks), PSD=True)
    return {"omega_inv": P}, []


def _free_block(data, key):
    return {key: cp.Variable((data.n_tasks, data.n_tasks))}, []


def _pooled_reference(data):
    w, b0 = cp.Variable(data.n_features), cp.Variable()
    W = cp.vstack([w] * data.n_tasks).T
    b = cp.hstack([b0] * data.n_tasks)
    return solve_cvxpy(cp.sum(cp.hstack(loss(data, W, b))) + LAM / 2 * cp.sum_squares(w))


#: a bad value per kind of check (other checks: the first of CANDIDATES that they reject)
BAD = {R.positive: -1.0, R.nonnegative: -0.5, R.positive_or_none: 0.0, R.boolean: "yes",
       R.matrix_or_none: np.ones((2, 3)), R.number: float("inf")}
CANDIDATES = (-1.0, "zzz", 0.5, np.ones((2, 3)), None)


# -------------------------------------------------------------------- the test


@pytest.fixture(scope="module")
def data():
    return make_regression(seed=2, d=3, sizes=(20, 25, 30))[0]


@pytest.fixture(scope="module")
def l2mt_model(data, tmp_path_factory):
    """A tiny L2MT model on 3-feature regression problems (Ω̃ then depends on the data)."""
    from bayesmtl.l2mt import model as L

    rng = np.random.default_rng(0)
    problems = []
    for seed in range(3):
        part = make_regression(seed=10 + seed, d=3, sizes=(15, 15, 15))[0]
        A = rng.normal(size=(4, 3, 3))
        problems.append((part, A @ A.transpose(0, 2, 1) + 0.1 * np.eye(3), rng.uniform(
            0.8, 1.2, 4)))
    r = L.fit_l2mt(L.meta_data(problems, k=3), hidden=3, k=3, epochs=3, batch_size=2)
    return r.save(tmp_path_factory.mktemp("l2mt") / "model.pt")


@pytest.mark.parametrize("name", M.names())
def test_method_conformance(name, data, tmp_path, request):
    assert name in CASES, f"add a conformance row for the registered method {name!r}"
    case = CASES[name]
    if name == "l2mt":
        case = replace(case, hyper={**case.hyper, "model": request.getfixturevalue("l2mt_model")})
    method = M.get(name)
    task = np.asarray(data.task_names)[data.task]

    # 3. hyperparameters: a bad value of each, and an unknown name
    for h in method.hyper:
        errors = []
        for bad in ([BAD[h.check]] if h.check in BAD else CANDIDATES):
            try:
                M.validate(name, {h.name: bad})
            except HyperparameterError as err:
                errors.append(err)
        assert errors, f"{name}.{h.name} accepted every bad value"
        assert all(e.parameter == h.name and h.name in str(e) for e in errors)
    with pytest.raises(HyperparameterError, match="no hyperparameter 'zzz'"):
        MTLRegressor(method=name, zzz=1.0).fit(data.X, data.y, task=task)

    if case.objective is None and not case.covered_by:  # no MAP: the estimator says so
        with pytest.raises(MethodError, match="has no MAP"):
            MTLRegressor(method=name, **case.hyper).fit(data.X, data.y, task=task)
        return

    # 5. the estimator contract
    est = MTLRegressor(method=name, **case.hyper).fit(data.X, data.y, task=task)
    assert est.score(data.X, data.y, task=task) > 0.0  # better than the mean
    again = clone(est)
    assert again.get_params().keys() == est.get_params().keys() and not hasattr(again, "W_")
    est.save(tmp_path / "model")
    loaded = load_estimator(tmp_path / "model")
    np.testing.assert_array_equal(loaded.predict(data.X, task=task),
                                  est.predict(data.X, task=task))
    fit = est.fit_result_

    # 4. export: task names as coordinates of W and of the task relation
    post = est.idata_.posterior
    weights = "W" if method.predictor is None else "head_weight"
    assert list(post[weights].coords["task"].values) == list(data.task_names)
    var, dims = R.RELATIONS[method.relation]
    if var is not None:
        assert post[var].dims[-2:] == dims
        for dim in dims:
            assert list(post[var].coords[dim].values) == list(data.task_names)
    if case.covered_by:
        return

    # 1. negative log joint = paper objective + constant (MAP and perturbed points)
    hyper = M.validate(name, case.hyper)
    rng = np.random.default_rng(0)
    points = [] if case.boundary else [fit]
    for scale in (0.1, 0.3):
        rel = case.perturb(fit.relation, data) if case.perturb else fit.relation
        dW = rng.normal(size=fit.W.shape[:1] + ((1,) if case.tied else fit.W.shape[1:]))
        db = rng.normal(size=1 if case.tied else fit.b.shape)
        points.append(fit._replace(W=fit.W + scale * dW, b=fit.b + scale * db, relation=rel))
    gaps = []
    for point in points:
        joint = method.joint(data, hyper, R.Settings(), point)
        nlj = float(neg_log_joint(joint.model, joint.args, joint.kwargs, joint.params))
        gaps.append(nlj - value(case.objective(data, point.W, point.b, point.relation)))
    assert np.ptp(gaps) < 1e-7 * max(1.0, abs(gaps[0])), gaps
    if case.reports_objective:  # the solver reports the paper's value itself
        paper = value(case.objective(data, fit.W, fit.b, fit.relation))
        assert abs(fit.objective - paper) < 1e-6 * max(1.0, abs(paper)), (fit.objective, paper)

    # 2. MAP reaches the optimum (whole problem or each block)
    if case.certify is not None:
        ours = value(case.objective(data, fit.W, fit.b, fit.relation))
        reference = case.certify(case.objective, data, fit)
        assert ours <= reference + case.tol * max(1.0, abs(reference)), (ours, reference)


# -------------------------------------------------------------------- shared_subspace
# Wu, Zhang & Ré: W = B A is not identifiable from (B, A), so the objective reads the MAP's
# factors from the relation (the perturbed W is ignored; W = B A is what the fit reports).


def objective_shared_subspace(lam):
    """Eq. (2) with α = 1 and the mean loss, plus the Gaussian priors' weight decay:
    Σ_i L_i(B A_i, b_i) + (λ/2)(‖B‖²_F + ‖A‖²_F)."""
    def F(data, W, b, rel):
        del W
        B, A = rel["B"], rel["A"]
        return (cp.sum(cp.hstack(loss(data, B @ A, b)))
                + lam / 2 * (cp.sum_squares(B) + cp.sum_squares(A)))
    return F


def subspace_blocks(F, data, fit):
    """Non-convex in (B, A), convex in each block: B (with b) for the fit's A, and A (with
    b) for its B, by cvxpy. (Proposition 3's closed form certifies the global optimum on
    tasks sharing X: tests/test_info_transfer.py.)"""
    d, m = data.n_features, data.n_tasks
    r = fit.relation["B"].shape[1]
    b_block = solve_cvxpy(F(data, None, cp.Variable(m), {**fit.relation, "B": cp.Variable((d, r))}))
    a_block = solve_cvxpy(F(data, None, cp.Variable(m), {**fit.relation, "A": cp.Variable((r, m))}))
    return max(b_block, a_block)


CASES["shared_subspace"] = Case(
    {"r": 1, "lam": LAM, "task_weights": None}, objective_shared_subspace(LAM),
    subspace_blocks,
    lambda rel, data: {**rel, "B": 1.1 * rel["B"] + 0.05, "A": 0.9 * rel["A"] - 0.05})
