"""Overheads a user feels (issue 12, item 4), measured in one run: medians of many calls, ratios.

- ``cb.conv`` on the tutorial's single image (1, 3, 32, 32) x (4, 3, 5, 5) against ``F.conv2d`` and eager
  ``lax.conv_general_dilated`` (after the first call);
- padding modes on torch at (8, 64, 56, 56) x (64, 64, 3, 3) against ``nn.Conv2d(padding_mode=...)``;
- the float64 reference and ``cb.compare`` against the float32 backends on a few suite layers.

Run: ``.venv/bin/python benchmarks/overheads.py`` (prints a Markdown table).
"""

from __future__ import annotations

import time

import numpy as np


def median(fn, calls: int, warmup: int = 2) -> float:
    for _ in range(warmup):
        sync(fn())
    times = []
    for _ in range(calls):
        start = time.perf_counter()
        sync(fn())
        times.append(time.perf_counter() - start)
    times.sort()
    return times[len(times) // 2]


def sync(y):
    getattr(y, "block_until_ready", lambda: None)()
    return y


def main() -> None:
    import jax
    import torch
    import torch.nn.functional as F
    from jax import lax

    import convbridge as cb
    from convbridge import reference
    from convbridge.ops import build

    rng = np.random.default_rng(0)
    rows = []
    x = rng.standard_normal((1, 3, 32, 32), dtype=np.float32)
    w = rng.standard_normal((4, 3, 5, 5), dtype=np.float32)
    xt, wt = torch.from_numpy(x), torch.from_numpy(w)
    with torch.no_grad():
        raw, ours = median(lambda: F.conv2d(xt, wt), 3000), median(lambda: cb.conv(xt, wt), 3000)
    rows.append(("cb.conv vs F.conv2d, (1,3,32,32)x(4,3,5,5)", raw, ours))
    xj, wj = jax.device_put(x), jax.device_put(w)
    dn = lax.conv_dimension_numbers(x.shape, w.shape, ("NCHW", "OIHW", "NCHW"))
    raw = median(lambda: lax.conv_general_dilated(xj, wj, (1, 1), "VALID", dimension_numbers=dn), 2000)
    rows.append(("cb.conv vs eager lax, same", raw, median(lambda: cb.conv(xj, wj), 2000)))
    x = rng.standard_normal((8, 64, 56, 56), dtype=np.float32)
    w = rng.standard_normal((64, 64, 3, 3), dtype=np.float32)
    xt, wt = torch.from_numpy(x), torch.from_numpy(w)
    for mode in ("reflect", "replicate", "circular"):
        layer = torch.nn.Conv2d(64, 64, 3, padding=1, padding_mode=mode, bias=False)
        layer.weight.data = wt
        with torch.no_grad():
            raw = median(lambda: layer(xt), 15)
            ours = median(lambda: cb.conv(xt, wt, padding=1, padding_mode=mode), 15)
        rows.append((f"padding_mode={mode} vs nn.Conv2d, (8,64,56,56)x(64,64,3,3)", raw, ours))
    layers = {"seed (32,3,32,32)x(4,3,5,5)": ((32, 3, 32, 32), (4, 3, 5, 5), {}),
              "(8,64,56,56)x(64,64,3,3) p1": ((8, 64, 56, 56), (64, 64, 3, 3), {"padding": 1}),
              "1x1 256->64 @56 b8": ((8, 256, 56, 56), (64, 256, 1, 1), {}),
              "stem 7x7/2 (8,3,224,224)": ((8, 3, 224, 224), (64, 3, 7, 7), {"stride": 2, "padding": 3})}
    for name, (xs, ws, kw) in layers.items():
        x, w = rng.standard_normal(xs, dtype=np.float32), rng.standard_normal(ws, dtype=np.float32)
        xt, wt = torch.from_numpy(x), torch.from_numpy(w)
        xj, wj = jax.device_put(x), jax.device_put(w)
        with torch.no_grad():
            t_torch = median(lambda: cb.conv(xt, wt, **kw), 7)
        t_jax = median(lambda: cb.conv(xj, wj, **kw), 7)
        spec = build("conv", x, w, None, kw)
        t_ref = median(lambda: reference.conv(x, w, None, spec, dtype=np.float64), 5, warmup=1)
        t_cmp = median(lambda: cb.compare(x, w, backends=("torch", "jax"), **kw), 3, warmup=1)
        rows.append((f"float64 reference vs fastest float32 backend, {name}", min(t_torch, t_jax), t_ref))
        rows.append((f"cb.compare(torch, jax) vs slowest backend, {name}", max(t_torch, t_jax), t_cmp))
    print("| what | baseline ms | convbridge ms | ratio |\n|---|---|---|---|")
    for what, base, ours in rows:
        print(f"| {what} | {base * 1e3:.3g} | {ours * 1e3:.3g} | {ours / base:.2f} |")


if __name__ == "__main__":
    main()
