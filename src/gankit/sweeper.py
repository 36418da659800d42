"""gankit's Optuna sweeper for Hydra: `python train.py -m hparams_search=optuna`.

Hydra's own plugin (hydra-optuna-sweeper 1.3.0, unmaintained, pinned to optuna<3) gives a job only
its overrides, ends the sweep on the first failed trial and numbers each invocation's jobs from 0.
This one keeps its config keys (`sampler`, `direction`, `storage`, `study_name`, `n_trials`,
`n_jobs`, `params` with Hydra's choice / range / interval syntax) and adds:

- each job learns its trial (`+hydra.sweeper.trial=<n>`) and reports its evaluations to it, so the
  study's pruner (`pruner`) can stop it (gankit.callbacks.pruning);
- a failed trial is recorded FAIL with its error and the sweep goes on; only a sweep where every
  trial failed ends non-zero;
- trials write into `<sweep dir>/trial_<n>` (the study's numbers): a continued study never writes
  into earlier trials' directories;
- `n_jobs` trials at once with a parallel launcher, on storage several processes can share.
"""

from __future__ import annotations

import concurrent.futures
import logging
import math
import sys
from pathlib import Path
from typing import Any

from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.override_parser.types import IntervalSweep, Override, RangeSweep, Transformer
from hydra.core.plugins import Plugins
from hydra.plugins.sweeper import Sweeper
from hydra.types import HydraContext, TaskFunction
from omegaconf import DictConfig, ListConfig, OmegaConf

from gankit import sweeps

log = logging.getLogger(__name__)


def distribution(override: Override):
    """Hydra's sweep syntax as an Optuna distribution: choice(...) categorical, range(a, b, s) the values a
    range gives (stop excluded, as in Hydra's grid sweeps; integers stay integers), interval(a, b) uniform
    floats, tag(log, interval(...)) log-uniform. A plain value is fixed (returned as a string)."""
    from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution

    if not override.is_sweep_override():
        return override.get_value_element_as_str()
    value = override.value()
    if override.is_choice_sweep() or (override.is_range_sweep() and value.shuffle):
        return CategoricalDistribution(list(override.sweep_iterator(transformer=Transformer.encode)))
    if override.is_range_sweep():
        assert isinstance(value, RangeSweep)
        values = list(override.sweep_iterator())
        if not values:
            raise ValueError(f"{override.input_line}: the range is empty")
        if all(isinstance(v, int) for v in (value.start, value.stop, value.step)):
            return IntDistribution(int(value.start), int(values[-1]), step=int(value.step))
        return FloatDistribution(float(value.start), float(values[-1]), step=float(value.step))
    assert isinstance(value, IntervalSweep)
    return FloatDistribution(float(value.start), float(value.end), log="log" in value.tags)


def _outcome(ret):
    """A JobReturn's value, or the exception its job ended with."""
    try:
        return ret.return_value
    except BaseException as error:  # noqa: BLE001 - the job's own exception, whatever it was
        return error


def grid_choices(dist) -> list:
    """The values a grid search visits for a distribution (categorical, or int / float with a step)."""
    from optuna.distributions import CategoricalDistribution

    if isinstance(dist, CategoricalDistribution):
        return list(dist.choices)
    if getattr(dist, "step", None) is None or getattr(dist, "log", False):
        raise ValueError("a grid search needs choice(...) or range(...) parameters, not intervals")
    count = int(round((dist.high - dist.low) / dist.step)) + 1
    return [dist.low + i * dist.step for i in range(count)]


