"""Every private part of Lightning (and of torch) that gankit reaches into, in one place.

Each function says what it does, why the public API does not suffice and what it buys (a measured
step-time gain or an exactness no public hook gives). `tests/test_lightning_compat.py` checks the
shape of each internal and fails with a message naming it, so that moving to a new Lightning
(`make lock ARGS=--upgrade`, `make test`) says exactly what to revisit. Nothing else in gankit
touches a Lightning attribute that starts with an underscore.
"""

from __future__ import annotations

import os

import lightning as L
import torch
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.loggers import WandbLogger
from lightning.pytorch.loggers.csv_logs import ExperimentWriter
from torch.optim import Optimizer
from torch.optim.lr_scheduler import LRScheduler

# ---- the loggers' step ------------------------------------------------------------------------------


def logger_step(trainer: L.Trainer) -> int:
    """The step Lightning gives the loggers for the current training batch: the batches done before it.

    Private: `fit_loop.epoch_loop._batches_that_stepped`. Public API: none (`global_step` counts
    optimizer steps, n_critic + 1 per batch). Buys: sample grids, evaluations and the training
    scalars land on the same x axis as anything Lightning logs itself (W&B drops a step lower
    than one it has seen), across resumes (Lightning restores it from the checkpoint).
    """
    return trainer.fit_loop.epoch_loop._batches_that_stepped


def is_logging_batch(trainer: L.Trainer) -> bool:
    """Whether the coming training batch's values reach the loggers: Lightning's rule for `self.log`
    (every `log_every_n_steps` batches, and the batch on which the run stops), from `logger_step`."""
    every = trainer.log_every_n_steps
    return bool(trainer.loggers) and every > 0 and ((logger_step(trainer) + 1) % every == 0 or trainer.should_stop)


def log_training_scalars(trainer: L.Trainer, metrics: dict[str, float], prog_bar=()) -> None:
    """Training scalars to every logger at Lightning's step, with its `epoch` key, kept in the trainer's
    `logged_metrics` and `callback_metrics` as `self.log` keeps them (CPU tensors), and
    those named in `prog_bar` in the progress bar.

    Public API only (the loggers' `log_metrics`, the trainer's metric dicts); it replaces
    `self.log`, whose result collection costs about 0.3 ms of Python per call and reads the
    progress-bar values from the device on every batch (bench/step_overhead.py).
    """
    values = {name: torch.tensor(value) for name, value in metrics.items()}
    trainer.callback_metrics.update(values)
    trainer.logged_metrics.update(values)
    trainer.progress_bar_metrics.update({name: metrics[name] for name in prog_bar if name in metrics})
    step, row = logger_step(trainer), {**metrics, "epoch": trainer.current_epoch}
    for logger in trainer.loggers:
        logger.log_metrics(row, step=step)
        logger.save()


# ---- fused optimizers under fp16 ------------------------------------------------------------------------


def unscales_in_kernel(optimizer: Optimizer) -> bool:
    """Whether this torch optimizer applies the GradScaler's unscale inside its own step (fused Adam and
    kin), in which case Lightning skips `scaler.unscale_` before `on_before_optimizer_step`.

    Private (torch): `Optimizer._step_supports_amp_scaling`. Public API: none. Buys: clipping and
    gradient-norm logging see unscaled gradients under fp16 with fused optimizers.
    """
    return bool(getattr(optimizer, "_step_supports_amp_scaling", False))


# ---- checkpoints: the loop state of an epoch's end -------------------------------------------------------

LOOP_STATE_KEYS = ("epoch_progress", "epoch_loop.batch_progress", "epoch_loop.state_dict")


def all_batches_ready(trainer: L.Trainer) -> bool:
    """Whether the epoch loop has yielded every batch of the epoch.

    Private: `fit_loop.epoch_loop._num_ready_batches_reached()`. Public API: none (`num_training_batches`
    and the batch index do not see a loader that ends early). Buys: `keep_epoch_position`'s exact resume.
    """
    return trainer.fit_loop.epoch_loop._num_ready_batches_reached()


