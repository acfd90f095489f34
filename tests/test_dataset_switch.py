"""One pipeline loading a dataset with `--history` and then another (`--dataset`): every later run of the
first loads, and what it holds stays equal to Pipedrive's.

dlt keeps one state and schema per pipeline on the machine, and takes the destination's only when it is not
older than the machine's: after runs into another dataset, a run into the first one goes on with theirs. A
`--history` run normalizes the deals' lists with dlt's own normalizer (nested tables without `_dlt_load_id`),
the other dataset's schema has them as the connector's child tables (with it), and the DuckDB destination's
question "does this table hold rows of another load?" asked about every table of the schema failed on such a
table when the package had no rows for it: the run failed, its package stayed pending, and so did every
later run (`Referenced column "_dlt_load_id" not found`).

Such runs are refused now (`run.check_dataset`: the run into `my_data` and the one back would read on from
the other dataset's place), but pipelines an earlier version let through are left so: the sequence runs as
that version ran it (the check off, `earlier_cli`), and the runs after it with this one."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import dlt
import duckdb
from test_connector_cli import SCRIPT, SECRET, cli_env, run_cli, secret_emulator  # noqa: F401 (the fixture)
from test_connector_postgres import postgres  # noqa: F401 (the fixture)

from pipedrive_source.emulator import EmulatorHandle
from pipedrive_source.postgres_load import postgres as postgres_destination

Query = Callable[[str, str], list[tuple[Any, ...]]]  # (dataset, SQL with `{d}` for it) -> rows

DEALS = ("--entities", "deals")
# the second run into my_data reads one more entity: the machine's state changes with it (without a change
# it stays as it was, and dlt then takes the first dataset's state back: the failure needs a newer one)
SEQUENCE = (
    DEALS,
    (*DEALS, "--full-refresh", "--history", "deals"),
    (*DEALS, "--dataset", "my_data"),
    ("--entities", "deals,currencies", "--dataset", "my_data"),
    DEALS,  # nothing changed in Pipedrive: the deals' lists have no rows in this package
)


# the script as a version without the dataset check ran it
EARLIER = (
    "import runpy, pipedrive_source.run as run; run.check_dataset = lambda *args: None; "
    f"runpy.run_path({str(SCRIPT)!r}, run_name='__main__')"
)


def earlier_cli(
    workdir: Path, emulator: EmulatorHandle, *args: str, **extra_env: str
) -> subprocess.CompletedProcess[str]:
    """`run_cli`'s run of the script, as a version without the dataset check made it."""
    env = cli_env(workdir, emulator, SECRET, **extra_env)
    command = [sys.executable, "-c", EARLIER, "--pipelines-dir", str(workdir / "pipelines"), *args]
    return subprocess.run(command, env=env, capture_output=True, text=True, cwd=workdir, timeout=600)


def loaded_deals(query: Query) -> dict[int, list[str]]:
    """Each deal in the `pipedrive` dataset with its label ids, as the destination holds them."""
    deals: dict[int, list[str]] = {row[0]: [] for row in query("pipedrive", "SELECT id FROM {d}.deals")}
    labels = (
        "SELECT d.id, l.value FROM {d}.deals d JOIN {d}.deals__label_ids l ON l._dlt_parent_id = d._dlt_id"
    )
    for deal, label in query("pipedrive", labels):
        deals[deal].append(str(label))
    return {deal: sorted(labels) for deal, labels in deals.items()}


def emulator_deals(emulator: EmulatorHandle) -> dict[int, list[str]]:
    return {
        d["id"]: sorted(str(i) for i in d.get("label_ids") or []) for d in emulator.control.snapshot("deals")
    }


def history_rows(query: Query) -> list[tuple[Any, ...]]:
    columns = "id, valid_from, valid_to, update_time"
    return sorted(query("pipedrive", f"SELECT {columns} FROM {{d}}.deals_history"))


def assert_every_run_loads_and_nothing_is_lost(
    emulator: EmulatorHandle, tmp_path: Path, query: Query, *args: str, **env: str
) -> None:
    for step, flags in enumerate(SEQUENCE):
        if step == 2:  # refused now, before any request
            assert run_cli(tmp_path, emulator, SECRET, *flags, *args, **env).returncode == 2
        result = earlier_cli(tmp_path, emulator, *flags, *args, **env)
        assert result.returncode == 0, (step, flags, result.stderr)
        if step == 1:
            history = history_rows(query)
    assert not dlt.attach("pipedrive", pipelines_dir=str(tmp_path / "pipelines")).has_pending_data

    # a deal given another deal's labels, one whose labels are all removed: the next run loads both
    deals = emulator_deals(emulator)
    labelled = [deal for deal, labels in deals.items() if labels]
    unlabelled = next(deal for deal, labels in deals.items() if not labels)
    changes = {
        unlabelled: {"label_ids": [int(i) for i in deals[labelled[0]]]},
        labelled[1]: {"label_ids": []},
    }
    ops = [{"op": "update", "table": "deals", "id": i, "changes": c} for i, c in changes.items()]
    emulator.control.mutate(ops=ops)
    again = run_cli(tmp_path, emulator, SECRET, *DEALS, *args, **env)
    assert again.returncode == 0, again.stderr

    expected = emulator_deals(emulator)
    assert expected[unlabelled] and not expected[labelled[1]]
    assert loaded_deals(query) == expected
    # the history keeps the versions its run loaded (runs without --history add none)
    assert history_rows(query) == history and len(history) == len(deals)


def test_a_history_run_then_another_dataset_leaves_every_later_run_loading(
    secret_emulator: EmulatorHandle,  # noqa: F811
    tmp_path: Path,
) -> None:
    def query(dataset: str, sql: str) -> list[tuple[Any, ...]]:
        with duckdb.connect(str(tmp_path / "crm.duckdb"), read_only=True) as con:
            return con.execute(sql.format(d=dataset)).fetchall()

    assert_every_run_loads_and_nothing_is_lost(secret_emulator, tmp_path, query)


def test_the_same_runs_into_postgres(
    secret_emulator: EmulatorHandle,  # noqa: F811
    postgres: str,  # noqa: F811
    tmp_path: Path,
) -> None:
    """Postgres takes dlt's own merge (no question about other loads); the runs are checked there too."""

    def query(dataset: str, sql: str) -> list[tuple[Any, ...]]:
        reader = dlt.pipeline(
            "reader",
            destination=postgres_destination(postgres),
            dataset_name=dataset,
            pipelines_dir=str(tmp_path / "reader"),
        )
        with reader.sql_client() as client:
            return [tuple(row) for row in client.execute_sql(sql.format(d=dataset))]

    env = {"DESTINATION__POSTGRES__CREDENTIALS": postgres}
    assert_every_run_loads_and_nothing_is_lost(
        secret_emulator, tmp_path, query, "--destination", "postgres", **env
    )
