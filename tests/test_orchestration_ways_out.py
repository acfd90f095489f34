"""What an orchestrator's failure tells the user to do is something that can be done there: a history that
needs a full refresh named the pipeline script's flags in Dagster's and Airflow's failures too (Airflow's
wording is checked in test_airflow.py, which CI runs where Airflow is installed)."""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path
from types import ModuleType

import dagster as dg
import pytest

sys.path.insert(0, str(Path(__file__).parent))
from test_dagster import assets_for, credentials, definitions, materialize  # noqa: E402, F401 (fixtures)

from pipedrive_source.emulator import EmulatorHandle  # noqa: E402

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")  # pydantic v1 shims inside dagster


def step_failure(result: dg.ExecuteInProcessResult) -> str:
    """The failure's own line (its cause, the connector's refusal as raised, stays below it)."""
    event = next(e for e in result.all_events if e.event_type_value == "STEP_FAILURE")
    return event.event_specific_data.user_failure_data.description


def test_dagster_names_its_own_full_refresh_for_a_history_that_needs_one(
    definitions: ModuleType,  # noqa: F811
    credentials: EmulatorHandle,  # noqa: F811
    tmp_path: Path,
) -> None:
    """deals loaded without history, then history on: the refusal named `--full-refresh --entities deals
    --history deals`, flags Dagster has not. It names the run config, and that run config works."""
    assert materialize(assets_for(definitions, tmp_path), ["deals"]).success
    assets = assets_for(definitions, tmp_path, history=["deals"])
    refused = materialize(assets, ["deals", "deals_history"])
    assert not refused.success
    said = step_failure(refused)
    assert "deals was loaded without history" in said
    assert "--full-refresh" not in said and "--history" not in said
    config = re.search(r"the run config (\{.*?\}\}\}\})", said)
    assert config, said
    assert json.loads(config.group(1)) == {"ops": {"pipedrive_tables": {"config": {"full_refresh": True}}}}
    done = materialize(assets, ["deals", "deals_history"], run_config=json.loads(config.group(1)))
    assert done.success
    assert materialize(assets, ["deals", "deals_history"]).success  # and on from there