def saved_loop_state(checkpoint: dict) -> dict | None:
    """The fit loop's saved state in a checkpoint, or None where it lacks the keys `keep_epoch_position`
    rewrites (`loops.fit_loop` with `epoch_progress`, `epoch_loop.batch_progress`, `epoch_loop.state_dict`).

    Private: the layout of Lightning's loop state in a checkpoint. Public API: none (a checkpoint's
    loop state can only be taken whole). Buys: exact resume after a save at an epoch's end.
    """
    saved = checkpoint.get("loops", {}).get("fit_loop", {})
    return saved if set(LOOP_STATE_KEYS) <= saved.keys() else None


def count_logger_batch(saved: dict) -> None:
    """In a saved loop state: the batch in whose end it was saved counted for the loggers, as Lightning counts it
    right after the batch's end hooks (`epoch_loop.state_dict._batches_that_stepped`)."""
    saved["epoch_loop.state_dict"]["_batches_that_stepped"] += 1


def keep_epoch_position(trainer: L.Trainer, checkpoint: dict) -> None:
    """Makes a checkpoint resume where the run stopped, wherever in an epoch it was saved.

    Private: the fit loop's progress counters and their layout in the checkpoint (the functions above).
    Public API: none. Buys: exact resume (tests/test_exact_resume.py).

    A save inside an epoch (periodic, preemption, best) is Lightning's mid-epoch state and resumes
    exactly, except in two places where Lightning's restart and the loader's saved position disagree:
    - **After all of an epoch's batches**: in the last batch's end (a save every k generator steps,
      a preemption) or after the epoch loop returned (the last saves of a run that reached its
      `g_steps`). Lightning then counts the epoch as done (or, after the epoch loop returned, runs its
      end again and counts one more), but replays the loader's position (all batches yielded, the
      iterator not yet exhausted) into the next epoch, which comes out empty: a whole epoch's order
      is skipped. The checkpoint is made to read as one saved before the next epoch's first batch:
      the epoch counted complete, no batch of the next one counted, no loader position. (The
      epoch's end hooks, which gankit does not use, then do not run for it on resume, as in
      Lightning's own handling of a save in an epoch's last batch.)
    - **After an epoch cut short**: `g_steps` reached mid-epoch ends the epoch loop early, and the
      fit loop counts the epoch as processed (by the end of training, completed) before the last
      saves. Resumed from that state (the run extended with a larger g_steps), Lightning takes the
      epoch for done: the loader goes on from its position, but the samplers get the next epoch's
      number. The epoch's counts are taken back: the checkpoint reads as a mid-epoch one.
    """
    saved, fit_loop = saved_loop_state(checkpoint), trainer.fit_loop
    if saved is None:
        return  # not the loop state this was written for
    epoch, batch = fit_loop.epoch_progress.current, fit_loop.epoch_loop.batch_progress.current
    returned = epoch.processed == epoch.started and epoch.completed >= epoch.started - 1  # the epoch loop returned
    in_batch_end = epoch.processed == epoch.started - 1 and batch.ready == batch.processed == batch.completed + 1
    all_batches = all_batches_ready(trainer)
    epochs = (saved["epoch_progress"]["total"], saved["epoch_progress"]["current"])
    if all_batches and (returned or in_batch_end):
        for counts in epochs:
            counts["processed"] = counts["completed"] = counts["started"]
        batches = saved["epoch_loop.batch_progress"]
        batches["total"]["completed"] = batches["total"]["processed"]
        batches["current"] = dict.fromkeys(batches["current"], 0)
        batches["is_last_batch"] = False
        if in_batch_end:  # Lightning counts the batch for the loggers after its end hooks
            count_logger_batch(saved)
        saved.get("state_dict", {}).pop("combined_loader", None)
    elif returned:
        for counts in epochs:
            counts["processed"] = counts["completed"] = counts["started"] - 1


