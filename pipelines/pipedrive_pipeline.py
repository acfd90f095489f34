"""Sync a Pipedrive company into a warehouse (DuckDB file `pipedrive_crm.duckdb` by default).

    python pipelines/pipedrive_pipeline.py                 # credentials from .dlt/secrets.toml or env
    python pipelines/pipedrive_pipeline.py --demo          # no account needed: syncs a local emulator
    python pipelines/pipedrive_pipeline.py --entities deals,persons --full-refresh

Exit codes (for cron): 0 ok, 2 configuration or credentials (also a lapsed subscription, or every selected
table refused), 3 daily API budget used up, 130/143 Ctrl-C / SIGTERM, 1 anything else.
On failure one line on stderr says what to fix; nothing partial is committed and the next run continues.
When the daily API token budget (or --max-budget-share of it) runs out, the run stops cleanly: what was
fetched is loaded, the next run continues where this one stopped, and the message says when it resets.
"""

from __future__ import annotations

import argparse
import fcntl
import json
import logging
import os
import signal
import sys
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager, nullcontext
from pathlib import Path
from typing import Any, NoReturn

import dlt
from dlt.common.pipeline import get_dlt_pipelines_dir
from dlt.common.storages import FileStorage
from dlt.common.versioned_state import json_decode_state
from dlt.pipeline import Pipeline
from dlt.pipeline.exceptions import InvalidPipelineName

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:  # run as a script from anywhere: the package lives next to this folder
    sys.path.insert(0, str(ROOT))

from pipedrive_source import SyncMonitor, pipedrive_source, steps  # noqa: E402
from pipedrive_source.client import abort_requests  # noqa: E402
from pipedrive_source.deletions import flag_vanished  # noqa: E402
from pipedrive_source.deployment import (  # noqa: E402
    CREDENTIAL_KEYS,
    DUCKDB_FILE,
    append_only_notice,
    check_and_recover,
    configured_destination,
    configured_history,
    duckdb_file,
    history_left_out,
    pipeline_destination,
    read_settings_of_checkout,
    split_names,
    unknown_settings,
)
from pipedrive_source.entities import BY_NAME  # noqa: E402
from pipedrive_source.errors import (  # noqa: E402
    ConfigError,
    HistoryNeedsRefresh,
    PipedriveError,
    SettingError,
    causes,
    install_log_redaction,
)
from pipedrive_source.failures import (  # noqa: E402
    EXIT_BUDGET,
    EXIT_CONFIG,
    EXIT_FAILED,
    EXIT_OK,
    failure_of,
)
from pipedrive_source.history import add_history, not_loaded  # noqa: E402
from pipedrive_source.loaded import counted_rows, written_rows  # noqa: E402
from pipedrive_source.recovery import hide_terminal_job_logs  # noqa: E402
from pipedrive_source.run import SOURCE_SECTION, DatasetSwitch, EntityProgress, check_dataset  # noqa: E402
from pipedrive_source.settings import SOME_TABLES  # noqa: E402
from pipedrive_source.views import refresh_views  # noqa: E402

# flags that give a setting of the source (`--start-date`: start_date), checked there
SOURCE_FLAGS = ("entities", "start_date", "full_read_interval_hours", "burst_limit", "max_budget_share")
DEMO_DUCKDB_FILE = "pipedrive_demo.duckdb"
DEFAULT_PIPELINE = "pipedrive"
INTERRUPTED = (
    "interrupted. Nothing is lost: run the same command again; it loads what this run left and reads again "
    "what it had not loaded."
)
LOST_CREDENTIALS = (
    "No Pipedrive credentials configured, but the pipeline 'pipedrive' in {dir} has synced a company before. "
    "Set SOURCES__PIPEDRIVE__API_TOKEN (or .dlt/secrets.toml); --demo syncs the bundled emulator instead."
)


