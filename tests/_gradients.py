"""Gradients of ``sum(conv(x, w, b) ** 2)`` through one algorithm, compared with the native algorithm's."""

from __future__ import annotations

from typing import Any

import numpy as np

import convbridge as cb


def _grads(backend: str, algorithm: str, arrays: tuple[np.ndarray, ...], kw: dict[str, Any]) -> list[Any]:
    if backend == "jax":
        import jax
        import jax.numpy as jnp

        def loss(x, w, b):
            return jnp.sum(cb.conv(x, w, b, algorithm=algorithm, **kw) ** 2)

        return list(jax.jit(jax.grad(loss, argnums=(0, 1, 2)))(*arrays))  # one compile each
    import torch

    ts = [torch.tensor(a, requires_grad=True) for a in arrays]
    (cb.conv(*ts, algorithm=algorithm, **kw) ** 2).sum().backward()
    return [t.grad for t in ts]


def assert_gradients_match_native(backend: str, algorithm: str, arrays: tuple[np.ndarray, ...],
                                  kw: dict[str, Any]) -> None:
    """Every gradient (x, w, b) of ``algorithm`` within 1e-5 relative (2-norm) of the native algorithm's."""
    for g, n in zip(_grads(backend, algorithm, arrays, kw), _grads(backend, "native", arrays, kw)):
        g, n = np.asarray(g, np.float64), np.asarray(n, np.float64)
        assert np.linalg.norm(g - n) <= 1e-5 * np.linalg.norm(n)
