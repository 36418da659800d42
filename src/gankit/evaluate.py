"""evaluate(cfg): score a checkpoint with the evaluation metrics, print a table and write metrics.json.

The model and data are rebuilt from the training run's own config (`<run>/.hydra/config.yaml`,
found next to the checkpoint's `checkpoints/` folder), so a checkpoint is scored on exactly the
data and networks it was trained with; the metrics are the run's unless `metrics=` says otherwise.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from gankit.callbacks.evaluation import Evaluation
from gankit.checkpoints import load_module, pick_device
from gankit.critic import judge_generator
from gankit.training import _report_user_errors, check_data_kind, check_types

log = logging.getLogger(__name__)


def evaluate(cfg: DictConfig) -> dict[str, float]:
    """Scores of the checkpoint at `cfg.ckpt_path`; a user error exits with one message (see training.train)."""
    with _report_user_errors(Path(cfg.paths.output_dir)):
        return _evaluate(cfg)


def _evaluate(cfg: DictConfig) -> dict[str, float]:
    check_types(cfg)
    critic_mode = cfg.get("critic")
    if critic_mode not in (True, False, None, "only"):
        raise ValueError(f"critic={critic_mode!r} must be true, false or only (the critic without the sample metrics)")
    device = pick_device(cfg.device)
    train_cfg, module, g_step = load_module(cfg.ckpt_path, cfg.paths, device)
    if critic_mode == "only":
        return _critic_only(cfg, train_cfg, module, g_step)
    module.set_truncation(cfg.get("truncation_psi", 1.0))
    metrics_cfg, run_metrics = cfg.get("metrics"), train_cfg.get("metrics")
    chosen = metrics_cfg is not None and "_target_" in metrics_cfg.get("evaluation", {})
    if metrics_cfg and run_metrics and not chosen:  # +metrics.evaluation.num_samples=...: the run's, resized
        metrics_cfg = OmegaConf.merge(run_metrics, metrics_cfg)
    metrics_cfg = metrics_cfg or run_metrics
    if not metrics_cfg or "evaluation" not in metrics_cfg or "_target_" not in metrics_cfg.evaluation:
        raise ValueError("the run was trained without metrics: choose some, e.g. metrics=digits or metrics=inception")
    train_cfg.metrics = metrics_cfg
    train_cfg.metrics.evaluation.best_metric = None  # scoring only: no checkpoints written
    if cfg.get("ema") is not None:
        train_cfg.metrics.evaluation.ema = cfg.ema
    datamodule = instantiate(train_cfg.data)
    check_data_kind(train_cfg, datamodule)
    evaluation: Evaluation = instantiate(train_cfg.metrics.evaluation)

    if cfg.get("critic"):  # before minutes of evaluation: the critic needs held-out data
        _require_heldout(datamodule, "critic=true")
    evaluation.prepare(datamodule, device)
    results = {k: v.item() for k, v in evaluation.evaluate(module).items()}
    if cfg.get("critic"):
        critic = judge(module, datamodule, train_cfg, cfg.get("critic_steps"))
        results.update({f"val/{k}": v for k, v in critic.items()})
    evaluation.plots(g_step)
    report = {
        "ckpt_path": str(Path(cfg.ckpt_path).resolve()),
        "g_step": g_step,
        "metrics": results,
        "protocol": {
            **evaluation.protocol(),
            **({"truncation_psi": module.truncation_psi} if module.truncation_psi != 1 else {}),
        },
    }
    _write_report(cfg, report)
    return results


def _critic_only(cfg: DictConfig, train_cfg: DictConfig, module, g_step: int) -> dict[str, float]:
    """eval.py critic=only: the second stage alone, reported and written as the full evaluation is."""
    module.set_truncation(cfg.get("truncation_psi", 1.0))  # the critic judges the EMA generator where there is one
    datamodule = instantiate(train_cfg.data)
    check_data_kind(train_cfg, datamodule)
    _require_heldout(datamodule, "critic=only")
    results = {f"val/{k}": v for k, v in judge(module, datamodule, train_cfg, cfg.get("critic_steps")).items()}
    report = {"ckpt_path": str(Path(cfg.ckpt_path).resolve()), "g_step": g_step, "metrics": results,
              "protocol": {"critic": "metrics.critic of the run (critic_steps overrides its steps)"}}  # fmt: skip
    _write_report(cfg, report)
    return results


def _write_report(cfg: DictConfig, report: dict) -> None:
    """metrics.json in this run's folder, and the table on stdout."""
    out = Path(cfg.paths.output_dir) / "metrics.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2) + "\n")
    print(format_table(report))
    log.info("Wrote %s", out)


def _require_heldout(datamodule, setting: str) -> None:
    datamodule.setup("fit")
    if datamodule.heldout_set is None:
        raise ValueError(
            f"{setting} trains a critic on held-out data, and this run's data holds none out: score a run "
            "trained with data.limit=N or data.holdout=M"
        )


def judge(module, datamodule, train_cfg: DictConfig, steps: int | None) -> dict[str, float]:
    """eval.py critic=true: the critic of metrics.critic (the run's settings, else the defaults) on this checkpoint."""
    settings = dict(OmegaConf.to_container(train_cfg.get("metrics", {}).get("critic") or {}, resolve=True))
    settings.pop("_target_", None)
    settings.pop("enabled", None)
    if steps is not None:
        settings["steps"] = steps
    seed, max_samples = settings.pop("seed", 0), settings.pop("max_samples", 10000)
    return judge_generator(module, datamodule, max_samples, seed, **settings)


def format_table(report: dict) -> str:
    """The scores as a two-column table, followed by the protocol they were measured under."""
    rows = [("metric", "value"), *((k.removeprefix("val/"), f"{v:.4f}") for k, v in report["metrics"].items())]
    width = max(len(name) for name, _ in rows)
    lines = [f"{report['ckpt_path']} (generator step {report['g_step']})", ""]
    lines += [f"  {name:<{width}}  {value:>10}" for name, value in rows]
    lines.insert(3, f"  {'-' * width}  {'-' * 10}")
    lines += ["", "protocol:"] + [f"  {k}: {v}" for k, v in report["protocol"].items()]
    return "\n".join(lines)
