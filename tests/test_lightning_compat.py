"""One test per private part of Lightning (and torch) that gankit/lightning_compat.py uses: each fails with a message
naming the internal when a new release moves it, so `make lock ARGS=--upgrade && make test` says what to revisit.

The behaviour built on them (exact resume, preemption, logging steps) is tested end to end elsewhere
(test_exact_resume.py, test_resume.py, test_training.py); these pin the shapes, fast.
"""

from __future__ import annotations

import csv
import inspect
import re
from pathlib import Path

import lightning as L
import pytest
import torch
from lightning.pytorch.loggers import CSVLogger, WandbLogger
from torch import nn

from gankit import lightning_compat as compat

SRC = Path(__file__).resolve().parents[1] / "src" / "gankit"


def _moved(internal: str) -> str:
    return (
        f"Lightning's private `{internal}` changed shape: revisit gankit/lightning_compat.py (its docstring says why)"
    )


class _Counting(L.LightningModule):
    """Two tiny optimizers stepped by hand; records what the compat functions read inside the loop."""

    def __init__(self) -> None:
        super().__init__()
        self.automatic_optimization = False
        self.a, self.b = nn.Linear(2, 1), nn.Linear(2, 1)
        self.seen = []

    def configure_optimizers(self):
        return [torch.optim.SGD(self.a.parameters(), lr=0.1), torch.optim.SGD(self.b.parameters(), lr=0.1)]

    def on_train_batch_start(self, batch, batch_idx: int) -> None:
        lightnings = self.trainer._logger_connector.should_update_logs  # test only: the rule gankit mirrors
        self.seen.append(("start", compat.logger_step(self.trainer), compat.is_logging_batch(self.trainer), lightnings))

    def training_step(self, batch, batch_idx: int) -> None:
        for opt, net in zip(self.optimizers(), (self.a, self.b), strict=True):
            opt.zero_grad()
            net(batch[0]).pow(2).mean().backward()
            opt.step()
        compat.log_training_scalars(self.trainer, {"train/x": float(batch_idx)}, prog_bar=["train/x"])

    def train_dataloader(self):
        return torch.utils.data.DataLoader(torch.utils.data.TensorDataset(torch.randn(12, 2)), batch_size=2)


def _fit(tmp_path, module, steps: int = 10, every: int = 2, **kwargs) -> L.Trainer:
    trainer = L.Trainer(
        max_steps=steps, logger=CSVLogger(tmp_path), log_every_n_steps=every, enable_progress_bar=False,
        enable_model_summary=False, default_root_dir=tmp_path, **{"enable_checkpointing": False, **kwargs},
    )  # fmt: skip
    trainer.fit(module)
    return trainer


def test_logger_step_is_the_batches_done_and_logging_batches_follow_lightnings_rule(tmp_path):
    """`fit_loop.epoch_loop._batches_that_stepped`: 0, 1, 2, ... at each batch start; the logging batches are
    Lightning's own (`_logger_connector.should_update_logs`, which gankit no longer calls), and the scalars land
    in the loggers at that step, with the epoch, and in the trainer's metric dicts."""
    module = _Counting()
    trainer = _fit(tmp_path, module, steps=10, every=2)  # 2 optimizer steps a batch: 5 batches
    starts = [rest for kind, *rest in module.seen if kind == "start"]
    assert [step for step, *_ in starts] == [0, 1, 2, 3, 4], _moved("fit_loop.epoch_loop._batches_that_stepped")
    assert [ours for _, ours, _ in starts] == [False, True, False, True, False]  # batches 2 and 4
    assert [ours for _, ours, _ in starts] == [theirs for *_, theirs in starts]
    rows = list(csv.DictReader((Path(trainer.logger.log_dir) / "metrics.csv").read_text().splitlines()))
    assert [(int(r["step"]), float(r["train/x"]), int(r["epoch"])) for r in rows] == [
        (i, float(i), 0) for i in range(5)
    ]  # log_training_scalars sends every call: the module decides when to call it
    assert float(trainer.logged_metrics["train/x"]) == 4.0 and float(trainer.callback_metrics["train/x"]) == 4.0
    assert trainer.progress_bar_metrics["train/x"] == 4.0


def test_fused_optimizers_say_they_unscale_in_their_kernel():
    """torch's `Optimizer._step_supports_amp_scaling`: True for fused Adam, False for the default loop."""
    p = [nn.Parameter(torch.zeros(2))]
    assert compat.unscales_in_kernel(torch.optim.Adam(p, fused=True)), "torch's `_step_supports_amp_scaling` moved"
    assert not compat.unscales_in_kernel(torch.optim.Adam(p))


