"""A watch for mode collapse and a runaway discriminator, raising an alert when either shows.

Signals, each checked as soon as it is known:
- after every evaluation (gankit.callbacks.Evaluation): recall or coverage fallen below
  `(1 - max_drop)` times its best so far (once the best is at least `min_best`, so an untrained
  generator's noise does not alarm), or modes lost against the best count (when there are at least
  `min_per_mode` high-quality samples per mode, so that a mode cannot vanish by chance); a signal must hold for
  `patience` evaluations in a row (one noisy evaluation is not a collapse);
- every `d_window` discriminator steps after `warmup_g_steps`: the discriminator winning outright,
  i.e. its mean pairwise AUC (`train/d_auc`, the share of (real, fake) pairs it ranks correctly) at
  least `d_auc` (cleared only once it falls below `d_auc_clear`). A discriminator that separates
  every fake from every real gives the generator vanishing or useless gradients, the classic
  prelude to collapse. (Early in training D often wins for a while before G catches up: hence
  the warm-up.)

An alert is a console warning, a W&B alert when a W&B run is online, a record in `alerts` (and
the `collapse/alerts` count in the loggers), and, with `stop=true`, the end of the run (all DDP
ranks together; the last checkpoint is kept). Each signal alerts once when it appears and again
only after it has cleared.
"""

from __future__ import annotations

import logging
import math
import sys

import lightning as L

from gankit.callbacks.evaluation import Evaluation
from gankit.lightning_compat import logger_step
from gankit.module import pairwise_auc

log = logging.getLogger(__name__)


