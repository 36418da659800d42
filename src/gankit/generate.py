"""generate(cfg): look inside a trained generator: sample grid, latent interpolations, raw samples.

Writes into the job's run directory (logs/generate/runs/<time>/):
- `grid.png`: `grid_size` samples from seeded latents (for 2D data, `scatter.png` over the modes);
- `interpolation.png`: `rows` rows, each walking from one latent to another along the great
  circle (slerp: Gaussian latents live near a sphere, where a straight line would pass through
  the improbable, low-norm middle) in `steps` steps (images only);
- conditional models: `classes.png`, a row per class; InfoGAN: `traversal_categorical.png` and
  `traversal_continuous_<i>.png`, one code varied, the others fixed;
- a style-based generator (StyleGAN2): `truncation.png` (each row one latent, psi from 1 to 0
  left to right: towards the average w), `style_mixing.png` (the top row's and left column's
  sources; cell (r, c) takes row r's coarse styles, the layers before `style_mixing_cutoff`, and
  column c's fine ones), `interpolation_w.png` (straight lines in W, where the mapping network has
  made the space flatter than Z); `truncation_psi` < 1 truncates every sample and picture;
- `samples.npy`: `num_samples` raw samples, float32 in the generator's range ([-1, 1] images as
  [N, C, H, W], or [N, 2] points), and `samples/000000.png`, ... as 8-bit images, for external scorers.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import torch
from omegaconf import DictConfig
from torch import Tensor
from torchvision.utils import make_grid, save_image

from gankit.checkpoints import load_module, pick_device
from gankit.style_mixing import style_based
from gankit.training import _report_user_errors, check_types

log = logging.getLogger(__name__)


def slerp(a: Tensor, b: Tensor, t: Tensor) -> Tensor:
    """Spherical interpolation between rows of a and b [N, d] at fractions t [T] -> [N, T, d].

    Norms are interpolated linearly and directions along the great circle; parallel vectors fall
    back to linear interpolation.
    """
    t = t.to(a)[None, :, None]
    na, nb = a.norm(dim=1, keepdim=True), b.norm(dim=1, keepdim=True)
    ua, ub = a / na, b / nb
    omega = torch.acos((ua * ub).sum(1, keepdim=True).clamp(-1, 1))[:, None]  # [N, 1, 1]
    so = torch.sin(omega)
    safe = so.abs() > 1e-6
    wa = torch.where(safe, torch.sin((1 - t) * omega) / so.where(safe, 1.0), 1 - t)
    wb = torch.where(safe, torch.sin(t * omega) / so.where(safe, 1.0), t)
    direction = wa * ua[:, None] + wb * ub[:, None]
    if not safe.all():  # linear fallback: renormalise the chord to a unit direction
        direction = direction / direction.norm(dim=2, keepdim=True)
    return direction * ((1 - t) * na[:, None] + t * nb[:, None])


def generate(cfg: DictConfig) -> Path:
    with _report_user_errors(Path(cfg.paths.output_dir)):
        return _generate(cfg)


def _generate(cfg: DictConfig) -> Path:
    check_types(cfg)
    for key in ("num_samples", "grid_size", "nrow", "batch_size"):
        if cfg[key] < 1:
            raise ValueError(f"{key} must be at least 1, got {cfg[key]}")
    if cfg.interpolation.rows < 1 or cfg.interpolation.steps < 2:
        raise ValueError("interpolation.rows >= 1 and interpolation.steps >= 2")
    device = pick_device(cfg.device)
    train_cfg, module, g_step = load_module(cfg.ckpt_path, cfg.paths, device)
    module.set_truncation(cfg.get("truncation_psi", 1.0))
    out = Path(cfg.paths.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    rng = torch.Generator().manual_seed(cfg.seed)

    def draw(z: Tensor, labels: Tensor | None = None) -> Tensor:
        if labels is None:  # conditional models: balanced classes 0, 1, ..., K-1, 0, ...
            labels = module.balanced_labels(len(z))
        if labels is None:
            return torch.cat([module.sample(c, ema=cfg.ema).float().cpu() for c in z.split(cfg.batch_size)])
        pairs = zip(z.split(cfg.batch_size), labels.split(cfg.batch_size), strict=True)
        return torch.cat([module.sample(c, ema=cfg.ema, labels=y).float().cpu() for c, y in pairs])

    grid_samples = draw(module.sample_latent(cfg.grid_size, rng))
    points = grid_samples.ndim == 2
    if points:
        from gankit.data.mixtures import mixture_means
        from gankit.plots import mixture_scatter

        means, std = mixture_means(train_cfg.data.kind)
        mixture_scatter(
            draw(module.sample_latent(cfg.num_samples, rng)),
            means,
            std,
            f"generator step {g_step}",
            out / "scatter.png",
        )
    else:
        save_image(make_grid(grid_samples, nrow=cfg.nrow, normalize=True, value_range=(-1, 1)), out / "grid.png")
        ends = module.sample_latent(2 * cfg.interpolation.rows, rng).cpu()
        path = slerp(ends[0::2], ends[1::2], torch.linspace(0, 1, cfg.interpolation.steps))  # [rows, steps, d]
        rows = module.balanced_labels(cfg.interpolation.rows)  # conditional: one class per row
        labels = None if rows is None else rows.repeat_interleave(cfg.interpolation.steps)
        frames = draw(path.reshape(-1, path.shape[-1]).to(device), labels)
        grid = make_grid(frames, nrow=cfg.interpolation.steps, normalize=True, value_range=(-1, 1))
        save_image(grid, out / "interpolation.png")

    if not points and module.num_classes is not None:
        class_grid(module, cfg, rng, out)
    if not points and module.info is not None:
        traversals(module, cfg, rng, out)
    if style_based(module.generator):
        style_pictures(module, cfg, rng, out)

    samples = draw(module.sample_latent(cfg.num_samples, rng))
    np.save(out / "samples.npy", samples.numpy().astype(np.float32))
    if cfg.png and not points:
        folder = out / "samples"
        folder.mkdir(exist_ok=True)
        for i, image in enumerate(samples):
            save_image((image + 1) / 2, folder / f"{i:06d}.png")  # 8-bit PNG of [0, 1]
    log.info("Generator step %d: wrote %d samples and pictures to %s", g_step, cfg.num_samples, out)
    return out


def _save_rows(images: Tensor, ncol: int, path: Path) -> None:
    save_image(make_grid(images.float().cpu(), nrow=ncol, normalize=True, value_range=(-1, 1)), path)


def class_grid(module, cfg: DictConfig, rng: torch.Generator, out: Path) -> None:
    """`classes.png`: one row per class (the first 20), `nrow` samples each; column j shares its noise."""
    rows = min(module.num_classes, 20)
    z = module.sample_latent(cfg.nrow, rng).repeat(rows, 1)
    labels = torch.arange(rows, device=z.device).repeat_interleave(cfg.nrow)
    _save_rows(module.sample(z, ema=cfg.ema, labels=labels), cfg.nrow, out / "classes.png")


def traversals(module, cfg: DictConfig, rng: torch.Generator, out: Path) -> None:
    """InfoGAN: vary one code, keep the rest fixed.

    `traversal_categorical.png`: row k sets the categorical code to k, column j shares noise and
    continuous codes; `traversal_continuous_<i>.png`: row r is one latent, columns sweep code i
    from -2 to 2 (beyond the training range [-1, 1], to show extrapolation).
    """
    info, steps = module.info, cfg.interpolation.steps
    if info.categorical:
        base = module.sample_latent(cfg.nrow, rng).repeat(info.categorical, 1)
        _, cont = info.split(base)
        cat = torch.arange(info.categorical, device=base.device).repeat_interleave(cfg.nrow)
        z = info.compose(base[:, : info.noise_dim], cat, cont)
        _save_rows(module.sample(z, ema=cfg.ema), cfg.nrow, out / "traversal_categorical.png")
    for i in range(info.continuous):
        base = module.sample_latent(cfg.interpolation.rows, rng).repeat_interleave(steps, 0)
        cat, cont = info.split(base)
        cont = cont.clone()
        cont[:, i] = torch.linspace(-2, 2, steps, device=base.device).repeat(cfg.interpolation.rows)
        z = info.compose(base[:, : info.noise_dim], cat, cont)
        _save_rows(module.sample(z, ema=cfg.ema), steps, out / f"traversal_continuous_{i}.png")


@torch.no_grad()
def style_pictures(module, cfg: DictConfig, rng: torch.Generator, out: Path) -> None:
    """A style-based G: `truncation.png`, `style_mixing.png` and `interpolation_w.png` (see the module's docstring)."""
    net = module.sampler(cfg.ema)
    was_training = net.training
    net.eval()  # fixed noise maps, no w_avg update
    try:
        rows, steps, psi = cfg.interpolation.rows, cfg.interpolation.steps, module.truncation_psi
        w_avg = net.w_avg

        def mapped(n: int) -> Tensor:  # [n, num_ws, w_dim] at the chosen truncation
            ws = net.mapping(module.sample_latent(n, rng), module.balanced_labels(n))
            return w_avg + psi * (ws - w_avg)

        def synthesis(ws: Tensor) -> Tensor:
            return torch.cat([net.synthesis(part).float().cpu() for part in ws.split(cfg.batch_size)])

        ws = net.mapping(module.sample_latent(rows, rng), module.balanced_labels(rows))  # untruncated rows
        psis = torch.linspace(1, 0, steps, device=ws.device)[None, :, None, None]
        frames = w_avg + psis * (ws[:, None] - w_avg)  # [rows, steps, num_ws, w_dim]
        _save_rows(synthesis(frames.flatten(0, 1)), steps, out / "truncation.png")

        cutoff = cfg.get("style_mixing_cutoff")
        cutoff = net.num_ws // 2 if cutoff is None else cutoff
        if isinstance(cutoff, bool) or not isinstance(cutoff, int) or not 1 <= cutoff < net.num_ws:
            raise ValueError(
                f"style_mixing_cutoff must be a whole number in 1..{net.num_ws - 1} (this G has {net.num_ws} styles), "
                f"or null for half; got {cutoff!r}"
            )
        row_ws, col_ws = mapped(rows), mapped(cfg.nrow)
        mixed = torch.cat([row_ws[:, None, :cutoff].expand(-1, cfg.nrow, -1, -1),
                           col_ws[None, :, cutoff:].expand(rows, -1, -1, -1)], dim=2)  # fmt: skip
        row_images, col_images = synthesis(row_ws), synthesis(col_ws)
        cells = synthesis(mixed.flatten(0, 1)).reshape(rows, cfg.nrow, *row_images.shape[1:])
        corner = torch.full_like(row_images[:1], -1.0)  # black, as NVlabs' style_mixing.py canvas
        top = torch.cat([corner, col_images])
        grid = torch.cat([top[None], torch.cat([row_images[:, None], cells], dim=1)])  # [rows + 1, nrow + 1, ...]
        _save_rows(grid.flatten(0, 1), cfg.nrow + 1, out / "style_mixing.png")

        ends = mapped(2 * rows)
        t = torch.linspace(0, 1, steps, device=ends.device)[None, :, None, None]
        path = ends[0::2, None] + t * (ends[1::2, None] - ends[0::2, None])  # lerp in W
        _save_rows(synthesis(path.flatten(0, 1)), steps, out / "interpolation_w.png")
    finally:
        net.train(was_training)