# ---- preemption ------------------------------------------------------------------------------------------


def clear_received_sigterm(trainer: L.Trainer) -> None:
    """Forget a SIGTERM that Lightning's handler noted while the fit was starting (gankit's own handler
    takes it over and stops at the batch's end with a checkpoint and status 143).

    Private: the trainer's `_signal_connector.received_sigterm` (the public `received_sigterm` is
    read-only). Public API: none. Buys: under DDP Lightning would otherwise end the run at the next
    batch's start with status 0 and no checkpoint of the current step.
    """
    connector = getattr(trainer, "_signal_connector", None)
    if connector is not None:
        connector.received_sigterm = False


class CheckpointCompat(ModelCheckpoint):
    """ModelCheckpoint's protected members that gankit's periodic checkpoint and the preemption use,
    under public names. Public API: `every_n_train_steps` only at construction (before the module
    says its n_critic), no way to save `last` / top-k now, and the monitored values come from `self.log`.
    Buys: checkpoints counted in generator steps, and a preemption save that is the run's own `last.ckpt`."""

    def set_every_n_train_steps(self, steps: int) -> None:
        """Save every `steps` optimizer steps (Lightning's count; private `_every_n_train_steps`)."""
        self._every_n_train_steps = steps

    @property
    def last_saved_global_step(self) -> int:
        """The global step of this callback's latest save (private `_last_global_step_saved`)."""
        return self._last_global_step_saved

    def monitor_values(self, trainer: L.Trainer) -> dict:
        """The values a save is named and ranked by; a subclass adds its own (private `_monitor_candidates`)."""
        return super()._monitor_candidates(trainer)

    def _monitor_candidates(self, trainer: L.Trainer) -> dict:
        return self.monitor_values(trainer)

    def save_last_now(self, trainer: L.Trainer) -> None:
        """Write (or update) `last.ckpt` now (private `_save_last_checkpoint`)."""
        self._save_last_checkpoint(trainer, self._monitor_candidates(trainer))

    def save_top_k_now(self, trainer: L.Trainer) -> None:
        """Save a ranked checkpoint now, keeping the best k (private `_save_topk_checkpoint`)."""
        self._save_topk_checkpoint(trainer, self._monitor_candidates(trainer))


# ---- loggers ---------------------------------------------------------------------------------------------


def wandb_run(logger: WandbLogger):
    """The logger's W&B run, started by Lightning's own `experiment` property without its rank-zero guard
    (the caller is on rank 0), and whether this call started it.

    Private: `WandbLogger.experiment.fget.__wrapped__` and `_experiment`. Public API: `experiment`, which
    gives no hook at the run's start. Buys: gankit's metric layout (`define_metric`) declared once, when
    the run starts, before the first value is logged.
    """
    fresh = logger._experiment is None
    return WandbLogger.experiment.fget.__wrapped__(logger), fresh


class KeepingCSVWriter(ExperimentWriter):
    """Lightning's CSV writer deletes an existing metrics.csv when a run starts in its folder (a resume with
    ckpt_path=auto does); this one keeps its rows and appends after them, so a run's history survives resumes.

    Private: `ExperimentWriter._check_log_dir_exists`, `_fs`, `metrics_keys`. Public API: none (CSVLogger
    always starts its file afresh). Buys: one metrics.csv per run across preemptions.
    """

    def _check_log_dir_exists(self) -> None:
        import csv

        if self._fs.isfile(self.metrics_file_path):
            with self._fs.open(self.metrics_file_path, "r", newline="") as handle:
                self.metrics_keys = next(csv.reader(handle), [])  # the header: new keys rewrite it, rows kept


