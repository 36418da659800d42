"""Optuna searches through Hydra: the study, its storage, its pruner, and how a job finds its own trial.

gankit's sweeper (`hydra/sweeper=optuna`, the class in `hydra_plugins.gankit`) asks the
study for trials, launches one job per trial with `hydra.sweep.subdir=trial_<n>` and
`+hydra.sweeper.trial=<n>`, and records what the launcher could not (a job that died). The job
itself reports to its trial through the storage: each evaluation (`report`), the pruner's
answer (`should_prune`), and its final state (COMPLETE with its value, PRUNED, or FAIL with the
error). Hydra's own Optuna plugin hands a job only its overrides (hydra #1710, #1954), so no job
could be pruned; and one failed trial ended its sweep.

Storage: SQLite for one process at a time (the default with `n_jobs=1` on this machine),
Optuna's journal file for several processes on one machine or a shared filesystem (the default
when `n_jobs > 1` or the launcher is SLURM), an RDB URL (PostgreSQL, MySQL) across machines.
`<sweep dir>/study.yaml` names the storage and the study for the jobs and for report.py.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import math
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import yaml

log = logging.getLogger(__name__)

STUDY_FILE = "study.yaml"
SQLITE_FILE = "optuna.db"
JOURNAL_FILE = "optuna.journal"
PRUNERS = ("median", "percentile", "successive_halving", "hyperband", "threshold")


class TrialFailed(RuntimeError):
    """A trial's run ended on a problem the user can fix: recorded FAIL, and the sweep goes on."""


# ---- storage --------------------------------------------------------------------------------------
def default_storage(sweep_dir: str | Path, parallel: bool) -> str:
    """SQLite in the sweep directory for one trial at a time, else a journal file there."""
    sweep_dir = Path(sweep_dir).resolve()
    return str(sweep_dir / JOURNAL_FILE) if parallel else f"sqlite:///{sweep_dir / SQLITE_FILE}"


def is_url(storage: str) -> bool:
    return "://" in storage


def storage_file(storage: str) -> Path | None:
    """The file a journal or SQLite storage lives in (None for a database server)."""
    if storage.startswith("sqlite:///"):
        return Path(storage.removeprefix("sqlite:///"))
    return None if is_url(storage) else Path(storage)


def absolute_storage(storage: str, base: str | Path) -> str:
    """A journal path or SQLite URL relative to `base` made absolute; server URLs unchanged."""
    file = storage_file(storage)
    if file is None or file.is_absolute() or str(file) in ("", ":memory:"):
        return storage
    path = (Path(base) / file).resolve()
    return f"sqlite:///{path}" if storage.startswith("sqlite:") else str(path)


def portable_storage(storage: str, sweep_dir: str | Path) -> str:
    """A storage file inside the sweep directory named relative to it, so the directory can be moved or copied
    and continued (its study.yaml then names its own copy, not the original's)."""
    file = storage_file(storage)
    if file is None:
        return storage
    try:
        inside = file.resolve().relative_to(Path(sweep_dir).resolve())
    except ValueError:
        return storage
    return f"sqlite:///{inside}" if storage.startswith("sqlite:") else str(inside)


def server_url(storage: str) -> str:
    """`postgresql://` as the installed driver spells it: SQLAlchemy 2.1 maps the bare dialect to psycopg 3, and
    the driver gankit installs is psycopg2."""
    import importlib.util

    has = {name: importlib.util.find_spec(name) is not None for name in ("psycopg", "psycopg2")}
    if storage.startswith("postgresql") and not any(has.values()):
        raise ValueError("a PostgreSQL storage needs its driver: pip install psycopg2-binary (in gankit's dev extras)")
    if storage.startswith("postgresql://") and not has["psycopg"]:
        return "postgresql+psycopg2://" + storage.removeprefix("postgresql://")
    return storage


def check_storage(storage: str, n_jobs: int, slurm: bool) -> None:
    """SQLite serves one writing process at a time: refused where several trials run at once."""
    if not storage.startswith("sqlite:"):
        return
    where = f"hydra.sweeper.n_jobs={n_jobs}" if n_jobs > 1 else "hydra/launcher=slurm"
    if n_jobs > 1 or slurm:
        raise ValueError(
            f"hydra.sweeper.storage={storage}: SQLite serves one process at a time, and {where} runs several "
            "trials at once. Use a journal file (hydra.sweeper.storage=<sweep dir>/optuna.journal, or null for "
            "that default; on a filesystem every node shares for SLURM) or a database server "
            "(hydra.sweeper.storage='postgresql+psycopg2://user@host/db')."
        )


def open_storage(storage: str):
    """An Optuna storage: an RDB for a URL (sqlite:///, postgresql://, ...), else a journal file at that path."""
    import optuna

    if is_url(storage):
        return optuna.storages.RDBStorage(server_url(storage))
    from optuna.storages.journal import JournalFileBackend

    Path(storage).parent.mkdir(parents=True, exist_ok=True)
    return optuna.storages.JournalStorage(JournalFileBackend(storage))


