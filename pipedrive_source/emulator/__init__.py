"""A spec-faithful Pipedrive API emulator on 127.0.0.1 (see `server.run_emulator` and `__main__`)."""

from .app import EmulatorApp, EmulatorSettings
from .control import EmulatorControl, EmulatorControlError
from .server import EmulatorHandle, run_emulator

__all__ = [
    "EmulatorApp",
    "EmulatorControl",
    "EmulatorControlError",
    "EmulatorHandle",
    "EmulatorSettings",
    "run_emulator",
]
