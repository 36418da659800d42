"""A W&B workspace laid out for GANs (`python dashboard.py wandb --entity E --project P`).

Sections: quality (FID / KID / IS), coverage and collapse (precision / recall, density /
coverage, modes, mode KL, high quality, alerts, D's AUC), training health (losses, D's outputs,
gradient norms, learning rates), pictures (the latest sample grid, the evaluation's samples, mode
histogram or 2D scatter, the table of evaluations), and a runs table with the sweep's overrides
and each run's best values as columns. Quality and pictures are plotted against generator steps
(`g_step`, which gankit logs with every evaluation; gankit.loggers declares it as their x axis).

The panels are chosen from the metrics configuration the runs use (`conf/metrics/<name>.yaml`),
so every panel shows a key those runs log. Building needs no network (wandb-workspaces builds a
pydantic model); only `save()` talks to W&B.
"""

from __future__ import annotations

from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from gankit.metric_keys import (
    ADA_KEYS,
    CRITIC_KEYS,
    DIRECTION_WORDS,
    GENERALIZATION,
    LECAM_KEYS,
    direction,
    val_keys,
    wandb_best,
)

CONF = Path(__file__).resolve().parents[2] / "conf"
TRAINING_HEALTH = {
    "losses": ["train/d_loss", "train/g_loss"],
    "D outputs on real and fake (mean logit)": ["train/d_real", "train/d_fake"],
    "gradient norms (before clipping)": ["train/d_grad_norm", "train/g_grad_norm"],
    "learning rates": ["train/d_lr", "train/g_lr"],
}
QUALITY = ("fid", "kid", "is")
_TRAIN = [k for keys in TRAINING_HEALTH.values() for k in keys]


def metrics_config(name: str) -> dict:
    """A metrics choice's evaluation settings (conf/metrics/<name>.yaml over base.yaml), unresolved."""
    path = CONF / "metrics" / f"{name}.yaml"
    if not path.is_file():
        choices = sorted(p.stem for p in (CONF / "metrics").glob("*.yaml") if p.stem != "base")
        raise ValueError(f"--metrics {name!r} is not a metrics config; choose one of {', '.join(choices)}")
    config = OmegaConf.load(path)
    for parent in [d for d in config.get("defaults", []) if isinstance(d, str) and d != "_self_"]:
        config = OmegaConf.merge(metrics_config(parent), config)  # e.g. digits_heldout -> digits -> base
    config.pop("defaults", None)
    return OmegaConf.to_container(config, resolve=False)


def logged_keys(metrics: str) -> dict[str, list[str]]:
    """The keys a run with this metrics choice logs, by panel group: val, pictures, collapse, train."""
    config = metrics_config(metrics)
    if not config.get("evaluation"):  # metrics=none: training health and the sample grid only
        return {"val": [], "pictures": ["samples/grid"], "collapse": ["train/d_auc"], "train": _TRAIN}
    evaluation = config["evaluation"]
    points = "MixtureFeatures" in str(evaluation["features"].get("_target_", ""))
    val = val_keys(evaluation["metrics"], points)
    pictures = ["samples/grid", "val/evaluations"]
    pictures += ["val/scatter"] if points else ["val/samples"]
    pictures += ["val/mode_histogram"] if "modes" in evaluation["metrics"] else []
    collapse = ["collapse/alerts", "train/d_auc"] if config.get("collapse") else ["train/d_auc"]
    return {"val": val, "pictures": pictures, "collapse": collapse, "train": _TRAIN}


