"""Sample quality and mode coverage while training: FID, KID, precision / recall, density / coverage, modes.

Every `every_n_g_steps` generator steps and at the end, `num_samples` images are generated from fixed
latents (split across DDP ranks), embedded by a feature extractor and scored against the real
features, which are computed once and cached on disk under a key naming everything they depend on.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from pathlib import Path

import lightning as L
import torch
import torchmetrics
from torch import Tensor, nn
from torch.utils.data import DataLoader, Subset
from torchmetrics.image.fid import FrechetInceptionDistance
from torchmetrics.image.kid import KernelInceptionDistance

from gankit.callbacks.samples import logger_step
from gankit.metrics.digits import WEIGHTS as DIGITS_WEIGHTS
from gankit.metrics.digits import load_digits_net
from gankit.metrics.manifold import DensityCoverage, PrecisionRecall
from gankit.metrics.modes import ClassModes

log = logging.getLogger(__name__)
METRICS = ("fid", "kid", "precision_recall", "density_coverage", "modes")


class Identity(nn.Module):
    """Hands precomputed features to torchmetrics' FID / KID unchanged."""

    def __init__(self, num_features: int) -> None:
        super().__init__()
        self.num_features = num_features

    def forward(self, x: Tensor) -> Tensor:
        return x


def file_digest(path: Path) -> str:
    """sha256 of a file's bytes (names the feature extractor's weights in cache keys)."""
    return hashlib.sha256(path.read_bytes()).hexdigest()