class StudySweeper(Sweeper):
    def __init__(
        self,
        sampler: Any,
        direction: Any,
        storage: str | None,
        study_name: str | None,
        n_trials: int,
        n_jobs: int,
        params: DictConfig | None = None,
        pruner: DictConfig | None = None,
        trial: int | None = None,  # set on each job's config, not by the user
    ) -> None:
        self.sampler = sampler
        self.directions = [str(d) for d in direction] if isinstance(direction, list | ListConfig) else [str(direction)]
        self.storage = storage
        self.study_name = study_name
        self.n_trials = n_trials
        self.n_jobs = n_jobs
        self.params = params
        self.pruner = sweeps.pruner_settings(pruner)
        self.config: DictConfig | None = None
        self.launcher = None

    def setup(self, *, hydra_context: HydraContext, task_function: TaskFunction, config: DictConfig) -> None:
        self.config = config
        self.launcher = Plugins.instance().instantiate_launcher(
            config=config, hydra_context=hydra_context, task_function=task_function
        )
        self.sweep_dir = Path(config.hydra.sweep.dir)

    # ---- before any trial ----------------------------------------------------------------------------
    def _launcher_kind(self) -> str:
        target = str(self.config.hydra.launcher.get("_target_", ""))
        if target.endswith("BasicLauncher"):
            return "basic"
        return "slurm" if "Slurm" in target else "other"

    def _check(self) -> str:
        """Every setting that cannot work, said before any trial starts. Returns the storage to use."""
        problems = []
        for key, value in (("n_trials", self.n_trials), ("n_jobs", self.n_jobs)):
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                problems.append(f"hydra.sweeper.{key} must be a whole number >= 1; got {value!r}")
        bad = [d for d in self.directions if d not in ("minimize", "maximize")]
        if bad:
            problems.append(f"hydra.sweeper.direction: {bad} is not minimize or maximize")
        if problems:
            raise ValueError("; ".join(problems))
        metric = self.config.get("optimized_metric")
        n_metrics = 0 if metric is None else 1 if isinstance(metric, str) else len(metric)
        if n_metrics != len(self.directions):
            raise ValueError(
                f"optimized_metric={OmegaConf.to_container(metric) if isinstance(metric, ListConfig) else metric} "
                f"gives {n_metrics} value(s) and hydra.sweeper.direction has {len(self.directions)}: one direction "
                "per metric"
            )
        self._check_metric(metric)
        sweeps.check_pruner(self.pruner, len(self.directions))
        kind = self._launcher_kind()
        if self.storage:  # a relative path is where the search was launched from, for the jobs and report.py too
            self.storage = sweeps.absolute_storage(str(self.storage), Path.cwd())
        earlier = sweeps.read_study_file(self.sweep_dir)  # a continued study keeps its storage and name
        if earlier and self.storage and self.storage != earlier["storage"]:
            raise ValueError(
                f"{self.sweep_dir} holds a study in {earlier['storage']}; hydra.sweeper.storage={self.storage} would "
                "start another one over its trial folders: leave hydra.sweeper.storage unset, or use another "
                "hydra.sweep.dir"
            )
        if earlier and self.study_name and self.study_name != earlier["study_name"]:
            raise ValueError(
                f"{self.sweep_dir} holds study {earlier['study_name']!r}; hydra.sweeper.study_name={self.study_name} "
                "names another: leave it unset to continue this one, or use another hydra.sweep.dir"
            )
        file = sweeps.storage_file(earlier["storage"]) if earlier else None
        if file is not None and not file.exists():
            raise ValueError(
                f"{self.sweep_dir / sweeps.STUDY_FILE} names the study's storage {earlier['storage']}, which is gone: "
                "a new one would start the trial numbers at 0 again, over this folder's trial_<n> runs. Put the "
                "storage back, or start the search in another hydra.sweep.dir"
            )
        if earlier:
            self.study_name = earlier["study_name"]
        storage = self.storage or (earlier or {}).get("storage")
        storage = storage or sweeps.default_storage(self.sweep_dir, self.n_jobs > 1 or kind == "slurm")
        sweeps.check_storage(storage, self.n_jobs, kind == "slurm")
        if self.n_jobs > 1 and kind == "basic":
            log.warning(
                "hydra.sweeper.n_jobs=%d with Hydra's basic launcher: its trials run one after another; "
                "hydra/launcher=local (processes) or slurm runs them at once",
                self.n_jobs,
            )
        return str(storage)

    def _check_metric(self, metric) -> None:
        """An objective the runs' metrics do not log, said once here rather than by every trial (each job checks
        again with its own overrides, which may change the metrics)."""
        from gankit.metric_keys import VAL_KEYS, val_keys

        names = [metric] if isinstance(metric, str) else list(metric or [])
        evaluation = OmegaConf.select(self.config, "metrics.evaluation")
        chosen = list(evaluation.get("metrics") or []) if evaluation is not None and "_target_" in evaluation else []
        known = [name for name in chosen if name in VAL_KEYS]  # an unknown one is the job's own message
        logged = set(val_keys(known, points=True))
        for name in names:
            if name.startswith("val/") and name not in logged and len(known) == len(chosen):
                raise ValueError(
                    f"optimized_metric={name} is not logged by this run's metrics "
                    f"({', '.join(sorted(logged)) or 'metrics=none logs none'}); choose one of them, or other metrics"
                )

    def _open_study(self, storage: str, name: str):
        import optuna

        optuna.logging.set_verbosity(optuna.logging.WARNING)
        try:
            self._storage = sweeps.open_storage(storage)
            study = optuna.create_study(
                study_name=name,
                storage=self._storage,
                sampler=self.sampler,
                directions=self.directions,
                load_if_exists=True,
            )
        except Exception as error:  # unreachable server, bad URL, unwritable file: before any trial
            message = f"hydra.sweeper.storage={storage}: cannot open the study: {sweeps.first_line(error)}"
            raise ValueError(message) from None
        stored = [d.name.lower() for d in study.directions]
        if stored != self.directions:
            raise ValueError(
                f"study {name!r} in {storage} already exists with direction {stored}, and this search asks "
                f"for {self.directions}: name another with hydra.sweeper.study_name=<name>, or use another storage"
            )
        if study.trials and sweeps.read_study_file(self.sweep_dir) is None:
            log.warning(
                "Study %s in %s already has %d trial(s) from another sweep directory: this search joins it "
                "(hydra.sweeper.study_name=<name> starts a new one)", name, storage, len(study.trials),
            )  # fmt: skip
        return study

    def _search_space(self, arguments: list[str]) -> tuple[dict, dict]:
        lines = [f"{k!s}={v}" for k, v in (self.params or {}).items()] + list(arguments)
        space, fixed = {}, {}
        for override in OverridesParser.create().parse_overrides(lines):
            value = distribution(override)
            (fixed if isinstance(value, str) else space)[override.get_key_element()] = value
        for name in fixed:  # a value given on the command line wins over the search space
            space.pop(name, None)
        return space, fixed

    # ---- the search -----------------------------------------------------------------------------------
    def sweep(self, arguments: list[str]) -> None:
        try:
            storage = self._check()
            space, fixed = self._search_space(arguments)
            grid = None
            if callable(self.sampler) and not hasattr(self.sampler, "sample_relative"):  # a partial: the grid
                grid = {name: grid_choices(dist) for name, dist in space.items()}
                self.sampler = self.sampler(grid)
                self.n_trials = min(self.n_trials, math.prod(len(v) for v in grid.values()))
            name = self.study_name or self.config.get("task_name") or "gankit"
            study = self._open_study(storage, name)
        except ValueError as error:
            raise SystemExit(f"gankit: error: {error}") from None
        if grid is not None:
            self.n_trials = min(self.n_trials, self._grid_points_left(study, grid))
        if study.trials:  # continued: a sampler seeded as before would draw the first trials' values again
            study.sampler.reseed_rng()
        sweeps.write_study_file(self.sweep_dir, storage, study.study_name)
        log.info(
            "Study %s in %s: %s, %s, pruner %s; %d trial(s), %d at a time",
            study.study_name,
            storage,
            "/".join(self.directions),
            type(study.sampler).__name__,
            self.pruner["name"] if self.pruner else "none",
            self.n_trials,
            self.n_jobs,
        )
        if len(self.directions) > 1:
            log.info("Two objectives: trials run to the end (Optuna prunes single-objective studies only)")

        recorder = self._recorder(study)
        mine: list[int] = []
        interrupted = None
        try:
            self._search(study, recorder, space, fixed, mine)
        except KeyboardInterrupt as stop:  # Ctrl-C (the trials were stopped too, and recorded)
            interrupted = stop
        finally:  # also after a stop (Ctrl-C, a submission SLURM refused): the trials so far, in the results file
            self._summarise(recorder, mine, stopped=interrupted is not None)
        if interrupted is not None:
            how = sweeps.first_line(interrupted).removeprefix("interrupted").strip(" ()") or "Ctrl-C"
            print(
                f"gankit: the search was interrupted ({how}); "
                f"{self.sweep_dir / 'optimization_results.yaml'} lists its trials, and the same command continues it",
                file=sys.stderr,
            )
            raise SystemExit(130)

    def _grid_points_left(self, study, grid: dict) -> int:
        """A continued grid search runs the points no trial has taken yet (Optuna would repeat finished ones)."""
        import itertools

        points = set(itertools.product(*grid.values()))
        taken = {tuple(t.params.get(k) for k in grid) for t in study.trials if set(t.params) == set(grid)}
        left = len(points - taken)
        if left < self.n_trials:
            log.info("The grid has %d point(s) and %d are left in this study: %d trial(s)", len(points), left, left)
        return left

    def _recorder(self, study):
        """The study as the sweeper records outcomes: with a plain sampler, whose after-trial hook does not
        stop the study (the grid sampler's calls study.stop(), which outside optimize() raises)."""
        import optuna

        return optuna.load_study(
            study_name=study.study_name, storage=self._storage, sampler=optuna.samplers.RandomSampler()
        )

    def _search(self, study, recorder, space: dict, fixed: dict, mine: list[int]) -> None:
        """Keep n_jobs trials running: a new one is asked for as soon as one ends (not when its batch does),
        so a pruned trial's slot is refilled at once. Hydra's basic launcher runs each job in this process
        (its main thread: signal handlers), one at a time."""
        here = self._launcher_kind() == "basic"
        parallel = 1 if here else self.n_jobs
        running: dict[concurrent.futures.Future, Any] = {}

        def ask():
            trial = study.ask(space)
            folder = self.sweep_dir / f"trial_{trial.number}"
            if folder.exists() and any(folder.iterdir()):  # another study's run: never written over
                sweeps.finish_trial(recorder, trial, "FAIL", error=f"{folder} holds another run")
                raise SystemExit(
                    f"gankit: error: {folder} already holds a run, and study {study.study_name!r} gave the next "
                    f"trial number {trial.number}: this folder's runs belong to another study (a storage shared "
                    "with another search, or replaced). Use another hydra.sweep.dir, or move that folder away"
                )
            for key, value in fixed.items():
                trial.set_user_attr(key, value)
            trial.set_user_attr("directory", f"trial_{trial.number}")
            mine.append(trial.number)
            return trial

        with concurrent.futures.ThreadPoolExecutor(max_workers=parallel) as pool:
            try:
                while len(mine) < self.n_trials or running:
                    while len(running) < parallel and len(mine) < self.n_trials:
                        trial = ask()
                        job = self._overrides(trial, fixed)
                        if here:  # at once, in this thread
                            future = concurrent.futures.Future()
                            running[future] = trial
                            try:
                                future.set_result(self._launch_here(job, trial.number))
                            except BaseException as stop:  # noqa: BLE001 - re-raised by future.result()
                                future.set_exception(stop)
                        else:
                            running[pool.submit(self._launch, job, trial.number)] = trial
                    done, _ = concurrent.futures.wait(running, return_when=concurrent.futures.FIRST_COMPLETED)
                    for future in done:
                        outcome = future.result()  # raises for a stop: the trial, still listed, is closed below
                        self._record(recorder, running.pop(future), outcome)
            except BaseException as stop:
                for trial in running.values():  # nothing will record them: not left RUNNING forever
                    sweeps.finish_trial(recorder, trial, "FAIL", error=f"the sweep stopped: {sweeps.first_line(stop)}")
                raise

    def _overrides(self, trial, fixed: dict) -> list[str]:
        params = {**trial.params, **fixed}
        return [
            *(f"{name}={value}" for name, value in params.items()),
            f"hydra.sweep.subdir=trial_{trial.number}",
            f"+hydra.sweeper.trial={trial.number}",
        ]

    def _record(self, recorder, trial, outcome) -> None:
        """A trial's end where its job did not record it (a job that died, a task without gankit's reporting)."""
        if isinstance(outcome, BaseException):
            if sweeps.finish_trial(recorder, trial, "FAIL", error=sweeps.first_line(outcome)):
                log.warning("Trial %d failed: %s", trial.number, sweeps.first_line(outcome))
        elif isinstance(outcome, int | float | tuple | list):  # a no-op where the job recorded its end
            sweeps.finish_trial(recorder, trial, "COMPLETE", outcome)
        elif sweeps.finish_trial(recorder, trial, "FAIL", error=f"the job returned {outcome!r}: no value to record"):
            log.warning("Trial %d failed: its job returned %r", trial.number, outcome)

    def _launch_here(self, job: list[str], number: int):
        """A job in this process (Hydra's basic launcher). Its user errors arrive as exceptions (TrialFailed); a
        SystemExit is a stop (a signal, Ctrl-C): the trial is recorded and the sweep stops."""
        try:
            (ret,) = self.launcher.launch([job], initial_job_idx=number)
        except SystemExit as stop:
            raise KeyboardInterrupt(f"interrupted (exit status {stop.code})") from stop
        return _outcome(ret)

    def _launch(self, job: list[str], number: int):
        """A job through a launcher that runs it elsewhere (submitit: a process, a SLURM job); in a worker thread.
        A SystemExit from the launcher (SLURM refused the submission) stops the sweep."""
        try:
            (ret,) = self.launcher.launch([job], initial_job_idx=number)
        except Exception as error:  # the job was killed (no result), or the launcher failed; a SystemExit stops all
            return error
        return _outcome(ret)

    def _summarise(self, study, mine: list[int], stopped: bool = False) -> None:
        """optimization_results.yaml: the best (or the Pareto front), and every trial with its state. A search
        whose every trial failed (not one stopped by the user) exits 1 naming the first error."""
        import optuna

        trials = sorted(study.get_trials(deepcopy=False), key=lambda t: t.number)
        rows = [
            {
                "trial": t.number,
                "state": t.state.name,
                **({"value": t.value} if t.values and len(t.values) == 1 else {"values": t.values} if t.values else {}),
                **({"error": t.user_attrs["error"]} if "error" in t.user_attrs else {}),
                **({"pruned_at": t.last_step} if t.state == optuna.trial.TrialState.PRUNED else {}),
                "params": dict(t.params),
            }
            for t in trials
        ]
        complete = [t for t in trials if t.state == optuna.trial.TrialState.COMPLETE]
        results: dict[str, Any] = {"name": "optuna"}
        if complete and len(self.directions) == 1:
            best = study.best_trial
            results.update(best_trial=best.number, best_params=dict(best.params), best_value=best.value)
            log.info("Best: trial %d, value %.6g, parameters %s", best.number, best.value, best.params)
        elif complete:
            front = study.best_trials
            results["solutions"] = [{"trial": t.number, "params": t.params, "values": t.values} for t in front]
            log.info("Pareto front: %d trial(s)", len(results["solutions"]))
        counts = {state: sum(r["state"] == state for r in rows) for state in ("COMPLETE", "PRUNED", "FAIL")}
        results.update(counts={k.lower(): v for k, v in counts.items()}, trials=rows)
        OmegaConf.save(OmegaConf.create(results), self.sweep_dir / "optimization_results.yaml")
        log.info("Trials: %d complete, %d pruned, %d failed", counts["COMPLETE"], counts["PRUNED"], counts["FAIL"])
        failed = [t for t in trials if t.number in mine and t.state == optuna.trial.TrialState.FAIL]
        if mine and len(failed) == len(mine) and not stopped:
            first = failed[0]
            raise SystemExit(
                f"gankit: error: all {len(mine)} trial(s) of this sweep failed; trial {first.number}: "
                f"{first.user_attrs.get('error', 'no message')} (its run: {self.sweep_dir / f'trial_{first.number}'})"
            )
