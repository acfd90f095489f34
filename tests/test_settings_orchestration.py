"""The settings the connector does not read (`deployment.unknown_settings`), named in a Dagster run's event
log as the pipeline script names them before its run (Airflow's first task says the same lines: its tests
need Airflow's own environment).

Needs the optional extra: `uv sync --extra dagster`."""

from __future__ import annotations

from pathlib import Path
from types import ModuleType

import pytest

pytest.importorskip("dagster", reason="Dagster is an optional extra: uv sync --extra dagster")

from test_dagster import assets_for, credentials, definitions, event_log_warnings  # noqa: E402, F401

from pipedrive_source.emulator import EmulatorHandle  # noqa: E402

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")  # pydantic v1 shims inside dagster


def test_a_misspelt_setting_is_named_in_the_run_s_log_as_the_script_names_it(
    definitions: ModuleType,  # noqa: F811
    credentials: EmulatorHandle,  # noqa: F811
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The pipeline script names a key or section of the settings that the connector does not read
    (`destinaton`: DuckDB loaded instead of the warehouse meant); a Dagster run passed over it."""
    monkeypatch.setenv("PIPEDRIVE__DESTINATON", "postgres")
    monkeypatch.setenv("SOURCE__PIPEDRIVE__PAGE_SIZE", "5")
    warnings = event_log_warnings(assets_for(definitions, tmp_path), ["users"])
    assert (
        "settings: destinaton (PIPEDRIVE__DESTINATON) names no setting of the connector, which reads none of "
        "it: did you mean destination?" in warnings
    )
    assert (
        "settings: [source.pipedrive] (SOURCE__PIPEDRIVE__PAGE_SIZE) names no section of the connector, "
        "which reads none of it: did you mean [sources.pipedrive]?" in warnings
    )
