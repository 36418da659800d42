"""What finished, running and failed runs left on disk, read back: the jobs of a run or sweep
directory, their overrides, status, metric history (from whichever logger wrote one), pictures and
Optuna study. `report.py` builds its page from these; nothing here needs the network or a W&B account.

Metric histories are read from, in order: the csv logger's `csv/metrics.csv`, TensorBoard event
files (`tensorboard/`), or a W&B offline run (`wandb/offline-run-*/run-*.wandb`, the record log
W&B itself syncs from; read with W&B's protobuf definitions). A file cut mid-write (a running job)
yields the rows before the cut.
"""

from __future__ import annotations

import csv
import io
import json
import re
import struct
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

import yaml

Row = dict[str, float]  # one logged step: key -> value (g_step among them when known)
_STAMP = re.compile(r"^\[(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d),\d+\]")


@dataclass
class Job:
    """One training run: a directory with `.hydra/config.yaml`."""

    path: Path
    name: str  # relative to the report's root ("0", "1", ... in a sweep)
    overrides: list[str] = field(default_factory=list)
    config: dict = field(default_factory=dict)
    rows: list[Row] = field(default_factory=list)
    source: str | None = None  # where the metrics came from
    problems: list[str] = field(default_factory=list)  # what could not be read
    status: str = "unknown"  # finished | failed | preempted | pruned | running or stopped
    message: str = ""  # the error, for a failed job
    seconds: float | None = None  # wall time, from the log's first and last time stamps
    alerts: list[str] = field(default_factory=list)

    def series(self, key: str) -> tuple[list[float], list[float]]:
        """(generator steps, values) of one metric, in logging order."""
        points = [(row["g_step"], row[key]) for row in self.rows if key in row and "g_step" in row]
        return [p[0] for p in points], [p[1] for p in points]

    def keys(self, prefix: str = "val/") -> list[str]:
        return sorted({k for row in self.rows for k in row if k.startswith(prefix)})

    @property
    def g_steps(self) -> int | None:
        steps = [row["g_step"] for row in self.rows if "g_step" in row]
        return int(max(steps)) if steps else None

    def pictures(self, folder: str, prefix: str) -> list[Path]:
        """PNG files `<folder>/<prefix>g_step_*.png`, oldest first."""
        return sorted((self.path / folder).glob(f"{prefix}g_step_*.png"))


def find_jobs(root: Path) -> list[Job]:
    """The runs under `root` (itself one run, or a sweep of numbered jobs), in job order."""
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"{root} is not a directory")
    dirs = [p.parent.parent for p in root.glob("**/.hydra/config.yaml")]
    dirs = [d for d in dirs if not any(other != d and other in d.parents for other in dirs)]  # outermost runs

    def order(d: Path):
        rel = d.relative_to(root).parts
        numbered = [re.fullmatch(r"(?:trial_)?(\d+)", p) for p in rel]  # job numbers, Optuna's trial_<n>
        return [(0, int(m.group(1)), "") if m else (1, 0, p) for m, p in zip(numbered, rel, strict=True)]

    return [read_job(d, str(d.relative_to(root)) if d != root else root.name) for d in sorted(dirs, key=order)]


def read_job(path: Path, name: str) -> Job:
    job = Job(path=path, name=name)
    hydra_dir = path / ".hydra"
    try:
        job.config = yaml.safe_load((hydra_dir / "config.yaml").read_text()) or {}
    except (OSError, yaml.YAMLError) as error:
        job.problems.append(f"config unreadable ({error})")
    if not isinstance(job.config, dict):
        job.problems.append(".hydra/config.yaml is not a mapping of settings")
        job.config = {}
    try:
        job.overrides = yaml.safe_load((hydra_dir / "overrides.yaml").read_text()) or []
    except (OSError, yaml.YAMLError):
        job.overrides = []
    job.rows, job.source = read_metrics(path, job.problems, _n_critic(job.config))
    _read_log(job)
    return job


def _n_critic(config: dict) -> int:
    model = config.get("model") if isinstance(config, dict) else None
    return int(model.get("n_critic", 1) or 1) if isinstance(model, dict) else 1


