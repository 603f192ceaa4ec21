"""L2MT: the label graph, LGNN embeddings, the estimation/link model against objective (6)."""

import math

import numpy as np
import pytest
import torch
from conftest import binary_tasks, l2mt_meta

from bayesmtl.data import MultiTaskData
from bayesmtl.errors import DataError, HyperparameterError, ModelFileError
from bayesmtl.l2mt.lgnn import label_graph, lgnn_embed, pad_tasks, task_arrays
from bayesmtl.l2mt.model import L2MTResult, fit_l2mt, meta_data

torch.set_num_threads(1)


# ----------------------------------------------------------------------------- graph


def test_label_graph_hand_made():
    # four points on a line: labels a a b b; 1-NN pairs (0,1), (1,0)/(1,2)… by distance
    X = np.array([[0.0], [1.0], [1.5], [5.0]])
    y = np.array([0, 0, 1, 1])
    G = label_graph(X, y, k=1)
    expected = np.array([[1, 1, 0, 0],
                         [1, 1, -1, 0],
                         [0, -1, 1, 1],
                         [0, 0, 1, 1]], float)
    np.testing.assert_array_equal(G, expected)
    G2 = label_graph(X, y, k=2)  # 0's 2-NN {1, 2}: 0 and 2 differ → -1
    assert G2[0, 2] == G2[2, 0] == -1 and G2[0, 3] == 0
    assert np.array_equal(G2, G2.T)


def test_label_graph_bad_inputs():
    with pytest.raises(HyperparameterError):
        label_graph(np.zeros((3, 2)), np.zeros(3), k=0)
    with pytest.raises(DataError):
        label_graph(np.zeros((3, 2)), np.zeros(4))


def _weights(d, h, seed=0):
    g = torch.Generator().manual_seed(seed)
    return (torch.randn(d, h, generator=g, dtype=torch.float64) * 0.3,
            torch.randn(h, generator=g, dtype=torch.float64) * 0.1,
            torch.randn(d, h, generator=g, dtype=torch.float64) * 0.3,
            torch.randn(h, generator=g, dtype=torch.float64) * 0.1)


