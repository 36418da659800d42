"""Loggers that need more than their constructor: W&B that falls back to offline mode."""

from __future__ import annotations

import logging
import netrc
import os
from urllib.parse import urlparse

from lightning.pytorch.loggers import WandbLogger

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
    logger = WandbLogger(mode=mode, settings=settings, **kwargs)
    if mode == "online":
        try:
            _ = logger.experiment  # start the run now (rank 0 only), where a failure can still be handled
        except Exception as error:  # wandb raises several types for network and auth failures
            log.warning("W&B could not start online (%s); this run logs offline instead.", error)
            logger = WandbLogger(mode="offline", settings=settings, **kwargs)
    return logger