class OneLineParser(argparse.ArgumentParser):
    """A flag argparse cannot read (`--burst-limit 1.5`) ends like every other failure: one `error:` line
    naming the flag and exit 2, not argparse's usage lines first."""

    given: set[str]  # the flags of `GivenOnce` read so far

    def error(self, message: str) -> NoReturn:
        self.exit(EXIT_CONFIG, f"error: {message} (--help lists the flags)\n")

    def parse_known_args(self, *args: Any, **kwargs: Any) -> Any:
        self.given = set()
        return super().parse_known_args(*args, **kwargs)


class GivenOnce(argparse.Action):
    """A list flag (`--entities`, `--history`) given twice with two lists is refused: argparse kept the
    last, so `--entities deals --entities persons` synced persons alone, without a word. A flag of one value
    given again is left to win, as wrappers that append an override to a command rely on."""

    def __call__(
        self, parser: argparse.ArgumentParser, namespace: argparse.Namespace, values: Any, option: Any = None
    ) -> None:
        given = parser.given if isinstance(parser, OneLineParser) else set()
        first = getattr(namespace, self.dest)
        if self.dest in given and first != values:  # the same list again asks for the same
            parser.error(
                f"argument {option}: given {first!r} and then {values!r}; give it once, with every name "
                f"({option} {first},{values})"
            )
        given.add(self.dest)
        setattr(namespace, self.dest, values)


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = OneLineParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "--destination",
        help="any dlt destination (default: the destination setting under [pipedrive], else duckdb)",
    )
    parser.add_argument("--dataset", default="pipedrive", help="dataset / schema name (default pipedrive)")
    parser.add_argument(
        "--entities",
        default=None,
        action=GivenOnce,
        help="comma-separated tables to sync (default: every table but the opt-in ones)",
    )
    parser.add_argument(
        "--full-refresh",
        action="store_true",
        help="drop the tables, their history and state, and load everything (with --entities: those tables)",
    )
    parser.add_argument(
        "--start-date",
        default=None,
        help="first load only records updated since then: YYYY-MM-DD (midnight UTC) or an ISO timestamp "
        "(without an offset: UTC)",
    )
    parser.add_argument(
        "--reconcile",
        action="store_true",
        help="list every id (a full read) and flag records deleted in Pipedrive; read every product's "
        "variations again",
    )
    parser.add_argument(
        "--hard-delete", action="store_true", help="remove deleted records instead of flagging"
    )
    parser.add_argument(
        "--full-read-interval-hours",
        type=float,
        default=None,
        help="re-read projects, tasks, call_logs and phases (no filter or sort in the API) in full at most "
        "this often (default 24; 0 = every run)",
    )
    parser.add_argument(
        "--keep-option-ids",
        action="store_true",
        help="keep raw option ids next to custom-field labels (<column>_id, <column>_ids)",
    )
    parser.add_argument(
        "--burst-limit", type=int, default=None, help="requests per 2 s (default: from Pipedrive's headers)"
    )
    parser.add_argument(
        "--max-budget-share",
        type=float,
        default=None,
        help="share (0-1] of the company's daily API token budget this run may spend (default 1)",
    )
    parser.add_argument("--demo", action="store_true", help="start the bundled emulator and sync it")
    parser.add_argument("--demo-scale", default="small", help=argparse.SUPPRESS)
    parser.add_argument(
        "--history",
        default=None,
        action=GivenOnce,
        help="entities to keep SCD2 history of, e.g. deals (default: [pipedrive] history)",
    )
    parser.add_argument("--no-views", action="store_true", help="do not create or refresh the analyst views")
    parser.add_argument("--show", action="store_true", help="print tables and row counts after the run")
    parser.add_argument(
        "--pipelines-dir",
        default=None,
        help="folder of the pipelines' working folders (default: dlt's, ~/.dlt/pipelines or, as root, "
        "/var/dlt/pipelines)",
    )
    parser.add_argument(
        "--pipeline-name",
        default=None,
        help="dlt pipeline name (default pipedrive; pipedrive_demo with --demo)",
    )
    parser.add_argument("--quiet", action="store_true", help="no progress lines, summary only")
    parser.add_argument("--verbose", action="store_true", help="show tracebacks on failure")
    parser.add_argument(
        "--drop-pending",
        action="store_true",
        help="drop the load package the destination refused (the error says so) and read its records again",
    )
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    read_settings_of_this_checkout()
    if threading.current_thread() is threading.main_thread():  # a scheduler's stop unwinds like Ctrl-C
        signal.signal(signal.SIGTERM, _terminated)
    install_log_redaction()
    hide_terminal_job_logs(not args.verbose)  # the error line says it; dlt logged a traceback too
    started = time.perf_counter()
    monitor = SyncMonitor(on_progress=None if args.quiet else ProgressPrinter())
    views = None
    try:
        check_args(args)
        choose_demo(args)  # the first read of the settings: a broken .dlt/*.toml fails here
        for notice in unknown_settings():
            print(notice, flush=True)
        with one_run_at_a_time(args, args.demo), demo_emulator(args) as demo:
            check_dataset_of_state(args, demo is not None)
            pipeline = make_pipeline(args, demo is not None)
            # what a killed run left (or, --drop-pending, a refused package dropped): this run then syncs
            for notice in check_and_recover(pipeline, args.drop_pending):
                print(notice, flush=True)
            source = make_source(args, monitor, demo)
            if notice := start_date_passed_over(args, pipeline, source):
                print(notice, flush=True)
            history = history_entities(args, source)
            add_history(source, history, pipeline, refresh=args.full_refresh, reconcile=args.reconcile)
            refresh = steps.refresh_mode(args.full_refresh, some_tables=bool(args.entities))
            say = None if args.quiet else print_now
            info = steps.run(pipeline, source, steps.run_options(pipeline, refresh), say)
            flagged = flag_vanished(pipeline, monitor)
            if not args.no_views:
                views = refresh_views(pipeline)  # skips with a notice what the destination cannot do
        # inside the handler too: a Ctrl-C or a failing --show after the load is one line, not a traceback
        print_summary(pipeline, monitor, flagged, time.perf_counter() - started)
        if views is not None:
            print(f"views: {', '.join(views.created) or 'none'}", *views.notices(), sep="\n")
        if notice := append_only_notice(pipeline):
            print(notice)
        if args.show:
            show_tables(pipeline)
    except (Exception, KeyboardInterrupt) as exc:  # every failure ends in one clear line and an exit code
        abort_requests()  # requests still retrying in the background end now, not after their last attempt
        return report_failure(as_given(exc, args), args.verbose)
    if info.has_failed_jobs:
        return EXIT_FAILED
    if refused := monitor.refused_everything():  # nothing could be read: no sync to pass for a good one
        print(f"error: {refused}", file=sys.stderr, flush=True)
        return EXIT_CONFIG
    if monitor.stopped:  # the budget ran out: what was fetched is loaded, the next run continues
        print(f"stopped early: {monitor.stopped}", file=sys.stderr, flush=True)
        return EXIT_BUDGET
    return EXIT_OK


