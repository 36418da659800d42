"""`report.py`: one self-contained HTML page comparing the jobs of a run or sweep directory.

The page holds a job table (overrides, best and last value of every `val/` metric, generator
steps, wall time, alerts; sortable by any column), interactive curves of each `val/` metric
against generator steps with all jobs overlaid (plotly, its JavaScript inlined; matplotlib
pictures when plotly is missing or `static=True`), each job's last sample grid and mode histogram
(or 2D scatter), the best job's grid large, and for Optuna sweeps the trials and parameter
importances. Pictures are embedded as data URIs: the file opens offline, from anywhere, with
nothing loaded from outside it. It reads what runs already write (gankit.runs), so it works on
finished, running and failed runs alike; a job without metrics is listed with its status.
"""

from __future__ import annotations

import base64
import html
import io
import math
import warnings
from datetime import datetime
from pathlib import Path

from gankit.metric_keys import ADA_KEYS, DIRECTION_WORDS, best_value, direction
from gankit.runs import Job, find_jobs, optuna_study

_CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:24px;color:#222;max-width:1400px}
h1{font-size:22px;margin-bottom:4px} h2{font-size:18px;margin-top:32px;border-bottom:1px solid #ddd}
.meta{color:#666;font-size:13px} .warn{background:#fff4e5;border-left:4px solid #f0a020;padding:6px 10px;margin:4px 0}
table{border-collapse:collapse;font-size:13px} th,td{border:1px solid #ddd;padding:4px 8px;text-align:right}
th{background:#f4f4f6;cursor:pointer;position:sticky;top:0;user-select:none} th:hover{background:#e6e6ee}
td.l,th.l{text-align:left} tr:hover td{background:#fafaff} .best{font-weight:bold;color:#0a6d2c}
.status-finished{color:#0a6d2c} .status-failed{color:#b00020} .status-running{color:#8a6d00}
.status-pruned{color:#6a4c93} .status-fail{color:#b00020}
.charts{display:flex;flex-wrap:wrap;gap:12px} .chart{width:660px}
.jobs{display:flex;flex-wrap:wrap;gap:16px} .job{border:1px solid #ddd;padding:8px;width:420px}
.job img{max-width:100%;image-rendering:pixelated} .job h3{font-size:14px;margin:0 0 6px 0}
.hero img{width:512px;image-rendering:pixelated}
"""

_SORT_JS = """
document.querySelectorAll('table.sortable').forEach(function(table){
  table.querySelectorAll('th').forEach(function(th, col){
    th.addEventListener('click', function(){
      var body = table.tBodies[0], rows = Array.from(body.rows);
      var asc = th.dataset.order !== 'asc'; th.dataset.order = asc ? 'asc' : 'desc';
      rows.sort(function(a, b){
        var x = a.cells[col].dataset.v ?? a.cells[col].textContent;
        var y = b.cells[col].dataset.v ?? b.cells[col].textContent;
        var nx = parseFloat(x), ny = parseFloat(y);
        var c = (!isNaN(nx) && !isNaN(ny)) ? nx - ny : (isNaN(nx) ? 1 : 0) - (isNaN(ny) ? 1 : 0) || x.localeCompare(y);
        return asc ? c : -c;
      });
      rows.forEach(function(r){ body.appendChild(r); });
    });
  });
});
"""


def write_report(root: Path, out: Path | None = None, static: bool = False) -> Path:
    """Build the page for the run or sweep under `root`; return the file written (default root/report.html)."""
    root = Path(root)
    jobs = find_jobs(root)
    if not jobs:
        raise FileNotFoundError(
            f"no runs under {root}: a run directory holds .hydra/config.yaml (give a run's or a sweep's directory, "
            "e.g. logs/train/multiruns/<time>)"
        )
    plotly = None if static else _plotly()
    metrics = sorted({key for job in jobs for key in job.keys("val/")}, key=_metric_order)
    best_metric, best_mode = _best_metric(jobs, metrics)
    parts = [
        f"<h1>gankit report: {html.escape(str(root))}</h1>",
        f"<p class=meta>{len(jobs)} job(s): {_status_counts(jobs)}. Written {datetime.now():%Y-%m-%d %H:%M}."
        + (f" Best job by {best_metric} ({best_mode})." if best_metric else "")
        + "</p>",
        *[f"<div class=warn>{html.escape(job.name)}: {html.escape(p)}</div>" for job in jobs for p in job.problems],
        "<h2>Jobs</h2><p class=meta>Click a column to sort. Best values per column in green.</p>",
        _job_table(jobs, metrics),
        "<h2>Curves</h2>",
        _curves(jobs, metrics, plotly),
        *_augmentation(jobs, plotly),
        "<h2>Samples</h2>",
        _pictures(jobs, best_metric, best_mode),
        _optuna(root, plotly),
    ]
    script = f"<script>{plotly.offline.get_plotlyjs()}</script>" if plotly is not None else ""
    page = (
        f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>gankit report: {html.escape(root.name)}</title>"
        f"<style>{_CSS}</style>{script}</head><body>{''.join(parts)}<script>{_SORT_JS}</script></body></html>"
    )
    out = Path(out) if out else root / "report.html"
    out.write_text(page, encoding="utf-8")
    return out


def _plotly():
    try:
        import plotly
        import plotly.graph_objects  # noqa: F401
        import plotly.offline  # noqa: F401
    except ImportError:
        return None
    return plotly


_ORDER = ["val/fid", "val/kid", "val/is", "val/precision", "val/recall", "val/density", "val/coverage"]
_ORDER += ["val/modes", "val/mode_kl", "val/high_quality"]


def _metric_order(key: str):
    return (_ORDER.index(key), key) if key in _ORDER else (len(_ORDER), key)


def _best(values: list[float], key: str, mode: str | None = None) -> float | None:
    return best_value((v for v in values if not math.isnan(v)), key, mode)


def _best_metric(jobs: list[Job], metrics: list[str]) -> tuple[str | None, str]:
    """The metric the runs chose their best checkpoint by (metrics.evaluation.best_metric), else the first one."""
    for job in jobs:
        evaluation = (job.config.get("metrics") or {}).get("evaluation") or {}
        if evaluation.get("best_metric") in metrics:
            return evaluation["best_metric"], evaluation.get("best_mode", "min")
    if metrics:
        return metrics[0], direction(metrics[0])
    return None, "min"


def _status_counts(jobs: list[Job]) -> str:
    counts: dict[str, int] = {}
    for job in jobs:
        counts[job.status] = counts.get(job.status, 0) + 1
    return ", ".join(f"{n} {status}" for status, n in counts.items())


def _format(value: float | None) -> str:
    if value is None:
        return ""
    return "nan" if isinstance(value, float) and math.isnan(value) else f"{value:.4g}"


def _duration(seconds: float | None) -> str:
    if seconds is None:
        return ""
    return f"{seconds:.0f} s" if seconds < 90 else f"{seconds / 60:.1f} min"


def _overrides(job: Job) -> dict[str, str]:
    return dict(o.split("=", 1) if "=" in o else (o, "") for o in job.overrides)


def _cell(value, css: str = "", text: str | None = None) -> str:
    """A table cell: the raw value in data-v (what sorting compares), the formatted one shown."""
    if text is None:
        text = _format(value) if isinstance(value, float) else ("" if value is None else str(value))
    raw = "" if value is None else html.escape(str(value), quote=True)
    return f"<td data-v='{raw}'{f' class={css}' if css else ''}>{html.escape(text)}</td>"


def _override_columns(jobs: list[Job]) -> tuple[list[str], dict[str, str]]:
    """The override keys whose values differ between jobs (in the order first seen), and those every job shares."""
    keys = list(dict.fromkeys(k for job in jobs for k in _overrides(job)))
    values = {k: {_overrides(job).get(k) for job in jobs} for k in keys}
    varying = [k for k in keys if len(values[k]) > 1]
    shared = {k: next(iter(values[k])) for k in keys if len(values[k]) == 1}
    return varying, shared


def _labeller(jobs: list[Job]):
    """Short names for legends: the job and its overrides that differ from the other jobs'."""
    varying, _ = _override_columns(jobs)

    def label(job: Job) -> str:
        own = _overrides(job)
        differing = " ".join(f"{k}={own[k]}" for k in varying if k in own)
        return f"{job.name}: {differing}" if differing else job.name

    return label


def _job_table(jobs: list[Job], metrics: list[str]) -> str:
    columns, shared = _override_columns(jobs)
    header = ["job", "status", *columns]
    header += [f"{m.removeprefix('val/')} {kind}" for m in metrics for kind in ("best", "last")]
    header += ["g_steps", "wall time", "alerts"]
    table = []
    for job in jobs:
        overrides = _overrides(job)
        cells = [
            job.name,
            job.status + (f": {job.message}" if job.message else ""),
            *(overrides.get(c, "") for c in columns),
        ]
        for m in metrics:
            values = job.series(m)[1]
            cells += [_best(values, m), values[-1] if values else None]
        cells += [job.g_steps, job.seconds, len(job.alerts)]
        table.append(cells)
    # the best value of each metric column over the jobs, highlighted
    first = 2 + len(columns)
    winners = {}
    for i, m in enumerate(metrics):
        for j in (first + 2 * i, first + 2 * i + 1):
            winners[j] = _best([row[j] for row in table if row[j] is not None], m)
    head = "".join(f"<th class={'l' if i < first else 'r'}>{html.escape(h)}</th>" for i, h in enumerate(header))
    body = []
    for row, job in zip(table, jobs, strict=True):
        tds = []
        for i, cell in enumerate(row):
            if i < first:
                css = f"l status-{job.status.split()[0]}" if i == 1 else "l"
                tds.append(f"<td class='{css}'>{html.escape(str(cell))}</td>")
            elif i == len(row) - 2:  # wall time
                tds.append(_cell(cell, text=_duration(cell)))
            else:
                best = winners.get(i) is not None and cell == winners.get(i) and len(jobs) > 1
                tds.append(_cell(cell, "best" if best else ""))
        body.append(f"<tr>{''.join(tds)}</tr>")
    common = " ".join(f"{k}={v}" for k, v in shared.items())
    note = f"<p class=meta>Every job: <code>{html.escape(common)}</code></p>" if common and len(jobs) > 1 else ""
    return f"{note}<table class=sortable><thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>"


def _curves(jobs: list[Job], metrics: list[str], plotly) -> str:
    _label = _labeller(jobs)
    if not metrics:
        evaluating = any((job.config.get("metrics") or {}).get("evaluation") for job in jobs)
        why = "none has been logged yet" if evaluating else "these runs evaluate nothing (metrics=none)"
        return f"<p class=meta>No val/ metrics: {why}.</p>"
    charts = []
    for m in metrics:
        series = [(job, *job.series(m)) for job in jobs]
        series = [(job, xs, ys) for job, xs, ys in series if xs]
        if plotly is not None:
            go = plotly.graph_objects
            figure = go.Figure(
                [
                    go.Scatter(
                        x=xs,
                        y=ys,
                        mode="lines+markers",
                        name=_label(job) + (" (pruned)" if job.status == "pruned" else ""),
                        line={"dash": "dot"} if job.status == "pruned" else {},
                        marker={"symbol": ["circle"] * (len(xs) - 1) + ["x"]} if job.status == "pruned" else {},
                    )
                    for job, xs, ys in series
                ]
            )
            words = DIRECTION_WORDS[direction(m)]
            figure.update_layout(
                title=f"{m} ({words})" if words else m,
                xaxis_title="generator step",
                yaxis_title=m,
                height=380,
                width=650,
                margin=dict(l=50, r=10, t=40, b=40),
                legend=dict(font=dict(size=10), orientation="h", yanchor="top", y=-0.25),
            )
            body = figure.to_html(full_html=False, include_plotlyjs=False, config={"displaylogo": False})
        else:
            body = f"<img alt='{html.escape(m)}' src='{_line_png(m, series, _label)}'>"
        charts.append(f"<div class=chart data-metric='{html.escape(m)}'>{body}</div>")
    return f"<div class=charts>{''.join(charts)}</div>"


AUGMENTATION_KEYS = ADA_KEYS  # ADA's probability and its overfitting heuristic


def _augmentation(jobs: list[Job], plotly) -> list[str]:
    """ADA's p and r_t against generator steps, for the runs that use it."""
    keys = [k for k in AUGMENTATION_KEYS if any(job.series(k)[0] for job in jobs)]
    if not keys:
        return []
    note = "<p class=meta>Adaptive augmentation (model.ada): p rises while r_t is above its target.</p>"
    return ["<h2>Augmentation (ADA)</h2>", note, _curves(jobs, keys, plotly)]


def _line_png(metric: str, series, _label) -> str:
    import matplotlib.pyplot as plt

    from gankit import plots  # noqa: F401  (selects the Agg backend)

    figure, axes = plt.subplots(figsize=(6.5, 3.8), dpi=100)
    for job, xs, ys in series:
        pruned = job.status == "pruned"  # dotted, ending in an x where the pruner stopped it
        (line,) = axes.plot(xs, ys, marker="o", markersize=3, ls=":" if pruned else "-",
                            label=_label(job)[:60] + (" (pruned)" if pruned else ""))  # fmt: skip
        if pruned:
            axes.plot(xs[-1:], ys[-1:], marker="x", markersize=9, color=line.get_color())
    axes.set(title=metric, xlabel="generator step", ylabel=metric)
    axes.legend(fontsize=7)
    return _figure_uri(figure)


def _figure_uri(figure) -> str:
    """A matplotlib figure as a PNG data URI (closed afterwards)."""
    import matplotlib.pyplot as plt

    figure.tight_layout()
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png")
    plt.close(figure)
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode()


def _data_uri(path: Path) -> str:
    return "data:image/png;base64," + base64.b64encode(path.read_bytes()).decode()


def _img(path: Path | None, alt: str, css: str = "") -> str:
    if path is None:
        return f"<p class=meta>no {html.escape(alt)} yet</p>"
    caption = f"<figcaption class=meta>{html.escape(path.name)}</figcaption>"
    return f"<figure><img class='{css}' alt='{html.escape(alt)}' src='{_data_uri(path)}'>{caption}</figure>"


def _pictures(jobs: list[Job], best_metric: str | None, best_mode: str) -> str:
    _label = _labeller(jobs)
    parts = []
    scored = [(job, _best(job.series(best_metric)[1], best_metric, best_mode)) for job in jobs] if best_metric else []
    scored = [(job, v) for job, v in scored if v is not None]
    if scored:
        value = best_value([v for _, v in scored], best_metric, best_mode)
        best_job = next(job for job, v in scored if v == value)
        grids = best_job.pictures("samples", "")
        parts.append(
            f"<div class=hero><h3>Best job: {html.escape(_label(best_job))} ({best_metric} {value:.4g})</h3>"
            + _img(grids[-1] if grids else None, "sample grid")
            + "</div>"
        )
    cards = []
    for job in jobs:
        grids = job.pictures("samples", "")
        modes = job.pictures("eval", "modes_") or job.pictures("eval", "scatter_")
        cards.append(
            f"<div class=job data-job='{html.escape(job.name)}'><h3>{html.escape(_label(job))}</h3>"
            f"<p class=meta>{html.escape(job.status)}</p>"
            + _img(grids[-1] if grids else None, "sample grid")
            + _img(modes[-1] if modes else None, "mode histogram or scatter")
            + "</div>"
        )
    return "".join(parts) + f"<div class=jobs>{''.join(cards)}</div>"


def _optuna(root: Path, plotly) -> str:
    with warnings.catch_warnings():  # distributions stored by older optuna versions warn when read
        warnings.simplefilter("ignore", FutureWarning)
        return _optuna_section(root, plotly)


def _optuna_section(root: Path, plotly) -> str:
    try:
        study = optuna_study(root)
    except Exception as error:  # a study being written, an unreachable server, another optuna's schema
        return f"<h2>Optuna study</h2><div class=warn>study unreadable: {html.escape(str(error))}</div>"
    if study is None:
        return ""
    import optuna

    from gankit.sweeps import read_study_file

    trials = sorted(study.get_trials(deepcopy=False), key=lambda t: t.number)
    params = sorted({p for t in trials for p in t.params})
    directions = [d.name.lower() for d in study.directions]
    heads = ["trial", "state", *[f"value {d}" for d in directions], "G steps run", "note", *params]
    head = "".join(f"<th>{html.escape(h)}</th>" for h in heads)
    rows = []
    for t in trials:
        values = t.values or [None] * len(directions)
        note = t.user_attrs.get("error", "")
        if t.state == optuna.trial.TrialState.PRUNED:
            note = f"pruned at step {t.last_step}"
        cells = [t.number, t.state.name, *values, t.user_attrs.get("g_steps"), note, *(t.params.get(p) for p in params)]
        css = "" if t.state == optuna.trial.TrialState.COMPLETE else f" class=status-{t.state.name.lower()}"
        rows.append(f"<tr{css}>" + "".join(_cell(c) for c in cells) + "</tr>")
    info = read_study_file(root) or {"storage": f"sqlite:///{Path(root).resolve() / 'optuna.db'}"}
    counts = {state.name: sum(t.state == state for t in trials) for state in optuna.trial.TrialState}
    summary = ", ".join(f"{n} {name.lower()}" for name, n in counts.items() if n)
    out = [
        f"<h2>Optuna study: {html.escape(study.study_name)}</h2>",
        f"<p class=meta>{len(trials)} trials ({summary}), directions {', '.join(directions)}. Open it live with "
        f"<code>optuna-dashboard {html.escape(str(info['storage']))}</code>.</p>",
        _pruning_savings(trials),
        f"<table class=sortable><thead><tr>{head}</tr></thead><tbody>{''.join(rows)}</tbody></table>",
    ]
    complete = [t for t in trials if t.state == optuna.trial.TrialState.COMPLETE]
    if len(complete) >= 2 and params and len(directions) == 1:
        try:
            importances = optuna.importance.get_param_importances(study)
        except Exception as error:  # e.g. every parameter constant
            out.append(f"<p class=meta>Parameter importances unavailable: {html.escape(str(error))}</p>")
        else:
            out.append(_importance_chart(importances, plotly))
    return "".join(out)


def _pruning_savings(trials) -> str:
    """Generator steps the trials ran against what they would have run unpruned (a complete trial's length)."""
    import optuna

    pruned = [t for t in trials if t.state == optuna.trial.TrialState.PRUNED]
    full = max(
        (t.user_attrs.get("g_steps", 0) for t in trials if t.state == optuna.trial.TrialState.COMPLETE), default=0
    )
    ran = [t.user_attrs.get("g_steps") for t in trials if t.state.is_finished()]
    if not pruned or not full or any(r is None for r in ran):
        return ""
    total, unpruned = sum(ran), full * len(ran)
    return (
        f"<p class=meta>Pruning: {len(pruned)} of {len(ran)} finished trials stopped early; they ran "
        f"{total:,} generator steps in all, {total / unpruned:.0%} of the {unpruned:,} of {len(ran)} full-length "
        f"trials ({full:,} steps each).</p>"
    )


def _importance_chart(importances: dict[str, float], plotly) -> str:
    names, values = list(importances)[::-1], list(importances.values())[::-1]
    if plotly is not None:
        go = plotly.graph_objects
        figure = go.Figure(go.Bar(x=values, y=names, orientation="h"))
        figure.update_layout(
            title="Parameter importance (fANOVA)", xaxis_title="importance", height=120 + 30 * len(names), width=650
        )
        return (
            f"<div class=chart data-metric='importance'>{figure.to_html(full_html=False, include_plotlyjs=False)}</div>"
        )
    import matplotlib.pyplot as plt

    from gankit import plots  # noqa: F401

    figure, axes = plt.subplots(figsize=(6.5, 1 + 0.35 * len(names)), dpi=100)
    axes.barh(names, values)
    axes.set(title="Parameter importance (fANOVA)", xlabel="importance")
    return f"<img alt='importance' src='{_figure_uri(figure)}'>"