def read_metrics(path: Path, problems: list[str], n_critic: int = 1) -> tuple[list[Row], str | None]:
    """The run's metric rows from the first logger output found; `problems` gets what went wrong."""
    readers = [
        (lambda: sorted(path.glob("csv/**/metrics.csv")), read_csv, "csv"),
        (lambda: sorted(path.glob("tensorboard/**/events.out.tfevents.*")), read_tensorboard, "tensorboard"),
        (lambda: sorted(path.glob("wandb/*run-*/run-*.wandb")), read_wandb, "wandb"),
    ]
    for find, reader, name in readers:
        files = find()
        if not files:
            continue
        rows: list[Row] = []
        for file in files:
            try:
                rows += reader(file, problems)
            except Exception as error:  # a damaged file: say so, keep going
                problems.append(f"{file.relative_to(path)}: {error}")
        if rows:
            return _with_g_step(rows, n_critic), name
        problems.append(f"no metrics in {', '.join(str(f.relative_to(path)) for f in files)} yet")
        return [], None
    problems.append("no metrics written (no csv/, tensorboard/ or wandb/ logger output)")
    return [], None


def _with_g_step(rows: list[Row], n_critic: int) -> list[Row]:
    """Runs from before `g_step` was logged: derive it from Lightning's step (one G step per n_critic + 1 updates)."""
    for row in rows:
        if "g_step" not in row and "step" in row:
            row["g_step"] = float((int(row["step"]) + 1) // n_critic)
    return rows


def _number(text: str) -> float | None:
    try:
        return float(text)
    except (TypeError, ValueError):
        return None


def read_csv(file: Path, problems: list[str] | None = None) -> list[Row]:
    """Lightning's CSVLogger file; a last line cut mid-write (a running job) is dropped."""
    text = file.read_text()
    lines = text.splitlines()
    if lines and not text.endswith("\n"):
        lines = lines[:-1]
    rows = []
    for record in csv.DictReader(io.StringIO("\n".join(lines))):
        if None in record:  # more cells than columns: a damaged line
            continue
        row = {k: v for k, v in ((k, _number(v)) for k, v in record.items() if k) if v is not None}
        if row:
            rows.append(row)
    return rows


def read_tensorboard(file: Path, problems: list[str] | None = None) -> list[Row]:
    from tensorboard.backend.event_processing.event_file_loader import EventFileLoader

    by_step: dict[int, Row] = {}
    for event in EventFileLoader(str(file)).Load():
        for value in event.summary.value:
            number = _tensor_number(value)
            if number is not None:
                by_step.setdefault(event.step, {"step": float(event.step)})[value.tag] = number
    return [by_step[s] for s in sorted(by_step)]


def _tensor_number(value) -> float | None:
    if value.HasField("simple_value"):
        return float(value.simple_value)
    if value.HasField("tensor") and value.tensor.dtype in (1, 2) and not value.tensor.tensor_shape.dim:
        import numpy as np
        from tensorboard.util import tensor_util

        return float(np.asarray(tensor_util.make_ndarray(value.tensor)))
    return None


def wandb_records(file: Path) -> Iterator:
    """The protobuf records of a W&B run file (`run-<id>.wandb`): a LevelDB-style log of 32 KiB blocks
    after a 7-byte header; records longer than a block are split (first / middle / last). Stops at a
    record cut mid-write."""
    from wandb.proto import wandb_internal_pb2 as pb

    data = Path(file).read_bytes()
    if data[:4] != b":W&B":
        raise ValueError("not a W&B run file")
    block, pos, pending = 32768, 7, b""
    while pos + 7 <= len(data):
        left = block - pos % block
        if left < 7:  # block trailer
            pos += left
            continue
        _, length, kind = struct.unpack("<IHB", data[pos : pos + 7])
        if kind == 0:  # zero padding to the end of the block
            pos += left
            continue
        payload = data[pos + 7 : pos + 7 + length]
        pos += 7 + length
        if len(payload) < length:
            return
        if kind in (2, 3):  # first / middle
            pending = (b"" if kind == 2 else pending) + payload
            continue
        record = pb.Record()
        record.ParseFromString(pending + payload if kind == 4 else payload)
        pending = b""
        yield record


def read_wandb(file: Path, problems: list[str] | None = None) -> list[Row]:
    """Scalar history rows (the fields W&B stores for images and tables are not metrics); a record damaged
    mid-file ends the reading there, keeping the rows before it."""
    from google.protobuf.message import DecodeError

    rows = []
    try:
        for record in wandb_records(file):
            if record.WhichOneof("record_type") != "history":
                continue
            items = {item.key or "/".join(item.nested_key): item.value_json for item in record.history.item}
            media = [k.removesuffix("_type") for k in items if k.endswith("/_type")]  # "val/samples/"
            row = {}
            for key, text in items.items():
                value = _number(text)
                if value is not None and not key.startswith("_") and not any(key.startswith(m) for m in media):
                    row[key] = value
            if "trainer/global_step" in row:
                row["step"] = row.pop("trainer/global_step")
            rows.append(row)
    except DecodeError as error:
        if problems is None:
            raise
        problems.append(f"{file.name}: damaged after {len(rows)} rows ({error})")
    return rows


def wandb_layout(file: Path) -> dict[str, dict]:
    """What a W&B run declared with define_metric: name -> {step_metric, summary}."""
    out = {}
    for record in wandb_records(file):
        if record.WhichOneof("record_type") == "metric":
            metric = record.metric
            kinds = [k for k in ("min", "max", "mean", "last", "best", "none") if getattr(metric.summary, k, False)]
            out[metric.name or metric.glob_name] = {"step_metric": metric.step_metric, "summary": kinds}
    return out


def wandb_summary(file: Path) -> dict:
    """The run summary W&B computed (the last summary record wins per key)."""
    out = {}
    for record in wandb_records(file):
        if record.WhichOneof("record_type") == "summary":
            for item in record.summary.update:
                out[item.key or "/".join(item.nested_key)] = json.loads(item.value_json)
    return out


_SESSION = "] - Run directory: "  # gankit.training logs it when a session (a start or a resume) begins


def _log_file(job: Job) -> Path | None:
    """The console log: <task_name>.log, else the one .log file that is not error.log."""
    task = job.config.get("task_name", "train")
    if (job.path / f"{task}.log").is_file():
        return job.path / f"{task}.log"
    others = [p for p in sorted(job.path.glob("*.log")) if not p.name.startswith("error")]
    return others[0] if len(others) == 1 else None


def _stamp(line: str) -> datetime | None:
    match = _STAMP.match(line)
    return datetime.strptime(match.group(1), "%Y-%m-%d %H:%M:%S") if match else None


def _read_log(job: Job) -> None:
    """Status, wall time and alerts from the run's console log (and error.log).

    A run directory can hold several sessions (resumes with ckpt_path=auto): the status is the last
    session's, the wall time the sum of the sessions' (not the pauses between them)."""
    log_file = _log_file(job)
    lines = log_file.read_text(errors="replace").splitlines() if log_file else []
    starts = [i for i, line in enumerate(lines) if _SESSION in line] or [0]
    starts[0] = 0  # lines before the first session marker (start-up) belong to it
    sessions = [lines[a:b] for a, b in zip(starts, [*starts[1:], len(lines)], strict=True)]
    seconds = 0.0
    for session in sessions:
        stamps = [s for s in map(_stamp, session) if s]
        seconds += (stamps[-1] - stamps[0]).total_seconds() if len(stamps) >= 2 else 0.0
    job.seconds = seconds if lines else None
    job.alerts = [line.split("] - ", 1)[-1] for line in lines if "possible mode collapse" in line]
    # the last event decides: an end (Done / Preempted) not followed by a new session, or a later error.log
    events = {"] - Done: ": "finished", "] - Preempted": "preempted", "] - Pruned: ": "pruned"}
    ends = [(i, status) for i, line in enumerate(lines) for marker, status in events.items() if marker in line]
    end_index, end_status = ends[-1] if ends else (-1, "")
    end_time = _stamp(lines[end_index]) if ends else None
    error = job.path / "error.log"
    error_time = datetime.fromtimestamp(error.stat().st_mtime).replace(microsecond=0) if error.is_file() else None
    session_start = _stamp(lines[starts[-1]]) if lines and starts[-1] > 0 else None
    newer = [t for t in (end_time, session_start) if t is not None]
    if error_time is not None and all(error_time >= t for t in newer):
        job.status = "failed"
        text = [line for line in error.read_text(errors="replace").splitlines() if line.strip()]
        job.message = text[-1] if text else ""
    elif ends and starts[-1] <= end_index:
        job.status = end_status
    else:
        job.status = "running or stopped"


def optuna_study(root: Path):
    """The Optuna study of a sweep directory (hparams_search: study.yaml names its storage), or None."""
    import warnings

    from gankit.sweeps import load_sweep_study

    with warnings.catch_warnings():  # distributions stored by older optuna versions warn on load
        warnings.simplefilter("ignore", FutureWarning)
        return load_sweep_study(root)
