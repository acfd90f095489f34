"""Shared helpers of the reliability tests (`test_reliability_*.py`) and `tools/soak.py`.

- `compare_with_truth`: every table against the emulator's ground truth, row by row, in one DuckDB connection:
  each column the truth has (built-in columns, ids, `is_deleted`, and the custom fields in the readable
  columns the synced `custom_fields` table names, as `connector_fixtures.load_truth` lays them out), child
  sets per parent, no duplicate primary key, no orphaned child row. Ids deleted in Pipedrive that its lists
  no longer reveal may stay unflagged until a reconcile run (`unflagged_ok`); everything else is exact.
- `ModelWalk`: the seeded random walk of emulator mutations, each round followed by a sync and a comparison
  (besides record and field changes: merges of persons and organizations, pipeline, stage, board and phase
  changes, followers added and removed, compared when the walk's tables include the followers tables);
  `FEATURES` it can add: the connector's own full-read interval under clock jumps of hours to days
  (`interval`), runs stopped by a small daily budget (`budget`), fields deleted and added again under the
  same name with another type (`retype`), every run with `hard_delete` (`hard_delete`).
- `Script`: `pipelines/pipedrive_pipeline.py` in a subprocess, with a bounded poll that SIGKILLs it when an
  observable condition holds (emulator request count, dlt package files in a stage).
- `LEDGER` / `scan`: every token a test used and everything a user or operator could read (logs, output,
  exception texts, traces, state, load packages, destination tables), scanned for the tokens at the end.
"""

from __future__ import annotations

import gzip
import inspect
import json
import logging
import os
import random
import signal
import subprocess
import sys
import time
import traceback
import uuid
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import dlt
import duckdb
import pytest
from connector_fixtures import (
    DATASET,
    DEFAULT_TABLES,
    TRUTH_DATASET,
    SyncResult,
    _compare_children,
    _fetch,
    _row_problems,
    _tables,
    assert_history_is,
    load_truth,
    sync,
    synced_rows,
)

from pipedrive_source import SyncMonitor, pipedrive_source
from pipedrive_source.deletions import flag_vanished
from pipedrive_source.destinations import loader_file_format
from pipedrive_source.emulator import EmulatorHandle, run_emulator
from pipedrive_source.emulator.followers import FOLLOWED
from pipedrive_source.emulator.mutations import LINKS, NAMED_LINKS
from pipedrive_source.entities import BY_NAME, ENTITIES
from pipedrive_source.history import add_history
from pipedrive_source.settings import FULL_READ_INTERVAL_HOURS

ROOT = Path(__file__).resolve().parent.parent
SCRIPT = ROOT / "pipelines" / "pipedrive_pipeline.py"
SYNC_DB = "crm.duckdb"  # connector_fixtures.make_pipeline's file, which load_truth reads custom columns from
QUICK_ENV = {
    "RUNTIME__DLTHUB_TELEMETRY": "false",
    # apache-airflow is in the venv (an optional extra): without this, dlt imports it and asks Airflow's
    # Variable store on every config lookup, several seconds per process
    "PROVIDERS__ENABLE_AIRFLOW_SECRETS": "false",
}
for _name, _value in QUICK_ENV.items():
    os.environ.setdefault(_name, _value)

# Lists that can be neither filtered nor sorted may be re-read in full only every so often (a deliberate cost
# trade-off of the connector); tests that demand equality after every run ask for a full read every run.
_INTERVAL = "full_read_interval_hours"
EXACT: dict[str, Any] = {_INTERVAL: 0} if _INTERVAL in inspect.signature(pipedrive_source).parameters else {}
EXACT_ENV = {f"SOURCES__PIPEDRIVE__{name.upper()}": str(value) for name, value in EXACT.items()}


# ---- secrets ledger ---------------------------------------------------------------------------------------


@dataclass
class SecretLedger:
    """Every secret the reliability tests used, and every place a leak could surface."""

    secrets: set[str] = field(default_factory=set)
    texts: list[tuple[str, str]] = field(default_factory=list)
    paths: set[Path] = field(default_factory=set)

    def secret(self, kind: str) -> str:
        """A new distinctive token (a leak cannot hide behind a common word), remembered for the scan."""
        value = f"pd-{kind}-{uuid.uuid4().hex}"
        self.secrets.add(value)
        return value

    def text(self, label: str, text: str) -> None:
        self.texts.append((label, text))

    def error(self, label: str, exc: BaseException) -> str:
        """Record an exception as a user would see it (message and traceback); returns the message."""
        self.text(label, "".join(traceback.format_exception(exc)))
        return str(exc)

    def path(self, path: Path) -> None:
        self.paths.add(Path(path))

    def leaks(self, extra_secrets: Iterable[str] = ()) -> list[str]:
        secrets = self.secrets | set(extra_secrets)
        found = [f"{label}: {where}" for label, text in self.texts for where in text_leaks(secrets, text)]
        for path in sorted(self.paths):
            found += path_leaks(secrets, path)
        return found


LEDGER = SecretLedger()


@pytest.fixture(autouse=False)
def ledger_logs(caplog: pytest.LogCaptureFixture, tmp_path: Path) -> Iterator[None]:
    """Capture the test's log records into the ledger (import it into a test module): the connector's at
    DEBUG, the rest from INFO (httpcore's per-request DEBUG trace carries no header values; dlt's logger keeps
    its own level: lowering it makes dlt's own handler write to a stream an earlier test's capture closed)."""
    caplog.set_level(logging.INFO)
    caplog.set_level(logging.DEBUG, logger="pipedrive_source")
    LEDGER.path(tmp_path)  # the test's files: DuckDB, pipelines (state, load packages, trace), outputs
    yield
    records = caplog.records
    LEDGER.text("log", caplog.text + "\n".join(f"{r.msg!r} {r.args!r}" for r in records))


def text_leaks(secrets: Iterable[str], text: str) -> list[str]:
    return [f"token {s[:7]}... in text: ...{_around(text, s)}..." for s in secrets if s in text]


def _around(text: str, secret: str) -> str:
    at = text.index(secret)
    return text[max(0, at - 60) : at].replace("\n", " ")


