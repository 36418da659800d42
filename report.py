"""Compare the jobs of a run or sweep in one self-contained HTML page:
`python report.py logs/train/multiruns/<time>` writes report.html there (`--out` elsewhere).

Works offline on finished, running and failed runs: it reads what the runs wrote (csv/, tensorboard/
or wandb/ offline files, sample grids, mode histograms, an Optuna study). See gankit/report.py.
"""

import argparse
import sys
from pathlib import Path


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("directory", type=Path, help="a run directory, or a sweep directory of numbered jobs")
    parser.add_argument("--out", type=Path, default=None, help="the HTML file (default <directory>/report.html)")
    parser.add_argument(
        "--static", action="store_true", help="matplotlib pictures instead of interactive plotly charts"
    )
    args = parser.parse_args()
    from gankit.report import write_report  # after argparse: `--help` answers at once

    try:
        path = write_report(args.directory, args.out, static=args.static)
    except OSError as error:  # no such directory, no runs, an --out that cannot be written
        print(f"report.py: {error}", file=sys.stderr)
        return 1
    size = path.stat().st_size / 1e6
    print(f"Report: {path} ({size:.1f} MB, self-contained: open it in any browser, no network needed)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
