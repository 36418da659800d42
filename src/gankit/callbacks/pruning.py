"""A sweep job's side of an Optuna search: report each evaluation to the job's trial, stop when pruned.

Added by train() when the sweeper gave the job a trial (`hydra.sweeper.trial`, gankit.sweeps). Rank 0
talks to the study's storage; every rank follows its decision. The step axis is the dashboards':
generator steps, or images seen (kimg x 1000, rounded down to the evaluation cadence) when the
evaluation runs every_n_kimg, so trials of different batch sizes are compared at equal progress.
"""

from __future__ import annotations

import logging

import lightning as L

from gankit.callbacks.evaluation import Evaluation
from gankit.sweeps import JobTrial, finish_trial, first_line

log = logging.getLogger(__name__)


class TrialReporting(L.Callback):
    def __init__(self, job_trial: JobTrial, evaluation: Evaluation | None, metrics: list[str]) -> None:
        self.job_trial, self.evaluation, self.metrics = job_trial, evaluation, metrics
        self.study = self.trial = None
        self.pruned: tuple[int, float] | None = None  # (step, value) when the pruner stopped the run
        self._seen = 0  # evaluations of the history already reported
        self._last_step = -1

    @property
    def step_size(self) -> int:
        if self.evaluation is None:
            return 1
        if self.evaluation.every_kimg is not None:
            return max(1, round(self.evaluation.every_kimg * 1000))
        return self.evaluation.every

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        error = None
        if trainer.is_global_zero:  # rank 0 talks to the storage; an error there must stop every rank
            try:
                self.study, self.trial = self.job_trial.open(self.step_size)
                self.trial.set_user_attr("run_dir", _run_dir(trainer))
            except Exception as failure:  # noqa: BLE001 - said on every rank below
                error = f"the study's storage ({self.job_trial.storage}): {first_line(failure)}"
        _raise_everywhere(trainer, error)
        self._seen = len(self.evaluation.history) if self.evaluation else 0  # a resumed run reported these

    def _step(self, pl_module) -> int:
        if self.evaluation is not None and self.evaluation.every_kimg is not None:
            return pl_module.images_seen // self.step_size * self.step_size
        return pl_module.g_steps

    def _new_value(self) -> float | None:
        """The newest value of the metric among the evaluations since the last call (every rank keeps count)."""
        history = self.evaluation.history if self.evaluation else []
        new, self._seen = history[self._seen :], len(history)
        metric = self.job_trial.metric
        values = [v[metric] for _, v in new if metric in v] if metric else []
        return values[-1] if values else None

    def _report(self, value: float | None, pl_module) -> None:
        step = self._step(pl_module)
        if value is not None and step > self._last_step and self.trial is not None:
            from optuna.exceptions import UpdateFinishedTrialError

            try:
                self.trial.report(value, step)
            except UpdateFinishedTrialError:  # finished in the study by someone else (by hand, a stale-trial sweep)
                log.warning(
                    "Trial %d is already finished in its study: this run goes on without reporting", self.trial.number
                )
                self.trial = None
                return
            self._last_step = step

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, *args) -> None:
        if self.evaluation is None or len(self.evaluation.history) == self._seen:
            return  # the same on every rank: all evaluate at the same steps
        value = self._new_value()
        prune, error = False, None
        if trainer.is_global_zero and value is not None:
            try:
                self._report(value, pl_module)
                prune = self.trial is not None and bool(self.trial.should_prune())
            except Exception as failure:  # noqa: BLE001 - said on every rank below
                error = f"reporting to trial {self.job_trial.number}: {first_line(failure)}"
        if trainer.world_size > 1:
            prune, value, error = trainer.strategy.broadcast((prune, value, error), src=0)
        if error:
            raise RuntimeError(error)
        if prune:
            self.pruned = (self._step(pl_module), value)
            trainer.should_stop = True  # after this batch: last.ckpt is saved at the end of training as usual

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        """The trial's end: PRUNED, or COMPLETE with the run's best value of each optimised metric."""
        if not trainer.is_global_zero or self.trial is None:
            return
        self._report(self._new_value(), pl_module)  # the final evaluation (Evaluation.on_train_end, just before)
        attrs = {"g_steps": int(pl_module.g_steps), "kimg": round(float(pl_module.kimg), 3)}
        self._mark_wandb(trainer, "PRUNED" if self.pruned else "COMPLETE")
        if self.pruned is not None:
            finish_trial(self.study, self.trial, "PRUNED", **attrs)
            return
        from gankit.training import optimized_metric

        values = optimized_metric(trainer, self.metrics if len(self.metrics) > 1 else self.metrics[0])
        finish_trial(self.study, self.trial, "COMPLETE", values, **attrs)

    def _mark_wandb(self, trainer: L.Trainer, state: str) -> None:
        """The trial's number and state in each W&B run's summary (the workspace's runs table shows them) and,
        when pruned, a `pruned` tag: its curves end early on purpose."""
        from lightning.pytorch.loggers import WandbLogger

        for logger in trainer.loggers:
            if isinstance(logger, WandbLogger):
                run = logger.experiment
                run.summary["trial/number"] = self.job_trial.number
                run.summary["trial/state"] = state
                if state == "PRUNED":
                    run.tags = (*(run.tags or ()), "pruned")

    def on_exception(self, trainer: L.Trainer, pl_module: L.LightningModule, exception: BaseException) -> None:
        from gankit.callbacks.preemption import Preempted

        if isinstance(exception, Preempted):  # saved and requeued: the trial goes on in the next job
            return
        if trainer.is_global_zero and self.trial is not None:
            finish_trial(self.study, self.trial, "FAIL", error=first_line(exception), g_steps=int(pl_module.g_steps))


def _raise_everywhere(trainer: L.Trainer, error: str | None) -> None:
    """Rank 0's error raised on every rank (one rank raising alone leaves the others in a collective)."""
    if trainer.world_size > 1:
        error = trainer.strategy.broadcast(error, src=0)
    if error:
        raise RuntimeError(error)


def _run_dir(trainer: L.Trainer) -> str:
    from hydra.core.hydra_config import HydraConfig

    return HydraConfig.get().runtime.output_dir if HydraConfig.initialized() else str(trainer.default_root_dir)