def test_the_loop_state_keep_epoch_position_rewrites_is_where_it_expects(tmp_path):
    """The fit loop's checkpoint layout (`loops.fit_loop`: `epoch_progress`, `epoch_loop.batch_progress` with
    total / current counts and `is_last_batch`, `epoch_loop.state_dict._batches_that_stepped`) and
    `epoch_loop._num_ready_batches_reached()`, read at the end of an epoch's last batch."""
    seen = {}

    class Save(L.Callback):
        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
            seen.setdefault("ready", []).append(compat.all_batches_ready(trainer))
            seen["checkpoint"] = trainer._checkpoint_connector.dump_checkpoint()  # test only: Lightning's dict

    _fit(tmp_path, _Counting(), steps=12, callbacks=[Save()])  # 6 batches: one epoch
    assert seen["ready"] == [False] * 5 + [True], _moved("fit_loop.epoch_loop._num_ready_batches_reached()")
    saved = compat.saved_loop_state(seen["checkpoint"])
    assert saved is not None, _moved(f"checkpoint['loops']['fit_loop'] keys {compat.LOOP_STATE_KEYS}")
    batches = saved["epoch_loop.batch_progress"]
    assert {"total", "current", "is_last_batch"} <= batches.keys(), _moved("epoch_loop.batch_progress layout")
    assert {"ready", "started", "processed", "completed"} <= batches["current"].keys()
    assert {"started", "processed", "completed"} <= saved["epoch_progress"]["current"].keys()
    before = saved["epoch_loop.state_dict"]["_batches_that_stepped"]
    compat.count_logger_batch(saved)
    assert saved["epoch_loop.state_dict"]["_batches_that_stepped"] == before + 1 == 6, _moved(
        "epoch_loop.state_dict['_batches_that_stepped']"
    )


def test_a_noted_sigterm_can_be_forgotten(tmp_path):
    """`trainer._signal_connector.received_sigterm`, behind the read-only `trainer.received_sigterm`."""
    trainer = L.Trainer(logger=False, enable_checkpointing=False, default_root_dir=tmp_path)
    connector = getattr(trainer, "_signal_connector", None)
    assert connector is not None and hasattr(connector, "received_sigterm"), _moved("trainer._signal_connector")
    connector.received_sigterm = True
    assert trainer.received_sigterm
    compat.clear_received_sigterm(trainer)
    assert not trainer.received_sigterm, _moved("trainer._signal_connector.received_sigterm")


def test_model_checkpoint_protected_members_are_there(tmp_path):
    """ModelCheckpoint's `_every_n_train_steps`, `_last_global_step_saved`, `_monitor_candidates`,
    `_save_last_checkpoint`, `_save_topk_checkpoint`, as CheckpointCompat names them."""
    callback = compat.CheckpointCompat(dirpath=tmp_path, save_last=True, save_top_k=-1)
    for name in ("_every_n_train_steps", "_last_global_step_saved"):
        assert hasattr(callback, name), _moved(f"ModelCheckpoint.{name}")
    for name, params in (
        ("_monitor_candidates", ["trainer"]),
        ("_save_last_checkpoint", ["trainer", "monitor_candidates"]),
        ("_save_topk_checkpoint", ["trainer", "monitor_candidates"]),
    ):
        method = getattr(compat.ModelCheckpoint, name, None)
        assert method is not None, _moved(f"ModelCheckpoint.{name}")
        assert list(inspect.signature(method).parameters)[1:] == params, _moved(f"ModelCheckpoint.{name} signature")
    callback.set_every_n_train_steps(6)
    assert callback._every_n_train_steps == 6

    class Saving(compat.CheckpointCompat):
        def monitor_values(self, trainer):
            return {**super().monitor_values(trainer), "extra": torch.tensor(1.0)}

    saving = Saving(dirpath=tmp_path, save_last=True, save_top_k=-1, filename="{extra:.0f}-{step}", every_n_epochs=0)
    module = _Counting()

    class SaveOnce(L.Callback):
        def on_train_end(self, trainer, pl_module):
            saving.save_top_k_now(trainer)
            saving.save_last_now(trainer)

    _fit(tmp_path / "run", module, steps=4, callbacks=[saving, SaveOnce()], enable_checkpointing=True)
    names = sorted(p.name for p in tmp_path.glob("*.ckpt"))
    assert names == ["extra=1-step=4.ckpt", "last.ckpt"], names  # the subclass's value named the file: hook reached
    assert saving.last_saved_global_step == 4


