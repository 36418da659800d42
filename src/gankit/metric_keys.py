"""The names gankit logs under, in one place: read by the evaluation callback that logs them, the loggers
and dashboards that lay them out, and the report and sweeps that rank runs by them."""

from __future__ import annotations

METRICS = ("fid", "kid", "is", "precision_recall", "density_coverage", "modes")
# the `val/` keys each metric logs (modes: high_quality too for 2D points)
VAL_KEYS = {
    "fid": ("fid",),
    "kid": ("kid",),
    "is": ("is",),
    "precision_recall": ("precision", "recall"),
    "density_coverage": ("density", "coverage"),
    "modes": ("modes", "mode_kl", "high_quality"),
}
LOWER_IS_BETTER = {"val/fid", "val/kid", "val/mode_kl"}  # the others: higher is better
PICTURE_KEYS = ("val/samples", "val/mode_histogram", "val/scatter")  # what an evaluation draws
EVALUATIONS_TABLE = "val/evaluations"  # W&B: one row per evaluation, metrics and pictures
# x axes: generator updates, and thousands of real images seen by D (comparable across batch sizes)
STEP_METRICS = ("g_step", "kimg")


def val_keys(metrics, points: bool) -> list[str]:
    """The `val/` keys these metrics log; `high_quality` only for 2D points (the mixture features)."""
    return [f"val/{key}" for name in metrics for key in VAL_KEYS[name] if key != "high_quality" or points]
