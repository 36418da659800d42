"""Lightning callbacks: sample grids, evaluation, the collapse monitor and the non-finite loss guard."""

from gankit.callbacks.checkpoints import PeriodicCheckpoint
from gankit.callbacks.collapse import CollapseMonitor
from gankit.callbacks.critic import CriticCheck
from gankit.callbacks.evaluation import Evaluation
from gankit.callbacks.guard import NonFiniteLossGuard
from gankit.callbacks.preemption import Preempted, Preemption
from gankit.callbacks.samples import SampleGrid

__all__ = [
    "CollapseMonitor",
    "CriticCheck",
    "Evaluation",
    "NonFiniteLossGuard",
    "PeriodicCheckpoint",
    "Preempted",
    "Preemption",
    "SampleGrid",
]
