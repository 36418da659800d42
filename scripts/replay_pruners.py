"""Replay an unpruned search's learning curves through Optuna's pruners: what each would have stopped.

    python scripts/replay_pruners.py logs/search/unpruned [--step-size 100]

Every trial of the study (in trial order) reports its recorded evaluations to a fresh in-memory
study with the pruner under test, exactly as gankit's jobs report them (gankit.sweeps.build_pruner,
the same warm-up in evaluations); where the pruner says stop, the trial's curve is cut there. Printed
per pruner: trials pruned, the generator steps run against the unpruned total, the CPU time (each
trial's own wall time, pro rata of the steps it ran), and the best value among the trials it let
finish (what study.best_trial reports) and its trial.

What a replay cannot show: the sampler seeing pruned trials (TPE ranks a pruned trial after every
finished one, by how far it got, then its last value: its "good" set is the best finished trials
in both searches, but it is refit at other moments, so a real pruned search can propose other
trials after the first pruning), and trials that
ran at the same time (n_jobs > 1: the pruner saw fewer finished trials). Both are why the README
also has a real pruned search; the replay is for choosing the default pruner, at no CPU cost.
"""

from __future__ import annotations

import argparse
import sys
from datetime import datetime
from pathlib import Path

import optuna

from gankit.sweeps import build_pruner, load_sweep_study

CANDIDATES = {
    "median (warm-up 2, startup 5)": {"name": "median", "warmup_evaluations": 2, "startup_trials": 5},
    "median (warm-up 1, startup 5)": {"name": "median", "warmup_evaluations": 1, "startup_trials": 5},
    "median (warm-up 3, startup 5)": {"name": "median", "warmup_evaluations": 3, "startup_trials": 5},
    "percentile 25 (warm-up 2, startup 5)": {
        "name": "percentile",
        "percentile": 25.0,
        "warmup_evaluations": 2,
        "startup_trials": 5,
    },
    "successive halving (warm-up 1, factor 3)": {"name": "successive_halving", "warmup_evaluations": 1},
    "successive halving (warm-up 2, factor 3)": {"name": "successive_halving", "warmup_evaluations": 2},
    "successive halving (warm-up 1, factor 4)": {
        "name": "successive_halving",
        "warmup_evaluations": 1,
        "reduction_factor": 4,
    },
    "successive halving (warm-up 0, factor 3)": {"name": "successive_halving", "warmup_evaluations": 0},
    "hyperband (warm-up 1, factor 3)": {"name": "hyperband", "warmup_evaluations": 1},
}


def wall_seconds(run_dir: Path) -> float | None:
    logs = [p for p in run_dir.glob("*.log") if p.name != "error.log"]
    if not logs:
        return None
    stamps = [line[1:24] for line in logs[0].read_text(errors="replace").splitlines() if line.startswith("[20")]
    if len(stamps) < 2:
        return None
    first, last = (datetime.strptime(s, "%Y-%m-%d %H:%M:%S,%f") for s in (stamps[0], stamps[-1]))
    return (last - first).total_seconds()


def replay(curves: list[dict[int, float]], pruner: dict | None, step_size: int, minimize: bool) -> list[int]:
    """For each curve, the index of its last evaluation run (len - 1 where it ran to the end)."""
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(
        direction="minimize" if minimize else "maximize", pruner=build_pruner(pruner, step_size)
    )
    stops = []
    for curve in curves:
        trial = study.ask()
        steps = sorted(curve)
        stop = len(steps) - 1
        for i, step in enumerate(steps):
            trial.report(curve[step], step)
            if i < len(steps) - 1 and trial.should_prune():
                stop = i
                break
        if stop < len(steps) - 1:
            study.tell(trial, state=optuna.trial.TrialState.PRUNED)
        else:
            values = list(curve.values())
            study.tell(trial, min(values) if minimize else max(values))
        stops.append(stop)
    return stops


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("sweep_dir", type=Path)
    parser.add_argument("--step-size", type=int, default=100, help="the report axis's distance between evaluations")
    args = parser.parse_args()
    study = load_sweep_study(args.sweep_dir)
    if study is None:
        print(f"replay_pruners.py: no study in {args.sweep_dir}", file=sys.stderr)
        return 1
    minimize = study.direction == optuna.study.StudyDirection.MINIMIZE
    trials = [t for t in sorted(study.trials, key=lambda t: t.number) if t.state.name == "COMPLETE"]
    curves = [dict(t.intermediate_values) for t in trials]
    seconds = [wall_seconds(args.sweep_dir / f"trial_{t.number}") or 0.0 for t in trials]
    full_steps = sum(max(c) for c in curves)
    minutes = sum(seconds) / 60
    print(f"{len(trials)} complete trials, {full_steps:,} generator steps, {minutes:.1f} CPU-minutes unpruned")
    print("| pruner | pruned | G steps run | CPU time | best value (trial) |")
    print("|---|---|---|---|---|")
    for label, pruner in {"none": None, **CANDIDATES}.items():
        stops = replay(curves, pruner, args.step_size, minimize)
        run_steps = [sorted(c)[stop] for c, stop in zip(curves, stops, strict=True)]
        cpu = sum(s * r / max(c) for s, r, c in zip(seconds, run_steps, curves, strict=True))
        finished = [i for i, (c, stop) in enumerate(zip(curves, stops, strict=True)) if stop == len(c) - 1]
        value = [(min if minimize else max)(c.values()) for c in curves]  # a finished trial's record
        best = (min if minimize else max)(finished, key=value.__getitem__)  # as study.best_trial: complete only
        pruned = len(curves) - len(finished)
        print(
            f"| {label} | {pruned} | {sum(run_steps) / full_steps:.0%} | {cpu / max(sum(seconds), 1e-9):.0%} | "
            f"{value[best]:.1f} ({trials[best].number}) |"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