def path_leaks(secrets: Iterable[str], root: Path) -> list[str]:
    """Leaks in every file under `root`: raw bytes, gzip contents, parquet values, DuckDB table values."""
    secrets = list(secrets)
    files = [root] if root.is_file() else [p for p in root.rglob("*") if p.is_file()] if root.exists() else []
    found = []
    for path in files:
        for text in _readable_forms(path):
            found += [f"{path}: {where}" for where in text_leaks(secrets, text)]
    return found


def _readable_forms(path: Path) -> Iterator[str]:
    """The file as bytes, and decoded the ways it could hide a string (compression, columnar encodings)."""
    raw = path.read_bytes()
    yield raw.decode("latin-1")
    if raw[:2] == b"\x1f\x8b":
        yield gzip.decompress(raw).decode("latin-1")
    if raw[:4] == b"PAR1":
        import pyarrow.parquet as pq

        yield json.dumps(pq.read_table(path).to_pylist(), default=str)
    if path.suffix == ".duckdb" and not path.name.endswith(".wal"):
        yield from duckdb_values(path)


def duckdb_values(path: Path) -> Iterator[str]:
    """Every text value of every table of a DuckDB file (the storage compresses strings), and the dlt state
    rows decompressed."""
    from dlt.common.versioned_state import decompress_state

    with duckdb.connect(str(path), read_only=True) as con:
        columns = con.execute(
            "SELECT table_schema, table_name, column_name FROM information_schema.columns "
            "WHERE data_type NOT IN ('BIGINT','INTEGER','DOUBLE','BOOLEAN','DATE','TIMESTAMP WITH TIME ZONE')"
        ).fetchall()
        for schema, table, column in columns:
            values = con.execute(f'SELECT CAST("{column}" AS VARCHAR) FROM "{schema}"."{table}"').fetchall()
            yield "\n".join(str(v[0]) for v in values)
            if table == "_dlt_pipeline_state" and column == "state":
                yield "\n".join(json.dumps(decompress_state(v[0])) for v in values if v[0])


def pipeline_trace_text(pipeline: Any) -> str:
    """The dlt trace of the pipeline's last run as text (what `dlt pipeline trace` would show)."""
    trace = pipeline.last_trace
    return "" if trace is None else f"{trace}\n{json.dumps(trace.asdict(), default=str)}"


# ---- emulators --------------------------------------------------------------------------------------------


@contextmanager
def secret_emulator(scale: str = "tiny", seed: int = 7, **settings: Any) -> Iterator[EmulatorHandle]:
    """An emulator whose tokens are fresh secrets registered in the ledger."""
    api, other = LEDGER.secret("api"), LEDGER.secret("other")
    with run_emulator(seed=seed, scale=scale, api_token=api, other_company_token=other, **settings) as emu:
        yield emu


def requests_served(emulator: EmulatorHandle) -> int:
    """Pipedrive requests the emulator answered so far (since the last stats reset)."""
    if emulator.app is not None:  # thread mode: read the counters directly, no HTTP round trip
        return int(emulator.app.stats.as_dict()["total_requests"])
    return int(emulator.control.stats()["total_requests"])


# ---- comparison with the ground truth ---------------------------------------------------------------------


@dataclass
class Comparison:
    rows: int = 0  # truth rows compared (parent and child rows)
    problems: dict[str, list[str]] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return not self.problems

    def summary(self, per_table: int = 4) -> dict[str, list[str]]:
        return {table: [p[:300] for p in problems[:per_table]] for table, problems in self.problems.items()}


@dataclass
class Merges:
    """What the walk's merges of persons and organizations did that a run need not see before a reconcile:
    per merged table the id merged away -> the id kept (`into`), and per table the records a merge pointed
    at the kept one without stamping them (`moved`): until a reconcile loads them they may still hold the
    id merged away (and a note the name that goes with it, the emulator's `NAMED_LINKS`). Full-read lists
    (call logs, projects) are not `moved`: their next full read must see the change."""

    into: dict[str, dict[Any, Any]] = field(default_factory=dict)
    moved: dict[str, set[Any]] = field(default_factory=dict)

    def note(self, body: Mapping[str, Any], result: Mapping[str, Any]) -> None:
        """Remember a mutation's merges and relinked records; a record stamped in it is read again."""
        for op in body.get("ops") or ():
            if op["op"] == "merge":
                self.into.setdefault(op["table"], {})[op["id"]] = op["merge_with_id"]
        for table, ids in result.get("relinked", {}).items():
            if table in BY_NAME and table not in INTERVAL_TABLES:
                self.moved.setdefault(table, set()).update(ids)
        for kind in ("created", "updated", "deleted", "archived"):
            for table, ids in result.get(kind, {}).items():
                self.moved.get(table, set()).difference_update(ids)

    def kept(self, table: str, rid: Any) -> Any:
        """The id `rid` of `table` ends up as after every merge since (itself if never merged away)."""
        while rid in self.into.get(table, {}):
            rid = self.into[table][rid]
        return rid

    def as_stored(self, table: str, want: dict[str, Any], got: dict[str, Any]) -> dict[str, Any]:
        """The truth row `want` of a moved record with the links `got` may still hold: an id merged (maybe
        over several merges) into the truth's."""
        out = dict(want)
        for merged, pairs in LINKS.items():
            for column in (c for t, c in pairs if t == table):
                old = got.get(column)
                if old != want.get(column) and self.kept(merged, old) == want.get(column):
                    out[column] = old
                    name = NAMED_LINKS.get((table, column))
                    if name:
                        out[f"{name}__name"] = got.get(f"{name}__name")
        return out