def test_embedding_invariant_to_row_order_and_sizes():
    rng = np.random.default_rng(1)
    data = binary_tasks(rng, 1, 15)
    (X, G), = task_arrays(data, k=3)
    perm = rng.permutation(15)
    L1, b1, L2, b2 = _weights(5, 4)
    def embed(X, G):
        Xp, Gp, mask = pad_tasks([(X, G)])
        return lgnn_embed(*(torch.as_tensor(a) for a in (Xp, Gp, mask)), L1, b1, L2, b2, 3)
    e = embed(X, G)
    e_perm = embed(X[perm], label_graph(X[perm], data.y[perm], 3))
    torch.testing.assert_close(e, e_perm, rtol=1e-12, atol=1e-12)
    # a ragged pair of tasks (15 and 7 rows) padded together = each embedded alone
    X2, G2 = X[:7], label_graph(X[:7], data.y[:7], 3)
    Xp, Gp, mask = pad_tasks([(X, G), (X2, G2)])
    both = lgnn_embed(*(torch.as_tensor(a) for a in (Xp, Gp, mask)), L1, b1, L2, b2, 3)
    torch.testing.assert_close(both[0], e[0], rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(both[1], embed(X2, G2)[0], rtol=1e-12, atol=1e-12)


# ----------------------------------------------------------------------------- objective (6)


def _objective6(problems, th, lam, layers, k):
    """Objective (6) coded from the paper: columns are data points, H = ReLU(LᵀX + β1ᵀ)."""
    L1, b1, L2, b2, a, g = (th[n] for n in ("L1", "beta1", "L2", "beta2", "alpha", "gamma"))
    losses = []
    for data, omegas, os_ in problems:
        E = []
        for t in range(data.n_tasks):
            Xt = data.X[data.task == t].T                      # (d, n)
            Gt = label_graph(Xt.T, data.y[data.task == t], k)  # (n, n)
            H = np.maximum(L1.T @ Xt + b1[:, None], 0)
            for _ in range(layers - 1):
                H = np.maximum(L2.T @ Xt + H @ Gt + b2[:, None], 0)
            E.append(H.mean(axis=1))
        E = np.array(E).T                                      # (d̂, m)
        m = E.shape[1]
        K = np.array([[math.exp(-np.sum((a[2] * (E[:, i] - E[:, j])) ** 2)) for j in range(m)]
                      for i in range(m)])
        for omega, o in zip(omegas, os_, strict=True):
            omega = omega / np.trace(omega)
            f = (a[0] * np.trace(E.T @ E @ omega) + a[1] * np.trace(K @ omega)
                 + a[3] * np.trace(omega @ omega))
            losses.append(abs(f - math.tanh(g[0] * o + g[1])))
    q = len(losses)
    return np.mean(losses) + lam * (np.sum(L1**2) + np.sum(L2**2)), q


@pytest.mark.parametrize("prior_scale", [math.inf, 3.0])
def test_negative_log_joint_is_objective_6(prior_scale):
    import pyro
    from pyro import poutine

    from bayesmtl.l2mt.model import L2MTConfig, L2MTNet

    problems, meta = l2mt_meta()
    lam, b, layers, k, h = 0.2, 0.05, 2, 3, 4
    cfg = L2MTConfig(n_features=5, hidden=h, layers=layers, k=k, lam=lam, scale=b,
                     prior_scale=prior_scale)
    rng = np.random.default_rng(3)
    th = {"L1": rng.normal(size=(5, h)) * 0.3, "L2": rng.normal(size=(5, h)) * 0.3,
          "beta1": rng.normal(size=h) * 0.1, "beta2": rng.normal(size=h) * 0.1,
          "alpha": np.array([0.5, -0.7, 0.8, 0.3]), "gamma": np.array([1.3, -0.4])}
    tensors = [torch.as_tensor(a) for a in meta]
    with pyro.settings.context(module_local_params=True):
        net = L2MTNet(cfg, meta.n_tuples)
        cond = poutine.condition(net, data={n: torch.as_tensor(v) for n, v in th.items()})
        nlj = -float(poutine.trace(cond).get_trace(*tensors).log_prob_sum())
    obj, q = _objective6(problems, th, lam, layers, k)
    assert q == meta.n_tuples == 12
    sigma2 = b / (2 * q * lam)
    n_L = 2 * 5 * h
    const = q * math.log(2 * b) + 0.5 * n_L * math.log(2 * math.pi * sigma2)
    if math.isfinite(prior_scale):  # N(0, s²) on β, α, γ
        rest = np.concatenate([th["beta1"], th["beta2"], th["alpha"], th["gamma"]])
        const += np.sum(rest**2) / (2 * prior_scale**2) + 0.5 * rest.size * math.log(
            2 * math.pi * prior_scale**2)
    assert nlj == pytest.approx(q / b * obj + const, rel=1e-10)


# ----------------------------------------------------------------------------- fitting


def test_map_fit_lowers_objective_6_and_roundtrips(tmp_path):
    problems, meta = l2mt_meta(P=6)
    r = fit_l2mt(meta, hidden=4, k=3, lam=0.01, scale=0.1, epochs=60, batch_size=3,
                 seed=0)
    th = {n: v.cpu().numpy() for n, v in r.values().items()}
    from bayesmtl.l2mt.model import paper_init
    init = {n: v.numpy() for n, v in paper_init(r.config, 0).items()}
    after, _ = _objective6(problems, th, 0.01, 2, 3)
    before, _ = _objective6(problems, init, 0.01, 2, 3)
    assert np.all(np.isfinite(r.history["loss"])) and after < 0.8 * before
    data = problems[0][0]
    omega = r.omega(data)
    assert omega.shape == (data.n_tasks,) * 2
    assert np.trace(omega) == pytest.approx(1.0)
    assert np.linalg.eigvalsh(omega).min() > -1e-10
    path = r.save(tmp_path / "l2mt.pt")
    back = L2MTResult.load(path, device="cpu")
    np.testing.assert_allclose(back.omega(data), omega, atol=1e-12)
    assert back.config == r.config
    with pytest.raises(ModelFileError):
        L2MTResult.load(tmp_path / "missing.pt")
    (tmp_path / "bad.pt").write_bytes(b"not a model")
    with pytest.raises(ModelFileError):
        L2MTResult.load(tmp_path / "bad.pt")


def test_fixed_link_keeps_gamma_and_roundtrips(tmp_path):
    """link="fixed": γ = (1, 0) is a buffer, not a latent site; it survives save/load."""
    problems, meta = l2mt_meta(P=3)
    r = fit_l2mt(meta, hidden=3, k=3, epochs=5, batch_size=2, link="fixed")
    assert r.values()["gamma"].tolist() == [1.0, 0.0]
    assert "gamma" not in r.guide.median()
    back = L2MTResult.load(r.save(tmp_path / "m.pt"), device="cpu")
    assert back.config.link == "fixed"
    np.testing.assert_allclose(back.omega(problems[0][0]), r.omega(problems[0][0]), atol=1e-12)
    with pytest.raises(HyperparameterError, match="link"):
        fit_l2mt(meta, link="other", epochs=1)


def test_svi_gives_posterior_over_omega():
    problems, meta = l2mt_meta(P=4)
    r = fit_l2mt(meta, hidden=4, k=3, lam=0.1, scale=0.1, epochs=30, batch_size=2,
                 inference="svi", svi_init_scale=0.05, seed=1)
    data = problems[1][0]
    draws = r.omega_draws(data, num_draws=20, seed=0)
    assert draws.shape == (20, data.n_tasks, data.n_tasks)
    np.testing.assert_allclose(np.trace(draws, axis1=1, axis2=2), 1.0, atol=1e-9)
    assert np.ptp(draws, axis=0).max() > 1e-6  # draws differ


def test_bad_inputs_are_typed():
    problems, meta = l2mt_meta(P=2)
    with pytest.raises(HyperparameterError, match="prior_scale"):
        fit_l2mt(meta, inference="svi", prior_scale=math.inf, epochs=1)
    with pytest.raises(HyperparameterError, match="hidden"):
        fit_l2mt(meta, hidden=0, epochs=1)
    with pytest.raises(HyperparameterError, match="draws need an SVI fit"):
        fit_l2mt(meta, hidden=2, k=3, epochs=1).draws(2)
    rng = np.random.default_rng(0)
    reg = MultiTaskData.from_arrays(rng.normal(size=(20, 5)), rng.normal(size=20),
                                    np.repeat([0, 1], 10))
    multi = MultiTaskData.from_arrays(rng.normal(size=(30, 5)), np.tile([0, 1, 2], 10),
                                      np.repeat([0, 1], 15), kind="multiclass")
    with pytest.raises(DataError, match="binary classification or regression"):
        meta_data([(multi, np.eye(2)[None], np.ones(1))])
    assert meta_data([(reg, np.eye(2)[None], np.ones(1))]).X.shape == (1, 2, 10, 5)
    data = problems[0][0]
    with pytest.raises(DataError, match="omegas"):
        meta_data([(data, np.eye(2)[None], np.ones(1))])
    with pytest.raises(DataError, match="non-finite"):
        meta_data([(data, np.eye(data.n_tasks)[None], np.array([np.nan]))])
