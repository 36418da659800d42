"""Perceptual path length (Karras et al. 2019), as NVlabs/stylegan2-ada-pytorch metrics/perceptual_path_length.py.

For pairs of latents z0, z1 and t ~ U(0, 1) ("full" paths) or t = 0 ("end" points), the images at
t and t + epsilon along the path, slerp in Z (then mapped) or lerp in W (`space`), are compared by a
perceptual distance d; each pair scores d / epsilon^2, and PPL is the mean after dropping the scores
below the 1st and above the 99th percentile. Short paths mean a smooth latent space: images change
little for a small step in any direction.

The distance: NVlabs uses LPIPS (VGG16 features, unit-normalised per layer, squared L2). gankit
uses the run's feature space by default (the digits CNN for MNIST, Inception for images, in
`metrics.evaluation.features`), each feature vector unit-normalised, squared L2: a one-layer LPIPS
without learned weights. `distance: lpips` uses torchmetrics' LPIPS (VGG) when its weights can be
loaded. Scores in different feature spaces do not compare.

Written here rather than with torchmetrics' `perceptual_path_length`: that one scores end points
only, interpolates whatever its generator wrapper samples (so not slerp in Z and lerp in W of one
StyleGAN), draws from the global random generator, and needs LPIPS weights.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
import torchmetrics
from torch import Tensor
from torchmetrics.utilities import dim_zero_cat

SPACES, SAMPLINGS, DISTANCES = ("w", "z"), ("end", "full"), ("features", "lpips")


def check_ppl(settings: dict) -> None:
    """metrics.evaluation.ppl's keys and values, checked at start."""
    expected = {"space", "sampling", "epsilon", "distance", "num_samples"}
    space, sampling, distance = settings.get("space"), settings.get("sampling"), settings.get("distance")
    epsilon, n = settings.get("epsilon"), settings.get("num_samples")
    number = isinstance(epsilon, (int, float)) and not isinstance(epsilon, bool)
    count = isinstance(n, int) and not isinstance(n, bool)
    if (set(settings) != expected or space not in SPACES or sampling not in SAMPLINGS or distance not in DISTANCES
            or not (number and 0 < epsilon < 1) or not (count and n >= 2)):  # fmt: skip
        raise ValueError(
            f"metrics.evaluation.ppl takes space in {SPACES}, sampling in {SAMPLINGS}, distance in {DISTANCES}, "
            f"0 < epsilon < 1 and num_samples >= 2 (pairs); got {settings}"
        )


def slerp(a: Tensor, b: Tensor, t: Tensor) -> Tensor:
    """NVlabs' slerp: along the great circle from a's direction to b's, at fraction t [N, 1]; unit norm."""
    a, b = F.normalize(a, dim=-1), F.normalize(b, dim=-1)
    d = (a * b).sum(dim=-1, keepdim=True)
    p = t * torch.acos(d.clamp(-1, 1))
    c = F.normalize(b - d * a, dim=-1)
    return F.normalize(a * torch.cos(p) + c * torch.sin(p), dim=-1)


def feature_distance(embed):
    """d(x, y) = ||f(x) / |f(x)| - f(y) / |f(y)|||^2 with f = `embed` (images -> features [N, d])."""

    def distance(x: Tensor, y: Tensor) -> Tensor:
        f0, f1 = F.normalize(embed(torch.cat([x, y])).float().flatten(1), dim=1).chunk(2)
        return (f0 - f1).square().sum(dim=1)

    return distance


@torch.no_grad()
def path_lengths(
    net, distance, z0: Tensor, z1: Tensor, t: Tensor, labels: Tensor | None, space: str, epsilon: float
) -> Tensor:
    """d(image at t, image at t + epsilon) / epsilon^2 for each pair [N]; `net` a style-based G in eval mode,
    `distance(x, y)` [N] the perceptual distance (feature_distance, or LPIPS)."""
    t = t[:, None]
    if space == "w":
        w0, w1 = net.mapping(torch.cat([z0, z1]), None if labels is None else labels.repeat(2)).chunk(2)
        ws = torch.cat([w0.lerp(w1, t[:, :, None]), w0.lerp(w1, t[:, :, None] + epsilon)])
    else:
        zt = torch.cat([slerp(z0, z1, t), slerp(z0, z1, t + epsilon)])
        ws = net.mapping(zt, None if labels is None else labels.repeat(2))
    x, y = net.synthesis(ws.float(), noise_mode="const", clamp=False).float().chunk(2)  # unclamped, as NVlabs
    return distance(x, y) / epsilon**2


class PathLengthScores(torchmetrics.Metric):
    """Collects the per-pair scores over batches and ranks; compute: the mean between the 1st and 99th percentiles."""

    full_state_update = False

    def __init__(self) -> None:
        super().__init__()
        self.add_state("scores", default=[], dist_reduce_fx="cat")

    def update(self, scores: Tensor) -> None:
        self.scores.append(scores.double())

    def compute(self) -> Tensor:
        scores = dim_zero_cat(self.scores).sort().values
        n = len(scores)
        lo, hi = scores[int(0.01 * (n - 1))], scores[-(int(0.01 * (n - 1)) + 1)]  # numpy's 'lower' / 'higher'
        return scores[(scores >= lo) & (scores <= hi)].mean().float()


def lpips_distance(device: torch.device):
    """torchmetrics' LPIPS (VGG) as a distance of images in [-1, 1] (grey ones as RGB); one message when its
    weights cannot be loaded (offline)."""
    try:
        from torchmetrics.image.lpip import LearnedPerceptualImagePatchSimilarity

        lpips = LearnedPerceptualImagePatchSimilarity(net_type="vgg", reduction="none").to(device)
    except Exception as error:  # no network and no cached torchvision VGG16 weights
        raise ValueError(
            "metrics.evaluation.ppl.distance=lpips needs torchvision's VGG16 weights (downloaded into TORCH_HOME on "
            f"first use), which could not be loaded ({type(error).__name__}): use distance=features "
            "(the run's feature space) or put the weights in TORCH_HOME"
        ) from None

    def distance(x: Tensor, y: Tensor) -> Tensor:
        rgb = (lambda im: im.expand(-1, 3, -1, -1)) if x.shape[1] == 1 else (lambda im: im)  # noqa: E731
        return lpips(rgb(x.clamp(-1, 1)), rgb(y.clamp(-1, 1))).flatten()

    return distance
