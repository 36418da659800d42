"""Bad input ends with one clear message and a non-zero exit, before any training."""

from pathlib import Path

import pytest
from hydra.errors import ConfigCompositionException
from lightning.pytorch.strategies import SingleDeviceStrategy

from gankit.training import train
from tests.conftest import make_cfg, run_cli, write_images


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["model.loss=hnge"], "unknown loss 'hnge': choose model.loss from minimax, non_saturating, hinge"),
        (["data.resolution=24"], "got resolution=24. Set data.resolution"),
        (
            ["data.batch_size=6000"],
            r"data.batch_size=6000 is larger than the data set: 5000 images. Lower data.batch_size to at most 5000",
        ),
        (["data=image_folder", "data.root=/no/such/folder"], "data.root=/no/such/folder is not a folder"),
        (
            ["data=celeba", "data.root=/no/such/folder"],
            "no CelebA images found under data.root=/no/such/folder: looked for",
        ),
        (["trainer.max_steps=100"], "set g_steps=N"),
        (["model.n_critic=0"], "n_critic .* must be an integer >= 1"),
        (["model.r1_gamma=1", "model.r1_until=0"], r"model.r1_until \(the generator step R1 stops at\) must be"),
        (["model.r1_gamma=1", "model.r1_until=abc"], "model.r1_until='abc' must be a whole number or null"),
        (["model.r1_gamma=1", "model.r1_until=true"], "model.r1_until=True must be a whole number or null"),
        (["model.r1_every=inf"], "model.r1_every=inf must be a whole number"),
        (["model.generator.channels=3"], r"model.generator.channels=3 but the data has channels=1"),
        (["ckpt_path=/no/such.ckpt"], "ckpt_path=/no/such.ckpt is not a file"),
        (["data=image_folder"], "Missing mandatory value: data.root"),
        *[
            ([f"trainer.precision={p}"], f"trainer.precision={p} is not supported: .* choose trainer.precision from")
            for p in ("64-true", "bf16-true", "16-true", "half")
        ],
    ],
)
def test_bad_values_fail_at_start_with_a_message(tmp_path, overrides, message):
    cfg = make_cfg(tmp_path / "run", *overrides)
    with pytest.raises(SystemExit, match=message):
        train(cfg)
    assert not (tmp_path / "run" / "checkpoints").exists()
    assert "Traceback" in (tmp_path / "run" / "error.log").read_text()  # details kept for bug reports


def test_folder_without_images(tmp_path):
    (tmp_path / "empty" / "sub").mkdir(parents=True)
    (tmp_path / "empty" / "notes.txt").write_text("not an image")
    with pytest.raises(SystemExit, match=r"no images \(.jpg, .jpeg, .png, .webp, .bmp\) found under data.root="):
        train(make_cfg(tmp_path / "run", "data=image_folder", f"data.root={tmp_path / 'empty'}"))


def test_batch_larger_than_an_image_folder(tmp_path):
    write_images(tmp_path / "imgs", 3, size=(20, 20))
    with pytest.raises(SystemExit, match="data.batch_size=8 is larger than the data set: 3 images"):
        train(make_cfg(tmp_path / "run", "data=image_folder", f"data.root={tmp_path / 'imgs'}"))


def test_unknown_option_is_a_hydra_error_listing_the_options(tmp_path):
    with pytest.raises(ConfigCompositionException, match="(?s)model/dcgn.*Available options.*dcgan"):
        make_cfg(tmp_path, "model=dcgn")


def test_cli_exit_status_and_earlier_runs_untouched(tmp_path):
    earlier = tmp_path / "logs" / "train" / "runs" / "earlier"
    (earlier / "checkpoints").mkdir(parents=True)
    (earlier / "checkpoints" / "last.ckpt").write_bytes(b"precious")
    result = run_cli("model.loss=hnge", f"paths.log_dir={tmp_path / 'logs'}", "logger=none")
    assert result.returncode == 1
    assert result.stderr.strip().splitlines()[-1].startswith("gankit: error: model: unknown loss 'hnge'")
    assert "Traceback" not in result.stderr
    assert (earlier / "checkpoints" / "last.ckpt").read_bytes() == b"precious"
    runs = sorted(p.name for p in (tmp_path / "logs" / "train" / "runs").iterdir())
    assert len(runs) == 2  # the failed run got a directory of its own