def write_study_file(sweep_dir: str | Path, storage: str, study_name: str) -> None:
    Path(sweep_dir).mkdir(parents=True, exist_ok=True)
    info = {"storage": portable_storage(storage, sweep_dir), "study_name": study_name}
    (Path(sweep_dir) / STUDY_FILE).write_text(yaml.safe_dump(info))


def read_study_file(sweep_dir: str | Path) -> dict | None:
    """study.yaml, its storage absolute (a file named relative to the sweep directory is resolved there)."""
    path = Path(sweep_dir) / STUDY_FILE
    if not path.is_file():
        return None
    info = yaml.safe_load(path.read_text())
    return {**info, "storage": absolute_storage(str(info["storage"]), sweep_dir)}


def load_sweep_study(sweep_dir: str | Path, pruner=None):
    """The study of a sweep directory (its study.yaml; an older sweep's optuna.db), or None."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    info = read_study_file(sweep_dir)
    if info is None:
        db = Path(sweep_dir) / SQLITE_FILE
        if not db.is_file():
            return None
        storage = open_storage(f"sqlite:///{db.resolve()}")
        names = optuna.get_all_study_names(storage)
        return optuna.load_study(study_name=names[0], storage=storage, pruner=pruner) if names else None
    return optuna.load_study(study_name=info["study_name"], storage=open_storage(info["storage"]), pruner=pruner)


# ---- the pruner -------------------------------------------------------------------------------------
def pruner_settings(pruner: Any) -> dict | None:
    """The sweeper's `pruner` setting as a plain dict (`hydra.sweeper.pruner=<name>`: that pruner's defaults)."""
    from omegaconf import DictConfig, OmegaConf

    if isinstance(pruner, DictConfig):
        pruner = OmegaConf.to_container(pruner)
    return {"name": pruner} if isinstance(pruner, str) else pruner


def check_pruner(pruner: Any, n_objectives: int) -> None:
    """The sweeper's `pruner` settings, checked in the launching process before any trial starts."""
    if pruner is None:
        return
    name = pruner.get("name") if hasattr(pruner, "get") else pruner
    if name not in PRUNERS:
        raise ValueError(
            f"hydra.sweeper.pruner.name={name!r} is not a pruner; choose one of {', '.join(PRUNERS)}, "
            "or hydra.sweeper.pruner=null for none"
        )
    if n_objectives > 1:
        raise ValueError(
            f"hydra.sweeper.pruner: Optuna cannot prune a study with {n_objectives} objectives "
            "(trial.report takes one value); set hydra.sweeper.pruner=null"
        )
    if name == "threshold" and not any(isinstance(pruner.get(k), int | float) for k in ("lower", "upper")):
        raise ValueError("hydra.sweeper.pruner: the threshold pruner needs a number in upper or lower (or both)")
    for key in ("warmup_evaluations", "startup_trials"):
        value = pruner.get(key, 0)
        if not isinstance(value, int) or isinstance(value, bool) or value < 0:
            raise ValueError(f"hydra.sweeper.pruner.{key} must be a whole number >= 0; got {value!r}")
    try:  # Optuna's own checks (a percentile over 100, a reduction factor of 1, lower above upper), here
        build_pruner(pruner, 1)
    except (ValueError, TypeError) as error:
        raise ValueError(f"hydra.sweeper.pruner: {error}") from None


def build_pruner(pruner: Any, step_size: int):
    """The Optuna pruner of `pruner` settings, with its warm-up turned from evaluations into steps.

    step_size: the report axis's distance between two evaluations (generator steps, or images for
    kimg cadences). None settings: optuna's NopPruner (reports are kept, nothing is pruned)."""
    import optuna

    if pruner is None:
        return optuna.pruners.NopPruner()
    name = pruner["name"]
    evaluations = int(pruner.get("warmup_evaluations", 0))
    warmup = evaluations * step_size + 1 if evaluations else 0  # Optuna may prune from step n_warmup_steps on
    startup = int(pruner.get("startup_trials", 0))
    if name == "median":
        return optuna.pruners.MedianPruner(n_startup_trials=startup, n_warmup_steps=warmup)
    if name == "percentile":
        return optuna.pruners.PercentilePruner(
            float(pruner.get("percentile", 25.0)), n_startup_trials=startup, n_warmup_steps=warmup
        )
    if name == "threshold":  # a fixed bar: e.g. upper: 300 stops any trial whose FID is above 300 after the warm-up
        lower, upper = pruner.get("lower"), pruner.get("upper")
        return optuna.pruners.ThresholdPruner(lower=lower, upper=upper, n_warmup_steps=warmup)
    factor = int(pruner.get("reduction_factor", 3))
    first = (evaluations + 1) * step_size  # the first rung: the first evaluation after the warm-up
    if name == "successive_halving":
        return optuna.pruners.SuccessiveHalvingPruner(min_resource=first, reduction_factor=factor)
    return optuna.pruners.HyperbandPruner(min_resource=first, reduction_factor=factor)


