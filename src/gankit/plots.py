"""Pictures of the metrics a user would rather look at than read: mode histograms and 2D scatters.

Each function draws a matplotlib figure (Agg backend, no display needed) and returns it as a float
tensor [3, H, W] in [0, 1], the form `gankit.callbacks.samples.log_image` sends to any logger.
"""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # headless: compute nodes have no display
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402
from matplotlib.collections import PatchCollection  # noqa: E402
from PIL import Image  # noqa: E402
from torch import Tensor  # noqa: E402


def _to_tensor(figure: plt.Figure, path: Path | None, tight: bool = True) -> Tensor:
    """Render once, then save (PNG) and return the same pixels: a second draw by savefig would double the cost.

    `tight=False`: the figure's own margins (tight_layout measures every label first, half the cost
    of a small figure's render).
    """
    if tight:
        figure.tight_layout()
    figure.canvas.draw()
    rgb = np.asarray(figure.canvas.buffer_rgba())[..., :3].copy()
    plt.close(figure)
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(rgb).save(path)
    return torch.from_numpy(rgb).permute(2, 0, 1).float() / 255.0


def mode_histogram(counts: Tensor, title: str, path: Path | None = None, captured: Tensor | None = None) -> Tensor:
    """Bar chart of the share of samples per mode against the uniform ideal.

    `captured`: per-mode counts of high-quality samples (2D mixtures); a mode without any is drawn red
    and not counted in the title. Without it, every mode with a sample counts.
    """
    counts = counts.detach().cpu().double()
    captured = counts if captured is None else captured.detach().cpu().double()
    k = len(counts)
    share = (counts / counts.sum().clamp(min=1)).numpy()
    figure, ax = plt.subplots(figsize=(min(12, 4 + k * 0.25), 3.2) if k <= 40 else (12, 3.2))
    if k <= 40:
        ax.bar(np.arange(k), share, color=np.where(captured.numpy() > 0, "tab:blue", "tab:red"))
        ax.set_xticks(np.arange(k))
        ax.set_xlabel("mode (red: not captured)")
    else:  # 1,000 Stacked MNIST modes: sorted shares read better than 1,000 labels
        ax.bar(np.arange(k), np.sort(share)[::-1], width=1.0, color="tab:blue")
        ax.set_xlabel("modes, most frequent first")
        ax.set_yscale("log")  # the uniform share (1e-3) next to a collapsed mode's (near 1)
    ax.axhline(1 / k, color="black", linestyle="--", linewidth=1, label="uniform")
    ax.set_ylabel("share of samples")
    ax.set_title(f"{title}: {(captured > 0).sum().item():.0f}/{k} modes")
    ax.legend(loc="upper right")
    return _to_tensor(figure, path)


def mixture_scatter(points: Tensor, means: Tensor, std: float, title: str, path: Path | None = None) -> Tensor:
    """Generated points over the true modes, each mode drawn with its 3-std circle."""
    points, means = points.detach().cpu().float().numpy(), means.detach().cpu().float().numpy()
    figure, ax = plt.subplots(figsize=(4.5, 4.5))
    figure.subplots_adjust(left=0.11, right=0.97, bottom=0.07, top=0.93)  # fixed: drawn every few seconds on 2D data
    ax.scatter(points[:, 0], points[:, 1], s=2, alpha=0.4, color="tab:blue", label="generated")
    circles = [plt.Circle((x, y), 3 * std) for x, y in means]
    ax.add_collection(PatchCollection(circles, facecolor="none", edgecolor="tab:red", linewidth=1))
    ax.scatter(means[:, 0], means[:, 1], s=12, marker="x", color="tab:red", label="modes (3 std)")
    span = np.abs(means).max() * 1.4 + 10 * std
    ax.set_xlim(-span, span)
    ax.set_ylim(-span, span)
    ax.set_aspect("equal")
    ax.set_title(title)
    ax.legend(loc="upper right", fontsize=7)
    return _to_tensor(figure, path, tight=False)
