"""The real train() through Hydra's compose API, on tiny sizes, for each data config."""

from __future__ import annotations

import csv
import os
from pathlib import Path

import lightning as L
import pytest
import torch
from hydra.utils import instantiate
from PIL import Image

from gankit.training import train
from tests.conftest import write_images


def read_metrics(run_dir: Path) -> list[dict]:
    with open(run_dir / "csv" / "metrics.csv") as f:
        return list(csv.DictReader(f))


def test_default_data_trains_and_leaves_samples_checkpoints_and_logs(cfg_factory):
    cfg = cfg_factory()
    train(cfg)
    run = Path(cfg.paths.output_dir)
    grids = sorted((run / "samples").glob("g_step_*.png"))
    assert [p.name for p in grids] == ["g_step_0000000.png", "g_step_0000002.png", "g_step_0000004.png"]
    with Image.open(grids[-1]) as grid:  # 16 samples of 16x16 in a 4x4 grid with 2-pixel padding
        assert grid.size == (4 * 18 + 2, 4 * 18 + 2)
    assert (run / "checkpoints" / "last.ckpt").is_file()
    rows = read_metrics(run)
    logged = {k for row in rows for k, v in row.items() if v}
    assert {
        "train/d_loss",
        "train/g_loss",
        "train/d_real",
        "train/d_fake",
        "train/d_grad_norm",
        "train/g_grad_norm",
    } <= logged


def test_returns_the_optimized_metric(cfg_factory):
    value = train(cfg_factory("optimized_metric=train/d_loss"))
    assert isinstance(value, float) and value > 0


@pytest.mark.parametrize("n_critic", [1, 5])
def test_run_length_counts_generator_steps(cfg_factory, n_critic):
    """g_steps=G with n_critic=n gives exactly G generator and n*G discriminator updates."""
    g_steps = 100 if n_critic == 5 else 10
    cfg = cfg_factory(
        f"g_steps={g_steps}",
        f"model.n_critic={n_critic}",
        "callbacks.samples.every_n_g_steps=1000",
        "data.batch_size=4",
        "metrics=none",
    )
    train(cfg)
    ckpt = torch.load(Path(cfg.paths.output_dir) / "checkpoints" / "last.ckpt", weights_only=True)
    g_state, d_state = (opt["state"][0] for opt in ckpt["optimizer_states"])  # order [G, D]
    assert int(g_state["step"]) == g_steps
    assert int(d_state["step"]) == n_critic * g_steps
    assert ckpt["global_step"] == (n_critic + 1) * g_steps  # Lightning's count: both optimizers


def test_epochs_bound_the_run_when_g_steps_is_unset(cfg_factory):
    """One epoch of the 5,000 digits at batch 8, limited to 3 batches: 3 D and 3 G steps."""
    cfg = cfg_factory("g_steps=null", "trainer.max_epochs=2", "+trainer.limit_train_batches=3")
    train(cfg)
    ckpt = torch.load(Path(cfg.paths.output_dir) / "checkpoints" / "last.ckpt", weights_only=True)
    assert ckpt["epoch"] == 1 and ckpt["global_step"] == 2 * 3 * 2


@pytest.mark.parametrize("clip", [None, 0.01])
def test_gradient_clipping_bounds_the_update(cfg_factory, clip):
    """With plain SGD (lr 1), one D step moves D's weights by exactly the (clipped) gradient."""
    overrides = [
        "g_steps=1",
        "model.d_optimizer._target_=torch.optim.SGD",
        "~model.d_optimizer.betas",
        "model.d_optimizer.lr=1.0",
        f"model.d_clip_norm={clip or 'null'}",
    ]
    cfg = cfg_factory(*overrides)
    L.seed_everything(cfg.seed)
    before = instantiate(cfg.model).discriminator.state_dict()  # train() seeds the same way, so same init
    train(cfg)
    after = torch.load(Path(cfg.paths.output_dir) / "checkpoints" / "last.ckpt", weights_only=True)["state_dict"]
    step = torch.cat(
        [
            (after[f"discriminator.{k}"] - v).flatten()
            for k, v in before.items()
            if v.is_floating_point() and "running" not in k
        ]
    )
    if clip is None:
        assert step.norm() > 0.05
    else:
        assert step.norm().item() == pytest.approx(clip, rel=1e-3)


