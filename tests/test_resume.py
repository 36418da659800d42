"""Resuming from last.ckpt continues the same run: counters, optimizers, EMA, fixed noise, log steps."""

from pathlib import Path

import lightning as L
import torch

from gankit.training import train
from tests.test_training import read_metrics


class RecordStartState(L.Callback):
    """Keeps copies of what the module holds when training (re)starts."""

    def on_train_start(self, trainer, pl_module):
        self.g_steps = pl_module.g_steps
        self.ema = {k: v.clone() for k, v in pl_module.generator_ema.state_dict().items()}
        self.fixed_z = next(cb for cb in trainer.callbacks if type(cb).__name__ == "SampleGrid").fixed_z.clone()


def test_resume_continues_the_run(cfg_factory, monkeypatch):
    common = ["model.ema_decay=0.9", "model.n_critic=2"]
    first = cfg_factory("g_steps=4", *common)
    train(first)
    ckpt_path = Path(first.paths.output_dir) / "checkpoints" / "last.ckpt"
    saved = torch.load(ckpt_path, weights_only=True)

    recorder = RecordStartState()
    original_init = L.Trainer.__init__

    def init_with_recorder(self, *args, callbacks=(), **kwargs):
        original_init(self, *args, callbacks=[*callbacks, recorder], **kwargs)

    monkeypatch.setattr(L.Trainer, "__init__", init_with_recorder)
    second = cfg_factory("g_steps=10", f"ckpt_path={ckpt_path}", "seed=123", *common)
    train(second)

    # the resumed run starts where the first stopped, with its EMA and its sample latents
    assert recorder.g_steps == 4
    for k, v in recorder.ema.items():
        torch.testing.assert_close(v, saved["state_dict"][f"generator_ema.{k}"])
    sample_state = next(v for k, v in saved["callbacks"].items() if "SampleGrid" in k)
    torch.testing.assert_close(recorder.fixed_z, sample_state["fixed_z"])

    # and ends as one uninterrupted run of 10 G steps would: Adam's step counts include the first part
    final = torch.load(Path(second.paths.output_dir) / "checkpoints" / "last.ckpt", weights_only=True)
    g_state, d_state = (opt["state"][0] for opt in final["optimizer_states"])
    assert (int(g_state["step"]), int(d_state["step"]), final["global_step"]) == (10, 20, 30)

    # the logged curve continues: logger steps pick up after the first run's last one
    first_steps = [int(r["step"]) for r in read_metrics(Path(first.paths.output_dir))]
    second_steps = [int(r["step"]) for r in read_metrics(Path(second.paths.output_dir))]
    assert min(second_steps) > max(first_steps)
    samples = sorted(p.name for p in (Path(second.paths.output_dir) / "samples").glob("*.png"))
    assert samples[0] != "g_step_0000000.png"  # no grid of an "untrained" generator after resuming
