"""Crash and resume: `pipelines/pipedrive_pipeline.py` in a subprocess, SIGKILLed at distinct points across
extract, normalize and load, then run again: the destination equals the ground truth, with no duplicate
primary key, no orphaned child row and no lost row.

Kill points are observable conditions polled in a bounded loop, never timings: a number of requests the
emulator has answered (extract), or dlt's package files appearing in a stage of the pipeline's working
directory (`normalize/extracted` = extracted, `load/new` = normalizing, `load/normalized/*/new_jobs` =
normalized, `started_jobs` / `completed_jobs` = loading, `load/loaded` = loaded but the script not finished).

CI chains the kills on one pipeline (each killed run starts by resuming what the previous one left) and
checks the truth after the chain; with RELIABILITY_SLOW=1 every point is followed by its own resume and check,
and the kill between normalize's commit and its cleanup (a dlt 1.31 bug that `pipedrive_source.recovery`
works around) runs too; CI makes that moment's files in-process instead.
"""

from __future__ import annotations

import os
import re
import shutil
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import dlt
import duckdb
import pytest
from connector_fixtures import refuse_a_changed_deal
from dlt.pipeline.exceptions import PipelineStepFailed
from reliability_support import (
    EXACT_ENV,
    SYNC_DB,
    Script,
    ScriptRun,
    all_of,
    assert_equal_to_truth,
    assert_one_clear_line,
    files_in,
    ledger_logs,  # noqa: F401
    no_files,
    requests_served,
    run_main,
    script_module,
    secret_emulator,
    served_at_least,
)

from pipedrive_source import SyncMonitor
from pipedrive_source.deployment import Company, company_pipeline, prepare_run
from pipedrive_source.emulator import EmulatorHandle

pytestmark = pytest.mark.usefixtures("ledger_logs")
SLOW = pytest.mark.skipif(not os.environ.get("RELIABILITY_SLOW"), reason="set RELIABILITY_SLOW=1 (~6 min)")

TABLES = [
    "deals",
    "deal_products",
    "persons",
    "organizations",
    "activities",
    "notes",
    "leads",
    "users",
    "stages",
]
ENTITIES = ("--entities", ",".join(TABLES))
PIPELINE = "pipedrive"  # the script's default pipeline name
ONE_WORKER = {"LOAD__WORKERS": "1"}  # jobs load one by one: "some loaded, some not" is a state that exists


@dataclass(frozen=True)
class KillPoint:
    name: str
    stage: str  # extract | normalize | load
    condition: Callable[[EmulatorHandle, Path], Callable[[], bool]]


def _files(pattern: str, at_least: int = 1, more_than_now: bool = False):
    def make(emulator: EmulatorHandle, pipelines: Path) -> Callable[[], bool]:
        base = sum(1 for _ in pipelines.glob(f"{PIPELINE}/{pattern}")) if more_than_now else 0
        return files_in(pipelines / PIPELINE, pattern, base + at_least)

    return make


def _normalized_and_cleaned_up(emulator: EmulatorHandle, pipelines: Path) -> Callable[[], bool]:
    """The package is normalized and its extracted copy deleted (the moment between has tests of its own)."""
    root = pipelines / PIPELINE
    return all_of(files_in(root, "load/normalized/*"), no_files(root, "normalize/extracted/*"))


def _between_normalize_commit_and_cleanup(emulator: EmulatorHandle, pipelines: Path) -> Callable[[], bool]:
    root = pipelines / PIPELINE
    return all_of(files_in(root, "load/normalized/*/new_jobs/*"), files_in(root, "normalize/extracted/*"))


def _served(count: int):
    def make(emulator: EmulatorHandle, pipelines: Path) -> Callable[[], bool]:
        emulator.control.reset_stats()
        return served_at_least(emulator, count)

    return make