def compare_with_truth(
    emulator: EmulatorHandle,
    workdir: Path,
    tables: Iterable[str],
    *,
    unflagged_ok: Mapping[str, set[Any]] | None = None,
    merges: Merges | None = None,
    hard_delete: bool = False,
    variants: bool = False,
    stopped: bool = False,
) -> Comparison:
    """Compare the sync in `workdir/crm.duckdb` with the emulator's ground truth (see module docstring);
    `merges`: records moved by a merge may still point at the record merged away (see `Merges`);
    `variants`: values of another type than their column's may be in its variant columns (bad data);
    `stopped`: after a run stopped part way, which may not have named the columns of new fields yet."""
    tables = list(tables)
    truth_db = load_truth(emulator, workdir, tables, named_only=stopped)
    result = Comparison()
    with duckdb.connect(str(workdir / SYNC_DB), read_only=True) as con:
        con.execute(f"ATTACH '{truth_db}' AS t (READ_ONLY)")
        truth_tables = _tables(con, "t", TRUTH_DATASET)
        synced_tables = _tables(con, con.execute("SELECT current_database()").fetchone()[0], DATASET)
        for table in tables:
            tolerated = _tolerated(table, unflagged_ok or {}, con) if table in synced_tables else set()
            problems = _table_problems(
                con, table, truth_tables, synced_tables, tolerated, hard_delete, result, variants, merges
            )
            if problems:
                result.problems[table] = problems
    return result


def _tolerated(table: str, unflagged_ok: Mapping[str, set[Any]], con: duckdb.DuckDBPyConnection) -> set[Any]:
    """Ids of `table` that may stay unflagged: its own, and rows whose parent (merge key) may (a deleted
    product's variations go with the product, at the reconcile run that notices it)."""
    entity = BY_NAME[table]
    ids = set(unflagged_ok.get(table, set()))
    parents = unflagged_ok.get(entity.parent or "", set()) if entity.merge_key else set()
    if parents:
        rows = _fetch(
            con, f"SELECT {entity.primary_key} AS k, {entity.merge_key} AS p FROM {DATASET}.{table}"
        )
        ids |= {row["k"] for row in rows if row["p"] in parents}
    return ids


def _table_problems(
    con: duckdb.DuckDBPyConnection,
    table: str,
    truth_tables: set[str],
    synced_tables: set[str],
    tolerated: set[Any],
    hard_delete: bool,
    result: Comparison,
    variants: bool = False,
    merges: Merges | None = None,
) -> list[str]:
    pk = BY_NAME[table].primary_key
    if table not in synced_tables:
        return [f"{table}: table missing in the sync"] if table in truth_tables else []
    problems = _duplicate_keys(con, table, pk) + _orphans(con, table, synced_tables)
    truth = (
        {row[pk]: row for row in _fetch(con, f"SELECT * FROM t.{TRUTH_DATASET}.{table}")}
        if table in truth_tables
        else {}
    )
    synced = {row[pk]: row for row in _fetch(con, f"SELECT * FROM {DATASET}.{table}")}
    result.rows += len(truth)
    moved: set[Any] = set()
    if merges is not None:
        moved = merges.moved.get(table, set()) & truth.keys() & synced.keys()
        truth.update({key: merges.as_stored(table, truth[key], synced[key]) for key in moved})
    problems += _row_problems(table, truth, synced, tolerated, hard_delete, variants)
    gone = {k for k, row in truth.items() if hard_delete and row.get("is_deleted") is True}
    gone |= moved  # a moved activity's participants may name the person merged away, as its row may
    for child in sorted(t for t in truth_tables if t.startswith(f"{table}__")):
        result.rows += con.execute(f"SELECT count(*) FROM t.{TRUTH_DATASET}.{child}").fetchone()[0]
        problems += _compare_children(con, table, child, pk, child in synced_tables, gone)
    return problems


def _duplicate_keys(con: duckdb.DuckDBPyConnection, table: str, pk: str) -> list[str]:
    rows = con.execute(
        f"SELECT {pk}, count(*) FROM {DATASET}.{table} GROUP BY {pk} HAVING count(*) > 1 LIMIT 5"
    ).fetchall()
    return [f"{table}[{key}]: {count} rows with this primary key" for key, count in rows]


def _orphans(con: duckdb.DuckDBPyConnection, table: str, synced_tables: set[str]) -> list[str]:
    """Child rows whose parent row is gone: left behind by a half-applied merge."""
    problems = []
    for child in sorted(t for t in synced_tables if t.startswith(f"{table}__")):
        count = con.execute(
            f"SELECT count(*) FROM {DATASET}.{child} c WHERE NOT EXISTS "
            f"(SELECT 1 FROM {DATASET}.{table} p WHERE p._dlt_id = c._dlt_parent_id)"
        ).fetchone()[0]
        if count:
            problems.append(f"{child}: {count} rows without a parent row")
    return problems


def assert_equal_to_truth(
    emulator: EmulatorHandle, workdir: Path, tables: Iterable[str], **options: Any
) -> Comparison:
    comparison = compare_with_truth(emulator, workdir, tables, **options)
    assert comparison.ok, comparison.summary()
    return comparison


def destination_snapshot(db: Path) -> dict[str, list[tuple]]:
    """Every row of every table of the dataset (sorted), to prove a failed run changed nothing."""
    if not db.exists():
        return {}
    with duckdb.connect(str(db), read_only=True) as con:
        names = [
            r[0]
            for r in con.execute(
                "SELECT table_name FROM information_schema.tables WHERE table_schema = ?", [DATASET]
            ).fetchall()
        ]
        return {n: sorted(map(repr, con.execute(f"SELECT * FROM {DATASET}.{n}").fetchall())) for n in names}


def state_bytes(pipelines_dir: Path) -> dict[str, bytes]:
    """The local pipeline state files (state.json per pipeline), byte for byte."""
    return {str(p.relative_to(pipelines_dir)): p.read_bytes() for p in pipelines_dir.glob("*/state.json")}


# ---- the model-based walk ---------------------------------------------------------------------------------

FIELDS_TABLE_OF = {
    "deal": "deal_fields",
    "person": "person_fields",
    "organization": "organization_fields",
    "product": "product_fields",
    "project": "project_fields",
}
FOLLOWER_TABLES = [table for table, _ in FOLLOWED.values()]  # opt-in: the walk follows and unfollows
RECORD_OF = {"deal": "deals", "person": "persons", "organization": "organizations", "product": "products"}
FIELD_TYPES = (
    "varchar", "text", "int", "double", "monetary", "date", "daterange", "time", "enum", "set",
    "address", "user", "org", "people", "phone", "boolean", "timerange",
)  # fmt: skip
TITLE_OF = {"deals": "title", "persons": "name", "organizations": "name", "activities": "subject"}
# mutation kinds that expose a reported, not yet fixed bug (each has its own strict xfail test); the soak can
# include them with --with-known-bugs
KNOWN_BUGS: dict[str, str] = {}
NASTY_NAMES = ("Title", "Status", "Value", "ÜBER wert", "id", "2nd field", "Deal Tier")


