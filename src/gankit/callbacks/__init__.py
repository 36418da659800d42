"""Lightning callbacks: sample grids, evaluation, and the non-finite loss guard."""

from gankit.callbacks.evaluation import Evaluation
from gankit.callbacks.guard import NonFiniteLossGuard
from gankit.callbacks.samples import SampleGrid

__all__ = ["Evaluation", "NonFiniteLossGuard", "SampleGrid"]