def check_args(args: argparse.Namespace) -> None:
    """Flags given empty (`--dataset "$DATASET"` with the variable unset) were taken as not given: the
    dataset `<pipeline>_dataset` dlt makes up, the default pipeline's state or folder, no history. The
    flags the source reads (`SOURCE_FLAGS`) are checked by the source, once for the flag and the setting."""
    paths = (("--dataset", args.dataset), ("--pipeline-name", args.pipeline_name))
    for flag, value in (*paths, ("--pipelines-dir", args.pipelines_dir)):
        if value is not None and not value.strip():
            raise ConfigError(f"{flag} is empty: give it a value, or leave {flag} out for the default.")
    if args.entities is not None and not split_names(args.entities):  # as the source would say, `[]` apart
        raise SettingError("entities", args.entities, SOME_TABLES).for_flag()
    if args.history is not None and not split_names(args.history):
        raise ConfigError(
            f"--history {args.history!r} names no entity: leave --history out ([pipedrive] history applies) "
            "or name them (--history deals)."
        )


def read_settings_of_this_checkout() -> None:
    """The .dlt/ of this checkout where the current folder has none (`read_settings_of_checkout`)."""
    read_settings_of_checkout(ROOT)


class Terminated(KeyboardInterrupt):
    """SIGTERM (systemd, docker, a scheduler stopping the task), raised where the main thread is."""

    signal_code = signal.SIGTERM


