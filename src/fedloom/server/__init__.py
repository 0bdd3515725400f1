"""fedloom.server — the round engine shared by simulation and deployment."""

from fedloom.server.engine import (
    EngineState,
    EngineStateError,
    RoundEngine,
    RoundOutcome,
    RoundRecorder,
    RoundTask,
)

__all__ = ["EngineState", "EngineStateError", "RoundEngine", "RoundOutcome", "RoundRecorder", "RoundTask"]
