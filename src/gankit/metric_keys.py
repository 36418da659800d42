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
# model.ada: its probability and its overfitting heuristic r_t; model.lecam: the penalty D's loss adds (weight x R)
ADA_KEYS = ("train/ada_p", "train/ada_rt")
LECAM_KEYS = ("train/lecam",)
LOWER_IS_BETTER = {
    "val/fid",
    "val/kid",
    "val/mode_kl",
    "val/d_gap",
    "val/ppl",
    "val/critic",  # the critic's divergence between held-out data and G's samples
}
NEAR_ZERO_IS_BETTER = {"val/copying"}  # C_T: << 0 copies the training set, >> 0 underfits
# val/critic_train: read beside val/critic, low for a copier and for a good generator alike; the rest: costs
NO_BEST = {"val/critic_train", "val/critic_seconds"}


def direction(key: str) -> str:
    """How a key ranks runs: "min", "max", "zero" (closest to 0) or "none" (a diagnostic, not a score)."""
    if key in LOWER_IS_BETTER:
        return "min"
    if key in NEAR_ZERO_IS_BETTER:
        return "zero"
    return "none" if key in NO_BEST else "max"


def best_value(values, key: str, mode: str | None = None) -> float | None:
    """The best of `values` for `key` (`mode` "min" / "max" overrides its direction); None for a diagnostic."""
    values = list(values)
    way = mode or direction(key)
    if not values or way == "none":
        return None
    if way == "zero":
        return min(values, key=abs)
    return min(values) if way == "min" else max(values)


def wandb_best(key: str) -> str:
    """The W&B summary that keeps a key's best: "min" or "max"; "last" where W&B has no such summary (C_T's nearest
    0) or the key is not a score."""
    return direction(key) if direction(key) in ("min", "max") else "last"


DIRECTION_WORDS = {"min": "lower is better", "max": "higher is better", "zero": "near 0 is best", "none": ""}
PICTURE_KEYS = ("val/samples", "val/mode_histogram", "val/scatter")  # what an evaluation draws
EVALUATIONS_TABLE = "val/evaluations"  # W&B: one row per evaluation, metrics and pictures
# x axes: generator updates, and thousands of real images seen by D (comparable across batch sizes)
STEP_METRICS = ("g_step", "kimg")


def val_keys(metrics, points: bool) -> list[str]:
    """The `val/` keys these metrics log; `high_quality` only for 2D points (the mixture features)."""
    return [f"val/{key}" for name in metrics for key in VAL_KEYS[name] if key != "high_quality" or points]