def _terminated(signum: int, frame: Any) -> None:
    raise Terminated()


def choose_demo(args: argparse.Namespace) -> None:
    """Without Pipedrive credentials the demo runs, unless this machine synced a company before."""
    if args.demo or args.pipeline_name is not None or pipedrive_configured():
        return
    if synced_a_company_before(args):  # lost secrets must fail a scheduled run, not sync the demo
        raise ConfigError(LOST_CREDENTIALS.format(dir=pipelines_dir(args)))
    print(
        "No Pipedrive credentials configured (SOURCES__PIPEDRIVE__API_TOKEN or .dlt/secrets.toml): "
        "syncing the bundled emulator instead (--demo).",
        flush=True,
    )
    args.demo = True


def pipelines_dir(args: argparse.Namespace) -> Path:
    return Path(args.pipelines_dir or get_dlt_pipelines_dir())


def check_pipelines_dir(args: argparse.Namespace) -> None:
    """A pipelines folder that cannot be one (a file, a path through a file, no permission) is a setting to
    fix: dlt's NotADirectoryError or PermissionError gave exit 1 and no hint which option it came from."""
    path = pipelines_dir(args)
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise unusable_pipelines_dir(args, "it is a file" if path.is_file() else exc.strerror) from None


def unusable_pipelines_dir(args: argparse.Namespace, reason: str | None) -> ConfigError:
    option = "--pipelines-dir" if args.pipelines_dir else "dlt's pipelines folder (DLT_DATA_DIR)"
    return ConfigError(
        f"{option} {pipelines_dir(args)} cannot be used as a folder ({reason}): give a folder this user can "
        "write"
    )


def synced_a_company_before(args: argparse.Namespace) -> bool:
    """Whether the default (non-demo) pipeline has loaded here: then missing credentials are an error."""
    path = pipelines_dir(args) / DEFAULT_PIPELINE / "state.json"
    try:
        state = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return bool(state.get("schema_names"))  # a pipeline that failed before its first load has none


def pipedrive_configured() -> bool:
    """Whether any Pipedrive connection setting is given (env, .dlt/secrets.toml or .dlt/config.toml)."""
    keys = (*CREDENTIAL_KEYS, "company_domain", "base_url")
    return any(dlt.secrets.get(f"sources.pipedrive.{key}") for key in keys)


def history_entities(args: argparse.Namespace, source: Any) -> list[str]:
    """`--history`, or `[pipedrive] history`, for the entities this run syncs. An entity named by
    `--history` that the run does not sync is a mistake in the command (exit 2): its history would never
    start, silently, and Pipedrive cannot give the versions missed meanwhile. One of the setting is left
    out with a notice: a run of a few entities (`--entities persons`) next to the scheduled full ones is
    usual."""
    if args.history is not None:
        names = split_names(args.history)
        missing = not_loaded(source, names)
        if missing:
            them = ", ".join(missing)
            raise ConfigError(
                f"--history {them}: this run does not sync {them} ({entity_selection(args)}), so no "
                f"history of it would be kept. Add {them} to --entities, or leave it out of --history."
            )
        return names
    names = configured_history()
    missing = not_loaded(source, names)
    if missing:
        print(history_left_out(missing, "which does not sync it", entity_selection(args)), flush=True)
    return [name for name in names if name not in missing]


