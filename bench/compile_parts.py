"""Where torch.compile wins or loses on this machine: each network of the 2D grid recipe alone, and the
one kernel that decides the discriminator, timed eager and compiled side by side (ratios from one run).

    python bench/compile_parts.py                 # CPU, one thread, batch 512
    python bench/compile_parts.py --batch 64 --threads 2

Rows: G (3x256 MLP, ReLU) and D (3x256 MLP, in-place LeakyReLU 0.2) forward + backward, as in a
training step; D forward without gradients; frozen D forward + backward to its input (G's step);
and `x > 0` on a [batch, 256] tensor, the bool mask a compiled LeakyReLU stores for its backward
where it cannot read the output (eager autograd keeps a float tensor instead). A ratio is eager
time / compiled time: above 1, compiling pays.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable

import torch

from gankit.networks.mlp import Discriminator, Generator


def per_call_us(fn: Callable[[torch.Tensor], object], x: torch.Tensor, calls: int) -> float:
    for _ in range(20):  # warm-up (and compilation, for the compiled callable)
        fn(x)
    start = time.perf_counter()
    for _ in range(calls):
        fn(x)
    return (time.perf_counter() - start) / calls * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batch", type=int, default=512)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--calls", type=int, default=200)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    generator = Generator(latent_dim=2, dim=2, width=256, depth=3, batch_norm=False)
    discriminator = Discriminator(dim=2, width=256, depth=3)
    frozen = Discriminator(dim=2, width=256, depth=3).requires_grad_(False)
    z, points, hidden = torch.randn(args.batch, 2), torch.randn(args.batch, 2), torch.randn(args.batch, 256)

    def train(net):
        return lambda x: net(x).sum().backward()

    def input_grad(net):  # G's step: D frozen, the gradient flows to D's input only
        def run(x):
            net(x.requires_grad_()).sum().backward()

        return run

    def no_grad(net):
        def run(x):
            with torch.no_grad():
                return net(x)

        return run

    cases = [
        ("G forward + backward (ReLU)", train, generator, z),
        ("D forward + backward (LeakyReLU)", train, discriminator, points),
        ("D forward, no gradients", no_grad, discriminator, points),
        ("D frozen, forward + input backward", input_grad, frozen, points.clone()),
        ("x > 0 on [batch, 256] (a bool output)", lambda f: f, lambda x: x > 0, hidden),
    ]
    print(f"batch {args.batch}, {args.threads} thread(s), torch {torch.__version__}\n")
    print("| part | eager us | compiled us | eager / compiled |")
    print("|---|---|---|---|")
    for name, wrap, target, x in cases:
        eager = per_call_us(wrap(target), x, args.calls)
        compiled = per_call_us(wrap(torch.compile(target)), x, args.calls)
        print(f"| {name} | {eager:.0f} | {compiled:.0f} | {eager / compiled:.2f}x |", flush=True)


if __name__ == "__main__":
    main()