FIRST_RUN_POINTS = [
    KillPoint("first request answered", "extract", _served(1)),
    KillPoint("most pages read", "extract", _served(14)),
    KillPoint("package extracted", "normalize", _files("normalize/extracted/*")),
    KillPoint("normalizing", "normalize", _files("load/new/*")),
    KillPoint("normalized, load about to start", "load", _normalized_and_cleaned_up),
    KillPoint("first job loading", "load", _files("load/normalized/*/started_jobs/*")),
    KillPoint("some jobs loaded", "load", _files("load/normalized/*/completed_jobs/*", at_least=4)),
    KillPoint("package loaded, script not done", "load", _files("load/loaded/*", more_than_now=True)),
]
INCREMENTAL_POINTS = [
    KillPoint("incremental: first pages read", "extract", _served(3)),
    KillPoint("incremental: merge jobs loading", "load", _files("load/normalized/*/completed_jobs/*")),
]
RECONCILE_POINT = KillPoint(
    "reconcile: loaded, deletions not flagged yet", "load", _files("load/loaded/*", more_than_now=True)
)


@pytest.fixture(scope="module")
def crash_emulator() -> Iterator[EmulatorHandle]:
    with secret_emulator() as emulator:
        yield emulator


def kill_at(script: Script, point: KillPoint, *args: str) -> None:
    condition = point.condition(script.emulator, script.pipelines_dir)
    run = script.run_until(condition, *ENTITIES, *args)
    assert run.killed and run.returncode == -9, (point.name, run.returncode, run.stderr[-1500:])


def unfinished_extracts(pipelines: Path) -> list[Path]:
    """Folders dlt extracts into (`normalize/<16 hex>`): a completed extract removes its own."""
    return [p for p in pipelines.glob(f"{PIPELINE}/normalize/*") if re.fullmatch("[0-9a-f]{16}", p.name)]


def finish(script: Script, *args: str) -> ScriptRun:
    run = script.run(*ENTITIES, *args)
    assert run.returncode == 0, run.stderr[-2000:]
    assert "total:" in run.stdout
    return run


def test_killed_at_eleven_points_then_run_again_equals_the_truth(
    crash_emulator: EmulatorHandle, tmp_path: Path
) -> None:
    script = Script(crash_emulator, tmp_path, **ONE_WORKER)
    stages = set()
    for point in FIRST_RUN_POINTS:  # the very first sync, killed again and again
        kill_at(script, point)
        stages.add(point.stage)
    finish(script)
    assert_equal_to_truth(crash_emulator, tmp_path, TABLES)
    assert not unfinished_extracts(script.pipelines_dir)  # the killed extracts' folders are gone

    changes = crash_emulator.control.mutate(seed=41, creates=6, updates=20, deletes=4, archives=2)
    for point in INCREMENTAL_POINTS:
        kill_at(script, point)
    kill_at(script, RECONCILE_POINT, "--reconcile")
    assert stages == {"extract", "normalize", "load"}
    finish(script, "--reconcile")  # a reconcile run killed before it flagged: the user runs it again
    assert changes["deleted"]
    assert_equal_to_truth(crash_emulator, tmp_path, TABLES)


