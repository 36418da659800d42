"""train(cfg): build the datamodule, GAN module, callbacks, loggers and trainer from the config, and fit.

The only place (with the other entry points) that instantiates from config.
"""

from __future__ import annotations

import contextlib
import logging
import sys
import traceback
from collections.abc import Iterator
from pathlib import Path

import lightning as L
from hydra.core.hydra_config import HydraConfig
from hydra.errors import InstantiationException
from hydra.types import RunMode
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

log = logging.getLogger(__name__)
if logging.getLogger().handlers:  # Hydra's handlers print already: drop lightning's duplicate console
    logging.getLogger("lightning").handlers.clear()

USER_ERRORS = (ValueError, FileNotFoundError, FloatingPointError, InstantiationException, OmegaConfBaseException)


def train(cfg: DictConfig) -> float | None:
    """Fit the GAN described by `cfg`; return the value of `cfg.optimized_metric` (None if unset).

    A problem the user can fix (a bad value, missing data, a diverged run) ends the process with
    one message and exit status 1; the traceback goes to `<run dir>/error.log`.
    """
    with _report_user_errors(Path(cfg.paths.output_dir)):
        return _fit(cfg)


def _fit(cfg: DictConfig) -> float | None:
    ckpt_path = cfg.get("ckpt_path")
    if ckpt_path and not Path(ckpt_path).is_file():
        raise FileNotFoundError(
            f"ckpt_path={ckpt_path} is not a file. Point it at a .ckpt in a run's checkpoints/ folder."
        )
    if cfg.get("seed") is not None:
        L.seed_everything(cfg.seed, workers=True)

    datamodule: L.LightningDataModule = instantiate(cfg.data)
    check_data_kind(cfg, datamodule)
    module: L.LightningModule = instantiate(cfg.model)
    check_compatible(module, datamodule)
    callbacks = instantiate_group(cfg.get("callbacks")) + instantiate_group(cfg.get("metrics"))
    loggers = instantiate_group(cfg.get("logger"), defaults=_sweep_names())
    trainer: L.Trainer = instantiate(
        cfg.trainer, callbacks=callbacks, logger=loggers or False, **run_length(cfg, module)
    )

    hparams = OmegaConf.to_container(cfg, resolve=True)
    for logger in loggers:
        logger.log_hyperparams(hparams)
    log.info("Run directory: %s", cfg.paths.output_dir)
    try:
        trainer.fit(module, datamodule=datamodule, ckpt_path=ckpt_path)
    finally:
        _finish_wandb()
    log.info(
        "Done: %d generator and %d discriminator steps; samples, checkpoints and logs in %s",
        module.g_steps,
        module.d_steps,
        cfg.paths.output_dir,
    )
    return optimized_metric(trainer, cfg.get("optimized_metric"))


def prepare(cfg: DictConfig) -> None:
    """`prepare.py`: build the data set's cache (or download it) and say what it holds."""
    with _report_user_errors(Path(cfg.paths.output_dir)):
        datamodule = instantiate(cfg.data)
        datamodule.prepare_data()
        datamodule.setup("fit")
        images = datamodule.train_set
        shape = tuple(images[0][0].shape if isinstance(images[0], (list, tuple)) else images[0].shape)
        log.info("Ready: %d images of %s (labels: %s)", len(images), shape, datamodule.num_classes or "none")
        cache = getattr(datamodule, "cache", None)
        if cache is not None and getattr(datamodule, "cache_enabled", False):
            skipped = (cache.dir / "skipped.txt").read_text().splitlines()
            log.info("Prepared cache: %s (%d unreadable files skipped, listed in skipped.txt)", cache.dir, len(skipped))


def run_length(cfg: DictConfig, module: L.LightningModule) -> dict:
    """Trainer limits from `g_steps` (generator updates): Lightning's max_steps counts D and G steps."""
    if cfg.trainer.get("max_steps", -1) not in (-1, None):
        raise ValueError(
            "trainer.max_steps counts discriminator and generator steps together; "
            "set g_steps=N for N generator updates (or trainer.max_epochs) instead."
        )
    g_steps = cfg.get("g_steps")
    if g_steps is None:
        return {}
    if g_steps < 1:
        raise ValueError(f"g_steps must be a positive number of generator updates, or null; got {g_steps}")
    return {"max_steps": g_steps * (module.n_critic + 1), "max_epochs": -1}


