"""The torch/Pyro paths on CUDA: the same fit on CPU and on CUDA agrees (float64 MAP), results
move between devices through save/restore, and SVI draws, Ω̃ and the ArviZ export come back as
NumPy. Skipped where torch sees no CUDA device (CI); run on a GPU machine with
``pytest tests/test_cuda.py`` (the other torch tests then also run on CUDA: device="auto")."""

import os

import numpy as np
import pytest
import torch
from conftest import l2mt_meta, make_regression

from bayesmtl.deep import fit_deep
from bayesmtl.deep.result import DeepResult
from bayesmtl.l2mt.model import L2MTResult, fit_l2mt

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device visible")
# cuBLAS reads this when its handle is made: set before any test of the session touches CUDA
# (collection imports this module first), so the deterministic-mode test below is valid
os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")

# Adam on float64: CPU and CUDA sum in different orders, so agreement is to round-off grown
# over a few dozen steps, far below any difference a device bug (a wrong tensor, a lost
# buffer, a prior left on the CPU) makes.
RTOL = 1e-6


def _regression():
    return make_regression(d=4, sizes=(40, 45, 50))[0]


@pytest.mark.parametrize("network", ["dmtl", "omega", "trace"])
def test_deep_map_agrees_on_cpu_and_cuda(network):
    data = _regression()
    kw = {"network": network, "hidden": 8, "epochs": 5, "patience": None, "dtype": "float64",
          "lr_decay": 0.0, "seed": 1}
    cpu, gpu = (fit_deep(data, device=dev, **kw) for dev in ("cpu", "cuda"))
    assert gpu.device.type == "cuda" and all(v.is_cuda for v in gpu.values.values())
    np.testing.assert_allclose(gpu.history["objective"], cpu.history["objective"], rtol=RTOL)
    np.testing.assert_allclose(gpu.predict(data.X, data.task), cpu.predict(data.X, data.task),
                               rtol=RTOL, atol=1e-9)
    if network == "omega":
        np.testing.assert_allclose(gpu.omega, cpu.omega, rtol=RTOL, atol=1e-9)


def test_deterministic_mode_repeats_a_cuda_fit_bitwise():
    """CUDA's scatter sums (index_add, the backward of indexing) add atomically, so two runs
    with one seed agree to round-off only; torch's deterministic mode (with
    CUBLAS_WORKSPACE_CONFIG set) makes them bitwise equal, as fit_deep's docstring says."""
    data = _regression()
    kw = {"network": "omega", "balancing": "mgda", "hidden": 8, "epochs": 4, "seed": 3,
          "device": "cuda"}
    torch.use_deterministic_algorithms(True)
    try:
        a, b = fit_deep(data, **kw), fit_deep(data, **kw)
    finally:
        torch.use_deterministic_algorithms(False)
    np.testing.assert_array_equal(a.history["train_loss"], b.history["train_loss"])
    np.testing.assert_array_equal(a.predict(data.X, data.task), b.predict(data.X, data.task))


def test_deep_result_moves_from_cuda_to_cpu():
    data = _regression()
    r = fit_deep(data, network="omega", hidden=8, epochs=4, dtype="float64", device="cuda")
    meta, arrays = r.state()
    assert all(isinstance(v, np.ndarray) for v in arrays.values())
    back = DeepResult.restore(meta, arrays, device="cpu")
    assert back.device.type == "cpu"
    np.testing.assert_allclose(back.predict(data.X, data.task), r.predict(data.X, data.task),
                               rtol=1e-12)


def test_deep_svi_on_cuda_exports_with_task_names():
    data = _regression()
    r = fit_deep(data, network="omega", inference="svi", hidden=8, epochs=4, num_samples=10,
                 device="cuda")
    mean, sd = r.predict(data.X, data.task, return_std=True)
    assert isinstance(mean, np.ndarray) and np.all(np.isfinite(mean)) and np.all(sd > 0)
    dt = r.to_datatree()
    assert list(dt.posterior["omega"].coords["task"].values) == list(data.task_names)
    assert np.ptp(dt.posterior["head_weight"].values, axis=1).max() > 0  # real draws


def test_l2mt_map_agrees_on_cpu_and_cuda_and_loads_across(tmp_path):
    problems, meta = l2mt_meta()
    kw = {"hidden": 4, "k": 3, "lam": 0.01, "epochs": 20, "batch_size": 3, "seed": 0}
    cpu, gpu = (fit_l2mt(meta, device=dev, **kw) for dev in ("cpu", "cuda"))
    assert gpu.device.type == "cuda"
    np.testing.assert_allclose(gpu.history["loss"], cpu.history["loss"], rtol=RTOL)
    data = problems[1][0]
    np.testing.assert_allclose(gpu.omega(data), cpu.omega(data), rtol=RTOL, atol=1e-9)
    back = L2MTResult.load(gpu.save(tmp_path / "m.pt"), device="cpu")
    np.testing.assert_allclose(back.omega(data), gpu.omega(data), rtol=1e-12, atol=1e-12)


def test_l2mt_svi_draws_on_cuda():
    problems, meta = l2mt_meta()
    r = fit_l2mt(meta, hidden=4, k=3, epochs=10, batch_size=2, inference="svi",
                 device="cuda")
    draws = r.omega_draws(problems[0][0], num_draws=5)
    assert draws.shape == (5, 3, 3) and np.all(np.isfinite(draws))
    assert np.ptp(draws, axis=0).max() > 0
