"""Tasks reconstructed from the other tasks: the structure shared by AMTL and GAMTL.

A relation matrix ``B (m, m)`` with zero diagonal maps task parameters to reconstructions:
column t of ``W @ B`` is ``sum_s B[s, t] w_s`` (AMTL's ``W b_t``, GAMTL's ``W_{-t} c_t``).
"""

from __future__ import annotations

import jax.numpy as jnp


def zero_diagonal(B):
    """B with its diagonal set to zero (a task never reconstructs itself)."""
    return B * (1.0 - jnp.eye(B.shape[0], dtype=B.dtype))


def reconstruction(W, B):
    """(d, m) reconstructions ``W @ B`` with B's diagonal ignored."""
    return W @ zero_diagonal(B)


def reconstruction_residual(W, B):
    """(d, m) ``W - W @ B``: what each task's parameters keep beyond the other tasks."""
    return W - reconstruction(W, B)