# ---- a job's trial ----------------------------------------------------------------------------------
@dataclasses.dataclass
class JobTrial:
    """The Optuna trial a sweep job reports to, found through the storage (study name + trial number)."""

    storage: str
    study_name: str
    number: int
    pruner: dict | None
    metric: str | None

    ENV = "GANKIT_OPTUNA_TRIAL"  # the trial, for the DDP ranks Lightning starts (they run the job, not the sweep)

    @classmethod
    def of_this_job(cls, optimized_metric: Any) -> JobTrial | None:
        """The trial the sweeper gave this job (`hydra.sweeper.trial`), or None outside an Optuna search."""
        from hydra.core.hydra_config import HydraConfig

        if not HydraConfig.initialized():
            return None
        hydra = HydraConfig.get()
        number = hydra.sweeper.get("trial") if hydra.sweeper is not None else None
        if number is None:
            inherited = os.environ.get(cls.ENV)
            return cls(**json.loads(inherited)) if inherited else None
        info = read_study_file(hydra.sweep.dir)
        if info is None:
            raise ValueError(f"{hydra.sweep.dir}/{STUDY_FILE} is missing: this job's trial cannot be found")
        pruner = pruner_settings(hydra.sweeper.get("pruner"))
        if not isinstance(optimized_metric, str) and optimized_metric is not None and len(optimized_metric) == 1:
            optimized_metric = optimized_metric[0]
        metric = optimized_metric if isinstance(optimized_metric, str) else None  # several: not pruned
        return cls(info["storage"], info["study_name"], int(number), pruner, metric)

    @contextlib.contextmanager
    def inherited(self) -> Iterator[None]:
        """While the job runs, the ranks it starts (Lightning's DDP launcher) learn the trial from the environment:
        every rank must take part in the pruning decision (a broadcast from rank 0)."""
        os.environ[self.ENV] = json.dumps(dataclasses.asdict(self))
        try:
            yield
        finally:
            os.environ.pop(self.ENV, None)

    def open(self, step_size: int = 1):
        """(study, trial): the study with this job's pruner, and a Trial object to report to."""
        import optuna

        optuna.logging.set_verbosity(optuna.logging.WARNING)
        study = optuna.load_study(
            study_name=self.study_name,
            storage=open_storage(self.storage),
            pruner=build_pruner(self.pruner if self.metric else None, step_size),
        )
        frozen = next((t for t in study.get_trials(deepcopy=False) if t.number == self.number), None)
        if frozen is None:
            raise ValueError(f"trial {self.number} is not in study {self.study_name!r} ({self.storage})")
        # Optuna's documented way to resume a trial in another process: Trial(study, trial_id). The id is
        # the storage's (FrozenTrial._trial_id), not the number: the only private name used here.
        return study, optuna.trial.Trial(study, frozen._trial_id)


def finish_trial(study, trial, state: str, values=None, **attrs: Any) -> bool:
    """Record a trial's end (COMPLETE / PRUNED / FAIL), with attributes (error, steps), unless it has one.

    Returns whether this call recorded it. A COMPLETE value that is missing or NaN is recorded FAIL."""
    from optuna.exceptions import UpdateFinishedTrialError

    stored = next((t for t in study.get_trials(deepcopy=False) if t.number == trial.number), None)
    if stored is None or stored.state.is_finished():
        return False
    try:
        return _finish(study, trial, state, values, attrs)
    except UpdateFinishedTrialError:  # finished meanwhile by another process (the job, or the sweeper)
        return False


def _finish(study, trial, state: str, values, attrs: dict) -> bool:
    import optuna

    for key, value in attrs.items():
        if value is not None:
            trial.set_user_attr(key, value)
    state = optuna.trial.TrialState[state]
    if state == optuna.trial.TrialState.COMPLETE:
        values = list(values) if isinstance(values, list | tuple) else [values]
        if any(v is None or not math.isfinite(float(v)) for v in values):
            trial.set_user_attr("error", f"the run's value is {values}: not a number")
            state, values = optuna.trial.TrialState.FAIL, None
    else:
        values = None
    study.tell(trial.number, values=values, state=state, skip_if_finished=True)  # `trial` may be another Study's
    return True


def first_line(error: BaseException | str) -> str:
    """An error in one line. submitit's "job with path ... / has not produced any output (state: ...)" (a job
    killed, or out of memory) becomes that: the first line alone is only the path."""
    text = str(error).strip()
    if not text:
        return type(error).__name__
    lines = text.splitlines()
    if len(lines) > 1 and lines[1].startswith("has not produced any output"):
        state = lines[1].split("(state:")[-1].rstrip(")").strip()
        return f"its job ended without a result (state {state}: killed, or out of memory?); {lines[0]}"
    return lines[0]
