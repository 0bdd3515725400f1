"""fedloom.sim — simulate a federation on one machine: the driver, its options, partitioners, executors.

The curated names below are the simulation's public API (``tests/test_public_api.py``
pins them); everything else in the subpackage is internal.
"""

from fedloom.server.rounds import AsyncSettings
from fedloom.sim.adversary import Adversary
from fedloom.sim.clock import ClientSpeeds
from fedloom.sim.config import SimConfig
from fedloom.sim.driver import simulate
from fedloom.sim.executor import Executor, SequentialExecutor
from fedloom.sim.history import RoundSummary, SimulationResult
from fedloom.sim.options import Environment, Evaluation, Recording
from fedloom.sim.parallel import ParallelExecutor
from fedloom.sim.partition import iid, partition
from fedloom.sim.progress import ProgressPrinter
from fedloom.sim.tasks import build_task, resume_config, simulate_config

__all__ = [
    "Adversary",
    "AsyncSettings",
    "ClientSpeeds",
    "Environment",
    "Evaluation",
    "Executor",
    "ParallelExecutor",
    "ProgressPrinter",
    "Recording",
    "RoundSummary",
    "SequentialExecutor",
    "SimConfig",
    "SimulationResult",
    "build_task",
    "iid",
    "partition",
    "resume_config",
    "simulate",
    "simulate_config",
]
