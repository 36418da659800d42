"""Run an experiment over several seeds and variants, and print the mean table (the README's reproduction tables).

    python scripts/seed_table.py experiment=ring --seeds 5 \\
        --variant "GAN=" --variant "PacGAN2=model.pack=2 data.batch_size=200" --variant "best=model=gan_mlp_r1"

Each (variant, seed) is `python train.py <overrides> <variant overrides> seed=<s> logger=csv` in
its own process and run directory under --out; --parallel runs that many at once, each on
cores / parallel threads (--threads to set it). A run that finished before (a second call with the
same --out) is read, not run again; one that was cut off resumes from its last checkpoint
(ckpt_path=auto; its wall time is then the resumed part's). The last evaluation's --keys are read
from each run's csv/metrics.csv; the table gives mean +- std over seeds and the mean wall time of a
run. It is also written to <out>/table.md, with every run's numbers in <out>/runs.csv.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import statistics
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def last_values(metrics_csv: Path, keys: list[str]) -> dict[str, float]:
    """The last logged value of each key."""
    found: dict[str, float] = {}
    with open(metrics_csv) as handle:
        for row in csv.DictReader(handle):
            found.update({k: float(row[k]) for k in keys if row.get(k) not in (None, "")})
    return found


DONE = "seed_table.json"  # written into a run's directory when it finished: its wall time


def finished_seconds(run_dir: Path) -> float | None:
    """The wall time of a run that finished under an earlier call, or None.

    Runs from before the DONE file existed count when their train.log ends with training's "Done"
    line; their time is the log's first to last timestamp (the ~5 s of imports before it are left out)."""
    if (run_dir / DONE).exists():
        return json.loads((run_dir / DONE).read_text())["seconds"]
    log = run_dir / "train.log"
    lines = log.read_text().splitlines() if log.exists() else []
    done = [line for line in lines if "[gankit.training][INFO] - Done:" in line]
    if not done:
        return None
    stamp = lambda line: time.mktime(time.strptime(line[1:20], "%Y-%m-%d %H:%M:%S"))  # noqa: E731
    return stamp(done[-1]) - stamp(lines[0])


def run_one(name: str, overrides: list[str], seed: int, out: Path, threads: int) -> dict:
    run_dir = out / name / f"seed{seed}"
    seconds = finished_seconds(run_dir)
    if seconds is not None:
        print(f"  {name} seed {seed}: finished before ({seconds:.0f} s), read from {run_dir}", flush=True)
        return {"variant": name, "seed": seed, "seconds": seconds, "run_dir": str(run_dir)}
    command = [sys.executable, str(ROOT / "train.py"), *overrides, f"seed={seed}", "logger=csv", "ckpt_path=auto"]
    command.append(f"hydra.run.dir={run_dir}")
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads)}
    start = time.perf_counter()
    result = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True)
    seconds = time.perf_counter() - start
    if result.returncode != 0:
        raise SystemExit(f"{name} seed {seed} failed:\n{result.stderr[-3000:]}")
    (run_dir / DONE).write_text(json.dumps({"seconds": seconds}))
    print(f"  {name} seed {seed}: {seconds:.0f} s", flush=True)
    return {"variant": name, "seed": seed, "seconds": seconds, "run_dir": str(run_dir)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("overrides", nargs="*", help="train.py overrides shared by every run")
    parser.add_argument("--variant", action="append", required=True, help="NAME=overrides (space-separated)")
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--parallel", type=int, default=2)
    parser.add_argument("--threads", type=int, default=None, help="per run (default: cores / parallel)")
    parser.add_argument("--keys", nargs="+", default=["val/modes", "val/high_quality", "val/mode_kl"])
    parser.add_argument("--out", default=str(ROOT / "logs" / "seed_table" / time.strftime("%Y-%m-%d_%H-%M-%S")))
    args = parser.parse_args()
    out = Path(args.out)
    variants = [(v.split("=", 1)[0], v.split("=", 1)[1].split()) for v in args.variant]
    threads = args.threads or max(1, (os.cpu_count() or 1) // args.parallel)
    jobs = [(name, args.overrides + extra, seed) for name, extra in variants for seed in range(args.seeds)]
    print(f"{len(jobs)} runs, {args.parallel} at a time, {threads} thread(s) each, under {out}", flush=True)
    with ThreadPoolExecutor(args.parallel) as pool:
        runs = list(pool.map(lambda job: run_one(*job, out, threads), jobs))
    for run in runs:
        run.update(last_values(Path(run["run_dir"]) / "csv" / "metrics.csv", args.keys))

    lines = [f"| variant | {' | '.join(args.keys)} | wall time per run |", "|---" * (len(args.keys) + 2) + "|"]
    for name, _ in variants:
        mine = [r for r in runs if r["variant"] == name]
        cells = []
        for key in args.keys:
            values = [r[key] for r in mine if key in r]
            spread = statistics.stdev(values) if len(values) > 1 else 0.0
            cells.append(f"{statistics.mean(values):.3f} +- {spread:.3f}" if values else "n/a")
        minutes = statistics.mean(r["seconds"] for r in mine) / 60
        lines.append(f"| {name} | {' | '.join(cells)} | {minutes:.1f} min |")
    table = "\n".join(lines)
    print(f"\n{' '.join(args.overrides)}, {args.seeds} seeds\n{table}")
    out.mkdir(parents=True, exist_ok=True)
    (out / "table.md").write_text(f"`{' '.join(args.overrides)}`, {args.seeds} seeds\n\n{table}\n")
    with open(out / "runs.csv", "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=["variant", "seed", "seconds", "run_dir", *args.keys])
        writer.writeheader()
        writer.writerows(runs)


if __name__ == "__main__":
    main()