def test_ema_generator_is_saved_and_used_for_samples(cfg_factory):
    cfg = cfg_factory("model.ema_decay=0.9")
    train(cfg)
    state = torch.load(Path(cfg.paths.output_dir) / "checkpoints" / "last.ckpt", weights_only=True)["state_dict"]
    ema = {k.removeprefix("generator_ema.module."): v for k, v in state.items() if k.startswith("generator_ema.")}
    live = {k.removeprefix("generator."): v for k, v in state.items() if k.startswith("generator.")}
    assert ema.keys() == live.keys()
    assert not torch.equal(ema["net.0.weight"], live["net.0.weight"])  # averaged, not copied
    # the last samples re-estimated the EMA's BN statistics for its own weights (standing statistics)
    assert not torch.allclose(ema["net.1.running_mean"], live["net.1.running_mean"])


def test_image_folder_recursive(cfg_factory, tmp_path):
    write_images(tmp_path / "imgs" / "a", 6, size=(40, 30), suffix=".png")
    write_images(tmp_path / "imgs" / "b" / "c", 6, size=(30, 40), suffix=".jpg", seed=1)
    cfg = cfg_factory(
        "data=image_folder",
        f"data.root={tmp_path / 'imgs'}",
        "data.resolution=16",
        "data.batch_size=4",
        "data.num_workers=0",
        "metrics=none",  # Inception FID on images has its own tests (test_features.py)
    )
    train(cfg)
    assert (Path(cfg.paths.output_dir) / "samples" / "g_step_0000004.png").is_file()


@pytest.mark.parametrize("layout", ["celeba/img_align_celeba", "img_align_celeba", "."])
def test_celeba_layouts(cfg_factory, tmp_path, layout):
    write_images(tmp_path / "data" / layout, 8)
    cfg = cfg_factory(
        "data=celeba",
        f"data.root={tmp_path / 'data'}",
        "data.resolution=16",
        "data.batch_size=4",
        "data.num_workers=0",
        "metrics=none",
    )
    train(cfg)
    assert (Path(cfg.paths.output_dir) / "checkpoints" / "last.ckpt").is_file()


def test_celeba_crop_then_resize(tmp_path):
    """A 178x218 face is center-cropped to 178x178 and resized: a band outside the crop never shows."""
    from gankit.data.images import CelebADataModule

    folder = tmp_path / "img_align_celeba"
    folder.mkdir()
    pixels = torch.zeros(218, 178, 3, dtype=torch.uint8)
    pixels[:20] = 255  # white top band, cut away by the 178x178 center crop
    Image.fromarray(pixels.numpy()).save(folder / "000001.png")
    Image.fromarray(pixels.numpy()).save(folder / "000002.jpg", quality=100)
    dm = CelebADataModule(str(tmp_path), resolution=32, flip=False, batch_size=1, cache_dir=str(tmp_path / "cache"))
    dm.setup("fit")
    image = dm.decode(dm.train_set[0])
    assert image.shape == (3, 32, 32)
    assert image.max() < -0.9  # all black, in [-1, 1]


@pytest.mark.parametrize("logger", ["tensorboard", "none"])
def test_other_loggers(cfg_factory, logger):
    cfg = cfg_factory(f"logger={logger}")
    train(cfg)
    run = Path(cfg.paths.output_dir)
    assert (run / "samples" / "g_step_0000004.png").is_file()
    assert bool(list(run.glob("tensorboard/events.out.tfevents.*"))) == (logger == "tensorboard")