def entity_selection(args: argparse.Namespace) -> str:
    return f"--entities {args.entities}" if args.entities else "[sources.pipedrive] entities"


@contextmanager
def demo_emulator(args: argparse.Namespace) -> Iterator[Any]:
    if not args.demo:
        with nullcontext():
            yield None
        return
    from pipedrive_source.emulator import run_emulator

    print(f"starting the Pipedrive emulator (scale {args.demo_scale}) ...", flush=True)
    with run_emulator(scale=args.demo_scale, mode="process") as handle:
        print(f"emulator listening on {handle.base_url}", flush=True)
        try:
            yield handle
        finally:  # before the emulator stops: requests still retrying would retry against nothing
            abort_requests()


@contextmanager
def one_run_at_a_time(args: argparse.Namespace, demo: bool) -> Iterator[None]:
    """Hold the pipeline's lock for the run: a second run of the pipeline stops before it touches the
    pipeline's folder. It took the first run's extract for one a killed run left and removed it (`removed 1
    unfinished extract(s)`), so the first failed with a FileNotFoundError. The lock file lies next to the
    working folder, as dlt wipes that folder when it restores the state from the destination; the kernel
    releases the lock when the process ends, however it ends."""
    check_pipelines_dir(args)
    name = pipeline_name(args, demo)
    try:  # before the name makes a path: `../elsewhere` is refused as dlt refuses it
        FileStorage.validate_file_name_component(name)
    except ValueError as exc:
        raise InvalidPipelineName(name, str(exc)) from None
    try:  # a folder that exists but this user may not write in (mkdir passed it)
        opened = open(pipelines_dir(args) / f".{name}.lock", "a+", encoding="utf-8")  # noqa: SIM115
    except OSError as exc:
        raise unusable_pipelines_dir(args, f"its lock file .{name}.lock: {exc.strerror}") from None
    with opened as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            lock.seek(0)
            holder = lock.read().strip() or "unknown"
            raise PipedriveError(
                f"Another run of the pipeline '{name}' is still going (process {holder}); this one stopped "
                "before reading or loading anything. Let that run finish (the next scheduled run continues "
                "from it), or stop it first (it loses nothing)."
            ) from None
        lock.truncate(0)
        lock.write(str(os.getpid()))
        lock.flush()
        yield