FEATURES = ("interval", "budget", "retype", "hard_delete")
# the walk's renames of the sales and projects set-up (`ModelWalk._pipeline`)
RENAMED = {
    "rename_pipeline": "pipelines",
    "rename_stage": "stages",
    "rename_board": "boards",
    "rename_phase": "phases",
}
# lists read in full at most once per interval (`entities.py`): with the `interval` feature the walk keeps
# the connector's interval and checks them against a model of when they are due
INTERVAL_TABLES = tuple(e.name for e in ENTITIES if e.full_read_hours is not None)
INTERVAL_S = int(FULL_READ_INTERVAL_HOURS * 3600)
# how a stopped run may leave no table: duplicate keys, orphaned child rows
STRUCTURAL = ("rows with this primary key", "without a parent row")


@dataclass
class Round:
    number: int
    ops: list[str]
    reconcile: bool
    loaded_rows: int
    compared_rows: int
    seconds: float
    problems: dict[str, list[str]]
    stopped: bool = False  # the run was stopped by the daily budget (`budget` feature)
    unchanged_rows: int = 0  # rows of interval lists not due, checked unchanged by the run
    due: list[str] = field(default_factory=list)  # interval lists the model had the run read in full


class ModelWalk:
    """A seeded random walk: each round mutates the emulator, syncs, and compares every table with the truth.

    The model's memory: which records were deleted in a way Pipedrive's lists no longer reveal (those may
    stay unflagged until a reconcile run, which the walk picks now and then, never longer), which records a
    merge of persons or organizations moved without stamping them (`Merges`: they may keep the old id until
    a reconcile run, never longer); with `interval`, the emulator's clock and when each interval list was
    last read in full. A list due (first run, reconcile, a day since its last full read by the server's
    clock, an option of its fields relabelled since, phases after a change of the boards) must equal the
    truth; one not due must be left exactly as it was (not a row rewritten). With `budget`, some runs get a
    daily budget below what the last run spent: a stopped run may leave tables behind the truth but never
    broken (`STRUCTURAL`), and the next run must reach the truth again. With `hard_delete`, every run
    removes the rows of deleted records instead of flagging them.
    """

    def __init__(
        self,
        emulator: EmulatorHandle,
        workdir: Path,
        seed: int,
        tables: list[str] | None = None,
        skip: Iterable[str] = KNOWN_BUGS,
        features: Iterable[str] = (),
    ) -> None:
        self.emulator, self.workdir = emulator, workdir
        self.rng = random.Random(seed)
        self.skip = set(skip)
        self.features = set(features)
        if self.features - set(FEATURES):
            raise ValueError(f"unknown walk features {sorted(self.features - set(FEATURES))}: {FEATURES}")
        self.tables = tables or list(DEFAULT_TABLES)
        self.unflagged_ok: dict[str, set[Any]] = {}
        self.last_clock: str | None = None
        self.full_read_at: dict[str, int | None] = {t: None for t in INTERVAL_TABLES if t in self.tables}
        # interval lists due before their interval: an option of their fields relabelled, phases when the
        # boards changed (the connector reads them again then)
        self.due_early: set[str] = set()
        self.merges = Merges()
        self.spent = 0  # tokens the last complete run spent: the scale of a stopping budget
        self.rounds: list[Round] = []

    def start(self) -> Round:
        """The first (full) sync, compared like every round."""
        if "interval" in self.features:  # the model's clock starts with the emulator's
            self.last_clock = self.emulator.control.mutate(advance_seconds=1)["clock"]
        return self._finish(0, ["first full sync"], reconcile=False, started=time.perf_counter())

    def step(self) -> Round:
        started = time.perf_counter()
        ops: list[str] = []
        for _ in range(self.rng.choice((0, 1, 1, 1, 2))):  # some rounds change nothing at all
            ops += self._mutate()
        reconcile = self.rng.random() < 0.25
        return self._finish(len(self.rounds), ops, reconcile, started, self._budget())

    def _budget(self) -> int | None:
        """Now and then (`budget`), a daily budget below what the last complete run spent."""
        if "budget" not in self.features or not self.spent or self.rng.random() >= 0.25:
            return None
        return max(1, int(self.rng.random() * self.spent))  # one draw whatever `spent`: the walk stays seeded

    def _finish(
        self, number: int, ops: list[str], reconcile: bool, started: float, budget: int | None = None
    ) -> Round:
        """Sync and compare; a sync or comparison that raises is this round's problem (the walk goes on)."""
        loaded, compared_rows, unchanged_rows, stopped = 0, 0, 0, False
        problems: dict[str, list[str]] = {}
        due = self._due(reconcile)
        try:
            before = {t: table_rows(self.workdir, t) for t in self.full_read_at if t not in due}
            result = self._sync_within(budget, reconcile=reconcile)
            loaded, stopped = result.rows, result.monitor.stopped is not None
            if not stopped:
                self.spent = result.tokens
                if reconcile:
                    self.unflagged_ok.clear()
                    self.merges.moved.clear()
            compared = [t for t in self.tables if t not in self.skip and t not in before]
            comparison = compare_with_truth(
                self.emulator,
                self.workdir,
                compared,
                unflagged_ok=self.unflagged_ok,
                merges=self.merges,
                hard_delete="hard_delete" in self.features,
                stopped=stopped,
            )
            found = comparison.problems
            if stopped:  # behind the truth is fine, broken is not
                found = {t: [p for p in ps if any(s in p for s in STRUCTURAL)] for t, ps in found.items()}
            compared_rows = comparison.rows
            problems = Comparison(problems={t: p for t, p in found.items() if p}).summary()
            for table, rows in before.items():
                unchanged_rows += sum(len(r) for _, r in rows.values())
                after = table_rows(self.workdir, table, like=rows)
                changed = sorted(t for t in {*rows, *after} if rows.get(t) != after.get(t))
                if changed:
                    problems[table] = [f"not due for a full read, yet rows changed in {changed}"]
            problems.update(self._note_full_reads(due, stopped, result))
        except Exception as exc:  # noqa: BLE001 - the soak reports it with the round's mutations
            problems = {"exception": [f"{type(exc).__name__}: {str(exc)[:1500]}"]}
        seconds = time.perf_counter() - started
        done = Round(
            number,
            ops,
            reconcile,
            loaded,
            compared_rows,
            seconds,
            problems,
            stopped,
            unchanged_rows,
            sorted(due),
        )
        self.rounds.append(done)
        return done

    def sync(self, **options: Any) -> SyncResult:
        interval = {} if "interval" in self.features else EXACT  # the connector's own interval, or none
        if "hard_delete" in self.features:
            options.setdefault("hard_delete", True)
        return sync(self.emulator, self.workdir, entities=self.tables, **interval, **options)

    def _sync_within(self, budget: int | None, **options: Any) -> SyncResult:
        """A sync, under a daily budget of `budget` tokens if given (the usual one again afterwards)."""
        if budget is None:
            return self.sync(**options)
        control = self.emulator.control
        control.reset_ratelimit()
        control.settings(daily_budget=budget)
        try:
            return self.sync(**options)
        finally:
            control.settings(daily_budget=self.emulator.settings.daily_budget)
            control.reset_ratelimit()

    def _due(self, reconcile: bool) -> set[str]:
        """The interval lists this round's run must read in full (all of them without `interval`)."""
        if "interval" not in self.features:
            return set(self.full_read_at)
        now = epoch(self.last_clock) if self.last_clock else 0
        return {
            table
            for table, at in self.full_read_at.items()
            if reconcile or at is None or now - at >= INTERVAL_S or table in self.due_early
        }

    def _note_full_reads(self, due: set[str], stopped: bool, result: SyncResult) -> dict[str, list[str]]:
        """The model's read times after a run: the run's start for each list due, once its read is complete.
        After a stopped run the state says which completed (each may have or not); any other read time in
        the state is a problem."""
        if "interval" not in self.features:
            return {}
        now = epoch(self.last_clock) if self.last_clock else None
        problems: dict[str, list[str]] = {}
        for table in sorted(due):
            kept = full_read_time(result.pipeline, table)
            allowed = {now, self.full_read_at[table], None} if stopped else {now}
            if kept not in allowed:
                problems[table] = [f"{table}: last full read {kept}, the model expects one of {allowed}"]
            if kept == now:
                self.full_read_at[table] = now
                self.due_early.discard(table)
            elif stopped:
                self.full_read_at[table] = kept
        return problems

    # ---- mutations ----------------------------------------------------------------------------------------
    def _mutate(self) -> list[str]:
        kinds = ["batch"] * 6 + ["rename", "relabel", "add_option", "add_field", "same_second", "nasty"]
        kinds += ["merge", "pipeline", "follow"]
        kinds += ["delete_field"] if self.rng.random() < 0.2 else []
        kinds += ["clock_jump"] * 2 if "interval" in self.features else []
        kinds += ["retype"] if "retype" in self.features else []
        kind = self.rng.choice(kinds)  # drawn before skipping: the walk stays the same with or without
        if kind in self.skip:
            return []
        body = getattr(self, f"_{kind}")()
        if body is None:
            return []
        what = body.pop("what", None) or (body["ops"][0]["op"] if body.get("ops") else None)
        result = self.emulator.control.mutate(**body)
        self.last_clock = result["clock"]
        for table, ids in result["deleted"].items():
            self.unflagged_ok.setdefault(table, set()).update(ids)
        self.merges.note(body, result)
        for change in result["fields"]:  # a changed option: the list's stored labels are stale, a read is due
            if change["op"] in ("relabel_option", "delete_option") and change["entity"] == "project":
                self.due_early.add("projects")
        if "boards" in result["updated"] or "boards" in result["deleted"]:
            self.due_early.add("phases")
        return [kind + (f" {what}" if what else "")]

    def _live(self, table: str) -> list[dict[str, Any]]:
        """The records of `table` a user can still change (not deleted, not archived)."""
        return [
            r
            for r in self.emulator.control.snapshot(table)
            if not r.get("is_deleted") and not r.get("is_archived") and r.get("status") != "deleted"
        ]

    def _merge(self) -> dict[str, Any] | None:
        """Two persons (organizations) merged: the one kept changes, the records of the other move to it
        unstamped (`Merges`), the other is gone."""
        table = self.rng.choice(sorted(LINKS))
        live = [r["id"] for r in self._live(table)]
        if len(live) < 2:
            return None
        gone, kept = self.rng.sample(live, 2)
        return {"ops": [{"op": "merge", "table": table, "id": gone, "merge_with_id": kept}]}

    def _follow(self) -> dict[str, Any] | None:
        """A user starts or stops following a deal, person, organization or product."""
        table = self.rng.choice(sorted(FOLLOWED))
        live = self._live(table)
        if not live:
            return None
        rid = self.rng.choice(live)["id"]
        followers_table, column = FOLLOWED[table]
        following = sorted(
            f["user_id"] for f in self.emulator.control.snapshot(followers_table) if f[column] == rid
        )
        others = sorted({u["id"] for u in self.emulator.control.snapshot("users")} - set(following))
        follow = not following or (bool(others) and self.rng.random() < 0.5)
        user = self.rng.choice(others if follow else following)
        return {
            "ops": [{"op": "follow" if follow else "unfollow", "table": table, "id": rid, "user_id": user}]
        }

    def _pipeline(self) -> dict[str, Any] | None:
        """A change of the sales or projects set-up: a deal moved to another pipeline's stage, a pipeline,
        stage, board or phase renamed, a stage deleted (its deals moved to another stage of its pipeline
        first, as Pipedrive has a user do), a project moved to another phase."""
        kind = self.rng.choice(("move_deal", "delete_stage", "move_project", *sorted(RENAMED)))
        stages = self._live("stages")
        name = f"Renamed {self.rng.randint(1, 999)}"
        if kind == "move_deal":
            deals = self._live("deals")
            if not deals:
                return None
            deal = self.rng.choice(deals)
            elsewhere = [s for s in stages if s["pipeline_id"] != deal["pipeline_id"]] or stages
            stage = self.rng.choice(elsewhere)
            changes = {"stage_id": stage["id"], "pipeline_id": stage["pipeline_id"]}
            return {
                "what": kind,
                "ops": [{"op": "update", "table": "deals", "id": deal["id"], "changes": changes}],
            }
        if kind == "delete_stage":
            return self._delete_stage(stages)
        if kind == "move_project":
            projects, phases = self._live("projects"), self._live("phases")
            if not projects or not phases:
                return None
            phase = self.rng.choice(phases)
            changes = {"phase_id": phase["id"], "board_id": phase["board_id"]}
            project = self.rng.choice(projects)["id"]
            return {
                "what": kind,
                "ops": [{"op": "update", "table": "projects", "id": project, "changes": changes}],
            }
        live = self._live(RENAMED[kind])
        if not live:
            return None
        rid = self.rng.choice(live)["id"]
        op = {"op": "update", "table": RENAMED[kind], "id": rid, "changes": {"name": name}}
        return {"what": kind, "ops": [op]}

    def _delete_stage(self, stages: list[dict[str, Any]]) -> dict[str, Any] | None:
        """A stage deleted once its deals (open, won, lost, archived) are in another stage of its pipeline."""
        movable = [s for s in stages if sum(o["pipeline_id"] == s["pipeline_id"] for o in stages) > 1]
        if not movable:
            return None
        stage = self.rng.choice(movable)
        others = [s["id"] for s in stages if s["pipeline_id"] == stage["pipeline_id"] and s is not stage]
        deals = self.emulator.control.snapshot("deals")
        ops: list[dict[str, Any]] = [
            {
                "op": "update",
                "table": "deals",
                "id": d["id"],
                "changes": {"stage_id": self.rng.choice(others)},
            }
            for d in deals
            if d["stage_id"] == stage["id"] and d.get("status") != "deleted"
        ]
        return {"what": "delete_stage", "ops": [*ops, {"op": "delete", "table": "stages", "id": stage["id"]}]}

    def _clock_jump(self) -> dict[str, Any]:
        """Hours to days without a run (a paused schedule): around and past the full-read interval."""
        hours = self.rng.choice((1, 6, 23, 24, 25, 47, 72, 100))
        return {"advance_seconds": hours * 3600 + self.rng.randint(-90, 90), "ops": []}

    def _retype(self) -> dict[str, Any] | None:
        """A field deleted and one of another type added under its name (Pipedrive cannot change a field's
        type: this is what users do instead), filled on a few records."""
        picked = self._custom_field(entities=sorted(RECORD_OF))
        if picked is None:
            return None
        entity, fd = picked
        field_type = self.rng.choice([t for t in FIELD_TYPES if t != fd["field_type"]])
        add: dict[str, Any] = {"op": "add_field", "entity": entity, "field_type": field_type}
        add.update(name=fd["field_name"], fill=self.rng.randint(0, 4))
        if field_type in ("enum", "set"):
            add["options"] = [f"Choice {i}" for i in range(self.rng.randint(1, 4))]
        return {"ops": [{"op": "delete_field", "entity": entity, "field_code": fd["field_code"]}, add]}

    def _batch(self) -> dict[str, Any]:
        r = self.rng.randint
        return {
            "seed": r(0, 10**6),
            "creates": r(0, 4),
            "updates": r(0, 8),
            "deletes": r(0, 3),
            "archives": r(0, 1),
        }

    def _custom_field(
        self, options_only: bool = False, entities: list[str] | None = None
    ) -> tuple[str, dict[str, Any]] | None:
        entity = self.rng.choice(entities or sorted(FIELDS_TABLE_OF))
        fields = [
            f
            for f in self.emulator.control.snapshot(FIELDS_TABLE_OF[entity])
            if f.get("is_custom_field") and (f.get("options") or not options_only)
        ]
        return (entity, self.rng.choice(fields)) if fields else None

    def _rename(self) -> dict[str, Any] | None:
        picked = self._custom_field()
        if picked is None:
            return None
        entity, fd = picked
        name = self.rng.choice((*NASTY_NAMES, f"Renamed {self.rng.randint(1, 999)}"))
        return {
            "ops": [{"op": "rename_field", "entity": entity, "field_code": fd["field_code"], "name": name}]
        }

    def _relabel(self) -> dict[str, Any] | None:
        picked = self._custom_field(options_only=True)
        if picked is None:
            return None
        entity, fd = picked
        option = self.rng.choice(fd["options"])
        op = {"op": "relabel_option", "entity": entity, "field_code": fd["field_code"]}
        return {"ops": [{**op, "option_id": option["id"], "label": f"Relabelled {self.rng.randint(1, 999)}"}]}

    def _add_option(self) -> dict[str, Any] | None:
        picked = self._custom_field(options_only=True)
        if picked is None:
            return None
        entity, fd = picked
        op = {"op": "add_option", "entity": entity, "field_code": fd["field_code"]}
        return {"ops": [{**op, "label": f"Option {self.rng.randint(1, 999)}"}]}

    def _add_field(self) -> dict[str, Any]:
        entity = self.rng.choice(sorted(RECORD_OF))
        field_type = self.rng.choice(FIELD_TYPES)
        op: dict[str, Any] = {"op": "add_field", "entity": entity, "field_type": field_type}
        op["name"] = self.rng.choice((*NASTY_NAMES, f"Added {field_type} {self.rng.randint(1, 999)}"))
        op["fill"] = self.rng.randint(0, 4)
        if field_type in ("enum", "set"):
            op["options"] = [f"Choice {i}" for i in range(self.rng.randint(1, 4))]
        return {"ops": [op]}

    def _delete_field(self) -> dict[str, Any] | None:
        picked = self._custom_field()
        if picked is None:
            return None
        entity, fd = picked
        return {"ops": [{"op": "delete_field", "entity": entity, "field_code": fd["field_code"]}]}

    def _same_second(self) -> dict[str, Any] | None:
        """A record changed within the second the last sync already loaded up to (the run boundary)."""
        if self.last_clock is None:
            return None
        table = self.rng.choice(sorted(TITLE_OF))
        live = [r for r in self.emulator.control.snapshot(table) if not r.get("is_deleted")]
        if not live:
            return None
        record = self.rng.choice(live)
        changes = {
            TITLE_OF[table]: f"same second {self.rng.randint(1, 10**6)}",
            "update_time": epoch(self.last_clock),
        }
        return {
            "advance_seconds": 1,
            "ops": [{"op": "update", "table": table, "id": record["id"], "changes": changes}],
        }

    def _nasty(self) -> dict[str, Any] | None:
        """Awkward but valid values: non-ASCII, very long text, nulls, big numbers."""
        live = [r for r in self.emulator.control.snapshot("deals") if not r.get("is_deleted")]
        if not live:
            return None
        record = self.rng.choice(live)
        changes = self.rng.choice(
            (
                {"title": "Ünïcødé ✓ 日本語 🚀 " + "x" * self.rng.randint(0, 10_000)},
                {"title": None, "value": None, "expected_close_date": None},
                {"value": self.rng.choice((2**53 + 1, 9.99e307, -(2**62), 0.1))},
            )
        )
        return {"ops": [{"op": "update", "table": "deals", "id": record["id"], "changes": changes}]}


