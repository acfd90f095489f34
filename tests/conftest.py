"""Shared fixtures: a real Pipedrive emulator on 127.0.0.1 for every test module.

`emulator` (module-scoped): `run_emulator(seed=7, scale="tiny")` in a background thread. Its handle has
    .base_url     "http://127.0.0.1:<port>" (Pipedrive paths at its root: /api/v2/deals, /v1/leads, ...)
    .api_token    the valid API token ("emulator-token"; send it as the `x-api-token` header)
    .control      EmulatorControl: counts(), snapshot(table), stats(), reset_stats(), mutate(**body),
                  settings(**changes), expire_oauth(), reset_ratelimit()
    .company      the live Company object (thread mode), .settings the startup EmulatorSettings
A module's `emulator_settings` fixture, if it has one, adds startup settings (e.g. connector_fixtures'
`HIGHEST_BURST`).
A module gets a fresh company, but the tests inside one module share it (mutations accumulate).

`clean_emulator` (function-scoped): the same handle, with runtime settings (faults, limits, token lifetime)
restored to their startup values and rate-limit counters and stats reset before the test. Use it in tests
that change settings or read stats.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from pipedrive_source.emulator import EmulatorHandle, EmulatorSettings, run_emulator


@pytest.fixture(scope="module")
def emulator_settings() -> dict[str, Any]:
    """Startup settings of the module's `emulator` beyond seed and scale; a module overrides this fixture."""
    return {}


@pytest.fixture(scope="module")
def emulator(emulator_settings: dict[str, Any]) -> Iterator[EmulatorHandle]:
    with run_emulator(seed=7, scale="tiny", **emulator_settings) as handle:
        yield handle


@pytest.fixture
def clean_emulator(emulator: EmulatorHandle) -> EmulatorHandle:
    startup = {name: getattr(emulator.settings, name) for name in EmulatorSettings.runtime_fields()}
    emulator.control.settings(**startup)
    emulator.control.reset_ratelimit()
    emulator.control.reset_stats()
    return emulator


@pytest.fixture(scope="module")
def client(emu: EmulatorHandle) -> Iterator[httpx.Client]:
    """An HTTP client of the `emu` fixture a module defines, with its API token."""
    with httpx.Client(base_url=emu.base_url, headers={"x-api-token": emu.api_token}, timeout=30) as c:
        yield c
