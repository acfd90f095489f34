"""A library user's pipeline (`dlt.pipeline(pipeline_name="crm", dataset_name=...)` and `pipedrive_source()`)
run into another dataset than the one it loaded.

dlt keeps one state per pipeline on the machine and takes a dataset's own state back only when it is not
older than the machine's: after runs into `b`, a run back into `a` read on from `b`'s place, and the records
changed in between reached neither dataset, without a word (the pipeline script refused it, the library did
not). The source remembers its dataset in its own state and refuses such a run before any request; a
refresh that drops the source's state moves the pipeline, and a pipeline per dataset keeps each one whole.
A dataset the destination does not have yet is no such run: dlt starts the pipeline's state over there."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import dlt
import pytest
from dlt.common.typing import TRefreshMode
from dlt.pipeline.exceptions import PipelineStepFailed
from test_connector_cli import SECRET, assert_one_clear_line, run_cli, secret_emulator  # noqa: F401

from pipedrive_source import pipedrive_source
from pipedrive_source.destinations import duckdb as duckdb_destination
from pipedrive_source.emulator import EmulatorHandle
from pipedrive_source.errors import causes
from pipedrive_source.run import DATASET_KEY, SOURCE_SECTION, DatasetSwitch

ENTITIES = ["deals"]


def crm(workdir: Path, dataset: str, name: str = "crm", **options: Any) -> dlt.Pipeline:
    return dlt.pipeline(
        pipeline_name=name,
        destination=duckdb_destination(str(workdir / "crm.duckdb")),
        dataset_name=dataset,
        pipelines_dir=str(workdir / "pipelines"),
        **options,
    )


def run(emulator: EmulatorHandle, pipeline: dlt.Pipeline, refresh: TRefreshMode | None = None) -> None:
    source = pipedrive_source(
        api_token=emulator.api_token, base_url=emulator.base_url, entities=ENTITIES, backoff_base_s=0.01
    )
    pipeline.run(source, refresh=refresh)


def refused(emulator: EmulatorHandle, pipeline: dlt.Pipeline) -> DatasetSwitch:
    """The run's refusal; no request reached the emulator."""
    emulator.control.reset_stats()
    with pytest.raises(PipelineStepFailed) as failed:
        run(emulator, pipeline)
    assert emulator.control.stats()["total_requests"] == 0
    switch = next((c for c in causes(failed.value) if isinstance(c, DatasetSwitch)), None)
    assert switch is not None, failed.value
    return switch


def deals(pipeline: dlt.Pipeline) -> set[tuple[Any, ...]]:
    with pipeline.sql_client() as client:
        return {tuple(row) for row in client.execute_sql("SELECT id, title FROM deals")}


def truth(emulator: EmulatorHandle) -> set[tuple[Any, ...]]:
    return {(d["id"], d["title"]) for d in emulator.control.snapshot("deals")}


def change_deals(emulator: EmulatorHandle, seed: int) -> None:
    before = truth(emulator)
    emulator.control.mutate(seed=seed, updates=8, creates=3)
    assert truth(emulator) != before


def test_a_run_back_into_a_dataset_is_refused_before_any_request_until_a_refresh_moves_it(
    emulator: EmulatorHandle, tmp_path: Path
) -> None:
    run(emulator, crm(tmp_path, "a"))
    # a dataset not in the destination yet: dlt starts the pipeline's state over, and b loads in full
    run(emulator, crm(tmp_path, "b"))
    change_deals(emulator, seed=11)
    run(emulator, crm(tmp_path, "b"))  # the state is now newer than a's: dlt does not take a's back
    switch = refused(emulator, crm(tmp_path, "a"))
    message = str(switch)
    assert "The pipeline 'crm' loads the dataset b, not a" in message
    assert "pipeline_name='crm_a'" in message and "refresh='drop_sources'" in message

    moved = crm(tmp_path, "a")
    run(emulator, moved, refresh="drop_sources")
    assert deals(moved) == truth(emulator)
    assert moved.state["sources"][SOURCE_SECTION][DATASET_KEY] == "a"

    change_deals(emulator, seed=12)
    back = crm(tmp_path, "b")
    assert "loads the dataset a, not b" in str(refused(emulator, back))
    run(emulator, back, refresh="drop_sources")
    assert deals(back) == truth(emulator)


def test_a_pipeline_per_dataset_keeps_each_equal_to_pipedrive(
    emulator: EmulatorHandle, tmp_path: Path
) -> None:
    run(emulator, crm(tmp_path, "a"))
    run(emulator, crm(tmp_path, "b", name="crm_b"))
    change_deals(emulator, seed=13)
    run(emulator, crm(tmp_path, "a"))
    run(emulator, crm(tmp_path, "b", name="crm_b"))
    assert deals(crm(tmp_path, "a")) == truth(emulator) == deals(crm(tmp_path, "b", name="crm_b"))


def test_a_state_without_the_dataset_passes_and_gets_it(emulator: EmulatorHandle, tmp_path: Path) -> None:
    """A pipeline of an earlier version (its state does not name its dataset), and dev_mode's pipelines (a
    dataset of their own each, a fresh state each)."""
    pipeline = crm(tmp_path, "a")
    run(emulator, pipeline)
    with pipeline.managed_state() as state:  # as an earlier version left it
        del state["sources"][SOURCE_SECTION][DATASET_KEY]
    run(emulator, crm(tmp_path, "a"))
    assert crm(tmp_path, "a").state["sources"][SOURCE_SECTION][DATASET_KEY] == "a"

    for _ in range(2):
        dev = crm(tmp_path, "a", dev_mode=True)
        run(emulator, dev)
        assert deals(dev) == truth(emulator)


def test_the_script_refuses_a_full_refresh_of_some_tables_into_another_dataset_in_its_flags(
    secret_emulator: EmulatorHandle,  # noqa: F811
    tmp_path: Path,
) -> None:
    """`--full-refresh --entities deals` starts only the deals over: the persons would read on from the
    other dataset's place. The script passes any full refresh to the source, whose refusal it says with
    its flags (the library's words, `refresh=`, are no flag)."""
    both = ("--entities", "deals,persons")
    assert run_cli(tmp_path, secret_emulator, SECRET, *both).returncode == 0
    moved = run_cli(tmp_path, secret_emulator, SECRET, *both, "--dataset", "other", "--full-refresh")
    assert moved.returncode == 0, moved.stderr
    secret_emulator.control.reset_stats()
    some = run_cli(tmp_path, secret_emulator, SECRET, "--entities", "deals", "--full-refresh")
    assert some.returncode == 2, some.stdout + some.stderr
    assert_one_clear_line(
        some,
        "The pipeline 'pipedrive' loads the dataset other, not pipedrive",
        "--pipeline-name pipedrive_pipedrive",
        "--full-refresh of every table it holds",
    )
    assert "refresh=" not in some.stderr
    assert secret_emulator.control.stats()["total_requests"] == 0