def epoch(rfc3339_text: str) -> int:
    from datetime import datetime

    return int(datetime.fromisoformat(rfc3339_text.replace("Z", "+00:00")).timestamp())


TableRows = dict[str, tuple[list[str], list[str]]]  # table -> (columns, sorted rows as text)


def table_rows(workdir: Path, table: str, like: TableRows | None = None) -> TableRows:
    """Every row of a synced table and its child tables, sorted, dlt's columns included (a row rewritten
    with the same values has another `_dlt_load_id`). With `like`, on `like`'s columns (a column added since
    is no change; a child table added since with rows is)."""
    with duckdb.connect(str(workdir / SYNC_DB), read_only=True) as con:
        catalog = con.execute("SELECT current_database()").fetchone()[0]
        names = sorted(t for t in _tables(con, catalog, DATASET) if t == table or t.startswith(f"{table}__"))
        out: TableRows = {}
        for name in names:
            if like is not None and name in like:
                columns = like[name][0]
            else:
                columns = [r[0] for r in con.execute(f"DESCRIBE {DATASET}.{name}").fetchall()]
            listed = ", ".join(f'"{c}"' for c in columns)
            rows = sorted(map(repr, con.execute(f"SELECT {listed} FROM {DATASET}.{name}").fetchall()))
            if like is None or name in like or rows:
                out[name] = (columns, rows)
        return out


