"""The names gankit logs under, in one place: read by the evaluation callback that logs them, the loggers
and dashboards that lay them out, and the report and sweeps that rank runs by them."""

from __future__ import annotations

METRICS = ("fid", "kid", "is", "precision_recall", "density_coverage", "modes", "d_gap", "copying", "ppl")
GENERALIZATION = ("d_gap", "copying")  # need held-out data (data.limit / data.holdout)
# the `val/` keys each metric logs (modes: high_quality too for 2D points)
VAL_KEYS = {
    "fid": ("fid",),
    "kid": ("kid",),
    "is": ("is",),
    "precision_recall": ("precision", "recall"),
    "density_coverage": ("density", "coverage"),
    "modes": ("modes", "mode_kl", "high_quality"),
    "d_gap": ("d_gap",),  # D's mean logit, training minus held-out images: its overfitting
    "copying": ("copying",),  # Meehan et al.'s C_T: << 0 copies the training set, >> 0 underfits
    "ppl": ("ppl",),  # perceptual path length of a style-based G (gankit.metrics.ppl): lower is smoother
}
# metrics.critic.enabled (not in metrics.evaluation.metrics): the critic's estimates, once at the end
CRITIC_KEYS = ("val/critic", "val/critic_train")
LOWER_IS_BETTER = {
    "val/fid",
    "val/kid",
    "val/mode_kl",
    "val/d_gap",
    "val/ppl",
}  # the others: higher is better (C_T: near 0)
PICTURE_KEYS = ("val/samples", "val/mode_histogram", "val/scatter")  # what an evaluation draws
EVALUATIONS_TABLE = "val/evaluations"  # W&B: one row per evaluation, metrics and pictures
# x axes: generator updates, and thousands of real images seen by D (comparable across batch sizes)
STEP_METRICS = ("g_step", "kimg")


def val_keys(metrics, points: bool) -> list[str]:
    """The `val/` keys these metrics log; `high_quality` only for 2D points (the mixture features)."""
    return [f"val/{key}" for name in metrics for key in VAL_KEYS[name] if key != "high_quality" or points]
