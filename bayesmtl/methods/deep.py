r"""Deep multi-task networks with loss balancing (BMTL, Liang & Zhang), in Pyro/torch.

Input → shared ReLU layer (``hidden`` units) → one linear head per task; the heads are
independent Gaussians (``dmtl``), share a matrix-normal prior MN(0, I, Ω/λ_h) with Ω learned on
MTRL's set (``dmtl_omega``), or carry a trace-norm penalty (``dmtl_trace``). The balancing
strategy (``balancing``) turns the per-task losses L_i into the objective; BMTL's
generalised (Gibbs) posterior is

    p(Θ | D) ∝ exp(-Σ_i h(L_i(Θ))) p(Θ),   h(L) = exp(L/T),

whose MAP is problem (8) with r(Θ) = -log p(Θ): λ = ``lam`` is the Gaussian prior precision
of the shared layer (weight decay), λ_h = ``lam_heads`` that of the heads. DS (the product of
the task likelihoods), fixed weights (tempered likelihoods), DWA, Max, sMAX, CL, MGDA and
uncertainty weighting are the other strategies (:mod:`bayesmtl.deep.balancing`). MAP by Adam
with task-stratified minibatches and early stopping; ``inference="svi"`` fits a mean-field
(``guide="normal"``) or last-layer guide and gives predictive uncertainty. Torch is imported
only when a deep method is fitted.
"""

from __future__ import annotations

import numpy as np

from ..data import CLASSIFICATION, MULTICLASS, REGRESSION
from .registry import (
    Fit,
    Hyper,
    Method,
    integer_at_least,
    nonnegative,
    one_of,
    positive,
    probability,
    register,
)

STRATEGIES = ("ds", "fixed", "dwa", "max", "smax", "cl", "mgda", "bmtl", "uncertainty")


def _weights_or_none(value):
    """None or a vector of positive task weights (for balancing="fixed")."""
    if value is None:
        return None
    w = np.asarray(value, dtype=float)
    if w.ndim != 1 or not np.all(np.isfinite(w)) or np.any(w <= 0):
        raise ValueError("must be None or a vector of positive task weights")
    return w


def _device(value):
    if not isinstance(value, str):
        raise ValueError("must be 'auto' or a torch device string such as 'cpu'")
    return value


HYPER = (
    Hyper("balancing", "bmtl", one_of(*STRATEGIES), "loss balancing strategy"),
    Hyper("T", 50.0, positive, "BMTL temperature: h(L) = exp(L/T)"),
    Hyper("lam", 1e-4, positive, "λ: Gaussian prior precision of the shared layer"),
    Hyper("lam_heads", 1e-3, positive, "λ_h: prior precision (or penalty) of the heads"),
    Hyper("hidden", 600, integer_at_least(0), "units of the shared ReLU layer (0: linear)"),
    Hyper("epochs", 100, integer_at_least(1), "maximum passes over the data"),
    Hyper("batch_size", 32, integer_at_least(1), "rows of every task per step"),
    Hyper("lr", 0.02, positive, "Adam learning rate η₀"),
    Hyper("lr_decay", 1.0, nonnegative, "η_p = η₀ / (1 + lr_decay · p); 1 = the paper's"),
    Hyper("patience", 10, integer_at_least(1), "early stopping on the validation part"),
    Hyper("valid_fraction", 0.2, probability, "validation part of each task"),
    Hyper("weights", None, _weights_or_none, "task weights for balancing='fixed'"),
    Hyper("dwa_T", 2.0, positive, "DWA temperature"),
    Hyper("cl_T", 1.0, positive, "CL (self-paced) temperature"),
    Hyper("device", "auto", _device, "'auto': CUDA when visible, else CPU"),
)


def _fit_deep(network):
    def fit(data, hyper, settings, init=None):
        from ..deep import fit_deep

        del init
        result = fit_deep(data, network=network, inference=settings.inference,
                          guide=settings.guide,
                          num_samples=settings.num_samples, seed=settings.seed,
                          progress_bar=settings.progress_bar, **hyper)
        best = result.history.get("best_epoch")
        objective = float(np.asarray(result.history["objective"])[-1])
        relation = {} if result.omega is None else {"omega": np.asarray(result.omega)}
        info = {"epochs": int(len(result.history["objective"])),
                "best_epoch": -1 if best is None else int(best)}
        return Fit(None, None, relation, objective, True, info, result)
    return fit


def _export(fit, data):
    return fit.raw.to_datatree(data.task_names, data.feature_names)


def _restore(meta, arrays):
    from ..deep import DeepResult

    return DeepResult.restore(meta, arrays)


for name, network, relation, summary in (
        ("dmtl", "dmtl", "none", "deep MTL: shared ReLU layer, one head per task, balanced "
                                 "losses (BMTL by default)"),
        ("dmtl_omega", "omega", "omega", "deep MTL with matrix-normal heads MN(0, I, Ω/λ_h), "
                                         "Ω learned (MRN's idea)"),
        ("dmtl_trace", "trace", "none", "deep MTL with trace-norm heads (TNRMTL's LAF form)")):
    register(Method(
        name=name,
        summary=summary,
        hyper=HYPER,
        fit_map=_fit_deep(network),
        sample=_fit_deep(network),
        samplers=frozenset({"svi"}),
        relation=relation,
        kinds=frozenset({REGRESSION, CLASSIFICATION, MULTICLASS}),
        grid={"lam_heads": (0.001, 0.01, 0.1), "T": (5.0, 50.0)},
        sampling_prior=("Gaussian priors on every weight (λ, λ_h) and the generalised "
                        "likelihood exp(-η Σ h(L_i)): SVI with a mean-field or last-layer "
                        "guide"),
        shallow=False,
        predictor=lambda fit: fit.raw,
        restore=_restore,
        export=_export,
    ))
