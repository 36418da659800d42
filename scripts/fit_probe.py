"""How fast can a generator fit a few digits? A supervised probe of G alone, without D.

    python scripts/fit_probe.py --model dcgan_ema --model stylegan2 --steps 200
    python scripts/fit_probe.py --model stylegan2 --nvlabs /path/to/stylegan2-ada-pytorch   # + NVlabs' own G

Each generator (built from `model=<name>`, the default data=mnist at 32x32) maps --images fixed latents
to --images fixed digits, trained on the mean squared error with its own config's G optimizer
(lr, betas), noise inputs off. The loss every 50 steps says how quickly G can place a given image
at a given latent: a GAN's generator has to do at least that much. It separates "G is slow to
fit" from "the adversarial game is slow" when a recipe does not learn (README, StyleGAN2).

`--nvlabs DIR` adds NVlabs/stylegan2-ada-pytorch's Generator (a checkout of that repository, its
reference ops on CPU) with the widths of each `stylegan2*` model: the same probe on the reference
implementation, an independent check that a slow fit is StyleGAN2's and not gankit's.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from hydra import compose, initialize_config_dir
from hydra.utils import instantiate

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from gankit.data.mnist import load_embedded_digits, to_unit_range  # noqa: E402


def digits(count: int, resolution: int, seed: int) -> torch.Tensor:
    """`count` embedded MNIST digits drawn with `seed`, in [-1, 1] at the given resolution: [count, 1, R, R]."""
    images, _ = load_embedded_digits()
    pick = torch.randperm(len(images), generator=torch.Generator().manual_seed(seed))[:count]
    return to_unit_range(images[pick], resolution)


def nvlabs_generator(checkout: Path, gen_cfg) -> torch.nn.Module:
    """NVlabs' Generator with a gankit StyleGAN2 config's sizes (fp32 everywhere, no clamping)."""
    sys.path.insert(0, str(checkout))
    from training.networks import Generator  # type: ignore[import-not-found]

    return Generator(
        z_dim=gen_cfg.latent_dim, c_dim=0, w_dim=gen_cfg.w_dim, img_resolution=gen_cfg.resolution,
        img_channels=gen_cfg.channels, mapping_kwargs={"num_layers": gen_cfg.mapping_layers},
        synthesis_kwargs={"channel_base": gen_cfg.channel_base, "channel_max": gen_cfg.channel_max,
                          "num_fp16_res": 0, "conv_clamp": None},
    )  # fmt: skip


def probe(name: str, generator, latent_dim: int, target: torch.Tensor, opt_cfg, steps: int, seed: int) -> list[float]:
    """Fits G(z_i) to target i on the MSE; prints a table row and returns the loss every 50 steps."""
    torch.manual_seed(seed)
    z = torch.randn(len(target), latent_dim)
    optimizer = torch.optim.Adam(generator.parameters(), lr=opt_cfg.lr, betas=tuple(float(b) for b in opt_cfg.betas))
    style_based = hasattr(generator, "synthesis")
    curve, start = [], time.perf_counter()
    for step in range(steps + 1):
        images = generator(z, None, noise_mode="none") if style_based else generator(z)
        loss = F.mse_loss(images, target)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        if step % 50 == 0:
            curve.append(loss.item())
    print(f"| {name} | {' | '.join(f'{v:.4f}' for v in curve)} | {time.perf_counter() - start:.0f} s |", flush=True)
    return curve


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", action="append", default=None, help="a model config (default: dcgan_ema, stylegan2)")
    parser.add_argument("--images", type=int, default=64)
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--nvlabs", type=Path, default=None, help="a stylegan2-ada-pytorch checkout")
    args = parser.parse_args()
    models = args.model or ["dcgan_ema", "stylegan2"]
    print(f"MSE of G(z_i) against digit i, {args.images} digits, every 50 steps")
    print("| generator | " + " | ".join(f"step {s}" for s in range(0, args.steps + 1, 50)) + " | time |")
    print("|---" * (args.steps // 50 + 3) + "|")
    for model in models:
        with initialize_config_dir(str(ROOT / "conf"), version_base="1.3"):
            cfg = compose("train", overrides=[f"model={model}", "data=mnist"])
        target = digits(args.images, cfg.data.resolution, args.seed)
        torch.manual_seed(args.seed)
        generator = instantiate(cfg.model.generator)
        latent_dim = cfg.model.generator.latent_dim
        probe(f"gankit {model}", generator, latent_dim, target, cfg.model.g_optimizer, args.steps, args.seed)
        if args.nvlabs is not None and "stylegan2" in cfg.model.generator._target_:
            torch.manual_seed(args.seed)
            reference = nvlabs_generator(args.nvlabs, cfg.model.generator)
            probe(f"NVlabs {model}", reference, latent_dim, target, cfg.model.g_optimizer, args.steps, args.seed)


if __name__ == "__main__":
    main()