def test_the_run_after_a_crash_also_syncs(
    crash_emulator: EmulatorHandle,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """What a kill between normalize and load leaves (a normalized package), made in-process with the script's
    own pipeline and source; then one run of the script, as a cron job or a user would do."""
    first = run_main(monkeypatch, capsys, crash_emulator, tmp_path, *ENTITIES)
    assert first.returncode == 0, first.stderr
    crash_emulator.control.mutate(seed=43, creates=3, updates=10, deletes=3)
    pipeline = script_pipeline(tmp_path)
    pipeline.extract(script_source(tmp_path), loader_file_format="parquet")
    pipeline.normalize()
    assert pipeline.list_normalized_load_packages()  # pending, as after the kill
    crash_emulator.control.mutate(seed=44, creates=2, updates=10)  # changes the next run must bring too
    again = run_main(monkeypatch, capsys, crash_emulator, tmp_path, *ENTITIES, "--reconcile")
    assert again.returncode == 0, again.stderr
    assert "resumed: loaded 1 package(s)" in again.stdout
    assert_equal_to_truth(crash_emulator, tmp_path, TABLES)


def test_killed_before_the_state_was_saved_locally_reads_nothing_twice(
    crash_emulator: EmulatorHandle,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """dlt commits the extracted package (state inside) and saves the state locally just after: killed in
    between, the local state is a run behind its package. Made in-process (state.json put back as it was
    before the extract). Once the package is loaded, the run takes the newer state from the destination."""
    first = run_main(monkeypatch, capsys, crash_emulator, tmp_path, *ENTITIES)
    assert first.returncode == 0, first.stderr
    state_file = tmp_path / "pipelines" / PIPELINE / "state.json"
    saved = state_file.read_bytes()
    before = changed_deals(crash_emulator.control.mutate(seed=51, creates=3, updates=12))
    pipeline = script_pipeline(tmp_path)
    pipeline.extract(script_source(tmp_path), loader_file_format="parquet")
    assert state_file.read_bytes() != saved
    state_file.write_bytes(saved)
    after = changed_deals(crash_emulator.control.mutate(seed=52, creates=2, updates=8))
    assert after and before - after
    again = run_main(monkeypatch, capsys, crash_emulator, tmp_path, *ENTITIES)
    assert again.returncode == 0, again.stderr
    assert "resumed: loaded 1 package(s)" in again.stdout
    assert rows_loaded(again.stdout, "deals") == len(after)  # the package's deals were not read again
    assert_equal_to_truth(crash_emulator, tmp_path, TABLES)


def rows_loaded(stdout: str, table: str) -> int:
    """The `rows` column of a table's line in the script's summary."""
    line = next(line for line in stdout.splitlines() if line.split()[:1] == [table])
    return int(line.split()[1].replace(",", ""))


def test_a_deleted_working_folder_is_restored_from_the_destination(
    crash_emulator: EmulatorHandle,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """The README's last resort for a stuck pipeline: delete its working folder and run again. The run takes
    the state of the last completed load from the destination: it continues incrementally, nothing lost."""
    first = run_main(monkeypatch, capsys, crash_emulator, tmp_path, *ENTITIES)
    assert first.returncode == 0, first.stderr
    crash_emulator.control.mutate(seed=49, creates=2, updates=8)
    shutil.rmtree(tmp_path / "pipelines" / PIPELINE)
    again = run_main(monkeypatch, capsys, crash_emulator, tmp_path, *ENTITIES)
    assert again.returncode == 0, again.stderr
    assert 0 < total_loaded(again.stdout) < total_loaded(first.stdout) / 4  # the changes, not everything
    assert_equal_to_truth(crash_emulator, tmp_path, TABLES)


def total_loaded(stdout: str) -> int:
    line = next(line for line in stdout.splitlines() if line.startswith("total: "))
    return int(line.split()[1].replace(",", ""))


def script_args(workdir: Path) -> Any:
    return script_module().parse_args(["--pipelines-dir", str(workdir / "pipelines"), *ENTITIES])


def script_pipeline(workdir: Path) -> Any:
    """The script's own pipeline (run_main has set the environment it reads)."""
    return script_module().make_pipeline(script_args(workdir), False)


def script_source(workdir: Path) -> Any:
    return script_module().make_source(script_args(workdir), SyncMonitor(), None)


@pytest.mark.parametrize("dlt_retried", [False, True], ids=["as the kill left it", "after dlt retried"])
def test_a_stale_extracted_copy_is_removed_and_the_run_syncs(
    crash_emulator: EmulatorHandle,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    dlt_retried: bool,
) -> None:
    """The files a kill between normalize's commit (load/new/<id> renamed to load/normalized/<id>) and its
    cleanup (deleting normalize/extracted/<id>) leaves, made in-process: the extracted package is copied aside
    before normalize and put back after. With `dlt_retried`, dlt's own normalize has then run once more, as a
    run without the recovery does: it re-normalizes the leftover into load/new/<id> and fails renaming it."""
    first = run_main(monkeypatch, capsys, crash_emulator, tmp_path, *ENTITIES)
    assert first.returncode == 0, first.stderr
    crash_emulator.control.mutate(seed=45, creates=3, updates=10)
    pipeline = script_pipeline(tmp_path)
    pipeline.extract(script_source(tmp_path), loader_file_format="parquet")
    (load_id,) = pipeline.list_extracted_load_packages()
    extracted = Path(pipeline.working_dir, "normalize", "extracted", load_id)
    shutil.copytree(extracted, tmp_path / "aside")
    pipeline.normalize()
    shutil.copytree(tmp_path / "aside", extracted)
    if dlt_retried:
        with pytest.raises(PipelineStepFailed, match="Directory not empty"):
            pipeline.normalize()
        assert Path(pipeline.working_dir, "load", "new", load_id).is_dir()
    crash_emulator.control.mutate(seed=46, creates=2, updates=6)
    again = run_main(monkeypatch, capsys, crash_emulator, tmp_path, *ENTITIES)
    assert again.returncode == 0, again.stderr
    notice = "discarded a half-committed normalized copy" if dlt_retried else "removed the extracted copy"
    assert f"package {load_id}: {notice}" in again.stdout
    assert "resumed: loaded 1 package(s)" in again.stdout
    assert not script_pipeline(tmp_path).has_pending_data
    assert_equal_to_truth(crash_emulator, tmp_path, TABLES)


@pytest.mark.filterwarnings("ignore::DeprecationWarning")  # pydantic v1 shims inside dagster
def test_a_dagster_run_after_a_crash_also_syncs(
    crash_emulator: EmulatorHandle, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The Dagster assets (pipelines/dagster_definitions.py) after a crash that left a normalized package."""
    dg = pytest.importorskip("dagster", reason="Dagster is an optional extra: uv sync --extra dagster")
    dagster_dlt = pytest.importorskip("dagster_dlt", reason="dagster-dlt is in the dagster extra")
    for name, value in {
        "SOURCES__PIPEDRIVE__API_TOKEN": crash_emulator.api_token,
        "SOURCES__PIPEDRIVE__BASE_URL": crash_emulator.base_url,
        **EXACT_ENV,
    }.items():
        monkeypatch.setenv(name, value)
    destination = dlt.destinations.duckdb(credentials=str(tmp_path / "crm.duckdb"))
    pipelines = str(tmp_path / "pipelines")
    assets = dagster_module().company_assets(
        Company(), destination=destination, pipelines_dir=pipelines, entities=TABLES
    )

    def materialize() -> Any:
        return dg.materialize(assets, resources={"dlt": dagster_dlt.DagsterDltResource()})

    assert materialize().success
    before = changed_deals(crash_emulator.control.mutate(seed=47, creates=3, updates=12))
    pipeline = company_pipeline(Company(), destination, pipelines)
    pipeline.extract(prepare_run(pipeline, TABLES).source, loader_file_format="parquet")
    pipeline.normalize()
    assert pipeline.list_normalized_load_packages()  # pending, as after the kill
    after = changed_deals(crash_emulator.control.mutate(seed=48, creates=2, updates=8))
    assert after and before - after  # the pending package holds deals this run must not read again
    result = materialize()
    assert result.success
    deals = next(
        event.materialization.metadata["rows_loaded"].value
        for event in result.get_asset_materialization_events()
        if event.asset_key == dg.AssetKey(["pipedrive", "deals"])
    )
    assert deals == len(after)  # the package was loaded, not dropped and read again (dagster-dlt drops it)
    assert not pipeline.has_pending_data
    assert_equal_to_truth(crash_emulator, tmp_path, TABLES)


def changed_deals(changes: dict[str, Any]) -> set[Any]:
    return set(changes["created"].get("deals", [])) | set(changes["updated"].get("deals", []))


def dagster_module() -> Any:
    import importlib.util

    path = Path(__file__).resolve().parent.parent / "pipelines" / "dagster_definitions.py"
    spec = importlib.util.spec_from_file_location("dagster_definitions_crash", path)
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@SLOW
def test_killed_between_normalize_commit_and_cleanup_then_run_again(
    crash_emulator: EmulatorHandle, tmp_path: Path
) -> None:
    script = Script(crash_emulator, tmp_path, **ONE_WORKER)
    finish(script)
    for attempt in range(3):  # the moment is short: try again if the run got past it
        crash_emulator.control.mutate(seed=50 + attempt, creates=2, updates=8)
        condition = _between_normalize_commit_and_cleanup(crash_emulator, script.pipelines_dir)
        if script.run_until(condition, *ENTITIES).killed:
            break
    else:
        pytest.fail("never caught the run between normalize's commit and its cleanup")
    assert "removed the extracted copy an interrupted normalize left" in finish(script).stdout
    assert_equal_to_truth(crash_emulator, tmp_path, TABLES)


MORE_POINTS = [  # only in the slow variant
    KillPoint("a few pages read", "extract", _served(4)),
    KillPoint("incremental: normalizing", "normalize", _files("load/new/*")),
]


@SLOW
@pytest.mark.parametrize("point", FIRST_RUN_POINTS + INCREMENTAL_POINTS + MORE_POINTS, ids=lambda p: p.name)
def test_each_kill_point_alone_then_resume(point: KillPoint, tmp_path: Path) -> None:
    with secret_emulator() as emulator:
        script = Script(emulator, tmp_path, **ONE_WORKER)
        if point.name.startswith("incremental"):
            finish(script)
            emulator.control.mutate(seed=42, creates=6, updates=20, deletes=4, archives=2)
        kill_at(script, point)
        finish(script)  # finishes the pending package, then syncs
        finish(script, "--reconcile")
        assert_equal_to_truth(emulator, tmp_path, TABLES)
        assert not unfinished_extracts(script.pipelines_dir)


@pytest.mark.parametrize("repair", ["fix the destination", "--drop-pending"])
def test_a_load_the_destination_refuses_says_what_to_do_and_the_repair_loses_nothing(
    repair: str, crash_emulator: EmulatorHandle, tmp_path: Path
) -> None:
    """dlt keeps a package the destination refused pending, and every run loaded it again first and failed the
    same way, with dlt's traceback and no way out. Now the run says which table and package, the destination's
    error, that nothing read is lost, and what to do; a later run tries the package once, reads nothing from
    Pipedrive and says the same; each way out the message names ends in the emulator's data."""
    script = Script(crash_emulator, tmp_path)
    finish(script)
    db = tmp_path / SYNC_DB
    crash_emulator.control.mutate(seed=61, creates=2, updates=8)
    refuse_a_changed_deal(crash_emulator, db)

    failed = script.run(*ENTITIES)
    assert failed.returncode == 1
    line = assert_one_clear_line(
        failed,
        "The destination refused to load table deals of load package ",
        "Conversion Error",
        "--drop-pending",
    )
    assert "The records read are kept in that package" in line and "Nothing is lost" in line
    package = line.split("load package ")[1].split(":")[0]
    assert (tmp_path / "pipelines" / PIPELINE / "load" / "normalized" / package).is_dir()

    served = requests_served(crash_emulator)
    again = script.run(*ENTITIES)
    assert again.returncode == 1
    assert assert_one_clear_line(again) == line  # the same package, the same advice
    assert requests_served(crash_emulator) == served  # it stopped before reading Pipedrive

    crash_emulator.control.mutate(seed=62, creates=1, updates=5)  # changes the repairing run must bring too
    with duckdb.connect(str(db)) as con:  # the column back as dlt made it
        con.execute("ALTER TABLE pipedrive.deals ALTER title SET DATA TYPE VARCHAR")
    if repair == "--drop-pending":
        repaired = finish(script, "--drop-pending")
        assert f"dropped 1 pending load package(s) ({package})" in repaired.stdout
    else:
        repaired = finish(script)
        assert f"resumed: loaded 1 package(s) an interrupted run left ({package})" in repaired.stdout
    assert_equal_to_truth(crash_emulator, tmp_path, TABLES)
    assert "--drop-pending: no pending load package" in finish(script, "--drop-pending").stdout
    assert_equal_to_truth(crash_emulator, tmp_path, TABLES)