def full_read_time(pipeline: Any, table: str) -> int | None:
    """When the connector last read an interval list in full, by its state (server time, epoch seconds)."""
    resources = pipeline.state.get("sources", {}).get("pipedrive", {}).get("resources", {})
    kept = resources.get(table, {}).get("last_full_read")
    return epoch(kept) if kept else None


# ---- changes during a run ---------------------------------------------------------------------------------


class AtPage:
    """A record hook that calls `action(rows seen so far)` once, when `entity`'s `page`-th page arrives."""

    def __init__(self, entity: str, page: int, action: Callable[[list[list[dict]]], Any]) -> None:
        self.entity, self.page, self.action = entity, page, action
        self.pages: list[list[dict]] = []
        self.result: Any = None

    def __call__(self, entity: Any, rows: list[dict], ctx: Any) -> list[dict]:
        if entity.name == self.entity:
            self.pages.append([dict(r) for r in rows])
            if len(self.pages) == self.page:
                self.result = self.action(self.pages)
        return rows

    @property
    def fired(self) -> bool:
        return len(self.pages) >= self.page


def assert_read_twice_keeps_one_current_version(pipeline: dlt.Pipeline) -> None:
    """A deal read on the first page of an ascending read and changed before the run's `updated_until` is
    listed again further on with its new content: its history has one current version, the new content
    (dlt's scd2 made both current), and the one read first ends where it began."""
    with run_emulator(seed=3, scale="tiny") as emulator:

        def sync(*hooks: AtPage) -> None:
            monitor = SyncMonitor()
            source = pipedrive_source(
                api_token=emulator.api_token,
                base_url=emulator.base_url,
                entities=["deals"],
                monitor=monitor,
                # pages of 2: the 40 changed deals take 20 pages, far more than the fetch threads read ahead
                # of the extract thread (4 decoded pages, one in the socket), so the page holding the changed
                # deal again is requested after the hook on the first page changed it (with pages of 5 a slow
                # extract thread, under load, sometimes let the fetches reach the end of the list first)
                page_size=2,
                record_hooks=list(hooks),
            )
            add_history(source, ["deals"], pipeline)
            pipeline.run(source, loader_file_format=loader_file_format(pipeline.destination))
            flag_vanished(pipeline, monitor)

        sync()
        live = [d["id"] for d in emulator.control.snapshot("deals") if d["status"] == "open"][:40]
        emulator.control.mutate(
            ops=[{"op": "update", "table": "deals", "id": i, "changes": {"title": f"a{i}"}} for i in live]
        )
        # the run starts a second later: the change below falls within its `updated_until`, and in the
        # time window of the first read (windows are whole seconds: none can start between the two)
        now = epoch(emulator.control.mutate(ops=[], advance_seconds=1)["clock"])

        def change_one_read(pages: list[list[dict]]) -> int:
            deal = pages[0][0]["id"]  # behind the cursor: it moves to the end of this run's read
            change = {"title": f"b{deal}", "update_time": now}
            emulator.control.mutate(ops=[{"op": "update", "table": "deals", "id": deal, "changes": change}])
            return deal

        hook = AtPage("deals", 1, change_one_read)
        sync(hook)
        deal = hook.result
        assert [row["id"] for page in hook.pages for row in page].count(deal) == 2  # read twice
        assert_history_is(emulator, pipeline, ["deals"])
        versions = [row for row in synced_rows(pipeline, "deals_history") if row["id"] == deal]
        ends = {row["title"]: (row["valid_from"], row["valid_to"]) for row in versions}
        assert ends[f"b{deal}"][1] is None  # the later read is the current version
        assert ends[f"a{deal}"][0] == ends[f"a{deal}"][1]  # ended where it began: no sync ended with it