def test_work_only_logging_needs_is_done_on_logging_steps(cfg_factory, monkeypatch):
    """Gradient norms, D's AUC and the logged scalars on every log_every_n_steps-th batch only: 6 batches, every 3rd."""
    import gankit.module
    import gankit.module_base

    calls, aucs = [], []
    original, original_auc = gankit.module_base.get_total_norm, gankit.module.pairwise_auc
    monkeypatch.setattr(gankit.module_base, "get_total_norm", lambda *a, **k: calls.append(1) or original(*a, **k))
    monkeypatch.setattr(gankit.module, "pairwise_auc", lambda *a: aucs.append(1) or original_auc(*a))
    cfg = cfg_factory("g_steps=6", "trainer.log_every_n_steps=3", "metrics=none")
    train(cfg)
    assert len(calls) == 4  # batches 3 and 6, G and D each
    assert len(aucs) == 2  # train/d_auc: batches 3 and 6
    rows = [r for r in read_metrics(Path(cfg.paths.output_dir)) if r.get("train/d_grad_norm")]
    assert [int(r["step"]) for r in rows] == [2, 5]


def test_training_scalars_reach_the_loggers_callbacks_and_progress_bar_as_self_log_would(cfg_factory):
    """On each logging step (every 3rd of 6 batches) the step's own values reach metrics.csv at Lightning's logger
    step, trainer.callback_metrics (tensors: checkpoint monitors, optimized_metric=train/...) and the progress bar
    (losses only) before the callbacks' on_train_batch_end; other steps leave them as they were."""
    seen = []

    class Observer(L.Callback):
        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
            seen.append(
                (
                    {k: v.clone() for k, v in outputs.items()},
                    dict(trainer.callback_metrics),
                    dict(trainer.progress_bar_metrics),
                    dict(trainer.logged_metrics),
                )
            )

    cfg = cfg_factory("g_steps=6", "trainer.log_every_n_steps=3", "metrics=none")
    _train_with(cfg, Observer())
    rows = read_metrics(Path(cfg.paths.output_dir))
    assert [int(r["step"]) for r in rows] == [2, 5] and all(r["epoch"] == "0" for r in rows)
    assert len(seen) == 6
    for batch, row in zip((2, 5), rows, strict=True):
        outputs, callback, bar, logged = seen[batch]
        real, fake = outputs["d_real"].flatten(), outputs["d_fake"].flatten()
        auc = (real[:, None] > fake[None, :]).double().mean().item()  # all (real, fake) pairs, not the sort
        expected = {
            "train/d_loss": outputs["d_loss"].item(),
            "train/g_loss": outputs["g_loss"].item(),
            "train/d_real": real.mean().item(),
            "train/d_fake": fake.mean().item(),
            "train/d_auc": auc,
            "train/d_lr": cfg.model.d_optimizer.lr,
            "train/g_lr": cfg.model.g_optimizer.lr,
        }
        for name, value in expected.items():
            assert float(row[name]) == pytest.approx(value, rel=1e-6, abs=1e-7), name
            assert callback[name].item() == pytest.approx(value, rel=1e-6, abs=1e-7), name
            assert logged[name].item() == pytest.approx(value, rel=1e-6, abs=1e-7), name
        assert float(row["train/d_grad_norm"]) > 0 and float(row["train/g_grad_norm"]) > 0
        assert bar == {"train/d_loss": expected["train/d_loss"], "train/g_loss": expected["train/g_loss"]}
    assert seen[3][1] == seen[2][1] and seen[4][2] == seen[2][2]  # a step that logs nothing changes nothing
    assert not seen[1][1]  # nothing before the first logging step


def test_the_device_is_read_on_logging_steps_only(cfg_factory, monkeypatch):
    """A read of a tensor's value (item, tolist, bool, float, int) is a device sync on a GPU: one per step stops
    the CPU from queueing the next step's kernels. Over 12 batches logged every 6th, values are read on batches 6
    and 12 only (Lightning's `self.log` read the progress-bar losses on every batch after the first logged one)."""
    import sys

    batch, reads = [None], []

    class Where(L.Callback):
        def on_train_batch_start(self, trainer, pl_module, data, batch_idx):
            batch[0] = batch_idx

    def counted(original):
        def read(tensor):
            if not sys._getframe(1).f_code.co_filename.endswith("optim/optimizer.py"):  # Adam's step: a CPU tensor
                reads.append(batch[0])
            return original(tensor)

        return read

    for name in ("item", "tolist", "__bool__", "__float__", "__int__"):
        monkeypatch.setattr(torch.Tensor, name, counted(getattr(torch.Tensor, name)))
    overrides = ("g_steps=12", "trainer.log_every_n_steps=6", "metrics=none")
    periodic = ("callbacks.guard.every_n_steps=100", "callbacks.samples.every_n_g_steps=100")  # they read, rarely
    _train_with(cfg_factory(*overrides, *periodic), Where())
    assert 5 in reads and 11 in reads
    assert set(reads) <= {None, 5, 11}  # None: before the first batch or after the last


