"""Images per second of the data paths against the training they feed, in one process (ratios, not times).

    python bench/data_throughput.py                     # fake CelebA of 20,000 JPEGs, 2 workers, 64x64
    python bench/data_throughput.py --device cuda --workers 8

Makes (once, then reuses) a fake CelebA tree: --images JPEGs of 178x218, smooth random pictures
(upsampled noise, so they compress and decode like photos rather than like white noise). Measures:
- torchvision `ImageFolder` + transforms as a user would write it (crop 178, resize, flip,
  ToTensor, Normalize), through a DataLoader with --workers workers;
- preparing the cache (once): decode, crop, resize, write the uint8 array;
- the prepared cache through gankit's loader (memory map, same workers, whole batches read at
  once), including the conversion to [-1, 1] and the flips on --device;
- the device-resident path (`data.on_device=true`): indices from the loader, images gathered on --device;
- training DCGAN-64 (`experiment=dcgan_celeba64`, batch 128) on --device, for the ratio "data
  path / training": the loader must outrun it;
- memory: total proportional set size (PSS: shared pages split between the processes that map
  them) of the main process and its workers after one epoch of the prepared path, for 1, 2 and 4
  workers: it should stay near one copy of the array however many workers share it.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from multiprocessing import Pool
from pathlib import Path

import numpy as np
import torch
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from gankit.data.images import CelebADataModule  # noqa: E402


def _write_one(args: tuple[Path, int]) -> None:
    path, seed = args
    rng = np.random.default_rng(seed)
    small = Image.fromarray(rng.integers(0, 256, (14, 12, 3), dtype=np.uint8))
    pixels = np.asarray(small.resize((178, 218), Image.BICUBIC), dtype=np.int16)
    pixels = np.clip(pixels + rng.integers(-12, 13, pixels.shape), 0, 255).astype(np.uint8)  # some texture
    Image.fromarray(pixels).save(path, quality=90)


def make_fake_celeba(root: Path, count: int) -> Path:
    """root/celeba/img_align_celeba/000001.jpg ... (kept between runs)."""
    folder = root / "celeba" / "img_align_celeba"
    folder.mkdir(parents=True, exist_ok=True)
    todo = [(folder / f"{i + 1:06d}.jpg", i) for i in range(count) if not (folder / f"{i + 1:06d}.jpg").exists()]
    if todo:
        print(f"writing {len(todo)} fake CelebA JPEGs into {folder} ...", flush=True)
        with Pool(os.cpu_count()) as pool:
            pool.map(_write_one, todo, chunksize=64)
    return root


def rate(batches, count: int, warmup: int, to_device) -> float:
    """Images per second over `count` batches after `warmup` batches."""
    iterator = iter(batches)
    for _ in range(warmup):
        to_device(next(iterator))
    seen, start = 0, time.perf_counter()
    for _, batch in zip(range(count), iterator, strict=False):  # at most `count`: small sets end sooner
        out = to_device(batch)
        seen += len(out[0] if isinstance(out, (list, tuple)) else out)
    if isinstance(out, torch.Tensor) and out.is_cuda:
        torch.cuda.synchronize()
    return seen / (time.perf_counter() - start)


def pss_mb(pid: int) -> float:
    """Proportional set size of a process, MB (Linux)."""
    for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
        if line.startswith("Pss:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def children(pid: int) -> list[int]:
    found = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        found += [int(c) for c in (task / "children").read_text().split()]
    return found


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--root", default=f"{tempfile.gettempdir()}/gankit-bench-celeba")
    parser.add_argument("--images", type=int, default=20_000)
    parser.add_argument("--workers", type=int, default=os.cpu_count())
    parser.add_argument("--resolution", type=int, default=64)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--train-steps", type=int, default=10)
    args = parser.parse_args()
    device, w, b = torch.device(args.device), args.workers, args.batch_size
    root = make_fake_celeba(Path(args.root), args.images)
    cache_dir = Path(args.root) / "cache"
    rows = []

    def dm(**kwargs) -> CelebADataModule:
        kwargs = {
            "resolution": args.resolution,
            "batch_size": b,
            "num_workers": w,
            "cache_dir": str(cache_dir),
            **kwargs,
        }
        module = CelebADataModule(str(root), pin_memory=device.type == "cuda", **kwargs)
        return module

    def on_device(module):
        return lambda batch: module.on_after_batch_transfer(_to(batch, device), 0)

    # ---- torchvision ImageFolder, as a user writes it ---------------------------------------------
    from torchvision import datasets, transforms

    transform = transforms.Compose(
        [
            transforms.CenterCrop(178),
            transforms.Resize(args.resolution),
            transforms.RandomHorizontalFlip(),
            transforms.ToTensor(),
            transforms.Normalize([0.5] * 3, [0.5] * 3),
        ]
    )
    folder = datasets.ImageFolder(str(root / "celeba"), transform=transform)
    loader = torch.utils.data.DataLoader(folder, batch_size=b, shuffle=True, num_workers=w, drop_last=True)
    baseline = rate(loader, 16, 2, lambda batch: _to(batch[0], device))
    rows.append((f"torchvision ImageFolder + transforms, {w} workers", baseline))
    loader = torch.utils.data.DataLoader(folder, batch_size=b, shuffle=True, num_workers=0, drop_last=True)
    baseline_main = rate(loader, 8, 1, lambda batch: _to(batch[0], device))
    rows.append(("torchvision ImageFolder + transforms, in the main process", baseline_main))

    # ---- preparing the cache -----------------------------------------------------------------------
    prepared = dm(cache=True)
    start = time.perf_counter()
    prepared.cache.prepare(num_workers=w)  # always from scratch, for the timing
    seconds = time.perf_counter() - start
    rows.append(
        (f"preparing the cache once ({len(prepared.paths)} images, {seconds:.0f} s)", len(prepared.paths) / seconds)
    )

    # ---- the prepared path, the device-resident path ----------------------------------------------------
    prepared.setup("fit")
    batches = len(prepared.train_set) // b
    loader = prepared.train_dataloader()
    cached_rate = rate(loader, batches, 2, on_device(prepared))
    rows.append((f"prepared cache (memory map), {w} workers", cached_rate))
    in_main = dm(num_workers=0)
    in_main.setup("fit")
    in_main_rate = rate(in_main.train_dataloader(), batches, 2, on_device(in_main))
    rows.append(("prepared cache (memory map), in the main process", in_main_rate))
    resident = dm(on_device=True)
    resident.setup("fit")
    resident_rate = rate(resident.train_dataloader(), batches, 2, on_device(resident))
    rows.append((f"device-resident ({device.type})", resident_rate))

    # ---- training DCGAN-64 ----------------------------------------------------------------------------
    train_rate = training_rate(root, cache_dir, args)
    rows.append((f"training DCGAN-64 on {device.type} (batch {b})", train_rate))

    print(f"\n{'path':<58} {'images/s':>10} {'x ImageFolder':>14} {'x training':>11}")
    for name, value in rows:
        print(f"{name:<58} {value:10.0f} {value / baseline:14.1f} {value / train_rate:11.1f}")
    print(f"(x ImageFolder: against ImageFolder with {w} workers)")
    print(f"same workers: prepared / ImageFolder = {cached_rate / baseline:.1f} with {w} workers, ", end="")
    print(f"{in_main_rate / baseline_main:.1f} in the main process")

    # ---- memory with 1, 2, 4 workers --------------------------------------------------------------------
    size_mb = os.path.getsize(prepared.train_set.path) / 2**20
    print(f"\nmemory after one epoch of the prepared path (array {size_mb:.0f} MB on disk)")
    print(f"{'workers':>7} {'main PSS MB':>12} {'workers PSS MB':>15} {'total PSS MB':>13}")
    for workers in (1, 2, 4):
        module = dm(num_workers=workers)
        module.setup("fit")
        iterator = iter(module.train_dataloader())
        for _ in range(batches):
            next(iterator)
        main_pss = pss_mb(os.getpid())
        worker_pss = sum(pss_mb(pid) for pid in children(os.getpid()))
        print(f"{workers:>7} {main_pss:12.0f} {worker_pss:15.0f} {main_pss + worker_pss:13.0f}")
        del iterator


def _to(batch, device):
    if isinstance(batch, (list, tuple)):
        return [t.to(device, non_blocking=True) for t in batch]
    return batch.to(device, non_blocking=True)


def training_rate(root: Path, cache_dir: Path, args) -> float:
    """Images per second of DCGAN-64 training steps (one D and one G step per batch), data on the device."""
    from eval_cost import fit_timed
    from hydra import compose, initialize_config_dir
    from hydra.utils import instantiate

    overrides = [
        "experiment=dcgan_celeba64",
        f"data.root={root}",
        f"data.cache_dir={cache_dir}",
        "data.on_device=true",
        f"data.batch_size={args.batch_size}",
        f"data.resolution={args.resolution}",
        "logger=none",
        "callbacks=none",
        "metrics=none",
    ]
    with initialize_config_dir(str(ROOT / "conf"), version_base="1.3"):
        cfg = compose("train", overrides=overrides)
    datamodule, module = instantiate(cfg.data), instantiate(cfg.model)
    timer = fit_timed(module, datamodule, args.device.split(":")[0], args.train_steps, warmup=2)
    return timer.timed * args.batch_size / timer.seconds


if __name__ == "__main__":
    main()
