"""Lightning callbacks: sample grids and the non-finite loss guard."""

from gankit.callbacks.guard import NonFiniteLossGuard
from gankit.callbacks.samples import SampleGrid

__all__ = ["NonFiniteLossGuard", "SampleGrid"]
