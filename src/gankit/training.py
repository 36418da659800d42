"""train(cfg): build the datamodule, GAN module, callbacks, loggers and trainer from the config, and fit.

The only place (with the other entry points) that instantiates from config.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shlex
import sys
import traceback
from collections.abc import Iterator
from pathlib import Path

import lightning as L
import torch
from hydra.core.hydra_config import HydraConfig
from hydra.errors import InstantiationException
from hydra.types import RunMode
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from gankit.callbacks.evaluation import Evaluation
from gankit.callbacks.preemption import Preempted
from gankit.callbacks.pruning import TrialReporting
from gankit.checkpoints import RunConfig, check_fits, read_checkpoint, resumable_checkpoint
from gankit.metric_keys import best_value
from gankit.ranks import adopt_launcher_ranks, log_files_per_rank, per_rank, relaunch_job_only
from gankit.sweeps import JobTrial, TrialFailed

log = logging.getLogger(__name__)
if logging.getLogger().handlers:  # Hydra's handlers print already: drop lightning's duplicate console
    logging.getLogger("lightning").handlers.clear()

USER_ERRORS = (ValueError, FileNotFoundError, FloatingPointError, InstantiationException, OmegaConfBaseException)


def train(cfg: DictConfig) -> float | tuple[float, ...] | None:
    """Fit the GAN described by `cfg`; return `cfg.optimized_metric` (its best evaluation; None if unset).

    A problem the user can fix (a bad value, missing data, a diverged run) ends the process with
    one message and exit status 1; the traceback goes to `<run dir>/error.log`.
    """
    adopt_launcher_ranks()
    log_files_per_rank()
    job_trial = JobTrial.of_this_job(cfg.get("optimized_metric"))
    try:
        with _report_user_errors(Path(cfg.paths.output_dir)):
            try:
                return _fit(cfg, job_trial)
            except Preempted as stop:
                if stop.requeued:
                    used, allowed = stop.budget
                    log.warning("Preempted: %s. The SLURM job requeues itself (requeue %d of %d allowed) and "
                                "resumes there", stop, used + 1, allowed)  # fmt: skip
                    raise SystemExit(128 + stop.signum) from None  # no result: submitit waits for the rerun
                spent = f" (requeue budget spent: {stop.budget[0]} of hydra.launcher.max_num_timeout=" \
                        f"{stop.budget[1]})" if stop.budget else ""  # fmt: skip
                resume = " ".join(["python", *map(shlex.quote, _command_line(cfg, stop.path))])
                log.warning("Preempted: %s%s. Resume with: %s", stop, spent, resume)
                if os.environ.get("SUBMITIT_EXECUTOR"):  # the job's result for submitit (which sees no exit status)
                    raise RuntimeError(f"Preempted: {stop}{spent}. Resume with: {resume}") from None
                raise SystemExit(128 + stop.signum) from None
    except SystemExit as stop:
        if job_trial is None or not isinstance(stop.code, str):
            raise
        # an Optuna trial: an exception Hydra hands to the sweeper (recorded FAIL; the sweep goes on)
        raise TrialFailed(stop.code.removeprefix("gankit: error: ")) from stop.__cause__


def _fit(cfg: DictConfig, job_trial: JobTrial | None = None) -> float | None:
    check_types(cfg)
    check_precision(cfg)
    check_cluster(cfg)
    ckpt_path = resume_from(cfg)
    if torch.cuda.is_available() and cfg.get("matmul_precision"):
        torch.set_float32_matmul_precision(cfg.matmul_precision)  # "high": TF32 matmuls on Ampere and later
    if cfg.get("seed") is not None:
        L.seed_everything(cfg.seed, workers=True)
    else:  # no run seed: nothing may read an earlier run's (data order, training streams)
        os.environ.pop("PL_GLOBAL_SEED", None)

    datamodule: L.LightningDataModule = instantiate(cfg.data)
    check_data_kind(cfg, datamodule)
    module: L.LightningModule = instantiate(cfg.model)
    check_compatible(module, datamodule)
    if ckpt_path is not None:
        check_fits(module, read_checkpoint(ckpt_path), ckpt_path)
    callbacks = instantiate_group(cfg.get("callbacks")) + instantiate_group(cfg.get("metrics"))
    check_optimized_metric(cfg, callbacks)
    reporting = None
    if job_trial is not None:  # an Optuna trial: report evaluations, stop when pruned, record the end
        evaluation = next((cb for cb in callbacks if isinstance(cb, Evaluation)), None)
        names = cfg.optimized_metric
        reporting = TrialReporting(job_trial, evaluation, [names] if isinstance(names, str) else list(names))
        callbacks.append(reporting)
    callbacks.append(RunConfig(OmegaConf.to_container(cfg, resolve=False)))  # eval.py / generate.py read it
    loggers = instantiate_group(cfg.get("logger"), defaults=_sweep_names())
    trainer: L.Trainer = instantiate(
        cfg.trainer, callbacks=callbacks, logger=loggers or False, **run_length(cfg, module)
    )

    hparams = OmegaConf.to_container(cfg, resolve=True)
    for logger in loggers:
        logger.log_hyperparams(hparams)
    log.info("Run directory: %s", cfg.paths.output_dir)
    try:
        with relaunch_job_only(spawns_ranks(trainer)), job_trial.inherited() if job_trial else contextlib.nullcontext():
            trainer.fit(module, datamodule=datamodule, ckpt_path=ckpt_path)
    finally:
        _finish_wandb()
    if reporting is not None and reporting.pruned is not None:
        step, value = reporting.pruned
        log.info(
            "Pruned: trial %d stopped by the study's %s pruner at step %d (%s=%.4g); "
            "%d generator steps, last checkpoint and logs in %s",
            job_trial.number,
            job_trial.pruner["name"],
            step,
            job_trial.metric,
            value,
            module.g_steps,
            cfg.paths.output_dir,
        )
    else:
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


TYPED_KEYS = {  # key: (type, null allowed); keys whose wrong type would surface as a Python error
    "seed": (int, True),
    "g_steps": (int, True),
    "data.batch_size": (int, False),
    "data.num_workers": (int, False),
    "data.resolution": (int, True),
    "data.limit": (int, True),
    "data.holdout": (int, True),
    "data.seed": (int, True),
    "model.ada.target": (float, False),
    "model.ada.interval": (int, False),
    "model.ada.kimg": (float, False),
    "model.ada.p": (float, True),
    "model.lecam.weight": (float, False),
    "model.lecam.decay": (float, False),
    "model.lecam.start": (int, False),
    "trainer.max_epochs": (int, True),
    "model.n_critic": (int, False),
    "model.r1_every": (int, False),
    "model.r1_until": (int, True),
    "model.ema_decay": (float, True),
    "model.g_optimizer.lr": (float, False),
    "model.d_optimizer.lr": (float, False),
    "metrics.evaluation.num_samples": (int, False),
    "metrics.evaluation.every_n_g_steps": (int, False),
    "metrics.evaluation.every_n_kimg": (float, True),
    "callbacks.samples.every_n_g_steps": (int, True),
    "callbacks.model_checkpoint.keep": (int, False),
    "callbacks.model_checkpoint.every_n_epochs": (int, False),
    "callbacks.model_checkpoint.every_n_g_steps": (int, True),
    "num_samples": (int, False),  # eval.py / generate.py keys
    "batch_size": (int, False),
}


def check_types(cfg: DictConfig) -> None:
    """Each key of TYPED_KEYS holds a number of its kind: `seed=abc` is one message naming `seed`."""
    for key, (kind, nullable) in TYPED_KEYS.items():
        value = OmegaConf.select(cfg, key, default="<absent>")
        if value == "<absent>" or (value is None and nullable):
            continue
        ok = isinstance(value, (int, float) if kind is float else int) and not isinstance(value, bool)
        if not ok:
            want = "a whole number" if kind is int else "a number"
            raise ValueError(f"{key}={value!r} must be {want}" + (" or null" if nullable else ""))
    seed = cfg.get("seed")
    if isinstance(seed, int) and not 0 <= seed < 2**32:
        raise ValueError(f"seed={seed} must lie in 0 .. 2^32 - 1 (numpy's seed range)")


PRECISIONS = {"32-true", "32", "16-mixed", "16", "bf16-mixed", "bf16"}  # fp32 weights, optionally mixed


def check_precision(cfg: DictConfig) -> None:
    """Weights stay fp32 (optionally with fp16 / bf16 mixed compute): the latents, the data's scaling and
    the losses are fp32, so a "true" half or double precision would fail deep in a layer instead."""
    precision = cfg.trainer.get("precision")
    if precision is not None and str(precision) not in PRECISIONS:
        raise ValueError(
            f"trainer.precision={precision} is not supported: gankit keeps the weights in fp32; "
            "choose trainer.precision from 32-true, bf16-mixed, 16-mixed"
        )


def check_cluster(cfg: DictConfig) -> None:
    """Several nodes need a launcher that starts a process per device on each (SLURM, torchrun)."""
    nodes = cfg.trainer.get("num_nodes", 1)
    started_outside = any(key in os.environ for key in ("SLURM_NTASKS", "RANK", "LOCAL_RANK"))
    if isinstance(nodes, int) and nodes > 1 and not started_outside:
        raise ValueError(
            f"trainer.num_nodes={nodes} needs a launcher that starts the processes on every node: "
            "python train.py -m hydra/launcher=slurm ... (README, Clusters), or torchrun on each node"
        )


def resume_from(cfg: DictConfig) -> str | None:
    """The checkpoint to resume from: `ckpt_path`, or with `ckpt_path=auto` the newest readable one of
    this run's checkpoints/ (None: start fresh, so a scheduler can rerun the same command)."""
    ckpt_path = cfg.get("ckpt_path")
    if ckpt_path == "auto":
        found = resumable_checkpoint(Path(cfg.paths.output_dir) / "checkpoints")
        log.info("ckpt_path=auto: %s", f"resuming from {found}" if found else "no checkpoint yet, starting fresh")
        return str(found) if found else None
    if ckpt_path:
        read_checkpoint(ckpt_path)  # one message for a missing, truncated, corrupt or foreign file
    return ckpt_path or None


