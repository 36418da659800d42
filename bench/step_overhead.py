"""What gankit adds to a GAN step: GANModule under Lightning vs the same step written as a raw PyTorch loop.

    python bench/step_overhead.py                    # CPU: DCGAN / MNIST 32, the 2D MLP GAN, DCGAN + R1
    python bench/step_overhead.py --device cuda      # the same on a GPU (DCGAN-64 added)
    python bench/step_overhead.py --rounds 7 --steps 150

Same networks, optimizers, loss and data (built from the project's configs), in one process. Each
round times the raw loop, then the same raw step through Lightning's public API for manual
optimisation (manual_backward, LightningOptimizer steps: a plain Lightning module's "floor"), then
gankit under a bare Trainer (no logger, callbacks or progress bar), then gankit with the default
callbacks except evaluation (checkpoints, sample grids, the NaN guard, preemption, a progress bar
refreshed every 10 steps, CSV logging every 20 steps); rounds are
interleaved and the median of the per-round ratios is printed (one machine's noise cancels out).
The fixed tax per generator step is (gankit - raw) in milliseconds.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import lightning as L
import torch
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.core.hydra_config import HydraConfig
from hydra.utils import instantiate
from omegaconf import open_dict

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from gankit.training import instantiate_group  # noqa: E402

CASES = {  # name: overrides of the default job
    "dcgan_mnist32": ["metrics=none"],
    "mlp_ring": ["model=gan_mlp", "data=ring", "data.batch_size=100", "metrics=none"],
    "dcgan_r1": ["model.r1_gamma=1.0", "metrics=none"],
    "dcgan64_gpu": ["data.resolution=64", "data.batch_size=256", "metrics=none"],
}


def compose_cfg(overrides: list[str], out: Path):
    GlobalHydra.instance().clear()
    with initialize_config_dir(str(ROOT / "conf"), version_base="1.3"):
        cfg = compose("train", overrides=[*overrides, "logger=csv"], return_hydra_config=True)
    with open_dict(cfg):
        cfg.hydra.runtime.output_dir = str(out)
        cfg.hydra.job.num = 0
    HydraConfig().set_config(cfg)
    with open_dict(cfg):
        cfg.paths.output_dir = str(out)
        del cfg.hydra
    return cfg


def batches(cfg, device: torch.device, n: int) -> tuple[list, L.LightningDataModule]:
    """n real batches, on the device and decoded, as the module's training_step receives them."""
    dm = instantiate(cfg.data)
    dm.setup("fit")
    loader = dm.train_dataloader()
    out = []
    while len(out) < n:
        for batch in loader:
            batch = [t.to(device) for t in batch] if isinstance(batch, (list, tuple)) else batch.to(device)
            out.append(dm.on_after_batch_transfer(batch, 0))
            if len(out) == n:
                break
    return out, dm


def raw_step(module, opt_g, opt_d, batch, backward=lambda loss: loss.backward()) -> None:
    """One D step and one G step as GANModule takes them (non-saturating loss, R1 and the EMA when configured), by
    hand."""
    g, d, loss, r1_gamma, device = module.generator, module.discriminator, module.loss, module.r1_gamma, module.device
    real = batch[0] if isinstance(batch, (list, tuple)) else batch
    n = real.shape[0]
    z = torch.randn(n, module.latent_dim, device=device)
    g.requires_grad_(False)
    fake = g(z)
    if r1_gamma:
        real = real.detach().requires_grad_(True)
    d_real = d(real)
    d_loss = loss.d(d_real, d(fake))
    if r1_gamma:
        (grad,) = torch.autograd.grad(d_real.sum(), real, create_graph=True)
        d_loss = d_loss + r1_gamma / 2 * grad.pow(2).flatten(1).sum(1).mean()
    opt_d.zero_grad(set_to_none=True)
    backward(d_loss)
    opt_d.step()
    g.requires_grad_(True)
    d.requires_grad_(False)
    g_loss = loss.g(d(g(torch.randn(n, module.latent_dim, device=device))))
    opt_g.zero_grad(set_to_none=True)
    backward(g_loss)
    opt_g.step()
    d.requires_grad_(True)
    if module.generator_ema is not None:  # the recipe's EMA (model=dcgan_ema, the default), as a raw loop does it
        ema, decay = module.generator_ema.module, module.generator_ema.decay
        torch._foreach_lerp_(list(ema.parameters()), [p.detach() for p in g.parameters()], 1 - decay)
        if buffers := list(g.buffers()):
            torch._foreach_copy_(list(ema.buffers()), buffers)


def optimizers(module) -> tuple:
    """G's and D's optimizers as GANModule makes them (fused Adam on CUDA)."""
    (make_g, _), (make_d, _) = module._factories["g"], module._factories["d"]
    g, d = module.generator.parameters(), module.discriminator.parameters()
    return make_g(g, **module._fused(make_g)), make_d(d, **module._fused(make_d))


