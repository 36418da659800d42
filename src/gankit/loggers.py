"""Loggers that need more than their constructor: W&B that falls back to offline mode and lays its
metrics out for GANs (quality against generator steps, best and last values in the run summary)."""

from __future__ import annotations

import logging
import netrc
import os
from urllib.parse import urlparse

from lightning.pytorch.loggers import CSVLogger, WandbLogger
from lightning.pytorch.loggers.csv_logs import ExperimentWriter
from lightning.pytorch.loggers.logger import rank_zero_experiment

from gankit import lightning_compat as compat
from gankit.metric_keys import CRITIC_KEYS, EVALUATIONS_TABLE, PICTURE_KEYS, VAL_KEYS, wandb_best

log = logging.getLogger(__name__)


def wandb_credentials_present() -> bool:
    """True when an API key is in the environment or in the netrc file (~/.netrc or $NETRC) for the W&B host."""
    if os.environ.get("WANDB_API_KEY"):
        return True
    import wandb

    host = urlparse(os.environ.get("WANDB_BASE_URL") or str(wandb.Settings().base_url)).hostname
    try:
        return netrc.netrc(os.environ.get("NETRC")).authenticators(host) is not None  # NETRC: as wandb reads it
    except (FileNotFoundError, netrc.NetrcParseError):
        return False


def wandb_logger(mode: str = "auto", init_timeout: float = 30.0, **kwargs) -> WandbLogger:
    """A WandbLogger that never blocks or crashes training for want of credentials or network.

    mode: `auto` (online when credentials are present, else offline; WANDB_MODE wins when set),
    `online`, `offline` or `disabled`. When an online start fails (no network, bad key) the run
    continues offline; `wandb sync <save_dir>/wandb/offline-run-*` uploads it later.
    """
    if mode not in ("auto", "online", "offline", "disabled"):
        raise ValueError(f"logger.wandb.mode must be auto, online, offline or disabled; got {mode!r}")
    if mode == "auto":
        mode = os.environ.get("WANDB_MODE") or ("online" if wandb_credentials_present() else "offline")
    if mode == "offline":
        log.info("W&B runs offline (no credentials found); upload later with `wandb sync`.")
    import wandb

    settings = wandb.Settings(init_timeout=init_timeout, console="off")
    logger = GANWandbLogger(mode=mode, settings=settings, **kwargs)
    if mode == "online":
        try:
            _ = logger.experiment  # start the run now (rank 0 only), where a failure can still be handled
        except Exception as error:  # wandb raises several types for network and auth failures
            log.warning("W&B could not start online (%s); this run logs offline instead.", error)
            logger = GANWandbLogger(mode="offline", settings=settings, **kwargs)
    return logger


class GANCSVLogger(CSVLogger):
    """CSVLogger whose metrics.csv survives a resume into the same run directory (conf/logger/csv.yaml)."""

    @property
    @rank_zero_experiment
    def experiment(self) -> ExperimentWriter:
        return compat.csv_writer(self, compat.KeepingCSVWriter)


def metric_layout() -> dict[str, dict]:
    """How W&B should plot and summarise each key gankit logs: define_metric's arguments by name.

    Quality, collapse and picture keys are plotted against `g_step` (Lightning's global step counts D
    and G updates together); each `val/` metric's summary keeps its best (min or max by direction)
    and its last value (the last only for C_T, best near 0, and val/critic_train, a diagnostic). `train/*`
    stays on Lightning's `trainer/global_step`.
    """
    layout: dict[str, dict] = {"g_step": {"summary": "max"}, "kimg": {"step_metric": "g_step", "summary": "max"}}
    for key in sorted({f"val/{k}" for keys in VAL_KEYS.values() for k in keys} | set(CRITIC_KEYS)):
        best = wandb_best(key)
        layout[key] = {"step_metric": "g_step", "summary": "last" if best == "last" else f"{best},last"}
    for key in (*PICTURE_KEYS, EVALUATIONS_TABLE, "samples/grid"):
        layout[key] = {"step_metric": "g_step", "summary": "none"}
    layout["collapse/alerts"] = {"step_metric": "g_step", "summary": "max"}
    return layout


class GANWandbLogger(WandbLogger):
    """Lightning's WandbLogger with gankit's metric layout declared when the run starts (rank 0)."""

    @property
    @rank_zero_experiment
    def experiment(self):
        run, fresh = compat.wandb_run(self)  # Lightning's, undecorated: we are on rank 0 here
        if fresh and getattr(run, "define_metric", None) is not None:
            for name, options in metric_layout().items():
                run.define_metric(name, **options)
        return run


def log_evaluation_row(logger: WandbLogger, values: dict[str, float], pictures: dict, step: int) -> None:
    """One row per evaluation in the W&B table `val/evaluations`: g_step, kimg, the metrics and the pictures
    (sample grid, mode histogram, 2D scatter), so a run's history of pictures is one browsable panel.

    The table is incremental (W&B uploads only the new row at each log); its columns are fixed by the first row.
    """
    import wandb

    table = getattr(logger, "_gankit_evaluations", None)
    if table is None:
        columns = [*values, *(key.split("/", 1)[1] for key in pictures)]
        table = logger._gankit_evaluations = wandb.Table(columns=columns, log_mode="INCREMENTAL")

    def cell(column: str):  # a value column ("val/fid", "g_step") or a picture column ("samples")
        if column in values:
            return values[column]
        picture = pictures.get(f"val/{column}")
        return None if picture is None else wandb.Image(picture.permute(1, 2, 0).numpy())

    table.add_data(*map(cell, table.columns))
    logger.log_metrics({EVALUATIONS_TABLE: table, "g_step": values.get("g_step")}, step=step)