def _command_line(cfg: DictConfig, path: Path) -> list[str]:
    """The command that resumes this run: the same overrides in the same directory, from `path`."""
    if HydraConfig.initialized():
        hc = HydraConfig.get()
        overrides = [o for o in hc.overrides.task if not o.startswith("ckpt_path=")]
        script = Path(sys.argv[0]).name if sys.argv else ""
        if not script.endswith(".py") or script.startswith("_"):  # python -m, submitit's _submit.py
            named = f"{hc.job.name}.py"  # Hydra names a job after its script (train.py: train)
            script = named if hc.job.name and Path(named).is_file() else "train.py"
        launcher = str(hc.launcher.get("_target_", "")) if hc.launcher else ""
        if hc.sweeper is not None and hc.sweeper.get("trial") is not None:  # an Optuna trial: this run alone
            return [script, *overrides, "hydra.mode=RUN", f"hydra.run.dir={hc.runtime.output_dir}", "ckpt_path=auto"]
        if "Slurm" in launcher:  # the same job on the cluster, in the same folder
            cluster = [o for o in hc.overrides.hydra if o.startswith(("hydra/launcher=", "hydra.launcher."))]
            where = [f"hydra.sweep.dir={hc.sweep.dir}", f"hydra.sweep.subdir={hc.sweep.subdir}"]
            return [script, "-m", *cluster, *overrides, *where, "ckpt_path=auto"]
        return [script, *overrides, f"hydra.run.dir={hc.runtime.output_dir}", "ckpt_path=auto"]
    return ["train.py", f"ckpt_path={path}"]


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
    if getattr(module, "augment_pipe", None) is not None and getattr(datamodule, "points", False):
        raise ValueError("model.ada (adaptive augmentation) transforms images; 2D points take none: model.ada=null")
    for net_name in ("generator", "discriminator"):
        net = getattr(module, net_name)
        for attr in ("resolution", "channels"):
            want, have = getattr(datamodule, attr, None), getattr(net, attr, None)
            if None not in (want, have) and want != have:
                raise ValueError(
                    f"model.{net_name}.{attr}={have} but the data has {attr}={want}; "
                    f"leave model.{net_name}.{attr} at its default (${{data.{attr}}})."
                )


