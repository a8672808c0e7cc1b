"""What every `modeldeck` command shares: exit codes, the user-facing error, the profiler and manager."""

from __future__ import annotations

import sys
from typing import Any

EXIT_OK = 0
EXIT_FAILURE = 1
EXIT_USAGE = 2
#: `plan`: the model does not fit anywhere (or not at the requested level).
EXIT_NO_FIT = 3


class CliError(Exception):
    """A problem the user can fix; printed without a traceback, exit status 2."""


def open_profiler(simulate: str | None) -> Any:
    from app.core.hardware.simulated import SimulationSpecError
    from app.core.hardware_profiler import HardwareProfiler

    try:
        return HardwareProfiler(simulate=simulate)
    except SimulationSpecError as err:
        raise CliError(str(err)) from err


def user_manager(profiler: Any, *, preload: bool = True) -> Any:
    """A manager for this process, with the user's settings (its preload list, unless ``preload`` is
    False, shows in status as held)."""
    from app.core.model_resource_manager import ModelResourceManager
    from app.core.settings import SettingsError, load_settings

    try:
        settings = load_settings()
    except SettingsError as err:
        raise CliError(str(err)) from err
    from app.core.calibration import CalibrationStore

    manager = ModelResourceManager(profiler=profiler, registry=user_registry(), settings=settings.manager_settings(),
                                   calibration=CalibrationStore())
    for problem in manager.preload() if preload else ():
        print(f"modeldeck: warning: preload {problem}", file=sys.stderr)
    return manager


def user_registry() -> Any:
    from app.core.model_registry import ModelRegistry

    registry = ModelRegistry()
    for problem in registry.problems:
        print(f"modeldeck: warning: {problem}", file=sys.stderr)
    return registry


def check_simulate(spec: str | None) -> None:
    """Parse a ``--simulate`` spec now, so a bad one is one line before anything starts."""
    if spec is None:
        return
    from app.core.hardware.simulated import SimulationSpecError, parse_spec

    try:
        parse_spec(spec)
    except SimulationSpecError as err:
        raise CliError(str(err)) from err
