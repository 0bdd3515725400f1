"""fedloom.server — the round engine shared by simulation and deployment."""

from fedloom.server.engine import (
    EngineState,
    EngineStateError,
    RoundEngine,
    RoundOutcome,
    RoundRecorder,
    RoundTask,
)
from fedloom.server.rounds import (
    AsyncLifecycle,
    AsyncSettings,
    ClientTask,
    ClosePolicy,
    Rounds,
    SyncRounds,
)

__all__ = [
    "AsyncLifecycle",
    "AsyncSettings",
    "ClientTask",
    "ClosePolicy",
    "EngineState",
    "EngineStateError",
    "RoundEngine",
    "RoundOutcome",
    "RoundRecorder",
    "RoundTask",
    "Rounds",
    "SyncRounds",
]