def workspace(
    entity: str,
    project: str,
    metrics: str = "digits",
    sweep: str | None = None,
    columns: list[str] | tuple[str, ...] = (),
    name: str | None = None,
    trials: bool = False,
    ada: bool = False,
    lecam: bool = False,
    critic: bool = False,
):
    """The workspace (not saved). `sweep`: only runs of that W&B group (a gankit multirun's group);
    `columns`: config keys shown in the runs table (the sweep's overrides, e.g. model.loss); `trials`: an
    Optuna search, whose runs table also shows each run's trial number and state (COMPLETE / PRUNED).
    `ada`, `lecam`, `critic`: the runs use model.ada, model.lecam, metrics.critic (their panels: ADA's p and
    r_t, the LeCam penalty, the critic's estimates beside the other held-out metrics)."""
    import wandb_workspaces.reports.v2 as wr
    import wandb_workspaces.workspaces as ws

    keys = logged_keys(metrics)
    val = keys["val"]

    def line(key: str, x: str = "g_step") -> wr.LinePlot:
        words = DIRECTION_WORDS[direction(key)] if direction(key) != "max" else ""
        return wr.LinePlot(title=f"{key} ({words})" if words else key, x=x, y=[key], title_x=x)

    quality = [line(k) for k in val if k.removeprefix("val/") in QUALITY]
    held_out = [line(k) for k in val if k.removeprefix("val/") in GENERALIZATION]
    if critic:  # once, at the end of training: held-out against training images, the copier's tell
        held_out.append(wr.LinePlot(title="critic: held-out vs training (lower is better)", x="g_step",
                                    y=list(CRITIC_KEYS), title_x="g_step"))  # fmt: skip
    limited = [line(k, x="trainer/global_step") for k in (*(ADA_KEYS if ada else ()), *(LECAM_KEYS if lecam else ()))]
    coverage = [line(k) for k in val if k.removeprefix("val/") not in (*QUALITY, *GENERALIZATION)]
    coverage += [line("collapse/alerts")] if "collapse/alerts" in keys["collapse"] else []
    coverage.append(line("train/d_auc", x="trainer/global_step"))
    health = [
        wr.LinePlot(title=title, x="trainer/global_step", y=list(group), title_x="trainer/global_step")
        for title, group in TRAINING_HEALTH.items()
    ]
    pictures = [
        wr.MediaBrowser(title=key, media_keys=[key], num_columns=4)
        for key in keys["pictures"]
        if key != "val/evaluations"
    ]
    if "val/evaluations" in keys["pictures"]:
        pictures.append(wr.WeavePanelSummaryTable(table_name="val/evaluations"))
    best = [f"summary:{k}.{wandb_best(k)}" for k in val]
    best += [f"summary:{k}.last" for k in CRITIC_KEYS] if critic else []
    best += [f"summary:{ADA_KEYS[0]}.last"] if ada else []
    trial = ["summary:trial/number", "summary:trial/state"] if trials else []  # an Optuna search: pruned runs
    runs = ws.RunsetSettings(
        filters=[ws.Metric("Group") == sweep] if sweep else "",
        pinned_columns=["run:displayName", *trial, *(f"config:{c}" for c in columns), *best, "summary:g_step.max"],
    )
    sections = [
        ws.Section(name="Quality", panels=quality, is_open=True),
        ws.Section(name="Coverage and collapse", panels=coverage, is_open=True),
        ws.Section(name="Generalisation (held-out data)", panels=held_out, is_open=True),
        ws.Section(name="Limited data (ADA, LeCam)", panels=limited, is_open=True),
        ws.Section(name="Pictures", panels=pictures, is_open=True),
        ws.Section(name="Training health", panels=health, is_open=False),
    ]
    sections = [s for s in sections if s.panels]
    title = name or f"gankit: {sweep or project} ({metrics})"
    return ws.Workspace(entity=entity, project=project, name=title, sections=sections, runset_settings=runs)


def panel_keys(view) -> set[str]:
    """Every metric key a workspace's panels show (x axes excluded)."""
    found: set[str] = set()
    for section in view.sections:
        for panel in section.panels:
            for attribute in ("y", "media_keys"):
                found.update(str(k) for k in getattr(panel, attribute, None) or [])
            if getattr(panel, "table_name", None):
                found.add(panel.table_name)
    return found


_MISSING = object()


def _is_value(node) -> bool:
    return node is not _MISSING and not isinstance(node, (DictConfig, dict))


def sweep_settings(sweep_dir: Path) -> dict:
    """From a local multirun directory: its W&B group, the override keys (runs-table columns), the metrics choice."""
    import yaml

    from gankit.runs import find_jobs

    jobs = find_jobs(sweep_dir)
    if not jobs:
        raise FileNotFoundError(f"no runs under {sweep_dir}")
    keys = dict.fromkeys(o.split("=", 1)[0].lstrip("+~") for job in jobs for o in job.overrides if "=" in o)
    config = OmegaConf.create(jobs[0].config)
    # config values only: a group choice (model=..., experiment=...) is not a key of the logged config
    columns = [k for k in keys if _is_value(OmegaConf.select(config, k, default=_MISSING))]
    hydra = yaml.safe_load((jobs[0].path / ".hydra" / "hydra.yaml").read_text())["hydra"]
    if hydra.get("mode") != "MULTIRUN":
        raise ValueError(
            f"{sweep_dir} is a single run, not a sweep (W&B groups a multirun's jobs): use --project alone"
        )
    sweep = str(hydra["sweep"]["dir"])
    if "${" in sweep:  # saved unresolved: the folder given (or the sweep above a job folder given)
        given = Path(sweep_dir).resolve()
        sweep = str(given.parent if (given / ".hydra").is_dir() else given)
    group = f"{hydra['job']['name']}-{Path(sweep).name}"  # as gankit.training names it
    from gankit.sweeps import STUDY_FILE

    trials = (Path(sweep) / STUDY_FILE).is_file() or (Path(sweep_dir) / STUDY_FILE).is_file()
    configs = [OmegaConf.create(job.config) for job in jobs]
    uses = {  # the optional panels, where any job of the sweep logs their keys
        name: any(OmegaConf.select(c, key, default=None) for c in configs)
        for name, key in (("ada", "model.ada"), ("lecam", "model.lecam"), ("critic", "metrics.critic.enabled"))
    }
    metrics = hydra["runtime"]["choices"].get("metrics")
    return {"sweep": group, "columns": columns, "metrics": metrics, "trials": trials, **uses}
