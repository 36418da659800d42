"""Sample quality and mode coverage while training: FID, KID, IS, precision / recall, density / coverage, modes.

Every `every_n_g_steps` generator steps, or every `every_n_kimg` thousand real images seen by the
discriminator when that is set (StyleGAN's cadence: the share of time spent evaluating stays the same
whatever the batch size, n_critic or process count), never before the first generator step, and at
the end, `num_samples`
samples are generated from fixed latents (split across DDP ranks), embedded by a feature space
(gankit.metrics.features) and scored against the features of a reference set: `num_real`
training samples drawn at random from the run's seed, stratified by class where the data has
labels. Conditional models get fake labels in the proportions of the training labels. The real
features are computed once and cached on disk under a key made of the data module's identity,
the reference subset and the features. Mode histograms (and, for 2D mixtures, scatters of the samples over the
true modes) are saved as PNG and sent to the loggers.

The scoring itself (`prepare`, `evaluate`) needs no Trainer, so `eval.py` scores checkpoints with it.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import warnings
from pathlib import Path

import lightning as L
import torch
import torchmetrics
from torch import Tensor, nn
from torch.utils.data import DataLoader, Subset
from torchmetrics.image.fid import FrechetInceptionDistance

from gankit.callbacks.samples import image_grid, log_image
from gankit.lightning_compat import logger_step
from gankit.loggers import WandbLogger, log_evaluation_row
from gankit.metric_keys import GENERALIZATION, METRICS, val_keys
from gankit.metrics.features import FeatureSpace
from gankit.metrics.generalization import DataCopying, DGap
from gankit.metrics.manifold import DensityCoverage, PrecisionRecall
from gankit.metrics.modes import ClassModes
from gankit.metrics.ppl import PathLengthScores, check_ppl, feature_distance, lpips_distance, path_lengths
from gankit.metrics.sampled import OrderFreeIS, OrderFreeKID
from gankit.randomness import labels_in_proportion, reference_indices
from gankit.style_mixing import style_based

log = logging.getLogger(__name__)
MIN_HELDOUT = 100  # held-out images d_gap and copying need at the least
GAP_SAMPLES = 1000  # training and held-out images D scores for d_gap (fewer when a set is smaller)
_REAL = ("fid", "kid", "precision_recall", "density_coverage")  # the metrics compared against real features


class Identity(nn.Module):
    """Hands precomputed features (or logits) to torchmetrics' FID / KID / IS unchanged."""

    def __init__(self, num_features: int) -> None:
        super().__init__()
        self.num_features = num_features

    def forward(self, x: Tensor) -> Tensor:
        return x