@pytest.mark.parametrize(("every", "until", "due"), [(1, None, 6), (1, 4, 4), (2, 4, 2), (2, None, 3)])
def test_r1_is_applied_every_k_d_steps_until_the_given_generator_step(cfg_factory, monkeypatch, every, until, due):
    """model.r1_every=k: R1 on D steps 0, k, 2k, ...; model.r1_until=n: none from generator step n on."""
    import gankit.module

    calls = []
    original = gankit.module.r1_penalty
    monkeypatch.setattr(gankit.module, "r1_penalty", lambda *a, **k: calls.append(1) or original(*a, **k))
    r1 = ["model.r1_gamma=1", f"model.r1_every={every}", f"model.r1_until={'null' if until is None else until}"]
    train(cfg_factory("g_steps=6", "metrics=none", *r1))
    assert len(calls) == due


def test_nvml_check_is_dropped_only_where_it_cannot_change_the_answer(monkeypatch):
    """Lightning's PYTORCH_NVML_BASED_CUDA_CHECK=1 costs a failed dlopen per Adam step where NVML is missing;
    gankit drops it there, and only there, and CUDA availability reads the same with and without it."""
    from gankit.lightning_compat import skip_failing_nvml_check

    monkeypatch.setenv("PYTORCH_NVML_BASED_CUDA_CHECK", "1")
    with_check = torch.cuda.is_available()
    nvml_missing = torch.backends.cuda.is_built() and torch.cuda._device_count_nvml() < 0
    assert skip_failing_nvml_check() == nvml_missing
    assert ("PYTORCH_NVML_BASED_CUDA_CHECK" not in os.environ) == nvml_missing
    assert torch.cuda.is_available() == with_check


@pytest.mark.parametrize(("data", "every"), [("mnist", 200), ("ring", 1000)])
def test_sample_pictures_default_cadence_follows_the_data(cfg_factory, data, every):
    """callbacks.samples.every_n_g_steps=null: a grid every 200 steps for images, a scatter every 1,000 for 2D."""
    from gankit.callbacks.samples import SampleGrid

    cfg = cfg_factory(f"data={data}", "metrics=none", "callbacks.samples.every_n_g_steps=null")  # the default
    callback = instantiate(cfg.callbacks.samples)
    trainer = type("T", (), {"datamodule": instantiate(cfg.data)})()
    module = instantiate(cfg.model)
    SampleGrid.on_fit_start(callback, trainer, module)
    assert callback.every == every
    assert SampleGrid(str(cfg.paths.output_dir), every_n_g_steps=7).every == 7  # a number given is kept


def _train_with(cfg, *extra: L.Callback) -> dict:
    """Train with extra callbacks; the final checkpoint's state dict."""
    original_init = L.Trainer.__init__

    def init(self, *args, callbacks=(), **kwargs):
        original_init(self, *args, callbacks=[*callbacks, *extra], **kwargs)

    L.Trainer.__init__ = init
    try:
        train(cfg)
    finally:
        L.Trainer.__init__ = original_init
    return torch.load(Path(cfg.paths.output_dir) / "checkpoints" / "last.ckpt", weights_only=True)["state_dict"]