def spawns_ranks(trainer: L.Trainer) -> bool:
    """Whether Lightning will start the other DDP ranks itself by running the script again."""
    launcher = trainer.strategy.launcher
    environment = getattr(launcher, "cluster_environment", None)
    return (
        type(launcher).__name__ == "_SubprocessScriptLauncher"
        and environment is not None
        and not environment.creates_processes_externally
        and trainer.world_size > 1
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


def optimized_metric(trainer: L.Trainer, names) -> float | tuple[float, ...] | None:
    """What Hydra sweepers optimise: for each name, the best value of the run's evaluations (`val/...`;
    the lowest FID, KID or mode KL, the highest of the others), else its last logged value. A list of
    names gives a tuple (multi-objective sweeps)."""
    if not names:
        return None
    if not isinstance(names, str):
        return tuple(optimized_metric(trainer, name) for name in names)
    evaluation = next((cb for cb in trainer.callbacks if isinstance(cb, Evaluation)), None)
    history = [values[names] for _, values in evaluation.history if names in values] if evaluation else []
    if history:
        best = best_value(history, names)  # lowest FID, C_T nearest 0, highest recall; a diagnostic: the last
        return history[-1] if best is None else best
    if names not in trainer.callback_metrics:
        raise ValueError(
            f"optimized_metric={names} was never logged; logged metrics: {', '.join(sorted(trainer.callback_metrics))}"
        )
    return trainer.callback_metrics[names].item()


def check_optimized_metric(cfg: DictConfig, callbacks: list) -> None:
    """A sweep's objective must be a metric the run logs: said at start, not after the first trial."""
    names = cfg.get("optimized_metric")
    names = [] if not names else [names] if isinstance(names, str) else list(names)
    evaluation = next((cb for cb in callbacks if isinstance(cb, Evaluation)), None)
    for name in names:
        if not name.startswith("val/"):
            continue  # train/... keys: checked when the run ends
        logged = evaluation.logged_keys() if evaluation else []
        if name not in logged:
            raise ValueError(
                f"optimized_metric={name} is not logged by this run's metrics "
                f"({', '.join(logged) or 'metrics=none logs none'}); choose one of them, or other metrics"
            )


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
        _leave_process_group()  # every rank stops on the same decision: no collective is pending
        message = _describe(error)
        with contextlib.suppress(OSError):
            output_dir.mkdir(parents=True, exist_ok=True)
            per_rank(output_dir / "error.log").write_text("".join(traceback.format_exception(error)))
        log.error(message)
        raise SystemExit(f"gankit: error: {message}") from error


def _leave_process_group() -> None:
    """Destroy this process's DDP group before exiting on an error (gloo threads alive at exit abort it)."""
    import torch.distributed

    if torch.distributed.is_available() and torch.distributed.is_initialized():
        torch.distributed.destroy_process_group()


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