class Evaluation(L.Callback):
    """Scores the generator (the EMA one when present) and logs `val/<metric>` for each configured metric.

    Args:
        features: the feature space (gankit.metrics.features), built when the config is: missing
            Inception weights fail here, before any data is read.
        metrics: any of fid, kid, is, precision_recall, density_coverage, modes, and with held-out
            data (data.limit / data.holdout) d_gap and copying (gankit.metrics.generalization).
        num_samples: generated samples per evaluation; num_real: real samples (default the same, at
            most the size of the reference set).
        reference: the real samples FID & co. compare against: `train`, `heldout` (data.limit /
            data.holdout), or `auto` (held-out data where there is some, else the training set).
        dirpath: where mode histograms and scatters go as PNG (None: not saved).
    """

    def __init__(
        self,
        features: FeatureSpace,
        cache_dir: str,
        metrics: list[str] | tuple[str, ...] = ("fid", "precision_recall", "density_coverage", "modes"),
        num_samples: int = 5000,
        num_real: int | None = None,
        every_n_g_steps: int = 500,
        every_n_kimg: float | None = None,
        batch_size: int = 500,
        ema: bool = True,
        seed: int = 0,
        dirpath: str | None = None,
        best_metric: str | None = None,
        best_mode: str = "min",
        best_path: str | None = None,
        reference: str = "auto",
        copying_cells: int = 50,
        ppl: dict | None = None,
    ) -> None:
        super().__init__()
        if reference not in ("auto", "train", "heldout"):
            raise ValueError(f"metrics.evaluation.reference must be auto, train or heldout; got {reference!r}")
        unknown = set(metrics) - set(METRICS)
        if unknown:
            raise ValueError(f"unknown metrics {sorted(unknown)}: choose from {', '.join(METRICS)}")
        if "is" in metrics and not features.has_logits:
            raise ValueError(f"the Inception score needs class logits, which the {features.name} features lack")
        if best_metric is not None and best_mode not in ("min", "max"):
            raise ValueError(f"metrics.evaluation.best_mode must be min or max, got {best_mode!r}")
        if num_samples < 2 or every_n_g_steps < 1 or batch_size < 1:
            raise ValueError("metrics.evaluation: num_samples >= 2, every_n_g_steps >= 1 and batch_size >= 1")
        if every_n_kimg is not None and not 0 < every_n_kimg < float("inf"):
            raise ValueError(f"metrics.evaluation.every_n_kimg must be positive (or null), got {every_n_kimg}")
        self.ppl = {"space": "w", "sampling": "end", "epsilon": 1e-4, "distance": "features", "num_samples": 1000,
                    **(ppl or {})}  # fmt: skip
        if "ppl" in metrics:
            check_ppl(self.ppl)
        self.features, self.metrics = features, tuple(metrics)
        self.cache_dir = Path(cache_dir).expanduser()
        self.dirpath = Path(dirpath) if dirpath else None
        self.num_samples, self.num_real_option = num_samples, num_real
        self.num_real = num_real or num_samples  # null: num_samples, capped by the data's size in prepare()
        self.every, self.every_kimg = every_n_g_steps, every_n_kimg
        self.batch_size, self.ema, self.seed = batch_size, ema, seed
        self.real: Tensor | None = None  # real features [num_real, d]
        self.histogram: tuple[Tensor, Tensor] | None = None  # the last evaluation's (all, high-quality) mode counts
        self.points: Tensor | None = None  # the last evaluation's 2D samples (this rank's share)
        self.preview: Tensor | None = None  # the last evaluation's first 64 images (rank 0), for a sample grid
        self.history: list[tuple[int, dict[str, float]]] = []  # (generator step, values): read by CollapseMonitor
        self.best_metric, self.best_mode = best_metric, best_mode
        self.best_path = Path(best_path) if best_path else None
        self.best: tuple[float, int] | None = None  # (value, generator step) of the best checkpoint
        self.class_weights: Tensor | None = None  # conditional data: the share of each class [K]
        self.labels_digest: str | None = None
        self._last_step = -1  # the generator step last evaluated
        self._last_kimg: float | None = 0.0  # the images seen (thousands) at the last evaluation
        self.reference, self.copying_cells = reference, copying_cells
        self.real_split = "train"  # which split the real features come from (prepare)
        self.copying_features: tuple[Tensor, Tensor] | None = None  # (training, held-out) features for C_T
        self.gap_samples: dict[bool, tuple[Tensor, Tensor | None]] = {}  # heldout? -> (images, labels) for d_gap

    def state_dict(self) -> dict:
        return {"best": self.best, "last_step": self._last_step, "last_kimg": self._last_kimg, "history": self.history}

    def load_state_dict(self, state_dict: dict) -> None:
        self.best = state_dict.get("best")
        self._last_step = state_dict.get("last_step", -1)
        self._last_kimg = state_dict.get("last_kimg")  # None: a checkpoint from before kimg was kept
        self.history = [(step, dict(values)) for step, values in state_dict.get("history", [])]

    def protocol(self) -> dict:
        """How the numbers are made: report it next to them (FIDs compare only under one protocol)."""
        ppl = {"ppl": ", ".join(f"{k} {v}" for k, v in self.ppl.items())} if "ppl" in self.metrics else {}
        return {
            "features": self.features.protocol(),
            "num_fake": self.num_samples,
            "num_real": self.num_real,
            "real_split": f"{self.real_split}: num_real samples drawn with seed {self.seed}"
            + (", stratified by class" if self.labels_digest else ""),
            "generator": "EMA when the model has one" if self.ema else "raw",
            "latents": f"fixed, seed {self.seed}",
            "fake_labels": "conditional models: in the proportions of the training labels (stratified)",
            **ppl,
        }

    # ---- set-up: checks that fail at start, real features from the cache --------------------
    def on_fit_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.check_model(pl_module)
        self.prepare(trainer.datamodule, pl_module.device, write_cache=trainer.is_global_zero)
        if trainer.is_global_zero:
            for logger in trainer.loggers:
                logger.log_hyperparams({"eval_protocol": self.protocol()})

    def prepare(self, datamodule, device: torch.device, write_cache: bool = True) -> None:
        """Check the features fit the data, move them to `device`, load or compute the real features."""
        self.features.check(datamodule)
        if "modes" in self.metrics and self.features.num_modes is None:
            raise ValueError(
                f"mode counts need a classifier or known modes: the {self.features.name} features lack both"
            )
        logged = self.logged_keys()
        if self.best_metric is not None and self.best_metric not in logged:
            raise ValueError(
                f"metrics.evaluation.best_metric={self.best_metric} is not logged by these metrics "
                f"({', '.join(logged)}); choose one of them, or null"
            )
        if datamodule.train_set is None:
            datamodule.setup("fit")
        heldout = getattr(datamodule, "heldout_set", None)
        wanted = [m for m in self.metrics if m in GENERALIZATION]
        if self.reference == "heldout" or wanted:
            need = MIN_HELDOUT if wanted else 1
            if heldout is None or len(heldout) < need:
                have = "none" if heldout is None else f"{len(heldout)} images"
                what = f"metrics {', '.join(wanted)}" if wanted else "metrics.evaluation.reference=heldout"
                raise ValueError(
                    f"{what} compare against held-out data, at least {need} images; this data set holds out {have}: "
                    + datamodule.holdout_advice
                )
        use_heldout = self.reference == "heldout" or (self.reference == "auto" and heldout is not None)
        self.real_split = "heldout" if use_heldout else "train"
        real_set = heldout if use_heldout else datamodule.train_set
        if self.num_real_option is None:
            self.num_real = min(self.num_samples, len(real_set))
        elif self.num_real > len(real_set):
            raise ValueError(
                f"metrics.evaluation.num_real={self.num_real} is more than the {len(real_set)} real samples; "
                f"lower it to at most {len(real_set)} (or null: num_samples, at most the data's size)."
            )
        if getattr(datamodule, "num_classes", None) is None:
            labels = None
        elif use_heldout or not hasattr(datamodule, "train_labels"):
            labels = _labels(real_set)
        else:
            labels = datamodule.train_labels()
        self.labels_digest = None if labels is None else hashlib.sha256(labels.cpu().numpy().tobytes()).hexdigest()
        self.class_weights = None if labels is None else torch.bincount(labels).double() / len(labels)
        self.features.to(device)
        self.real = self._real_features(datamodule, real_set, labels, device, write_cache)
        if wanted:
            self._prepare_generalization(datamodule, heldout, device)

    def _prepare_generalization(self, datamodule, heldout, device: torch.device) -> None:
        """What d_gap and copying compare: fixed training and held-out samples (from the seed)."""
        train_set, generator = datamodule.train_set, torch.Generator().manual_seed(self.seed + 1)
        if "copying" in self.metrics:
            n_train, n_held = min(len(train_set), self.num_real), min(len(heldout), self.num_real)
            train_idx = reference_indices(len(train_set), n_train, None, generator)
            held_idx = reference_indices(len(heldout), n_held, None, generator)
            self.copying_features = (
                self._features_of(datamodule, train_set, train_idx, device),
                self._features_of(datamodule, heldout, held_idx, device),
            )
        if "d_gap" in self.metrics:
            n = min(len(train_set), len(heldout), GAP_SAMPLES)
            for is_heldout, data in ((False, train_set), (True, heldout)):
                idx = reference_indices(len(data), n, None, generator)
                self.gap_samples[is_heldout] = _images_and_labels(datamodule, data, idx)

    def _features_of(self, datamodule, data, indices: Tensor, device: torch.device) -> Tensor:
        with torch.random.fork_rng(devices=[]):
            loader = DataLoader(Subset(data, indices.tolist()), batch_size=self.batch_size, shuffle=False)
            return torch.cat(
                [
                    self.features(datamodule.decode((b[0] if isinstance(b, (list, tuple)) else b).to(device))).features
                    for b in loader
                ]
            )

    def logged_keys(self) -> list[str]:
        """The `val/` keys the configured metrics log (after `features.check`, which sets the features up)."""
        return val_keys(self.metrics, points=self.features.name == "points")

    def cache_key(self, datamodule) -> dict:
        """Everything the real features depend on: the data module's identity, the reference subset, the features."""
        if hasattr(datamodule, "split_identity"):
            identity = datamodule.split_identity(self.real_split)
        else:
            identity = datamodule.identity()
        return {
            "data": identity,
            "reference": {"num_real": self.num_real, "seed": self.seed, "stratified_by": self.labels_digest},
            **self.features.key(),
            "torch": str(torch.__version__),
            "torchmetrics": str(torchmetrics.__version__),
        }

    def reference_indices(self, size: int, labels: Tensor | None) -> Tensor:
        """Which training samples are the reference set: num_real at random from the seed, stratified by class."""
        return reference_indices(size, self.num_real, labels, torch.Generator().manual_seed(self.seed))

    def _real_features(self, datamodule, real_set, labels: Tensor | None, device: torch.device, write_cache: bool):
        key = self.cache_key(datamodule)
        digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:20]
        path = self.cache_dir / f"real_{self.features.name}_{digest}.pt"
        if path.is_file():
            try:
                cached = torch.load(path, map_location=device, weights_only=True)
                if cached["key"] == key:
                    log.info("Real features from the cache: %s", path)
                    return cached["features"]
            except Exception as error:  # unreadable: rebuilt below
                log.warning("Ignoring unreadable real-feature cache %s (%s); recomputing.", path, error)
        # fork: a DataLoader draws its seed from the global RNG, and training must not depend on the cache
        with torch.random.fork_rng(devices=[]):
            subset = Subset(real_set, self.reference_indices(len(real_set), labels).tolist())
            loader = DataLoader(subset, batch_size=self.batch_size, shuffle=False)
            parts = [
                self.features(datamodule.decode((b[0] if isinstance(b, (list, tuple)) else b).to(device))).features
                for b in loader
            ]
        features = torch.cat(parts)
        if write_cache:
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_suffix(f".tmp{os.getpid()}")
            torch.save({"features": features.cpu(), "key": key}, tmp)
            os.replace(tmp, path)  # atomic: a half-written cache is never read
            log.info("Real features cached: %s", path)
        return features

    # ---- evaluation while training ----------------------------------------------------------
    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, *args) -> None:
        g_steps = pl_module.g_steps  # unchanged over the n_critic batches of one cycle: evaluated once
        if g_steps == 0 or g_steps == self._last_step:
            return
        if self.every_kimg is not None and self._last_kimg is None:  # count from the resume point
            self._last_kimg = pl_module.kimg
        if self.every_kimg is not None:  # a multiple of every_n_kimg crossed since the last evaluation
            every = max(1, round(self.every_kimg * 1000))  # in images: exact integer arithmetic
            due = pl_module.images_seen // every > round(self._last_kimg * 1000) // every
        else:
            due = g_steps % self.every == 0
        if due:
            self._evaluate_and_publish(trainer, pl_module)

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if pl_module.g_steps != self._last_step:
            self._evaluate_and_publish(trainer, pl_module)

    def _evaluate_and_publish(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._last_step, self._last_kimg = pl_module.g_steps, pl_module.kimg
        results = self.evaluate(pl_module, trainer.global_rank, trainer.world_size)
        # to trainer.callback_metrics for checkpoint monitors and `optimized_metric`
        trainer.callback_metrics.update({k: v.cpu() for k, v in results.items()})
        values = {k: v.item() for k, v in results.items()}
        self.history.append((pl_module.g_steps, values))
        log.info(
            "Evaluation at generator step %d: %s",
            pl_module.g_steps,
            ", ".join(f"{k}={v:.4g}" for k, v in values.items()),
        )
        self._keep_best(trainer, pl_module.g_steps, values)
        if trainer.is_global_zero:
            step = logger_step(trainer)
            progress = {"g_step": pl_module.g_steps, "kimg": round(pl_module.kimg, 3)}  # x axes for dashboards
            pictures = self.plots(pl_module.g_steps)
            for logger in trainer.loggers:  # at this step only: not repeated until the next evaluation
                logger.log_metrics({**values, **progress}, step=step)
                for key, picture in pictures.items():
                    log_image(logger, key, picture, step, progress)
                if isinstance(logger, WandbLogger):
                    log_evaluation_row(logger, {**progress, **values}, pictures, step)

    def _keep_best(self, trainer: L.Trainer, g_step: int, values: dict[str, float]) -> None:
        """Save `best_path` when `best_metric` improved: the weights of exactly the evaluated step.

        Every rank sees the same synced values, so all take the same decision (save_checkpoint is collective).
        """
        if self.best_metric is None or self.best_path is None:
            return
        value = values[self.best_metric]
        if self.best is None:
            better = value == value  # not NaN
        else:
            better = value < self.best[0] if self.best_mode == "min" else value > self.best[0]
        if better:
            self.best = (value, g_step)
            trainer.save_checkpoint(self.best_path)
            log.info("Best %s so far (%.4g at generator step %d): %s", self.best_metric, value, g_step, self.best_path)

    # ---- scoring (no Trainer needed) --------------------------------------------------------
    def check_model(self, pl_module) -> None:
        """What the chosen metrics need of the model (at start: one message, nothing trained)."""
        if "ppl" in self.metrics and not style_based(pl_module.generator):
            raise ValueError(
                "metrics.evaluation.metrics has ppl (perceptual path length), which needs a style-based generator "
                f"(model=stylegan2); this model's is {type(pl_module.generator).__name__}: leave ppl out"
            )

    def path_length_scores(self, pl_module, metric, rank: int, world: int) -> None:
        """PPL: this rank's share of the fixed pairs (z0, z1, t) from the seed, scored into `metric`."""
        settings, device = self.ppl, pl_module.device
        rng = torch.Generator().manual_seed(self.seed + 1)  # not the samples' latents: a stream of its own
        n = settings["num_samples"]
        z0, z1 = pl_module.sample_latent(n, rng), pl_module.sample_latent(n, rng)
        t = torch.rand(n, generator=rng) * (1.0 if settings["sampling"] == "full" else 0.0)
        labels = None
        if getattr(pl_module, "num_classes", None) is not None:
            labels = torch.randint(pl_module.num_classes, (n,), generator=rng).to(device)
        distance = (
            lpips_distance(device) if settings["distance"] == "lpips"
            else feature_distance(lambda images: self.features(images).features)
        )  # fmt: skip
        net = pl_module.sampler(self.ema)
        was_training = net.training
        net.eval()
        try:
            for part in torch.arange(n)[rank::world].split(max(1, self.batch_size // 2)):
                y = None if labels is None else labels[part]
                scores = path_lengths(net, distance, z0[part], z1[part], t[part].to(device), y, settings["space"],
                                      settings["epsilon"])  # fmt: skip
                metric.update(scores)
        finally:
            net.train(was_training)

    def evaluate(self, pl_module, rank: int = 0, world: int = 1) -> dict[str, Tensor]:
        """Generate this rank's share of samples, update the metrics, compute them across ranks."""
        if self.real is None:
            raise RuntimeError("Evaluation.prepare(datamodule, device) must run before evaluate()")
        self.check_model(pl_module)
        device = pl_module.device
        metrics = self._build_metrics(device)
        if world > 1:  # every rank samples, and D scores, with rank 0's buffers: those of the saved weights
            pl_module.broadcast_buffers()
        if "ppl" in metrics:
            self.path_length_scores(pl_module, metrics["ppl"], rank, world)
        for name, metric in metrics.items():  # each rank adds a disjoint shard: synced states hold each real once
            if name in _REAL:
                metric.update(self.real[rank::world], real=True)
            if name == "d_gap":  # D's logits on the fixed training and held-out samples, this rank's share
                for is_heldout, (images, labels) in self.gap_samples.items():
                    pack = getattr(pl_module, "pack", 1)  # D judges packs: whole ones only
                    shard = torch.arange(len(images))[rank::world]
                    shard = shard[: len(shard) // pack * pack]
                    for part in shard.split(max(pack, self.batch_size // pack * pack)):
                        y = None if labels is None or pl_module.num_classes is None else labels[part]
                        metric.update(pl_module.d_scores(images[part], y), heldout=is_heldout)
        # the same latents (and labels) at every evaluation, whatever the number of ranks: rank r takes every k-th row
        generator = torch.Generator().manual_seed(self.seed)
        latents = pl_module.sample_latent(self.num_samples, generator)[rank::world]
        conditional = getattr(pl_module, "num_classes", None) is not None
        labels = self.fake_labels(pl_module.num_classes, generator)[rank::world] if conditional else None
        points = []
        for i, z in enumerate(latents.split(self.batch_size)):
            kwargs = {"labels": labels[i * self.batch_size : (i + 1) * self.batch_size]} if conditional else {}
            samples = pl_module.sample(z, ema=self.ema, **kwargs)
            if i == 0 and samples.dim() == 4:
                self.preview = samples[:64].float().cpu()
            embedding = self.features(samples.float())
            if self.features.name == "points":
                points.append(samples.float().cpu())
            for name, metric in metrics.items():
                if name == "modes":
                    metric.update(embedding.modes, embedding.quality)
                elif name == "is":
                    metric.update(embedding.logits)
                elif name == "copying":
                    metric.update(embedding.features)
                elif name in ("d_gap", "ppl"):
                    continue
                else:
                    metric.update(embedding.features, real=False)
        self.points = torch.cat(points) if points else None
        results = {}
        with torch.random.fork_rng(devices=[]):  # KID / IS draw subsets: fixed, and training's RNG untouched
            torch.manual_seed(self.seed)
            for name, metric in metrics.items():
                value = metric.compute()
                if name in ("kid", "is"):
                    value = value[0]  # (mean, std) over subsets / splits: the mean
                if name == "modes":
                    self.histogram = (metric.histogram.cpu(), metric.good_histogram.cpu())
                results.update(value if isinstance(value, dict) else {name: value})
        return {f"val/{k}": v.float() for k, v in results.items()}

    def fake_labels(self, num_classes: int, generator: torch.Generator) -> Tensor:
        """num_samples class labels in the proportions of the training labels (uniform when unknown)."""
        weights = self.class_weights if self.class_weights is not None else torch.ones(num_classes)
        if len(weights) != num_classes:
            weights = torch.cat([weights, weights.new_zeros(num_classes - len(weights))])[:num_classes]
        return labels_in_proportion(weights, self.num_samples, generator)

    def _build_metrics(self, device: torch.device) -> dict[str, torchmetrics.Metric]:
        d = self.real.shape[1]
        fewest = min(self.num_samples, self.num_real)
        factories = {
            "fid": lambda: FrechetInceptionDistance(feature=Identity(d)),
            "kid": lambda: OrderFreeKID(feature=Identity(d), subset_size=min(1000, fewest // 2)),
            "is": lambda: OrderFreeIS(feature=Identity(0), splits=10),
            "precision_recall": PrecisionRecall,
            "density_coverage": DensityCoverage,
            "modes": lambda: ClassModes(self.features.num_modes, report_quality=self.features.name == "points"),
            "d_gap": DGap,
            "copying": lambda: DataCopying(*self.copying_features, cells=self.copying_cells, seed=self.seed),
            "ppl": PathLengthScores,
        }
        with warnings.catch_warnings():  # "KID / IS keep all features": bounded here by num_samples
            warnings.filterwarnings("ignore", message=".*will save all extracted features.*")
            return {name: factories[name]().to(device) for name in self.metrics}

    def plots(self, g_step: int) -> dict[str, Tensor]:
        """The last evaluation's mode histogram (and 2D scatter), saved under `dirpath`, keyed for the loggers."""
        from gankit import plots  # matplotlib: imported only when drawing

        pictures = {}
        if self.preview is not None:
            pictures["val/samples"] = image_grid(self.preview)
        save = (lambda name: self.dirpath / f"{name}_g_step_{g_step:07d}.png") if self.dirpath else (lambda name: None)
        if self.histogram is not None:
            counts, captured = self.histogram
            pictures["val/mode_histogram"] = plots.mode_histogram(
                counts, f"generator step {g_step}", save("modes"), captured
            )
        if self.points is not None:
            pictures["val/scatter"] = plots.mixture_scatter(
                self.points, self.features.means, self.features.std, f"generator step {g_step}", save("scatter")
            )
        return pictures


def _labels(data) -> Tensor | None:
    """A data set's labels without reading its images (TensorDataset: its second tensor)."""
    tensors = getattr(data, "tensors", None)
    if isinstance(tensors, tuple):
        return tensors[1] if len(tensors) > 1 else None
    return getattr(data, "labels", None)


def _images_and_labels(datamodule, data, indices: Tensor) -> tuple[Tensor, Tensor | None]:
    """Samples `indices` of a data set as tensors (images as the data set stores them, decoded when scored)."""
    with torch.random.fork_rng(devices=[]):
        batches = list(DataLoader(Subset(data, indices.tolist()), batch_size=len(indices), shuffle=False))
    batch = batches[0]
    images, labels = (batch[0], batch[1]) if isinstance(batch, (list, tuple)) and len(batch) > 1 else (batch, None)
    if isinstance(images, (list, tuple)):
        images = images[0]
    return datamodule.decode(images), labels