@pytest.mark.parametrize("precision", ["32-true", "bf16-mixed"])
def test_plain_backward_is_lightnings_without_the_hooks_nobody_listens_to(cfg_factory, precision):
    """Single process, no loss scaling (fp32, bf16), no listener: loss.backward() directly. A callback with
    on_after_backward switches Lightning's manual_backward back on (and is called for every D and G backward);
    optimizer steps are always Lightning's (a callback's on_before_optimizer_step is called at every one); the
    weights, step counts and logged gradient norms come out the same."""

    class Listener(L.Callback):
        calls = 0
        plain = None

        def on_train_batch_start(self, trainer, pl_module, *args):  # after the module's on_train_start
            Listener.plain = pl_module._plain_backward

        def on_after_backward(self, trainer, pl_module):
            Listener.calls += 1

    class StepListener(L.Callback):
        calls = 0
        plain = None

        def on_train_batch_start(self, trainer, pl_module, *args):
            StepListener.plain = pl_module._plain_backward

        def on_before_optimizer_step(self, trainer, pl_module, optimizer):
            StepListener.calls += 1

    class Observer(L.Callback):  # listens to nothing of the backward or the step
        plain = None
        steps = None

        def on_train_batch_start(self, trainer, pl_module, *args):
            Observer.plain = pl_module._plain_backward

        def on_train_end(self, trainer, pl_module):
            Observer.steps = trainer.global_step, pl_module.d_steps, pl_module.g_steps

    overrides = ("g_steps=3", "metrics=none", "model.n_critic=2", "trainer.log_every_n_steps=2")
    overrides += (f"trainer.precision={precision}",)
    cfgs = [cfg_factory(*overrides) for _ in range(3)]
    plain = _train_with(cfgs[0], Observer())
    hooked = _train_with(cfgs[1], Listener())
    stepped = _train_with(cfgs[2], StepListener())
    assert Observer.plain is True and Listener.plain is False and StepListener.plain is True
    assert Observer.steps == (9, 6, 3)  # Lightning's global step counts both optimizers' steps
    assert Listener.calls == 3 * 3 and StepListener.calls == 3 * 3  # 6 D backward passes / steps and 3 G ones
    for other in (hooked, stepped):
        assert plain.keys() == other.keys()
        for key in plain:
            torch.testing.assert_close(plain[key], other[key], rtol=0, atol=0, msg=key)
    norms = [[r["train/d_grad_norm"] for r in read_metrics(Path(c.paths.output_dir))] for c in cfgs]
    assert norms[0] == norms[1] == norms[2] and len([n for n in norms[0] if n]) == 3


def test_adam_is_fused_on_the_cpu_too_unless_the_config_says_otherwise(cfg_factory):
    """Adam runs as one fused kernel per parameter on CPU (bench/throughput.py: the 2D MLP step 1.08-1.17x
    faster); it makes the default per-tensor Adam's updates up to rounding, and `fused: false` is kept."""
    from gankit.checkpoints import read_checkpoint

    final = {}
    for fused in (True, False):
        overrides = [] if fused else ["+model.g_optimizer.fused=false", "+model.d_optimizer.fused=false"]
        cfg = cfg_factory("g_steps=3", "metrics=none", *overrides)
        train(cfg)
        final[fused] = read_checkpoint(Path(cfg.paths.output_dir) / "checkpoints" / "last.ckpt")
        groups = [group for state in final[fused]["optimizer_states"] for group in state["param_groups"]]
        assert [group["fused"] for group in groups] == [fused, fused]
    weights = final[True]["state_dict"]
    assert any(not torch.equal(weights[k], final[False]["state_dict"][k]) for k in weights)  # two kernels ran
    for key, value in weights.items():
        torch.testing.assert_close(value, final[False]["state_dict"][key], rtol=1e-4, atol=1e-5)


def test_an_optimizer_config_choosing_foreach_is_not_fused(cfg_factory):
    """torch refuses fused and foreach together: a config that asks for foreach gets it, unfused."""
    from gankit.checkpoints import read_checkpoint

    cfg = cfg_factory("g_steps=1", "metrics=none", "+model.d_optimizer.foreach=true")
    train(cfg)
    g, d = read_checkpoint(Path(cfg.paths.output_dir) / "checkpoints" / "last.ckpt")["optimizer_states"]
    assert (g["param_groups"][0]["fused"], g["param_groups"][0]["foreach"]) == (True, None)
    assert (d["param_groups"][0]["fused"], d["param_groups"][0]["foreach"]) == (None, True)