# ---- the pipeline script in a subprocess ------------------------------------------------------------------


@dataclass
class ScriptRun:
    returncode: int
    stdout: str
    stderr: str
    killed: bool = False

    @property
    def error_lines(self) -> list[str]:
        return [line for line in self.stderr.splitlines() if line.startswith("error: ")]


class Script:
    """`python pipelines/pipedrive_pipeline.py` against an emulator, one workdir (DuckDB file + pipelines)."""

    def __init__(self, emulator: EmulatorHandle, workdir: Path, token: str | None = None, **env: str) -> None:
        self.emulator, self.workdir = emulator, workdir
        self.pipelines_dir = workdir / "pipelines"
        self.env = {
            **os.environ,
            **QUICK_ENV,
            "SOURCES__PIPEDRIVE__API_TOKEN": emulator.api_token if token is None else token,
            "SOURCES__PIPEDRIVE__BASE_URL": emulator.base_url,
            "SOURCES__PIPEDRIVE__BACKOFF_BASE_S": "0.01",
            "DESTINATION__DUCKDB__CREDENTIALS": str(workdir / SYNC_DB),
            **EXACT_ENV,
            **env,
        }
        LEDGER.path(workdir)
        self._runs = 0

    def start(self, *args: str) -> tuple[subprocess.Popen[bytes], Path]:
        self._runs += 1
        out = self.workdir / f"run{self._runs}"
        command = [sys.executable, str(SCRIPT), "--pipelines-dir", str(self.pipelines_dir), "--quiet", *args]
        with open(f"{out}.out", "wb") as stdout, open(f"{out}.err", "wb") as stderr:
            process = subprocess.Popen(command, env=self.env, stdout=stdout, stderr=stderr, cwd=self.workdir)
        return process, out

    def run(self, *args: str, timeout_s: float = 300) -> ScriptRun:
        process, out = self.start(*args)
        process.wait(timeout=timeout_s)
        return self._collect(process, out, killed=False)

    def run_until(self, condition: Callable[[], bool], *args: str, timeout_s: float = 300) -> ScriptRun:
        """Start the script and SIGKILL it the moment `condition()` holds; `killed` says whether it did."""
        process, out = self.start(*args)
        deadline = time.monotonic() + timeout_s
        killed = False
        while process.poll() is None and time.monotonic() < deadline:
            if condition():
                os.kill(process.pid, signal.SIGKILL)
                killed = True
                break
            time.sleep(0.002)  # a poll interval, not a wait for an outcome: the condition decides
        process.wait(timeout=60)
        return self._collect(process, out, killed)

    def _collect(self, process: subprocess.Popen[bytes], out: Path, killed: bool) -> ScriptRun:
        stdout = Path(f"{out}.out").read_text(errors="replace")
        stderr = Path(f"{out}.err").read_text(errors="replace")
        LEDGER.text(f"script output {out.name}", stdout + stderr)
        return ScriptRun(process.returncode, stdout, stderr, killed)


