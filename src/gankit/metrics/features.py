"""Feature spaces the metrics are computed in: what an image (or point) becomes before it is scored.

A feature space turns a batch of samples in the data's range ([-1, 1] images, or 2D points) into an
`Embedding`: features for FID / KID / precision / recall / density / coverage, class logits for the
Inception score, and a mode index per sample for mode counts. Each space also says which data it
fits (`check`), what its numbers depend on (`key`, for the real-feature cache) and how they were
made (`protocol`, printed next to every reported number: values are only comparable under one
protocol).

- `DigitsFeatures`: the shipped MNIST classifier (128-d penultimate features, 10 classes).
- `StackedDigitsFeatures`: the same classifier on each channel of Stacked MNIST (384-d, 1,000 modes).
- `InceptionFeatures`: torch-fidelity's InceptionV3 through torchmetrics (2048-d pool3, 1008 logits),
  the standard for FID on natural images; works offline from a local weights file.
- `MixtureFeatures`: 2D points of a Gaussian mixture are their own features; a point's mode is the
  nearest mean, and it is high quality when within 3 std of it (as in VEEGAN / PacGAN).
"""

from __future__ import annotations

import hashlib
import logging
import socket
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import torch
from torch import Tensor, nn

from gankit import lightning_compat as compat
from gankit.metrics.digits import WEIGHTS as DIGITS_WEIGHTS
from gankit.metrics.digits import load_digits_net

log = logging.getLogger(__name__)

INCEPTION_URL = (
    "https://github.com/toshas/torch-fidelity/releases/download/v0.2.0/weights-inception-2015-12-05-6726825d.pth"
)
INCEPTION_FILE = INCEPTION_URL.rsplit("/", 1)[1]


@dataclass
class Embedding:
    features: Tensor  # [N, d]
    logits: Tensor | None = None  # [N, classes]: for the Inception score
    modes: Tensor | None = None  # [N] (nearest) mode of each sample: for mode counts
    quality: Tensor | None = None  # [N] bool, high-quality samples (2D mixtures); None: all count


