"""Multirun sweeps, W&B offline runs and DDP through the real command line."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch
import wandb

from gankit.loggers import wandb_logger
from gankit.training import train
from tests.conftest import run_cli


def test_two_job_multirun(tmp_path):
    result = run_cli("-m", "debug=fast", "model.loss=hinge,least_squares", f"hydra.sweep.dir={tmp_path}", "logger=csv")
    assert result.returncode == 0, result.stderr[-3000:]
    for job, loss in ((0, "hinge"), (1, "least_squares")):
        assert (tmp_path / str(job) / "checkpoints" / "last.ckpt").is_file()
        assert f"loss: {loss}" in (tmp_path / str(job) / ".hydra" / "config.yaml").read_text()
    assert "model.loss=hinge,least_squares" in (tmp_path / "multirun.yaml").read_text()


def test_wandb_offline_without_credentials(cfg_factory, monkeypatch):
    monkeypatch.delenv("WANDB_MODE", raising=False)
    cfg = cfg_factory("logger=wandb")
    train(cfg)
    runs = list((Path(cfg.paths.output_dir) / "wandb").glob("offline-run-*"))
    assert len(runs) == 1
    assert list(runs[0].glob("run-*.wandb"))  # the event log `wandb sync` uploads
    assert (runs[0] / "files" / "media" / "images").is_dir()  # sample grids went to W&B too


def test_wandb_falls_back_to_offline_when_the_server_is_unreachable(tmp_path, monkeypatch, caplog):
    monkeypatch.delenv("WANDB_MODE", raising=False)
    monkeypatch.setenv("WANDB_API_KEY", "x" * 40)
    monkeypatch.setenv("WANDB_BASE_URL", "http://127.0.0.1:9")  # nothing listens on the discard port
    wandb.teardown()  # forget settings an earlier test's run left in this process
    logger = wandb_logger(mode="auto", init_timeout=3, project="gankit", save_dir=str(tmp_path))
    try:
        assert "W&B could not start online" in caplog.text and "127.0.0.1:9" in caplog.text
        assert logger.experiment.settings.mode == "offline"
    finally:
        logger.experiment.finish()


@pytest.mark.skipif((os.cpu_count() or 1) < 2, reason="DDP with 2 processes needs 2 cores")
@pytest.mark.parametrize(
    "recipe",
    [
        [],
        ["model=wgan_gp", "model.r1_gamma=1.0", "g_steps=2"],
        ["model=stylegan2", "model.path_length.every=2", "model.r1_every=2", "g_steps=2"],
        ["model=dcgan_ada_lecam", "model.ada.interval=1", "model.ada.kimg=1", "model.lecam.start=0", "g_steps=2"],
    ],
    ids=["dcgan", "penalties", "stylegan2", "ada_lecam"],
)
def test_ddp_two_processes_keep_replicas_identical(tmp_path, recipe):
    """Both ranks train on different shards; gradients are averaged, so weights stay equal.

    With the gradient penalty and R1 (double backward through D) as well; StyleGAN2 with style mixing and
    the path-length step (its own optimizer step, its running mean averaged over the ranks); ADA (r_t summed
    over the ranks, so every rank moves p alike) with LeCam (its averages averaged over the ranks).
    """
    result = run_cli(
        "debug=fast",
        "trainer=ddp",
        "trainer.accelerator=cpu",
        "trainer.devices=2",
        "g_steps=3",
        f"hydra.run.dir={tmp_path}",
        "logger=csv",
        "+callbacks.digest._target_=tests.helpers.ReplicaDigest",
        f"+callbacks.digest.dirpath={tmp_path}",
        *recipe,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    rank0, rank1 = (torch.load(tmp_path / f"weights_rank{r}.pt") for r in (0, 1))
    assert rank0["seen"] != rank1["seen"]  # disjoint shards of the data
    for name in rank0["params"]:
        torch.testing.assert_close(rank0["params"][name], rank1["params"][name], msg=name)
    assert rank0["g_steps"] == rank1["g_steps"] == (2 if recipe else 3)
    if "path_length.mean" in rank0["buffers"]:
        assert float(rank0["buffers"]["path_length.mean"]) > 0
        assert torch.equal(rank0["buffers"]["path_length.mean"], rank1["buffers"]["path_length.mean"])
    if "augment_pipe.p" in rank0["buffers"]:
        for name in ("augment_pipe.p", "augment_pipe.rt", "lecam.ema_real", "lecam.ema_fake"):
            assert torch.equal(rank0["buffers"][name], rank1["buffers"][name]), name
        assert float(rank0["buffers"]["lecam.ema_real"]) != 0  # updated from step 0


def test_wandb_credentials_from_netrc(tmp_path, monkeypatch):
    from gankit.loggers import wandb_credentials_present

    assert not wandb_credentials_present()  # the autouse fixture hides the developer's credentials
    netrc = tmp_path / "netrc"
    netrc.write_text("machine 127.0.0.1 login user password " + "k" * 40 + "\n")
    netrc.chmod(0o600)
    monkeypatch.setenv("NETRC", str(netrc))
    monkeypatch.setenv("WANDB_BASE_URL", "http://127.0.0.1:9")
    assert wandb_credentials_present()