def files_in(root: Path, pattern: str, at_least: int = 1) -> Callable[[], bool]:
    """A kill condition: at least `at_least` files under `root` match `pattern` (a glob)."""

    def holds() -> bool:
        return sum(1 for _ in root.glob(pattern)) >= at_least

    return holds


def served_at_least(emulator: EmulatorHandle, count: int) -> Callable[[], bool]:
    """A kill condition: the emulator has answered `count` Pipedrive requests (since its stats reset)."""
    return lambda: requests_served(emulator) >= count


# ---- the pipeline script in-process (cheap: no interpreter start, same code path as the command line) -----


def script_module() -> Any:
    """`pipelines/pipedrive_pipeline.py` imported as a module (it is a script, not a package member)."""
    import importlib.util

    if "pipedrive_pipeline" not in sys.modules:
        spec = importlib.util.spec_from_file_location("pipedrive_pipeline", SCRIPT)
        assert spec and spec.loader
        module = importlib.util.module_from_spec(spec)
        sys.modules["pipedrive_pipeline"] = module
        spec.loader.exec_module(module)
    return sys.modules["pipedrive_pipeline"]


def run_main(
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    emulator: Any,
    workdir: Path,
    *args: str,
    token: str | None = None,
    **env: str,
) -> ScriptRun:
    """`main(argv)` of the pipeline script with the same environment `Script` gives the subprocess."""
    settings = {
        "SOURCES__PIPEDRIVE__API_TOKEN": emulator.api_token if token is None else token,
        "SOURCES__PIPEDRIVE__BASE_URL": emulator.base_url,
        "SOURCES__PIPEDRIVE__BACKOFF_BASE_S": "0.01",
        "DESTINATION__DUCKDB__CREDENTIALS": str(workdir / SYNC_DB),
        **EXACT_ENV,
        **env,
    }
    for name, value in settings.items():
        monkeypatch.setenv(name, value)
    LEDGER.path(workdir)
    capsys.readouterr()  # drop what came before
    try:
        code = script_module().main(["--pipelines-dir", str(workdir / "pipelines"), "--quiet", *args])
    except SystemExit as exc:  # argparse refusing a flag: the script's process ends with this code
        code = int(exc.code or 0)
    out, err = capsys.readouterr()
    LEDGER.text("main output", out + err)
    return ScriptRun(code, out, err)


def assert_one_clear_line(run: ScriptRun, *needles: str) -> str:
    """Exactly one `error:` line, the last line on stderr, no traceback; returns it."""
    lines = [line for line in run.stderr.splitlines() if line.strip()]
    assert len(run.error_lines) == 1 and lines[-1] == run.error_lines[0], run.stderr[-2000:]
    assert "Traceback" not in run.stderr + run.stdout, run.stderr[-3000:]
    for needle in needles:
        assert needle in run.error_lines[0], (needle, run.error_lines[0])
    return run.error_lines[0]


def no_files(root: Path, pattern: str) -> Callable[[], bool]:
    """A kill condition: nothing under `root` matches `pattern`."""
    return lambda: next(iter(root.glob(pattern)), None) is None


def all_of(*conditions: Callable[[], bool]) -> Callable[[], bool]:
    return lambda: all(condition() for condition in conditions)