def check_data_kind(cfg: DictConfig, datamodule: L.LightningDataModule) -> None:
    """Image models for images, point models (with a `dim`) for 2D data: said before any network is built."""
    points = getattr(datamodule, "points", False)
    if points != ("dim" in cfg.model.generator):
        choices = HydraConfig.get().runtime.choices if HydraConfig.initialized() else {}
        data = choices.get("data") or type(datamodule).__name__
        model = choices.get("model") or cfg.model.generator._target_
        if points:
            raise ValueError(f"data={data} gives 2D points, but model={model} makes images: use model=gan_mlp.")
        raise ValueError(f"data={data} gives images, but model={model} makes points: use an image model (model=dcgan).")


def check_compatible(module: L.LightningModule, datamodule: L.LightningDataModule) -> None:
    """The networks must make and take images of the data's size and channels; packs must fill batches."""
    pack = getattr(module, "pack", 1)
    if datamodule.batch_size % pack:
        raise ValueError(
            f"model.pack={pack} does not divide data.batch_size={datamodule.batch_size}: "
            f"D judges groups of {pack} samples; choose a batch size that is a multiple of {pack}."
        )
    want = getattr(module, "num_classes", None)
    if want is not None and getattr(datamodule, "num_classes", None) != want:
        have = getattr(datamodule, "num_classes", None)
        raise ValueError(
            f"the model is conditioned on {want} classes, but the data "
            + ("has no labels" if have is None else f"has {have}")
            + "; a conditional model needs labelled data with as many classes (model.num_classes)."
        )
    if getattr(module, "augment", None) is not None and getattr(datamodule, "points", False):
        raise ValueError("model.augment (DiffAugment) transforms images; 2D point data takes none: model.augment=null")
    for net_name in ("generator", "discriminator"):
        net = getattr(module, net_name)
        for attr in ("resolution", "channels"):
            want, have = getattr(datamodule, attr, None), getattr(net, attr, None)
            if None not in (want, have) and want != have:
                raise ValueError(
                    f"model.{net_name}.{attr}={have} but the data has {attr}={want}; "
                    f"leave model.{net_name}.{attr} at its default (${{data.{attr}}})."
                )


def instantiate_group(group: DictConfig | None, defaults: dict | None = None) -> list:
    """Instantiate each `_target_` node of a config group (callbacks, loggers).

    `defaults` fill keys a node sets to null (e.g. a W&B run's group and name in a multirun).
    """
    objects = []
    for node in (group or {}).values():
        if isinstance(node, DictConfig) and "_target_" in node:
            extra = {k: v for k, v in (defaults or {}).items() if k in node and node[k] is None}
            objects.append(instantiate(node, **extra))
    return objects


def optimized_metric(trainer: L.Trainer, name: str | None) -> float | None:
    """The final value of a logged metric, for Hydra sweepers to optimise."""
    if not name:
        return None
    if name not in trainer.callback_metrics:
        raise ValueError(
            f"optimized_metric={name} was never logged; logged metrics: {', '.join(sorted(trainer.callback_metrics))}"
        )
    return trainer.callback_metrics[name].item()


def _sweep_names() -> dict:
    """In a multirun, the sweep's name as W&B group and the job's overrides as run name."""
    if not HydraConfig.initialized() or HydraConfig.get().mode != RunMode.MULTIRUN:
        return {}
    hc = HydraConfig.get()
    name = hc.job.override_dirname or f"job{hc.job.num}"
    return {"group": f"{hc.job.name}-{Path(hc.sweep.dir).name}", "name": f"{hc.job.num}-{name}"}


def _finish_wandb() -> None:
    """End the W&B run (if any) so the next job of a multirun starts its own."""
    if "wandb" in sys.modules and sys.modules["wandb"].run is not None:
        sys.modules["wandb"].finish()


@contextlib.contextmanager
def _report_user_errors(output_dir: Path) -> Iterator[None]:
    try:
        yield
    except USER_ERRORS as error:
        message = _describe(error)
        with contextlib.suppress(OSError):
            output_dir.mkdir(parents=True, exist_ok=True)
            (output_dir / "error.log").write_text("".join(traceback.format_exception(error)))
        log.error(message)
        raise SystemExit(f"gankit: error: {message}") from error


def _describe(error: BaseException) -> str:
    """One line for the user: the innermost cause of a failed instantiation, with its config key."""
    if isinstance(error, InstantiationException):
        key = next(
            (line.split(":", 1)[1].strip() for line in str(error).splitlines() if line.startswith("full_key:")), None
        )
        cause = error.__cause__ or error
        text = str(cause) if cause is not error else str(error).splitlines()[0]
        return f"{key}: {text}" if key else text
    return str(error)