def test_cli_typo_in_a_key(tmp_path):
    result = run_cli("trainer.max_epoch=3", f"paths.log_dir={tmp_path}")
    assert result.returncode == 1
    assert "Key 'max_epoch' is not in struct" in result.stderr


def test_help_lists_the_config_groups():
    result = run_cli("--help")
    assert result.returncode == 0
    for group in (
        "model: cgan, cgan_dcgan, cgan_mlp, dcgan, dcgan_ada, dcgan_ada_lecam, dcgan_ema, dcgan_minimax, dcgan_r1,"
        " gan_mlp, gan_mlp_grid, gan_mlp_r1, infogan, lsgan, sngan, stylegan2, stylegan2_ada, stylegan2_cifar,"
        " stylegan2_paper256, wgan_gp",
        "data: celeba, cifar10, grid, image_folder, mnist, mnist_full, ring, stacked_mnist",
        "metrics: base, digits, digits_heldout, inception, mixture, none, stacked_mnist",
        "logger: csv, none, tensorboard, wandb",
        "trainer: cpu, ddp, default, gpu",
    ):
        assert group in result.stdout
    assert Path(__file__).exists()


def test_diverging_run_stops_with_a_message_and_no_checkpoint(tmp_path):
    """An absurd learning rate makes the losses non-finite within a few steps; the guard stops the run."""
    overrides = [
        "model.d_optimizer._target_=torch.optim.SGD",
        "~model.d_optimizer.betas",
        "model.d_optimizer.lr=1e30",
        "g_steps=20",
    ]
    with pytest.raises(SystemExit, match=r"train/[dg]_loss.* became non-finite by generator step \d+"):
        train(make_cfg(tmp_path / "run", *overrides))
    assert not list((tmp_path / "run").glob("checkpoints/*.ckpt"))


def test_guard_aborts_a_checkpoint_save_of_non_finite_weights():
    import torch

    from gankit.callbacks import NonFiniteLossGuard

    class Module:
        g_steps = 7

    class Trainer:
        current_epoch = 2
        strategy = SingleDeviceStrategy("cpu")  # one process: its decision is the decision

    guard = NonFiniteLossGuard(every_n_steps=1000)
    guard.on_train_batch_end(Trainer(), Module(), {"d_loss": torch.tensor(0.5), "g_loss": torch.tensor(1.0)}, None, 0)
    guard.on_save_checkpoint(Trainer(), Module(), {})  # finite: the save goes ahead
    guard.on_train_batch_end(Trainer(), Module(), {"d_loss": torch.tensor(float("nan"))}, None, 1)
    with pytest.raises(FloatingPointError, match="train/d_loss became non-finite by generator step 7 .epoch 2."):
        guard.on_save_checkpoint(Trainer(), Module(), {})


def test_guard_lets_fp16_overflow_steps_pass_until_the_loss_scale_collapses():
    """Under a GradScaler a non-finite loss is a skipped step; one on every step drives the scale down."""
    import torch

    from gankit.callbacks import NonFiniteLossGuard

    class Module(torch.nn.Linear):
        g_steps = 3

    class Trainer:
        current_epoch = 0
        strategy = SingleDeviceStrategy("cpu")

        class precision_plugin:  # noqa: N801 (Lightning's attribute name)
            scaler = torch.amp.GradScaler("cpu", init_scale=2.0**16)

    trainer, module = Trainer(), Module(2, 1)
    scaler = trainer.precision_plugin.scaler
    scaler.scale(torch.ones(()))  # as the first backward does: the scale tensor exists from here on
    guard = NonFiniteLossGuard(every_n_steps=1, min_loss_scale=2.0**-8)
    overflow = {"d_loss": torch.tensor(float("inf"))}
    guard.on_train_batch_end(trainer, module, overflow, None, 0)  # scale 2^16: a skipped step, no error
    guard.on_save_checkpoint(trainer, module, {})  # weights finite: the save goes ahead
    with torch.no_grad():
        module.weight[0, 0] = float("nan")
    with pytest.raises(FloatingPointError, match="train/d_loss became non-finite and so did the weights"):
        guard.on_save_checkpoint(trainer, module, {})
    scaler.update(2.0**-9)  # what 25 overflowing steps in a row leave of 2^16
    with pytest.raises(FloatingPointError, match="fp16 loss scale fell to 0.00195 .every step overflows."):
        guard.on_train_batch_end(trainer, module, overflow, None, 1)
