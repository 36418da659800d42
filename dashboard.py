"""Build and save a W&B workspace laid out for GANs:

    python dashboard.py wandb --entity E --project P [--sweep GROUP] [--metrics digits] [--columns model.loss ...]
    python dashboard.py wandb --entity E --project P --sweep-dir logs/train/multiruns/<time>

--sweep-dir reads a local sweep: its W&B group, the overrides as runs-table columns, the metrics
choice, and whether its runs use ADA, LeCam or the critic (--ada / --lecam / --critic say so without one).
--dry-run prints the layout without saving (saving is the only step that needs the network and W&B
credentials). Offline, `python report.py <sweep dir>` gives the same comparison in one HTML file.
"""

import argparse
import sys
from pathlib import Path


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="target", required=True)
    w = sub.add_parser("wandb", help="a W&B workspace (wandb-workspaces)")
    w.add_argument("--entity", required=True)
    w.add_argument("--project", required=True)
    w.add_argument("--sweep", default=None, help="only the runs of this W&B group (a multirun's: <task>-<sweep time>)")
    w.add_argument("--sweep-dir", type=Path, default=None, help="a local sweep directory: group, columns, metrics")
    w.add_argument("--metrics", default=None, help="the runs' metrics choice (conf/metrics/): digits by default")
    w.add_argument("--columns", nargs="*", default=[], help="config keys shown in the runs table")
    w.add_argument("--name", default=None, help="the workspace's name")
    for flag, what in (("ada", "model.ada"), ("lecam", "model.lecam"), ("critic", "metrics.critic.enabled")):
        w.add_argument(f"--{flag}", action="store_true", help=f"the runs use {what}: its panels (found in --sweep-dir)")
    w.add_argument("--dry-run", action="store_true", help="print the layout; save nothing")
    args = parser.parse_args()
    from gankit.dashboards import panel_keys, sweep_settings, workspace

    try:
        sweep, columns, metrics, trials = args.sweep, list(args.columns), args.metrics, False
        uses = {"ada": args.ada, "lecam": args.lecam, "critic": args.critic}
        if args.sweep_dir is not None:
            found = sweep_settings(args.sweep_dir)
            sweep, metrics, trials = sweep or found["sweep"], metrics or found["metrics"], found["trials"]
            columns += [c for c in found["columns"] if c not in columns]
            uses = {name: used or found[name] for name, used in uses.items()}
        view = workspace(args.entity, args.project, metrics or "digits", sweep, columns, args.name, trials, **uses)
    except (ValueError, FileNotFoundError) as error:
        print(f"dashboard.py: {error}", file=sys.stderr)
        return 1
    for section in view.sections:
        print(f"{section.name}: {', '.join(getattr(p, 'title', None) or p.table_name for p in section.panels)}")
    print(f"runs: {f'the W&B group {sweep}' if sweep else 'every run of the project'}")
    print(f"runs table: {', '.join(view.runset_settings.pinned_columns)}")
    print(f"{len(panel_keys(view))} keys in {sum(len(s.panels) for s in view.sections)} panels")
    if args.dry_run:
        return 0
    try:
        view.save()
    except Exception as error:  # no network, no credentials, no such project: one message
        print(
            f"dashboard.py: the workspace could not be saved to W&B ({type(error).__name__}: {error})", file=sys.stderr
        )
        return 1
    print(f"Saved: {view.url}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
