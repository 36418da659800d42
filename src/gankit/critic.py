"""The second stage: G frozen, a fresh critic trained to tell held-out real data from G's samples.

The survey's "generator paused, discriminator trained on to judge it better", in the form of
Gulrajani, Raffel & Metz (ICLR 2019, google-research towards_gan_benchmarks nn_divergence.py): a
fresh critic (three 5x5 stride-2 convolutions, width 64, swish, no normalisation; an MLP for 2D
points), the WGAN-GP loss (lambda 10), Adam 2e-4 with betas (0, 0.9) decayed linearly to 0, batch
`batch_size`, an EMA of its weights (0.999), a fixed number of steps, trained on one half of the
held-out set against fresh samples. Weights start as the reference's: He (variance scaling, truncated
normal) for the layers with an activation, Glorot for the output, zero biases; PyTorch's default
starts them about 2.5x smaller, with input gradients so small that the penalty reads about lambda.
Its divergence estimate, the negative critic loss, is read on the other half against other fresh
samples: how well a critic that never saw the training set separates G from the data. The same
critic is also read with a same-size subset of the *training* images in place of the held-out ones:
a generator that copies its training set scores near 0 there and clearly above 0 against held-out
data. Everything is drawn from `seed`: the numbers repeat.

One departure: the reference trains 100,000 steps, where a 0.999 average has long forgotten the
initial weights. At the few thousand a CPU affords it has not (0.999^500 = 0.61 of the average is
still the untrained critic), so the decay warms up as TensorFlow's ExponentialMovingAverage with
`num_updates`: min(0.999, (1 + t) / (10 + t)) at step t, the same as the reference's from t = 9,000.
"""

from __future__ import annotations

import copy
import logging
import time
from collections.abc import Callable

import torch
from torch import Tensor, nn

from gankit.regularizers import gradient_penalty

log = logging.getLogger(__name__)


