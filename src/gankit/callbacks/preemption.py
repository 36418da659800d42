"""Preemption that saves: SIGTERM, SIGINT or SIGUSR1 end the run at a step boundary with a checkpoint of it.

A scheduler (SLURM, Kubernetes, a laptop's Ctrl-C) asks a job to stop with a signal. The signal only
sets a flag; at the end of the current batch every rank agrees (a decision reduced across ranks),
the run saves `checkpoints/last.ckpt` at that step (written atomically; through the periodic checkpoint,
so a fresh run in another run's folder writes its own `last-v1.ckpt`) and stops with `Preempted`,
which `train()` turns into one line naming the checkpoint and the command that resumes, and exit
status 128 + the signal's number (so a scheduler does not read the job as finished). Under SLURM,
USR1 / USR2 (the time-limit warning; submitit asks for USR2) also requeue the job
(`scontrol requeue`), after the checkpoint is written. A second
signal of the same kind while the step finishes takes the default action (stops at once).

Lightning's own SIGTERM handling (a flag, then `SIGTERMException` between batches) exits with
status 0 and saves nothing at that step; this callback's handlers replace it while training (from
`on_train_start`: Lightning registers its handler after `on_fit_start`), and take over a SIGTERM
that arrived while the fit was starting.
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
from pathlib import Path

import lightning as L
from lightning.pytorch.callbacks import Checkpoint

from gankit import lightning_compat as compat

log = logging.getLogger(__name__)
SIGNALS = ("SIGTERM", "SIGINT", "SIGUSR1", "SIGUSR2")
REQUEUE_SIGNALS = ("SIGUSR1", "SIGUSR2")  # SLURM's time-limit warnings (submitit asks for USR2)


class Preempted(Exception):
    """The run stopped on a signal after saving `path` at generator step `g_step`; `requeued`: SLURM runs the job
    again (it resumes by itself); `budget`: (requeues so far, allowed) under SLURM."""

    def __init__(
        self, signum: int, path: Path, g_step: int, requeued: bool = False, budget: tuple[int, int] | None = None
    ) -> None:
        super().__init__(f"stopped by {signal.Signals(signum).name} at generator step {g_step}; saved {path}")
        self.signum, self.path, self.g_step, self.requeued, self.budget = signum, path, g_step, requeued, budget


class Preemption(Checkpoint):  # a Checkpoint: Lightning runs it after the other callbacks of a batch
    """Installs the signal handlers for the length of `fit` and saves + stops at the next batch end."""

    def __init__(self, dirpath: str, signals: list[str] | tuple[str, ...] = SIGNALS, requeue: bool = True) -> None:
        super().__init__()
        unknown = [name for name in signals if not hasattr(signal, name)]
        if unknown:
            raise ValueError(f"callbacks.preemption.signals: unknown signals {unknown}; e.g. {list(SIGNALS)}")
        self.path = Path(dirpath) / "last.ckpt"
        self.signals = [getattr(signal, name) for name in signals]
        self.requeue = requeue
        self.received: int | None = None
        self._previous: dict[int, object] = {}

    def _handle(self, signum: int, frame) -> None:
        if self.received is None:
            log.warning("Received %s: finishing this step, then saving a checkpoint", signal.Signals(signum).name)
        self.received = signum
        # a second one stops at once: the default action (Ctrl-C: KeyboardInterrupt)
        signal.signal(signum, signal.default_int_handler if signum == signal.SIGINT else signal.SIG_DFL)

    def on_fit_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.received = None

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        # After Lightning's own handler, registered after on_fit_start: it would set a flag on which Lightning
        # ends the run between batches (status 0, nothing saved). Ours alone while training; Lightning's
        # teardown puts back every handler it found before the fit, on success and on error.
        for signum in self.signals:
            self._previous[signum] = signal.getsignal(signum)
            signal.signal(signum, self._handle)
        if trainer.received_sigterm:  # a SIGTERM while the fit was starting: ours to handle, at the batch end
            if self.received is None:
                self._handle(signal.SIGTERM, None)
            compat.clear_received_sigterm(trainer)  # else Lightning (DDP) would stop at a batch start, status 0

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, *args) -> None:
        received = self.received is not None
        if trainer.world_size > 1:  # every rank stops at the same step, or none does
            received = trainer.strategy.reduce_boolean_decision(received, all=False)
        if not received:
            return
        signum = self.received or signal.SIGTERM
        path = self._save(trainer)
        job = slurm_job_id()
        requeued, budget = False, None
        if self.requeue and job and signal.Signals(signum).name in REQUEUE_SIGNALS:
            budget = requeue_budget()
            within = budget[0] < budget[1]
            if within and trainer.is_global_zero:
                requeued = requeue_slurm_job(job)
            elif within:
                requeued = True  # rank 0 asks SLURM
        raise Preempted(signum, path, pl_module.g_steps, requeued, budget)

    def _save(self, trainer: L.Trainer) -> Path:
        """This step's checkpoint, as the run's last one. Where the periodic checkpoint keeps a last one in the
        same folder, through it: the file it updates is this run's (after a fresh start in a used folder,
        `last-v1.ckpt`: the other run's `last.ckpt` is not written over), and it knows the file on resume."""
        periodic = trainer.checkpoint_callback
        beside = isinstance(periodic, compat.CheckpointCompat) and Path(periodic.dirpath or "") == self.path.parent
        if beside and periodic.save_last:
            if periodic.last_saved_global_step != trainer.global_step or not periodic.last_model_path:
                periodic.save_last_now(trainer)
            return Path(periodic.last_model_path)
        trainer.save_checkpoint(self.path)
        return self.path

    def teardown(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        for signum, handler in self._previous.items():
            if signal.getsignal(signum) == self._handle:
                signal.signal(signum, handler)
        self._previous.clear()


def slurm_job_id() -> str | None:
    """This SLURM job's id as scontrol names it (array jobs: <array>_<task>); None outside SLURM."""
    array, task = os.environ.get("SLURM_ARRAY_JOB_ID"), os.environ.get("SLURM_ARRAY_TASK_ID")
    return f"{array}_{task}" if array and task else os.environ.get("SLURM_JOB_ID")


def requeue_budget() -> tuple[int, int]:
    """(requeues so far, requeues allowed): SLURM counts every requeue of the job (SLURM_RESTART_COUNT: gankit's
    and submitit's alike); the allowance is the launcher's `max_num_timeout` (no limit known: unbounded)."""
    used = int(os.environ.get("SLURM_RESTART_COUNT", "0") or 0)
    allowed = None
    try:
        from hydra.core.hydra_config import HydraConfig

        if HydraConfig.initialized():
            allowed = HydraConfig.get().launcher.get("max_num_timeout")
    except (ImportError, ValueError):
        pass
    return used, int(allowed) if allowed is not None else 1 << 30


def requeue_slurm_job(job: str) -> bool:
    """`scontrol requeue <job>`: SLURM starts the job again, which resumes with ckpt_path=auto. Whether it did."""
    try:
        result = subprocess.run(["scontrol", "requeue", job], capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.TimeoutExpired) as error:
        log.error("Could not requeue SLURM job %s (%s)", job, error)
        return False
    if result.returncode != 0:
        log.error("scontrol requeue %s failed (%s)", job, result.stderr.strip())
    return result.returncode == 0