class CollapseMonitor(L.Callback):
    def __init__(
        self,
        max_drop: float = 0.5,
        min_best: float = 0.1,
        max_modes_lost: float = 0.1,
        d_auc: float = 0.999,
        d_auc_clear: float = 0.99,
        d_window: int = 200,
        warmup_g_steps: int = 500,
        patience: int = 2,
        min_per_mode: float = 5.0,
        stop: bool = False,
    ) -> None:
        super().__init__()
        if (
            not 0 < max_drop < 1
            or not 0 < max_modes_lost < 1
            or not 0.5 < d_auc_clear <= d_auc <= 1
            or min(d_window, patience) < 1
        ):
            raise ValueError(
                "metrics.collapse: max_drop and max_modes_lost in (0, 1), 0.5 < d_auc_clear <= d_auc <= 1, "
                "d_window and patience >= 1"
            )
        self.max_drop, self.min_best, self.max_modes_lost = max_drop, min_best, max_modes_lost
        self.d_auc, self.d_auc_clear = d_auc, d_auc_clear
        self.d_window, self.warmup, self.patience = d_window, warmup_g_steps, patience
        self.min_per_mode, self.stop = min_per_mode, stop
        self.best: dict[str, tuple[float, int]] = {}  # metric -> (best value, generator step)
        self.alerts: list[dict] = []
        self._active: set[str] = set()  # signals currently raised
        self._streak: dict[str, int] = {}  # evaluations in a row that showed each signal
        self._seen = 0  # evaluations already read
        self._auc_sum, self._auc_count = 0.0, 0

    def state_dict(self) -> dict:
        state = {"best": self.best, "alerts": self.alerts, "active": sorted(self._active), "streak": self._streak}
        return {**state, "seen": self._seen}

    def load_state_dict(self, state_dict: dict) -> None:
        self.best, self.alerts = dict(state_dict["best"]), list(state_dict["alerts"])
        self._active, self._streak = set(state_dict["active"]), dict(state_dict["streak"])
        # evaluations already judged (restored with the evaluation's history); None: every restored one
        self._seen = state_dict.get("seen")

    # ---- hooks ------------------------------------------------------------------------------
    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, outputs, *args) -> None:
        raised, evaluated = self._check_evaluations(trainer)
        if outputs and "d_real" in outputs and pl_module.g_steps >= self.warmup:
            auc = pairwise_auc(outputs["d_real"], outputs["d_fake"])
            self._auc_sum = self._auc_sum + auc  # stays on the device: no sync per step
            self._auc_count += 1
            if self._auc_count >= self.d_window:
                mean = float(self._auc_sum) / self._auc_count  # one sync per window
                self._auc_sum, self._auc_count = 0.0, 0
                reduce = lambda decision: trainer.strategy.reduce_boolean_decision(decision, all=False)  # noqa: E731
                raised += self.observe_auc(mean, pl_module.g_steps, reduce)
        self._act(trainer, pl_module, raised, evaluated=evaluated)

    def observe_auc(self, mean: float, g_step: int, reduce=bool) -> list[dict]:
        """One window's mean D AUC; return the alerts raised.

        The signal appears at `d_auc` and clears only below `d_auc_clear`: a discriminator hovering
        at the threshold (Stacked MNIST's DCGAN sits at 99.9% for most of a run that covers all
        1,000 modes) alerts once, not at every crossing. `reduce` combines the ranks' decisions.
        """
        holding = "discriminator" in self._active and mean >= self.d_auc_clear
        return self._signal(
            "discriminator",
            reduce(mean >= self.d_auc or holding),
            g_step,
            f"the discriminator wins outright: over the last {self.d_window} steps it ranked "
            f"{mean:.1%} of (real, fake) pairs correctly (threshold {self.d_auc:.1%})",
        )

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        raised, evaluated = self._check_evaluations(trainer)
        self._act(trainer, pl_module, raised, at_end=True, evaluated=evaluated)

    # ---- signals ----------------------------------------------------------------------------
    def _check_evaluations(self, trainer: L.Trainer) -> tuple[list[dict], bool]:
        """Judge the evaluations not seen yet: (alerts raised, whether there were any)."""
        history = [(*h, cb.num_samples) for cb in trainer.callbacks if isinstance(cb, Evaluation) for h in cb.history]
        if self._seen is None:  # resumed from a checkpoint that predates `seen`: the restored ones were judged
            self._seen = len(history)
        raised = []
        for g_step, values, num_samples in history[self._seen :]:
            raised += self.observe(g_step, values, num_samples)
        evaluated, self._seen = len(history) > self._seen, len(history)
        return raised, evaluated

    def observe(self, g_step: int, values: dict[str, float], num_samples: int | None = None) -> list[dict]:
        """Compare one evaluation's values with the best so far; return the alerts raised.

        `num_samples` (the evaluation's sample count) lets the mode signal judge whether a mode count
        is meaningful: with fewer than `min_per_mode` (high-quality) samples per mode, a mode can go
        missing by chance, so losing it says nothing.
        """
        raised = []
        for name in ("recall", "coverage"):
            value = values.get(f"val/{name}")
            if value is None or math.isnan(value):
                continue
            best, best_step = self.best.get(name, (value, g_step))
            falling = best >= self.min_best and value < (1 - self.max_drop) * best
            raised += self._signal(
                name,
                self._persistent(name, falling),
                g_step,
                f"{name} fell to {value:.3f} from its best {best:.3f} at generator step {best_step}",
            )
            if value >= best:
                self.best[name] = (value, g_step)
        modes = values.get("val/modes")
        if modes is not None:
            best, best_step = self.best.get("modes", (modes, g_step))
            allowed = max(1, math.floor(self.max_modes_lost * best))
            good = num_samples * values.get("val/high_quality", 1.0) if num_samples else math.inf
            reliable = good >= self.min_per_mode * best
            raised += self._signal(
                "modes",
                self._persistent("modes", reliable and modes <= best - allowed),
                g_step,
                f"modes fell to {modes:.0f} from {best:.0f} at generator step {best_step}",
            )
            if modes >= best:
                self.best["modes"] = (modes, g_step)
        return raised

    def _persistent(self, name: str, present: bool) -> bool:
        self._streak[name] = self._streak.get(name, 0) + 1 if present else 0
        return self._streak[name] >= self.patience

    def _signal(self, name: str, present: bool, g_step: int, message: str) -> list[dict]:
        if not present:
            self._active.discard(name)
            return []
        if name in self._active:
            return []
        self._active.add(name)
        alert = {"signal": name, "g_step": g_step, "message": message}
        self.alerts.append(alert)
        return [alert]

    # ---- alerting ---------------------------------------------------------------------------
    def _act(
        self, trainer: L.Trainer, pl_module: L.LightningModule, raised: list[dict], at_end=False, evaluated=False
    ) -> None:
        """Warn (and stop) for the alerts raised; log the alert count after each evaluation and each alert."""
        if trainer.is_global_zero and (raised or evaluated):
            progress = {"g_step": pl_module.g_steps, "kimg": round(pl_module.kimg, 3)}
            for logger in trainer.loggers:
                logger.log_metrics({"collapse/alerts": float(len(self.alerts)), **progress}, step=logger_step(trainer))
        if not raised:
            return
        stopping = self.stop and not at_end
        for alert in raised:
            text = f"possible mode collapse at generator step {alert['g_step']}: {alert['message']}."
            if stopping:
                text += " Stopping the run (metrics.collapse.stop=true); the last checkpoint is kept."
            if trainer.is_global_zero:
                log.warning("gankit: %s", text)
                _wandb_alert(text)
        if stopping:  # every rank computed the same evaluation values and the reduced AUC decision
            trainer.should_stop = True


def _wandb_alert(text: str) -> None:
    """A W&B alert (e-mail / Slack per the user's W&B settings) when a run is online; never raises."""
    wandb = sys.modules.get("wandb")
    run = getattr(wandb, "run", None) if wandb else None
    if run is None or getattr(run.settings, "mode", "offline") != "online":
        return
    try:
        run.alert(title="gankit: possible mode collapse", text=text, level="WARN")
    except Exception as error:  # an alert must never end training
        log.warning("W&B alert failed: %s", error)