def raw_loop(cfg, data: list, device: torch.device) -> float:
    """The raw step in a plain Python loop."""
    torch.manual_seed(0)
    module = instantiate(cfg.model).to(device)
    opt_g, opt_d = optimizers(module)
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)

    def step(batch):
        raw_step(module, opt_g, opt_d, batch)

    for batch in data[:5]:
        step(batch)
    sync()
    start = time.perf_counter()
    for batch in data[5:]:
        step(batch)
    sync()
    return (time.perf_counter() - start) / (len(data) - 5)


class Batches:
    """The prepared batches as one loader (a plain list would be read as a list of loaders)."""

    def __init__(self, data: list) -> None:
        self.data = data

    def __iter__(self):
        return iter(self.data)

    def __len__(self) -> int:
        return len(self.data)


class ListData(L.LightningDataModule):
    """The real data module's description (for the callbacks) around batches prepared beforehand."""

    def __init__(self, data: list, real: L.LightningDataModule) -> None:
        super().__init__()
        self.data, self.real = data, real

    def __getattr__(self, name: str):
        return getattr(self.__dict__["real"], name)

    def train_dataloader(self):
        return Batches(self.data)  # already on the device and decoded


class Timer(L.Callback):
    def __init__(self, device: torch.device) -> None:
        self.device, self.n, self.start = device, 0, None

    def on_train_batch_end(self, trainer, pl_module, *args) -> None:
        self.n += 1
        if self.n == 5:
            if self.device.type == "cuda":
                torch.cuda.synchronize()
            self.start = time.perf_counter()

    def on_train_end(self, trainer, pl_module) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize()
        self.seconds = (time.perf_counter() - self.start) / (self.n - 5)


class RawStepModule(L.LightningModule):
    """The raw step through Lightning's public API for manual optimisation: manual_backward (with its hook
    dispatches) and the LightningOptimizer steps (which count Lightning's global step). Its time over the raw
    loop is what a plain Lightning GAN module pays; gankit skips the backward hooks where nobody listens, so
    it can come out below this "floor"."""

    def __init__(self, module) -> None:
        super().__init__()
        self.automatic_optimization = False
        self.inner = module
        self.n_critic = 1

    def configure_optimizers(self):
        return list(optimizers(self.inner))

    def training_step(self, batch, batch_idx: int) -> None:
        opt_g, opt_d = self.optimizers()
        raw_step(self.inner, opt_g, opt_d, batch, self.manual_backward)


def gankit_loop(
    cfg, data: list, dm, device: torch.device, callbacks: bool, out: Path, precision="32-true", floor=False
) -> float:
    torch.manual_seed(0)
    module = RawStepModule(instantiate(cfg.model)) if floor else instantiate(cfg.model)
    timer = Timer(device)
    extra = instantiate_group(cfg.callbacks) if callbacks else []
    trainer = L.Trainer(
        accelerator=device.type,
        devices=1,
        precision=precision,
        max_steps=len(data) * (module.n_critic + 1),
        max_epochs=1,
        logger=L.pytorch.loggers.CSVLogger(str(out)) if callbacks else False,
        log_every_n_steps=20,
        callbacks=[timer, *extra],
        enable_progress_bar=callbacks,
        enable_checkpointing=callbacks,
        enable_model_summary=False,
        default_root_dir=str(out),
    )
    trainer.fit(module, datamodule=ListData(data, dm))
    return timer.seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--steps", type=int, default=100, help="generator steps timed per round (after 5 warm-up)")
    parser.add_argument("--cases", nargs="+", default=None)
    args = parser.parse_args()
    device = torch.device(args.device)
    cases = args.cases or [c for c in CASES if device.type == "cuda" or not c.endswith("_gpu")]
    torch.set_num_threads(torch.get_num_threads())
    print(f"device {device}, {args.rounds} rounds of {args.steps} generator steps (median of per-round ratios)\n")
    print(
        "| case | raw ms / G step | Lightning floor | ratio | tax ms | gankit bare | ratio | tax ms "
        "| gankit + callbacks | ratio | tax ms |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for case in cases:
        with tempfile.TemporaryDirectory() as tmp:
            cfg = compose_cfg(CASES[case], Path(tmp))
            data, dm = batches(cfg, device, args.steps + 5)
            rows = []
            for _ in range(args.rounds):
                raw = raw_loop(cfg, data, device)
                floor = gankit_loop(cfg, data, dm, device, False, Path(tmp), floor=True)
                bare = gankit_loop(cfg, data, dm, device, False, Path(tmp))
                full = gankit_loop(cfg, data, dm, device, True, Path(tmp))
                rows.append((raw, floor, bare, full))
        raw = statistics.median(r[0] for r in rows)
        cells = [f"| {case} | {raw * 1e3:.2f} "]
        for i in (1, 2, 3):
            ms, ratio = statistics.median(r[i] for r in rows), statistics.median(r[0] / r[i] for r in rows)
            cells.append(f"| {ms * 1e3:.2f} | {ratio:.3f}x | {(ms - raw) * 1e3:+.2f} ")
        print("".join(cells) + "|", flush=True)


if __name__ == "__main__":
    main()
