"""A local emulator of the Gemini Interactions API for deep-research agents (see docs/emulator.md)."""

from .app import create_app
from .server import RunningEmulator, run_in_thread
from .settings import EmulatorSettings, SettingsError

__all__ = ["EmulatorSettings", "RunningEmulator", "SettingsError", "create_app", "run_in_thread"]