def reference_init(critic: nn.Module) -> nn.Module:
    """The reference's initialisation (TF-slim): every layer but the last He-initialised (variance scaling:
    a normal of std sqrt(1.3 * 2 / fan_in) truncated at 2 std), the last Glorot-uniform, biases 0."""
    layers = [m for m in critic.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
    for layer in layers[:-1]:
        fan_in = layer.weight[0].numel()
        std = (1.3 * 2 / fan_in) ** 0.5
        nn.init.trunc_normal_(layer.weight, std=std, a=-2 * std, b=2 * std)
    nn.init.xavier_uniform_(layers[-1].weight)
    for layer in layers:
        nn.init.zeros_(layer.bias)
    return critic


def ema_decay_at(step: int, decay: float) -> float:
    """The average's decay after `step` updates (0-based): TF's ExponentialMovingAverage with num_updates."""
    return min(decay, (1 + step) / (10 + step))


class ConvCritic(nn.Module):
    """Three 5x5 stride-2 convolutions (width, 2 width, 4 width), swish, then one linear output per image."""

    def __init__(self, channels: int, resolution: int, width: int = 64) -> None:
        super().__init__()
        self.net = nn.Sequential(
            nn.Conv2d(channels, width, 5, 2, 2),
            nn.SiLU(),
            nn.Conv2d(width, 2 * width, 5, 2, 2),
            nn.SiLU(),
            nn.Conv2d(2 * width, 4 * width, 5, 2, 2),
            nn.SiLU(),
            nn.Flatten(),
            nn.Linear(4 * width * (-(-resolution // 8)) ** 2, 1),
        )

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x).squeeze(1)  # [N, C, H, W] -> [N]


class MLPCritic(nn.Module):
    """For 2D points: three hidden layers of `width`, swish."""

    def __init__(self, features: int = 2, width: int = 256) -> None:
        super().__init__()
        layers, size = [], features
        for _ in range(3):
            layers += [nn.Linear(size, width), nn.SiLU()]
            size = width
        self.net = nn.Sequential(*layers, nn.Linear(size, 1))

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x).squeeze(1)


def make_critic(example: Tensor, width: int = 64) -> nn.Module:
    """A critic for data shaped like `example` [N, ...]: conv for images, MLP for vectors."""
    if example.ndim == 4:
        return reference_init(ConvCritic(example.shape[1], example.shape[-1], width))
    return reference_init(MLPCritic(example.shape[1], 4 * width))


def critic_loss(critic: nn.Module, real: Tensor, fake: Tensor, gp_weight: float) -> Tensor:
    """WGAN-GP: E[C(fake)] - E[C(real)] + gp_weight * E[(|grad C(x_mix)| - 1)^2]."""
    return critic(fake).mean() - critic(real).mean() + gp_weight * gradient_penalty(critic, real, fake)


def critic_divergence(
    sample: Callable[[int, torch.Generator], Tensor],
    heldout: Tensor,
    train: Tensor,
    steps: int = 2000,
    batch_size: int = 64,
    lr: float = 2e-4,
    gp_weight: float = 10.0,
    ema_decay: float = 0.999,
    seed: int = 0,
    width: int = 64,
) -> dict[str, float]:
    """Train a fresh critic on half of `heldout` against `sample(n, generator)` (G's samples, no gradient) and
    return its divergence estimates on the other half (`critic`) and on a same-size subset of `train`
    (`critic_train`), with the time it took (`critic_seconds`). Where the training set is the smaller (limited
    data: 500 training images against 2,250 held-out ones to read), both are read on that many images, so the
    two numbers compare like with like."""
    if len(heldout) < 2 * batch_size:
        raise ValueError(
            f"the critic needs at least {2 * batch_size} held-out samples (half to train on, half to read), "
            f"got {len(heldout)}: raise data.holdout, or lower the critic's batch_size"
        )
    if steps < 1:
        raise ValueError(f"metrics.critic.steps must be >= 1, got {steps}")
    start = time.perf_counter()
    device = heldout.device
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        torch.manual_seed(seed)
        generator = torch.Generator().manual_seed(seed)
        order = torch.randperm(len(heldout), generator=generator).to(device)
        fit, read = heldout[order[: len(order) // 2]], heldout[order[len(order) // 2 :]]
        critic = make_critic(heldout, width).to(device)
        average = copy.deepcopy(critic).requires_grad_(False)
        optimizer = torch.optim.Adam(critic.parameters(), lr=lr, betas=(0.0, 0.9))
        schedule = torch.optim.lr_scheduler.LinearLR(optimizer, 1.0, 0.0, total_iters=steps)
        for step in range(steps):
            real = fit[torch.randint(len(fit), (batch_size,), generator=generator).to(device)]
            loss = critic_loss(critic, real, sample(batch_size, generator), gp_weight)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            schedule.step()
            with torch.no_grad():
                keep = ema_decay_at(step, ema_decay)
                for a, p in zip(average.parameters(), critic.parameters(), strict=True):
                    a.lerp_(p, 1 - keep)
        n = min(len(read), len(train))  # read is in random order already
        pick = torch.randperm(len(train), generator=generator)[:n].to(device)
        results = {
            "critic": _divergence(average, read[:n], sample, generator, gp_weight, batch_size),
            "critic_train": _divergence(average, train[pick], sample, generator, gp_weight, batch_size),
        }
    results["critic_seconds"] = time.perf_counter() - start
    log.info(
        "Critic (%d steps, batch %d): divergence %.4f against held-out data, %.4f against training data, %.1f s",
        steps, batch_size, results["critic"], results["critic_train"], results["critic_seconds"],
    )  # fmt: skip
    return results


def _divergence(critic, real: Tensor, sample, generator, gp_weight: float, batch_size: int) -> float:
    """The negative critic loss over `real` (in batches) against as many fresh samples."""
    total, count = 0.0, 0
    for part in real.split(batch_size):
        total += -float(critic_loss(critic, part, sample(len(part), generator), gp_weight).detach()) * len(part)
        count += len(part)
    return total / count


def dataset_images(datamodule, data, limit: int, seed: int, device: torch.device) -> Tensor:
    """Up to `limit` samples of a data set (drawn from `seed`) as one decoded tensor on `device`."""
    from torch.utils.data import DataLoader, Subset

    from gankit.randomness import reference_indices

    indices = reference_indices(len(data), min(limit, len(data)), None, torch.Generator().manual_seed(seed))
    parts = []
    with torch.random.fork_rng(devices=[]):
        for batch in DataLoader(Subset(data, indices.tolist()), batch_size=500, shuffle=False):
            images = batch[0] if isinstance(batch, (list, tuple)) else batch
            parts.append(datamodule.decode(images).to(device))
    return torch.cat(parts)


def judge_generator(module, datamodule, max_samples: int = 10000, seed: int = 0, **settings) -> dict[str, float]:
    """The critic's divergence estimates for a GANModule's generator (its EMA one when it has one) on a data
    module's held-out set (and training set); `settings` go to `critic_divergence`."""
    heldout = getattr(datamodule, "heldout_set", None)
    if datamodule.train_set is None:
        datamodule.setup("fit")
        heldout = datamodule.heldout_set
    if heldout is None:
        raise ValueError(
            f"the critic trains on held-out data, and this data set holds none out: {datamodule.holdout_advice}"
        )
    device = module.device
    held = dataset_images(datamodule, heldout, max_samples, seed, device)
    train = dataset_images(datamodule, datamodule.train_set, max_samples, seed, device)

    def sample(n: int, generator: torch.Generator) -> Tensor:
        return module.sample(module.sample_latent(n, generator)).float()

    return critic_divergence(sample, held, train, seed=seed, **settings)
