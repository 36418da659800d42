"""What each limited-data piece adds to a training step: DiffAugment, ADA (at several p) and LeCam, vs the default.

    python bench/piece_costs.py                      # CPU, the default job (DCGAN + EMA, MNIST 32x32, batch 64)
    python bench/piece_costs.py --device cuda --rounds 7 --steps 200

Each variant is the default job with one override (as in the README's limited-data table), trained
for --steps generator steps under a bare Trainer (bench/step_overhead.py's gankit_loop: no logger,
callbacks or progress bar) on the same prepared batches, in one process. Rounds are interleaved
(every other one in reverse order) and each variant's time is read as the median over rounds of
its ratio to the plain job's time in the same round, so the machine's drift cancels out.

ADA's cost depends on p: at p = 0 no transform is drawn; at p = 1 every one of the 18 `bgc`
transforms runs on every image, real and fake, in D's and G's steps. A fixed p (`model.ada.p`)
measures each point; an adaptive run's cost moves between them as p does.
"""

from __future__ import annotations

import argparse
import logging
import statistics
import sys
import tempfile
import warnings
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

from step_overhead import batches, compose_cfg, gankit_loop  # noqa: E402

AUGMENT = "model.augment=[color,translation,cutout]"
LECAM = "model.lecam={weight:0.3,decay:0.9,start:0}"
VARIANTS = {  # name: overrides of the default job (metrics off: training steps only)
    "dcgan_ema (the default job)": [],
    "+DiffAugment": [AUGMENT],
    "+ADA, p = 0": ["model=dcgan_ada", "model.ada.p=0.0"],
    "+ADA, p = 0.2": ["model=dcgan_ada", "model.ada.p=0.2"],
    "+ADA, p = 1": ["model=dcgan_ada", "model.ada.p=1.0"],
    "+LeCam": [LECAM],
    "+ADA (p = 0.2) + LeCam": ["model=dcgan_ada", "model.ada.p=0.2", LECAM],
    "+DiffAugment + LeCam": [AUGMENT, LECAM],
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--steps", type=int, default=60, help="generator steps timed per round (after 5 warm-up)")
    args = parser.parse_args()
    for name in [n for n in logging.root.manager.loggerDict if n.startswith("lightning")]:
        logging.getLogger(name).setLevel(logging.ERROR)  # one fit per variant and round: no banners
    warnings.filterwarnings("ignore")
    device = torch.device(args.device)
    names = list(VARIANTS)
    seconds: dict[str, list[float]] = {name: [] for name in names}
    ratios: dict[str, list[float]] = {name: [] for name in names}
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp)
        cfgs = {name: compose_cfg([*VARIANTS[name], "metrics=none"], out) for name in names}
        data, dm = batches(cfgs[names[0]], device, args.steps + 5)
        for i in range(args.rounds):
            order = names if i % 2 == 0 else names[::-1]
            this = {name: gankit_loop(cfgs[name], data, dm, device, callbacks=False, out=out).seconds for name in order}
            for name in names:
                seconds[name].append(this[name])
                ratios[name].append(this[name] / this[names[0]])
    print(
        f"device {device}, batch {data[0][0].shape[0] if isinstance(data[0], (list, tuple)) else len(data[0])}, "
        f"{args.rounds} rounds of {args.steps} generator steps (one D + one G step each)\n"
    )
    print("| variant | ms / G step | x the default job | added ms |")
    print("|---|---|---|---|")
    base = statistics.median(seconds[names[0]])
    for name in names:
        ms, ratio = statistics.median(seconds[name]) * 1e3, statistics.median(ratios[name])
        print(f"| {name} | {ms:.1f} | {ratio:.2f}x | {(ratio - 1) * base * 1e3:+.1f} |")


if __name__ == "__main__":
    main()