def check_dataset_of_state(args: argparse.Namespace, demo: bool) -> None:
    """The source's dataset check (`run.check_dataset`) on the state this machine holds, but for a full
    refresh (which moves the pipeline; the source checks again what dlt's refresh leaves): read before
    `dlt.pipeline`, which writes the dataset it is given into the state, and before a package a killed run
    left is loaded there; and in the words of the flags."""
    name = pipeline_name(args, demo)
    file = pipelines_dir(args) / name / Pipeline.STATE_FILE
    if args.full_refresh or not file.is_file():
        return
    try:
        state = json_decode_state(file.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return  # dlt says what is wrong with the state when it reads it
    source = (state.get("sources") or {}).get(SOURCE_SECTION) or {}
    try:  # a state of an earlier version says the dataset of the pipeline only
        check_dataset(source, args.dataset, name, state.get("dataset_name"))
    except DatasetSwitch as exc:
        raise exc.for_flags() from None


def pipeline_name(args: argparse.Namespace, demo: bool) -> str:
    return args.pipeline_name or ("pipedrive_demo" if demo else DEFAULT_PIPELINE)


def make_pipeline(args: argparse.Namespace, demo: bool) -> dlt.Pipeline:
    # the demo's file where it runs (dlt would keep it in the folder of the demo's first run)
    default = str(Path.cwd() / DEMO_DUCKDB_FILE) if demo else DUCKDB_FILE
    destination = args.destination
    if destination is None and not demo:  # the demo's rows never go to the deployment's warehouse
        destination = configured_destination(pipeline_name(args, demo))
    destination = pipeline_destination(destination, args.dataset, default)
    return dlt.pipeline(
        pipeline_name=pipeline_name(args, demo),
        destination=destination,
        dataset_name=args.dataset,
        pipelines_dir=args.pipelines_dir,
        progress=None,
    )


def source_flags(args: argparse.Namespace) -> dict[str, Any]:
    """The flags given that set a setting of the source (`SOURCE_FLAGS`), by the setting's name; the
    tables of `--entities` as the list the setting is."""
    flags = {name: getattr(args, name) for name in SOURCE_FLAGS if getattr(args, name) is not None}
    if args.entities is not None:
        flags["entities"] = split_names(args.entities)
    return flags


def as_given(exc: BaseException, args: argparse.Namespace) -> BaseException:
    """A value the source refused, as built or while it ran (a `--start-date` after Pipedrive's clock),
    named as the flag it came from where a flag gave it: the refusal names the setting, which the user
    did not set. A history refused for a full refresh it needs names `[pipedrive] history` where that
    asked for it, not the `--history` the user did not give. A run into another dataset, which the source
    refused, is named with the flags' ways out."""
    history = next((cause for cause in causes(exc) if isinstance(cause, HistoryNeedsRefresh)), None)
    if history is not None and args.history is None:
        return history.for_setting()
    switched = next((cause for cause in causes(exc) if isinstance(cause, DatasetSwitch)), None)
    if switched is not None:  # a full refresh of some of the tables does not move the pipeline
        return switched.for_flags()
    refused = next((cause for cause in causes(exc) if isinstance(cause, SettingError)), None)
    if refused is None or refused.name not in source_flags(args):
        return exc
    return refused.for_flag()


def start_date_passed_over(args: argparse.Namespace, pipeline: dlt.Pipeline, source: Any) -> str | None:
    """What `--start-date` does not do in this run: a table loaded before continues from its last load, so
    `--start-date 2020-01-01` on a pipeline that synced meant to load older records ran as any incremental
    run, without a word. None where it applies to every table (a first run, a full refresh)."""
    if args.start_date is None or args.full_refresh or not pipeline.default_schema_name:
        return None
    loaded = {table.get("resource") for table in pipeline.default_schema.data_tables()}
    tables = [name for name in source.selected_resources if name in BY_NAME and name in loaded]
    if not tables:
        return None
    return (
        "start date: --start-date applies to a table's first load; these continue from their last load: "
        f"{', '.join(tables)} (--full-refresh --entities {','.join(tables)} --start-date {args.start_date} "
        "loads them again from then)"
    )


def make_source(args: argparse.Namespace, monitor: SyncMonitor, demo: Any) -> Any:
    """The source, with the flags given in place of their settings (`as_given` names a refused one)."""
    options: dict[str, Any] = {"monitor": monitor, **source_flags(args)}
    if args.reconcile:
        options["reconcile"] = True
    if args.hard_delete:
        options["hard_delete"] = True
    if args.keep_option_ids:
        options["keep_option_ids"] = True
    if demo is not None:
        options.update(api_token=demo.api_token, base_url=demo.base_url, company_domain=None)
    return pipedrive_source(**options)


class ProgressPrinter:
    """One line per entity at most every 2 seconds while it pages."""

    def __init__(self, every_s: float = 2.0) -> None:
        self.every_s = every_s
        self.last: dict[str, float] = {}

    def __call__(self, entity: str, progress: EntityProgress) -> None:
        now = time.monotonic()
        if now - self.last.get(entity, 0.0) < self.every_s:
            return
        self.last[entity] = now
        # one write per line: print() writes the text and its newline apart, and the entities' threads
        # report at once, so two lines ran together and an empty line followed
        line = f"  {entity:<22} page {progress.pages:>5}  {progress.rows:>9,} records read\n"
        print(line, end="", flush=True)


def print_now(line: str) -> None:
    print(line, flush=True)


def print_summary(
    pipeline: dlt.Pipeline, monitor: SyncMonitor, flagged: dict[str, int], seconds: float
) -> None:
    """One line per entity table: rows loaded (nested child-table rows apart), records read, cost, time.
    Rows loaded are those the run's load left in the destination (`loaded.loaded_rows`); the rows written
    that it did not keep are told apart in the total. Where counting them would read whole tables (not
    DuckDB), or DuckDB's count failed, the rows are those written, and the total says so: Postgres's said
    "written into" the dataset, which a merge may keep fewer of."""
    counts, counted = counted_rows(pipeline)  # the run's steps are one trace (`steps.run`)
    written = sum(written_rows(pipeline).values())
    loaded: dict[str, list[int]] = {}  # table -> [rows, nested rows]
    for table, rows in counts.items():
        loaded.setdefault(table.split("__")[0], [0, 0])[1 if "__" in table else 0] += rows
    stats = monitor.client_stats
    print(f"\n{'table':<24}{'rows':>10}{'nested':>10}{'read':>10}{'requests':>10}{'tokens':>9}{'seconds':>9}")
    for name in sorted(set(monitor.entities) | set(loaded)):
        progress = monitor.entities.get(name, EntityProgress())
        cost = stats.by_label.get(name) if stats else None
        rows, nested = loaded.get(name, [0, 0])
        print(
            f"{name:<24}{rows:>10,}{nested:>10,}{progress.rows:>10,}{(cost.requests if cost else 0):>10,}"
            f"{(cost.tokens if cost else 0):>9,}{progress.seconds:>9.1f}"
        )
    for name, progress in sorted(monitor.entities.items()):
        if progress.skipped:
            print(f"{name}: skipped, {progress.skipped}")
    for table, count in sorted(flagged.items()):
        print(f"{table}: {count:,} rows no longer in Pipedrive flagged is_deleted")
    total = sum(rows + nested for rows, nested in loaded.values())
    requests, tokens = (stats.requests, stats.tokens) if stats else (0, 0)
    where = f"{pipeline.dataset_name} ({duckdb_file(pipeline) or pipeline.destination.destination_name})"
    cost = f"{requests:,} requests, {tokens:,} tokens"
    if not counted:
        print(f"total: {total:,} rows written for {where}, {cost}, {seconds:.1f} s")
        print(
            "(as the run wrote them, not counted in the destination, whose merge may keep fewer: a record "
            "read twice once, none of the rows that only cleared old child rows or of hard-deleted records)"
        )
        return
    print(f"total: {total:,} rows loaded into {where}, {cost}, {seconds:.1f} s")
    if written > total:
        print(
            f"({written - total:,} more rows written than loaded: rows that only cleared the old rows of "
            "parents left without any, records read twice (kept once) and hard-deleted records)"
        )


def show_tables(pipeline: dlt.Pipeline) -> None:
    print("\ntables now in the destination (rows):")
    for table, count in sorted(pipeline.dataset().row_counts().fetchall()):
        print(f"  {table:<40}{count:>10,}")


def report_failure(exc: BaseException, verbose: bool) -> int:
    # Ctrl-C, SIGTERM (dlt's SignalReceivedException too), also when it landed while a library handled an
    # error of its own (dlt probing a new DuckDB's state table): the innermost cause is then that error
    interrupt = next((c for c in causes(exc) if isinstance(c, KeyboardInterrupt)), None)
    interrupted = interrupt is not None
    failure = failure_of(exc)
    message = INTERRUPTED if interrupted else failure.message
    if not interrupted and not failure.known:
        message += " (run with --verbose for details)"
    if verbose and not interrupted:
        logging.getLogger("pipedrive_source").exception("sync failed")
    print(f"error: {message}", file=sys.stderr, flush=True)
    if interrupted:
        return 128 + getattr(interrupt, "signal_code", signal.SIGINT)
    return failure.exit_code


if __name__ == "__main__":
    sys.exit(main())