def csv_writer(logger, make_writer) -> ExperimentWriter:
    """A CSVLogger's writer, made by `make_writer(log_dir)` on first use (private `_experiment`, `_fs`)."""
    if logger._experiment is None:
        logger._fs.makedirs(logger.root_dir, exist_ok=True)
        logger._experiment = make_writer(logger.log_dir)
    return logger._experiment


# ---- torchmetrics ---------------------------------------------------------------------------------------


def inception_features_and_logits(net, images):
    """torch-fidelity's InceptionV3 (as torchmetrics wraps it) on uint8 images: pool3 features and class logits
    from one pass. Private (torchmetrics): `FeatureExtractorInceptionV3._torch_fidelity_forward`. Public API:
    `forward`, which returns one head per call. Buys: FID and IS from one Inception pass instead of two."""
    return net._torch_fidelity_forward(images)


# ---- torch ----------------------------------------------------------------------------------------------


def skip_failing_nvml_check() -> bool:
    """Undo Lightning's `PYTORCH_NVML_BASED_CUDA_CHECK=1` where NVML cannot answer (CPU-only machines, MIG).

    Importing Lightning sets it so that `torch.cuda.is_available()` asks NVML rather than the CUDA
    runtime (which would poison a later fork). Adam and AdamW ask that on every step (a CUDA-graph
    health check), and where there is no NVML library each call is a failed `dlopen` of it before
    the fallback to the runtime count: 0.044 ms a call against 0.001 ms (2 CPU cores), twice per
    generator step. Where NVML fails (no library, or MIG devices it does not count), the check's
    answer is the runtime's either way, so dropping the variable changes no result, only its cost.
    Private (torch): `torch.cuda._device_count_nvml`. Returns whether it was dropped.
    """
    if os.environ.get("PYTORCH_NVML_BASED_CUDA_CHECK") != "1" or not torch.backends.cuda.is_built():
        return False
    if torch.version.hip:  # ROCm answers through amdsmi with the variable set, without initialising the GPU
        return False
    try:
        nvml_failed = torch.cuda._device_count_nvml() < 0  # -1 when NVML cannot be loaded or initialised
    except Exception:  # noqa: BLE001 - a torch without this helper: leave Lightning's setting alone
        return False
    if nvml_failed:
        del os.environ["PYTORCH_NVML_BASED_CUDA_CHECK"]
    return nvml_failed


def set_schedule_position(scheduler: LRScheduler) -> bool:
    """Set the learning rates to what the scheduler's (changed) settings give at its restored step; False
    where the scheduler has no closed form (it then goes on from the restored rates).

    Private (torch): `_get_closed_form_lr` and `_last_lr`. Public API: none (`step()` moves one step on
    from the restored rate). Buys: a resumed run made longer (`g_steps`) follows its new schedule
    instead of ending at the old one's LR 0.
    """
    if not hasattr(scheduler, "_get_closed_form_lr"):
        return False
    for group, lr in zip(scheduler.optimizer.param_groups, scheduler._get_closed_form_lr(), strict=True):
        group["lr"] = lr
    scheduler._last_lr = [group["lr"] for group in scheduler.optimizer.param_groups]
    return True


SCHEDULER_PROGRESS = ("last_epoch", "_step_count", "_last_lr", "_get_lr_called_within_step", "_is_initial")


def scheduler_settings(scheduler: LRScheduler) -> dict:
    """A scheduler's settings from the config (length, factors, ...), without its progress (torch's private
    state-dict keys listed in SCHEDULER_PROGRESS)."""
    return {k: v for k, v in scheduler.state_dict().items() if k not in SCHEDULER_PROGRESS}


def allow_recompiles(limit: int) -> None:
    """Raise torch.compile's recompile limit to at least `limit` (`torch._dynamo.config`, documented but under
    a private module): G and D share the frame of nn.Module's call, and each holds two graphs (trainable
    and frozen)."""
    torch._dynamo.config.recompile_limit = max(torch._dynamo.config.recompile_limit, limit)