def test_only_the_stepping_network_takes_gradients_and_a_frozen_parameter_stays_frozen(cfg_factory):
    """Inside the D step only D's parameters require grad, inside the G step only G's; a generator parameter
    frozen before the fit, and a discriminator one frozen during it, are never switched back on."""
    seen = []

    class Freeze(L.Callback):
        def on_fit_start(self, trainer, pl_module):
            self.name, self.frozen = next(pl_module.generator.named_parameters())
            self.frozen.requires_grad_(False)
            self.before = self.frozen.detach().clone()
            self.late = next(pl_module.discriminator.parameters())

        def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
            if batch_idx == 2:
                self.late.requires_grad_(False)

        def on_before_optimizer_step(self, trainer, pl_module, optimizer):
            g = [p.requires_grad for p in pl_module.generator.parameters()]
            d = [p.requires_grad for p in pl_module.discriminator.parameters()]
            seen.append((optimizer is pl_module._optimizer_g, g, d))

    freeze = Freeze()
    state = _train_with(cfg_factory("g_steps=3", "metrics=none", "model.ema_decay=null"), freeze)
    assert [is_g for is_g, _, _ in seen] == [False, True] * 3  # D, G, D, G, D, G
    for step, (is_g, g, d) in enumerate(seen):
        assert g == ([False] + [True] * (len(g) - 1) if is_g else [False] * len(g))
        late_frozen = step >= 4  # from batch 2 (the third D step) on
        assert d == ([False] * len(d) if is_g else [not late_frozen] + [True] * (len(d) - 1))
    assert not freeze.frozen.requires_grad and not freeze.late.requires_grad
    torch.testing.assert_close(state[f"generator.{freeze.name}"], freeze.before)


def _train_counting_graphs(cfg) -> list[int]:
    """Train; after each batch, how many distinct graphs dynamo has made so far."""
    from torch._dynamo.utils import counters

    graphs = []
    probe = L.Callback()
    probe.on_train_batch_end = lambda *a, **k: graphs.append(counters["stats"]["unique_graphs"])
    original_init = L.Trainer.__init__

    def init(self, *args, callbacks=(), **kwargs):
        original_init(self, *args, callbacks=[*callbacks, probe], **kwargs)

    L.Trainer.__init__ = init
    try:
        train(cfg)
    finally:
        L.Trainer.__init__ = original_init
    return graphs


@pytest.mark.parametrize("n_critic", [1, 2])
def test_compiled_steps_match_eager_ones_without_recompiling_every_step(cfg_factory, n_critic):
    """model.compile (dynamo graphs; aot_eager keeps the test fast on CPU): same losses, graphs made once."""
    torch._dynamo.reset()
    losses = {}
    for name, options in (("eager", "null"), ("compiled", "{backend: aot_eager}")):
        cfg = cfg_factory(f"model.compile={options}", "g_steps=8", f"model.n_critic={n_critic}", "metrics=none",
                          "trainer.log_every_n_steps=1")  # fmt: skip
        graphs = _train_counting_graphs(cfg)
        rows = read_metrics(Path(cfg.paths.output_dir))
        losses[name] = [float(r[k]) for r in rows for k in ("train/d_loss", "train/g_loss") if r.get(k)]
        if name == "compiled":
            cycle = n_critic + 1
            assert graphs[-1] == graphs[2 * cycle - 1] > 0  # graphs made in the first cycles, then reused
            assert graphs[-1] <= 12  # a fixed set: G and D with and without gradients, eval-mode G, graph breaks
    assert len(losses["eager"]) == len(losses["compiled"]) >= 8
    for eager, compiled in zip(losses["eager"], losses["compiled"], strict=True):
        assert compiled == pytest.approx(eager, rel=1e-4, abs=1e-5)