@lru_cache(maxsize=8)
def file_digest(path: Path, size: int, mtime_ns: int) -> str:
    """sha256 of a file's bytes (names weights in cache keys); memoised per size and mtime."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def weights_digest(path: Path) -> str:
    stat = path.stat()
    return file_digest(path, stat.st_size, stat.st_mtime_ns)


class FeatureSpace(nn.Module):
    """Base class. Subclasses set `name`, `dim`, `num_modes` and implement `forward` and `check`."""

    name: str
    dim: int
    num_modes: int | None = None  # mode counts are available when set
    has_logits: bool = False  # the Inception score is available when True

    def check(self, datamodule) -> None:
        """Raise ValueError when this feature space does not fit the data."""

    def key(self) -> dict:
        """Everything the features depend on besides the data (weights, library versions)."""
        return {"features": self.name}

    def protocol(self) -> str:
        return self.name

    def forward(self, samples: Tensor) -> Embedding:
        raise NotImplementedError


def _channels(datamodule) -> int | None:
    return getattr(datamodule, "channels", None)


class DigitsFeatures(FeatureSpace):
    """The shipped digits classifier: a domain FID for MNIST (not comparable with Inception FIDs)."""

    name, dim, num_modes, has_logits = "digits", 128, 10, True

    def __init__(self) -> None:
        super().__init__()
        self.net = load_digits_net()

    def check(self, datamodule) -> None:
        if _channels(datamodule) != 1 or getattr(datamodule, "points", False):
            raise ValueError(
                f"the digits features take grayscale digits, but the data has {_channels(datamodule)} channels; "
                "use metrics=stacked_mnist for Stacked MNIST, metrics=inception for other images, or metrics=none."
            )

    def key(self) -> dict:
        return {"features": self.name, "weights_sha256": weights_digest(DIGITS_WEIGHTS)}

    def protocol(self) -> str:
        return "digits classifier (shipped), 128-d penultimate features, images resized to 28x28 (bilinear, antialias)"

    @torch.no_grad()
    def forward(self, samples: Tensor) -> Embedding:
        features = self.net(samples)
        logits = self.net.head(features)
        return Embedding(features, logits, logits.argmax(1))


class StackedDigitsFeatures(DigitsFeatures):
    """Stacked MNIST: the classifier on each of the 3 channels; mode = 100 * d0 + 10 * d1 + d2 (1,000 modes)."""

    name, dim, num_modes, has_logits = "stacked_digits", 384, 1000, False

    def check(self, datamodule) -> None:
        if _channels(datamodule) != 3 or getattr(datamodule, "points", False):
            raise ValueError(
                f"the stacked digits features take 3-channel Stacked MNIST, but the data has "
                f"{_channels(datamodule)} channels; use metrics=digits for MNIST or metrics=inception."
            )

    def protocol(self) -> str:
        return "digits classifier on each channel, 3 x 128-d features, mode = the 3 predicted digits (1,000 modes)"

    @torch.no_grad()
    def forward(self, samples: Tensor) -> Embedding:
        n = samples.shape[0]
        per_channel = samples.reshape(n * 3, 1, *samples.shape[-2:])  # [N*3, 1, H, W], channel-major per image
        features = self.net(per_channel)
        digits = self.net.head(features).argmax(1).reshape(n, 3)
        modes = digits[:, 0] * 100 + digits[:, 1] * 10 + digits[:, 2]
        return Embedding(features.reshape(n, 3 * 128), None, modes)


class MixtureFeatures(FeatureSpace):
    """2D points; mode = the nearest mixture mean; high quality when within `quality_stds` std of it."""

    name, dim = "points", 2

    def __init__(self, quality_stds: float = 3.0) -> None:
        super().__init__()
        self.quality_stds = quality_stds
        self.register_buffer("means", torch.zeros(0, 2), persistent=False)
        self.std = 1.0

    def check(self, datamodule) -> None:
        if not getattr(datamodule, "points", False):
            raise ValueError("metrics=mixture scores 2D Gaussian mixtures (data=ring or data=grid) only.")
        self.means = torch.as_tensor(datamodule.means, dtype=torch.float32, device=self.means.device)
        self.std = float(datamodule.std)
        self.num_modes = len(self.means)

    def protocol(self) -> str:
        return f"2D points; high quality = within {self.quality_stds:g} std of the nearest mode"

    @torch.no_grad()
    def forward(self, samples: Tensor) -> Embedding:
        points = samples.float().reshape(samples.shape[0], -1)
        distances = torch.cdist(points, self.means.to(points.device))  # [N, modes]
        nearest, index = distances.min(1)
        return Embedding(points, None, index, nearest <= self.quality_stds * self.std)


# ---- Inception ---------------------------------------------------------------------------------------
def default_inception_path() -> Path:
    """Where torch.hub (and so torch-fidelity) keeps the Inception weights once downloaded."""
    return Path(torch.hub.get_dir()) / "checkpoints" / INCEPTION_FILE


def missing_weights_message(where: Path) -> str:
    return (
        "the Inception weights for FID / KID / IS are not available and cannot be downloaded here. "
        f"Fetch {INCEPTION_URL} on a machine with internet, copy it to {where} "
        "(or anywhere, then set metrics.evaluation.features.weights_path=/path/to/" + INCEPTION_FILE + "), "
        "or train without these metrics: metrics=none."
    )


def resolve_inception_weights(weights_path: str | None, download: bool = True, timeout_s: float = 20.0) -> Path:
    """A local file with torch-fidelity's InceptionV3 weights, downloading it once if allowed and possible.

    Raises FileNotFoundError with the file to fetch and the option to set when there is none: this runs
    when the metrics are built, before any training.
    """
    if weights_path:
        path = Path(weights_path).expanduser()
        if not path.is_file():
            raise FileNotFoundError(
                f"metrics.evaluation.features.weights_path={weights_path} is not a file. "
                f"It should be torch-fidelity's {INCEPTION_FILE} ({INCEPTION_URL})."
            )
        return path
    path = default_inception_path()
    if path.is_file():
        return path
    if download:
        previous = socket.getdefaulttimeout()
        socket.setdefaulttimeout(timeout_s)  # an offline node must not hang here
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            torch.hub.download_url_to_file(INCEPTION_URL, str(path), progress=False)
            return path
        except Exception as error:  # no network, proxy, DNS, ...
            log.warning("Downloading the Inception weights failed: %s", error)
        finally:
            socket.setdefaulttimeout(previous)
    raise FileNotFoundError(missing_weights_message(path))


def load_inception(path: Path, antialias: bool = True) -> nn.Module:
    """torchmetrics' NoTrainInceptionV3 (torch-fidelity's network) from a local file, with a clear error."""
    from torchmetrics.image.fid import NoTrainInceptionV3

    try:
        return NoTrainInceptionV3(
            name="inception-v3-compat",
            features_list=["2048", "logits_unbiased"],
            feature_extractor_weights_path=str(path),
            antialias=antialias,
        )
    except Exception as error:
        raise ValueError(
            f"{path} is not a usable InceptionV3 weights file ({type(error).__name__}: {error}); "
            f"fetch it again from {INCEPTION_URL}."
        ) from error


class InceptionFeatures(FeatureSpace):
    """torch-fidelity's InceptionV3 (the TF-FID network): 2048-d pool3 features and 1008 logits.

    Samples in [-1, 1] are quantised to uint8 as a saved image would be; grayscale is repeated to RGB;
    the network resizes to 299x299 bilinearly (with antialiasing unless `antialias=false`, which
    reproduces TF1's resize as in the original FID code).
    """

    name, dim, has_logits = "inception", 2048, True

    def __init__(self, weights_path: str | None = None, download: bool = True, antialias: bool = True) -> None:
        super().__init__()
        self.weights = resolve_inception_weights(weights_path, download)
        self.antialias = antialias
        self.net = load_inception(self.weights, antialias)

    def check(self, datamodule) -> None:
        if getattr(datamodule, "points", False) or _channels(datamodule) not in (1, 3):
            raise ValueError("the Inception features take 1- or 3-channel images; use metrics=mixture for 2D points.")

    def key(self) -> dict:
        return {"features": self.name, "weights_sha256": weights_digest(self.weights), "antialias": self.antialias}

    def protocol(self) -> str:
        resize = "bilinear with antialias" if self.antialias else "TF1-compatible bilinear (no antialias)"
        return f"torch-fidelity InceptionV3 pool3 2048-d, uint8 input resized to 299x299 {resize}"

    @torch.no_grad()
    def forward(self, samples: Tensor) -> Embedding:
        images = ((samples.float().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)
        if images.shape[1] == 1:
            images = images.expand(-1, 3, -1, -1)
        features, logits = compat.inception_features_and_logits(self.net, images)  # both heads in one pass
        return Embedding(features.reshape(len(images), -1).float(), logits.float(), None)


def write_random_inception_weights(path: Path, seed: int = 0) -> Path:
    """A weights file of torch-fidelity's InceptionV3 architecture with random (He-initialised) weights.

    For tests and timing offline: the real file cannot be downloaded here. He initialisation and
    unit BN statistics keep activations from vanishing through the 40-odd layers.
    """
    from torch_fidelity import feature_extractor_inceptionv3 as fe

    torch.manual_seed(seed)
    original = fe.load_state_dict_from_url
    fe.load_state_dict_from_url = lambda *args, **kwargs: None  # skip the download: weights set below
    original_load = fe.FeatureExtractorInceptionV3.load_state_dict
    fe.FeatureExtractorInceptionV3.load_state_dict = lambda self, state_dict, *a, **k: None
    try:
        net = fe.FeatureExtractorInceptionV3("inception-v3-compat", ["2048"])
    finally:
        fe.load_state_dict_from_url = original
        fe.FeatureExtractorInceptionV3.load_state_dict = original_load
    for module in net.modules():
        if isinstance(module, nn.Conv2d):
            nn.init.kaiming_normal_(module.weight, nonlinearity="relu")
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(net.state_dict(), path)
    return path
