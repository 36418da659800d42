"""Training throughput and FLOP utilisation: images per second and achieved FLOP/s of a full D + G step.

    python bench/throughput.py --device cuda                      # the issue's table on a GPU
    python bench/throughput.py --device cpu --batches 32 --nets dcgan32 --precisions 32-true   # CPU

For each network (DCGAN-32, DCGAN-64, SNGAN-32; `--nets mlp2d`: the 2D grid recipe's MLPs), batch
size and precision (fp32 / bf16-mixed), the step is timed eager and compiled (torch.compile of G and
D, `--compile-mode`; CUDA graphs with `reduce-overhead`), through gankit's GANModule under a bare
Lightning Trainer and as a raw PyTorch loop (eager only). FLOPs are counted by
torch.utils.flop_counter.FlopCounterMode on one real step (D step: G forward + D forward on real and
fake + D backward; G step: G and D forward, D's input backward, G backward), not estimated by hand.
MFU = achieved FLOP/s / the device's dense peak for the precision (a table of known GPUs below; none
on a CPU). A reading prints as it is measured.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import torch
from torch.utils.flop_counter import FlopCounterMode

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))
sys.path.insert(0, str(ROOT / "src"))

from step_overhead import compose_cfg, gankit_loop, raw_loop  # noqa: E402

NETS = {
    "dcgan32": ["data.resolution=32"],
    "dcgan64": ["data.resolution=64"],
    "sngan32": ["model=sngan", "data.resolution=32"],
    "stylegan2_32": ["model=stylegan2", "data.resolution=32"],  # the small CPU preset
    "stylegan2_cifar": ["model=stylegan2_cifar", "data.resolution=32"],  # NVlabs' cifar config
    # the grid recipe's 3x256 MLPs on 2D points ("images" = points); without R1, whose double backward
    # torch.compile cannot trace (g_steps: only the length of its LR schedule here)
    "mlp2d": ["data=grid", "model=gan_mlp_grid", "model.r1_gamma=null", "g_steps=100000"],
}
PEAK_TFLOPS = {  # dense, per GPU: (fp32 via TF32 matmuls, bf16)
    "H200": (494.0, 989.0),
    "H100": (494.0, 989.0),
    "A100": (156.0, 312.0),
    "L40S": (183.0, 362.0),
    "RTX 4090": (82.6, 165.0),
}


def peak(device: torch.device, precision: str) -> float | None:
    if device.type != "cuda":
        return None
    name = torch.cuda.get_device_name(device)
    for key, (tf32, bf16) in PEAK_TFLOPS.items():
        if key in name:
            return (bf16 if "bf16" in precision else tf32) * 1e12
    return None


def real_batch(cfg, batch: int, device: torch.device) -> torch.Tensor:
    """A batch shaped like the data's, uniform in [-1, 1]: images [N, C, H, W] or 2D points [N, 2]."""
    if "resolution" in cfg.data:
        shape = (batch, cfg.data.channels, cfg.data.resolution, cfg.data.resolution)
    else:
        shape = (batch, cfg.model.generator.dim)
    return torch.rand(*shape, device=device) * 2 - 1


def step_flops(cfg, device: torch.device, batch: int) -> float:
    """FLOPs of one D step and one G step (non-saturating loss), counted by FlopCounterMode."""
    from hydra.utils import instantiate

    module = instantiate(cfg.model).to(device)
    g, d, loss = module.generator, module.discriminator, module.loss
    real = real_batch(cfg, batch, device)
    with FlopCounterMode(display=False) as counter:
        with torch.no_grad():
            fake = g(torch.randn(batch, module.latent_dim, device=device))
        loss.d(d(real), d(fake)).backward()  # D step
        d.requires_grad_(False)
        loss.g(d(g(torch.randn(batch, module.latent_dim, device=device)))).backward()  # G step
        d.requires_grad_(True)
    return float(counter.get_total_flops())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--nets", nargs="+", default=["dcgan32", "dcgan64", "sngan32"])
    parser.add_argument("--batches", nargs="+", type=int, default=[64, 128, 256])
    parser.add_argument("--precisions", nargs="+", default=["32-true", "bf16-mixed"])
    parser.add_argument("--steps", type=int, default=60, help="generator steps timed (after 5 warm-up)")
    parser.add_argument("--compile-mode", default="max-autotune-no-cudagraphs")
    parser.add_argument("--no-compile", action="store_true")
    parser.add_argument("--no-raw", action="store_true")
    args = parser.parse_args()
    device = torch.device(args.device)
    if device.type == "cuda":
        torch.set_float32_matmul_precision("high")
        torch.backends.cudnn.benchmark = True
    print(f"device {device} ({torch.cuda.get_device_name(device) if device.type == 'cuda' else 'CPU'})")
    print("| net | batch | precision | GFLOP / step | variant | ms / step | images/s | TFLOP/s | MFU |")
    print("|---|---|---|---|---|---|---|---|---|")
    for net in args.nets:
        for batch in args.batches:
            for precision in args.precisions:
                with tempfile.TemporaryDirectory() as tmp:
                    overrides = [
                        *NETS[net],
                        f"data.batch_size={batch}",
                        "metrics=none",
                        f"trainer.precision={precision}",
                    ]
                    cfg = compose_cfg(overrides, Path(tmp))
                    flops = step_flops(cfg, device, batch)
                    data = [real_batch(cfg, batch, device) for _ in range(args.steps + 5)]
                    variants = [("gankit eager", None)]
                    if not args.no_compile:
                        variants.append(("gankit compiled", {"mode": args.compile_mode}))
                    results = {}
                    for name, compile_options in variants:
                        cfg.model.compile = compile_options
                        torch._dynamo.reset()
                        seconds = gankit_loop(cfg, data, None, device, False, Path(tmp), precision=precision).seconds
                        results[name] = seconds
                    if not args.no_raw and precision == "32-true":
                        cfg.model.compile = None
                        results["raw eager"] = raw_loop(cfg, data, device)
                    for name, seconds in results.items():
                        rate = flops / seconds
                        top = peak(device, precision)
                        mfu = f"{rate / top:.1%}" if top else "n/a"
                        print(
                            f"| {net} | {batch} | {precision} | {flops / 1e9:.2f} | {name} | {seconds * 1e3:.2f} | "
                            f"{batch / seconds:,.0f} | {rate / 1e12:.2f} | {mfu} |",
                            flush=True,
                        )
                    if "gankit compiled" in results:
                        speedup = results["gankit eager"] / results["gankit compiled"]
                        print(f"|  |  |  |  | compiled / eager | {speedup:.2f}x |  |  |  |", flush=True)


if __name__ == "__main__":
    main()