class Evaluation(L.Callback):
    """Scores the generator (the EMA one when present) and logs `val/<metric>` for each configured metric."""

    def __init__(
        self,
        cache_dir: str,
        features: str = "digits",
        metrics: list[str] | tuple[str, ...] = ("fid", "precision_recall", "density_coverage", "modes"),
        num_samples: int = 5000,
        every_n_g_steps: int = 500,
        batch_size: int = 500,
        ema: bool = True,
        seed: int = 0,
    ) -> None:
        super().__init__()
        unknown = set(metrics) - set(METRICS)
        if unknown:
            raise ValueError(f"unknown metrics {sorted(unknown)}: choose from {', '.join(METRICS)}")
        if features != "digits":
            raise ValueError(
                f"metrics.features={features!r} is not available: the digits features are (for MNIST data); "
                "the Inception features are not built yet. Use metrics=none for other data."
            )
        self.cache_dir, self.features, self.metrics = Path(cache_dir).expanduser(), features, tuple(metrics)
        self.num_samples, self.every, self.batch_size = num_samples, every_n_g_steps, batch_size
        self.ema, self.seed = ema, seed
        self.net: nn.Module | None = None
        self.real: tuple[Tensor, Tensor] | None = None  # features [N, d], predicted classes [N]
        self._last_step = -1

    # ---- set-up: checks that fail at start, real features from the cache --------------------
    def on_fit_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        datamodule = trainer.datamodule
        if getattr(datamodule, "channels", 1) != 1:
            raise ValueError(
                f"the digits features take grayscale digits, but the data has {datamodule.channels} channels; "
                "use metrics=none for this data."
            )
        real_set = datamodule.train_set
        if self.num_samples > len(real_set):
            raise ValueError(
                f"metrics.num_samples={self.num_samples} is more than the {len(real_set)} real images; "
                f"lower it to at most {len(real_set)}."
            )
        self.net = load_digits_net().to(pl_module.device)
        self.real = self._real_features(trainer, real_set, pl_module.device)

    def cache_key(self, trainer: L.Trainer) -> dict:
        """Everything the real features depend on."""
        dm = trainer.datamodule
        return {
            "data": type(dm).__qualname__,
            # image folders: which files (a file added or removed changes the key)
            "files": hashlib.sha256("\n".join(map(str, getattr(dm, "paths", []))).encode()).hexdigest(),
            "split": "train",
            "resolution": dm.resolution,
            "channels": dm.channels,
            "crop": getattr(dm, "crop", None),
            "num_real": self.num_samples,
            "features": self.features,
            "weights_sha256": file_digest(DIGITS_WEIGHTS),
            "torch": str(torch.__version__),
            "torchmetrics": str(torchmetrics.__version__),
        }

    def _real_features(self, trainer: L.Trainer, real_set, device: torch.device) -> tuple[Tensor, Tensor]:
        key = self.cache_key(trainer)
        digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:20]
        path = self.cache_dir / f"real_{self.features}_{digest}.pt"
        if path.is_file():
            try:
                cached = torch.load(path, map_location=device, weights_only=True)
                if cached["key"] == key:
                    log.info("Real features from the cache: %s", path)
                    return cached["features"], cached["classes"]
            except Exception as error:  # unreadable: rebuilt below
                log.warning("Ignoring unreadable real-feature cache %s (%s); recomputing.", path, error)
        loader = DataLoader(Subset(real_set, range(self.num_samples)), batch_size=self.batch_size, shuffle=False)
        parts = [self._embed(batch[0] if isinstance(batch, (list, tuple)) else batch, device) for batch in loader]
        features, classes = (torch.cat(p) for p in zip(*parts, strict=True))
        if trainer.is_global_zero:
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_suffix(f".tmp{os.getpid()}")
            torch.save({"features": features.cpu(), "classes": classes.cpu(), "key": key}, tmp)
            os.replace(tmp, path)  # atomic: a half-written cache is never read
            log.info("Real features cached: %s", path)
        return features, classes

    @torch.no_grad()
    def _embed(self, images: Tensor, device: torch.device) -> tuple[Tensor, Tensor]:
        features = self.net(images.to(device))  # [N, 128]
        return features, self.net.head(features).argmax(1)

    # ---- evaluation -------------------------------------------------------------------------
    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, *args) -> None:
        if pl_module.g_steps % self.every == 0 and pl_module.g_steps != self._last_step:
            self.publish(trainer, pl_module, self.evaluate(trainer, pl_module))

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if pl_module.g_steps != self._last_step:
            self.publish(trainer, pl_module, self.evaluate(trainer, pl_module))

    @staticmethod
    def publish(trainer: L.Trainer, pl_module: L.LightningModule, results: dict[str, Tensor]) -> None:
        """To the loggers at this step only (not repeated until the next evaluation), and to
        `trainer.callback_metrics` for checkpoint monitors and `optimized_metric`."""
        trainer.callback_metrics.update({k: v.cpu() for k, v in results.items()})
        values = {k: v.item() for k, v in results.items()}
        log.info(
            "Evaluation at generator step %d: %s",
            pl_module.g_steps,
            ", ".join(f"{k}={v:.4g}" for k, v in values.items()),
        )
        if trainer.is_global_zero:
            for logger in trainer.loggers:
                logger.log_metrics(values, step=logger_step(trainer))

    def evaluate(self, trainer: L.Trainer, pl_module: L.LightningModule) -> dict[str, Tensor]:
        """Generate this rank's share of samples, update the metrics, compute them across ranks."""
        self._last_step = pl_module.g_steps
        rank, world = trainer.global_rank, trainer.world_size
        device = pl_module.device
        metrics = self._build_metrics(device)
        real_features, _ = self.real
        for name, metric in metrics.items():  # each rank adds a disjoint shard: synced states hold each real once
            if name in ("fid", "kid", "precision_recall", "density_coverage"):
                metric.update(real_features[rank::world], real=True)
        # the same latents at every evaluation, whatever the number of ranks: rank r takes rows r, r + world, ...
        latents = pl_module.sample_latent(self.num_samples, torch.Generator().manual_seed(self.seed))[rank::world]
        for z in latents.split(self.batch_size):
            features, classes = self._embed(pl_module.sample(z, ema=self.ema), device)
            for name, metric in metrics.items():
                if name == "modes":
                    metric.update(classes)
                else:
                    metric.update(features, real=False)
        results = {}
        for name, metric in metrics.items():
            value = metric.compute()
            if name == "kid":
                value = {"kid": value[0]}
            results.update(value if isinstance(value, dict) else {name: value})
        return {f"val/{k}": v.float() for k, v in results.items()}

    def _build_metrics(self, device: torch.device) -> dict[str, torchmetrics.Metric]:
        d = self.real[0].shape[1]
        factories = {
            "fid": lambda: FrechetInceptionDistance(feature=Identity(d)),
            "kid": lambda: KernelInceptionDistance(feature=Identity(d), subset_size=min(1000, self.num_samples // 2)),
            "precision_recall": PrecisionRecall,
            "density_coverage": DensityCoverage,
            "modes": lambda: ClassModes(num_classes=10),
        }
        return {name: factories[name]().to(device) for name in self.metrics}
