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
interleaved (every other one in reverse order) and the median of the per-round ratios is printed
(one machine's noise cancels out).
The fixed tax per generator step is (gankit - raw) in milliseconds. A round times the steps after
5 warm-up ones up to the end of its one epoch: the epoch's checkpoints are timed apart (a round's
epoch is far shorter than a real one), and pictures (every 1,000 generator steps for 2D data, 200
for images) fall in rounds that long only.
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
        ema, decay = module.generator_ema.module, module.generator_ema.beta(10**6, n, 10**9)  # past any warm-up
        torch._foreach_lerp_(list(ema.parameters()), [p.detach() for p in g.parameters()], 1 - decay)
        if buffers := list(g.buffers()):
            torch._foreach_copy_(list(ema.buffers()), buffers)


def optimizers(module) -> tuple:
    """G's and D's optimizers as GANModule makes them (fused Adam on CUDA)."""
    (make_g, _), (make_d, _) = module._factories["g"], module._factories["d"]
    g, d = module.parameters_of("g"), module.parameters_of("d")
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
        self.batches: list[tuple[bool, float]] = []  # (a logging step, seconds from batch start to end)

    def on_train_batch_start(self, trainer, pl_module, *args) -> None:
        self.batch_start = time.perf_counter()

    def on_train_batch_end(self, trainer, pl_module, *args) -> None:
        self.batches.append((getattr(pl_module, "_logging", False), time.perf_counter() - self.batch_start))
        self.n += 1
        if self.n == 5:
            if self.device.type == "cuda":
                torch.cuda.synchronize()
            self.start = time.perf_counter()

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        """Before the epoch's checkpoint (Lightning calls checkpoint callbacks last): a round is one epoch, far
        shorter than a real one, so per-epoch work would weigh several times its real share."""
        if self.device.type == "cuda":
            torch.cuda.synchronize()
        self.epoch_end = time.perf_counter()
        self.seconds = (self.epoch_end - self.start) / (self.n - 5)

    def on_train_end(self, trainer, pl_module) -> None:
        self.after = time.perf_counter() - self.epoch_end  # the epoch's checkpoints (callbacks after this one: later)

    def logging_extra(self) -> list[float]:
        """How much longer each logging batch took than the mean of the two batches either side of it: its own
        cost, with the machine's drift cancelled (CPU: on a GPU the batch times are those of the launches)."""
        out = []
        for i in range(7, len(self.batches) - 2):
            near = [self.batches[j] for j in (i - 2, i - 1, i + 1, i + 2)]
            if self.batches[i][0] and not any(logging for logging, _ in near):
                out.append(self.batches[i][1] - statistics.mean(seconds for _, seconds in near))
        return out


class RawStepModule(L.LightningModule):
    """The raw step through Lightning's public API for manual optimisation: manual_backward (with its hook
    dispatches) and the LightningOptimizer steps (which count Lightning's global step). Its time over the raw
    loop is what a plain Lightning GAN module pays; gankit skips the backward and optimizer-step hook dispatches
    where nobody listens, so it can come out below this "floor"."""

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
) -> Timer:
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
    return timer


def variant(j: int, cfg, data: list, dm, device: torch.device, out: Path) -> float | Timer:
    """The raw loop's seconds per G step (0); the Timer of the Lightning floor (1), gankit bare (2) or gankit with
    callbacks (3)."""
    if j == 0:
        return raw_loop(cfg, data, device)
    return gankit_loop(cfg, data, dm, device, callbacks=j == 3, out=out, floor=j == 1)


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
    ends, logging = [], []
    for case in cases:
        with tempfile.TemporaryDirectory() as tmp:
            cfg = compose_cfg(CASES[case], Path(tmp))
            data, dm = batches(cfg, device, args.steps + 5)
            rows, epoch_ends, logging_extra = [], [], []
            for i in range(args.rounds):  # odd rounds in reverse order: a machine slowing down or speeding up
                order = range(4) if i % 2 == 0 else range(3, -1, -1)  # within a round favours neither end
                result = {j: variant(j, cfg, data, dm, device, Path(tmp)) for j in order}
                rows.append((result[0], *(result[j].seconds for j in (1, 2, 3))))
                epoch_ends.append(result[3].after)
                logging_extra += result[3].logging_extra()
        raw = statistics.median(r[0] for r in rows)
        cells = [f"| {case} | {raw * 1e3:.2f} "]
        for i in (1, 2, 3):
            ms, ratio = statistics.median(r[i] for r in rows), statistics.median(r[0] / r[i] for r in rows)
            cells.append(f"| {ms * 1e3:.2f} | {ratio:.3f}x | {(ms - raw) * 1e3:+.2f} ")
        print("".join(cells) + "|", flush=True)
        ends.append(f"{case} {statistics.median(epoch_ends) * 1e3:.0f} ms")
        if device.type == "cpu" and logging_extra:
            extra = statistics.median(logging_extra)
            logging.append(f"{case} {extra * 1e3:.2f} ms ({extra / 20 * 1e3:.3f} ms a step at every 20th)")
    print(
        "\nNot in the rounds (a round is one short epoch): the end of an epoch with callbacks (its checkpoints) took "
        f"{', '.join(ends)}; a real epoch spreads it over its batches."
    )
    if logging:
        print(f"A logging step (gankit + callbacks) took longer than the steps around it by: {', '.join(logging)}.")


if __name__ == "__main__":
    main()
