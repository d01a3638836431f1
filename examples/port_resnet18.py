"""Port a PyTorch ResNet-18 into Flax linen and Equinox with convbridge, then find where a buggy port diverges.

Run: ``python examples/port_resnet18.py`` (add ``--width 64`` for the full-size network, ``--html diff.html`` to
write the report as a page). No torchvision: the reference models come with convbridge (``convbridge.models``).
"""

from __future__ import annotations

import argparse
import time

import jax
import jax.numpy as jnp
import numpy as np
import torch

import convbridge as cb
from convbridge.models import equinox as eqx_models, linen as linen_models, torch as torch_models


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--width", type=int, default=16, help="channels of the first stage (64: torchvision's size)")
    parser.add_argument("--size", type=int, default=32, help="input height and width")
    parser.add_argument("--html", help="also write the buggy port's diff as a self-contained HTML page")
    args = parser.parse_args()

    torch.manual_seed(0)
    model = torch_models.ResNet18(width=args.width).eval()
    with torch.no_grad():  # non-trivial BatchNorm statistics, as in a trained network
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.uniform_(-0.5, 0.5)
                m.running_var.uniform_(0.5, 2.0)
    x = np.random.default_rng(0).standard_normal((2, 3, args.size, args.size)).astype(np.float32)

    # 1. Weights for the whole model: torch -> Flax linen (abstract target shapes: no init needed).
    module = linen_models.ResNet18(width=args.width)
    shapes = jax.eval_shape(module.init, jax.random.PRNGKey(0), jnp.zeros((1, args.size, args.size, 3)))
    start = time.perf_counter()
    variables, table = cb.port.state_dict(model, shapes, module=module)
    print(f"ported {len(table.rows)} parameters torch -> flax.linen in {time.perf_counter() - start:.2f} s")

    # 2. Layer by layer: every layer judged on the same input.
    report = cb.diff(model, (module, variables), x)
    print(report)

    # 3. Torch -> Equinox, judged the same way.
    skeleton = eqx_models.ResNet18(width=args.width, key=jax.random.PRNGKey(0))
    eqx_model, _ = cb.port.state_dict(model, skeleton)
    print(f"torch -> equinox: {cb.diff(model, eqx_model, x).verdict}")

    # 4. A classic porting bug: one strided conv with padding 'SAME' (XLA pads (0, 1), torch (1, 1)).
    buggy = linen_models.ResNet18(width=args.width, same_padding_in="layer2_0/conv1")
    report = cb.diff(model, (buggy, variables), x)
    print(f"\nbuggy port: {report.verdict}; first divergent layer:\n  {report.first_divergent}")
    print(f"(diff took {report.seconds:.2f} s)")
    if args.html:
        report.save_html(args.html)
        print(f"wrote {args.html}")


if __name__ == "__main__":
    main()