def test_wandb_run_and_csv_writer_internals(tmp_path, monkeypatch):
    """WandbLogger's undecorated `experiment` getter and `_experiment`; CSVLogger's `_experiment` / `_fs` and
    ExperimentWriter's `_check_log_dir_exists` (metrics.csv kept across a resume)."""
    getter = getattr(WandbLogger.experiment.fget, "__wrapped__", None)
    assert callable(getter), _moved("WandbLogger.experiment's rank-zero decorator (__wrapped__)")
    monkeypatch.setenv("WANDB_MODE", "disabled")
    logger = WandbLogger(save_dir=str(tmp_path), mode="disabled")
    assert logger._experiment is None, _moved("WandbLogger._experiment")
    run, fresh = compat.wandb_run(logger)
    assert fresh and run is not None and compat.wandb_run(logger) == (run, False)

    assert hasattr(compat.ExperimentWriter, "_check_log_dir_exists"), _moved("ExperimentWriter._check_log_dir_exists")
    for attempt in range(2):  # a run, then a resume into the same folder
        csv_logger = CSVLogger(tmp_path, name="csv", version=0)
        writer = compat.csv_writer(csv_logger, compat.KeepingCSVWriter)
        assert isinstance(writer, compat.KeepingCSVWriter), _moved("CSVLogger._experiment / _fs")
        csv_logger.log_metrics({"a": float(attempt)}, step=attempt)
        csv_logger.save()
    rows = list(csv.DictReader((Path(csv_logger.log_dir) / "metrics.csv").read_text().splitlines()))
    assert [float(r["a"]) for r in rows] == [0.0, 1.0]


def test_scheduler_closed_form_and_progress_keys():
    """torch's `LRScheduler._get_closed_form_lr`, `_last_lr` and the progress keys of its state dict."""
    opt = torch.optim.SGD([nn.Parameter(torch.zeros(1))], lr=1.0)
    scheduler = torch.optim.lr_scheduler.LinearLR(opt, start_factor=1.0, end_factor=0.0, total_iters=10)
    for _ in range(5):
        opt.step()
        scheduler.step()
    assert set(compat.SCHEDULER_PROGRESS) >= set(scheduler.state_dict()) - set(compat.scheduler_settings(scheduler))
    assert compat.scheduler_settings(scheduler)["total_iters"] == 10, "torch's LRScheduler state-dict keys moved"
    scheduler.total_iters = 20  # a resumed run made twice as long: at step 5 of 20, lr 0.75
    assert compat.set_schedule_position(scheduler), "torch's `LRScheduler._get_closed_form_lr` moved"
    assert opt.param_groups[0]["lr"] == pytest.approx(0.75) and scheduler.get_last_lr() == pytest.approx([0.75])


def test_torchmetrics_inception_has_its_two_headed_forward():
    """torchmetrics' `NoTrainInceptionV3._torch_fidelity_forward`: pool3 features and logits from one pass."""
    from torchmetrics.image.fid import NoTrainInceptionV3

    method = getattr(NoTrainInceptionV3, "_torch_fidelity_forward", None)
    assert callable(method), "torchmetrics' `NoTrainInceptionV3._torch_fidelity_forward` moved"
    assert list(inspect.signature(method).parameters)[1:] == ["x"], "its signature changed"


def test_nvml_probe_and_recompile_limit_exist():
    """torch's `torch.cuda._device_count_nvml` (the NVML check) and `torch._dynamo.config.recompile_limit`."""
    if torch.backends.cuda.is_built():
        assert callable(getattr(torch.cuda, "_device_count_nvml", None)), "torch's `cuda._device_count_nvml` moved"
    assert isinstance(torch._dynamo.config.recompile_limit, int), "torch's `_dynamo.config.recompile_limit` moved"


def test_no_private_lightning_part_is_used_outside_the_compat_module():
    """Every `trainer._x`, `loop._x`, `connector`, `LightningOptimizer._x`, ModelCheckpoint `self._x` reach goes
    through lightning_compat.py: a grep of the package for the private names it wraps."""
    private = re.compile(
        r"(?<!\w)(?:_batches_that_stepped|_logger_connector|_signal_connector|_num_ready_batches_reached|_on_before_step"
        r"|_on_after_step|_save_last_checkpoint|_save_topk_checkpoint|_monitor_candidates|_last_global_step_saved"
        r"|_every_n_train_steps|_check_log_dir_exists|_step_supports_amp_scaling|_get_closed_form_lr"
        r"|_device_count_nvml|__wrapped__|_experiment\b|_fs\b|_torch_fidelity_forward|_num_ready|batch_progress)"
    )
    found = [
        f"{path.relative_to(SRC)}:{n}: {line.strip()}"
        for path in SRC.rglob("*.py")
        if path.name != "lightning_compat.py"
        for n, line in enumerate(path.read_text().splitlines(), 1)
        if private.search(line)
    ]
    assert not found, "private Lightning / torch parts outside lightning_compat.py:\n" + "\n".join(found)
