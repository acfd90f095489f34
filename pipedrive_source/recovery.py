"""Resume a pipeline a killed run left behind, and tidy its working folder, before the next run extracts.

What a crash or a SIGKILL can leave in the pipeline's working folder (`pipeline.working_dir`), and what
finished runs leave there:

- Pending load packages (extracted or normalized, maybe partly loaded). dlt's `pipeline.run(data)` then
  only finishes those and ignores `data`, so that run would skip its own changes. `finish_pending` normalizes
  and loads them first; the caller's `run()` then extracts as usual. A package carries the incremental state
  of the run that extracted it (dlt saves that state locally right after committing the package), and the
  destination only trusts state of completed loads; `run()` syncs state with the destination before it
  extracts, so it continues from the loaded package's cursors even if the kill came before the local save:
  nothing is read twice or skipped.
- A stale extracted copy (dlt 1.31): normalize commits a package by renaming `load/new/<id>` to
  `load/normalized/<id>` and only then deletes `normalize/extracted/<id>`. Killed in between, every later
  normalize re-reads the leftover and fails renaming onto the existing package (`OSError: [Errno 39] Directory
  not empty`). `remove_stale_packages` removes such leftovers, and only them.

- Unfinished extracts: dlt extracts into `normalize/<random folder>/` and moves the package to
  `normalize/extracted/` when the extract completes. A killed or failed extract leaves its folder behind for
  good (its state was never saved: those records are read again); `remove_unfinished_extracts` deletes them so
  that repeated crashes do not fill the disk.

- Loaded packages: dlt keeps every package it loaded, with its files (`load/loaded/<id>`), for good: the
  package of a large company's first sync is 159 MB, and a small company's incremental run of about 1,100
  changed rows left 1.0 MB (half of it the package's schema and state), so a sync every 15 minutes added
  about 100 MB a day. Before each run, `prune_loaded_packages` deletes the loaded packages older than the
  newest `KEEP_LOADED_PACKAGES` (setting `[pipedrive] keep_loaded_packages`; 0 keeps none): their rows are
  in the destination, and the newest stay for `dlt pipeline <name> load-package`.

- A package the destination refuses for good (a job dlt does not retry: a column whose type was changed by
  hand, a type or constraint the destination rejects). dlt keeps it pending with its state, so every later
  run would load it again first and fail the same way. Each run still tries it once (the destination may
  have been fixed), then stops; `load_refused` turns dlt's error into `LoadRefused`, one line that says
  what failed and what to do (the first failing run ends with it too). `--drop-pending`
  (`drop_pending`) aborts it instead: dlt rewinds the local state to where the package started, which is
  the state of the last completed load (the destination trusts only those), so the next extract reads its
  records from Pipedrive again; nothing is lost.

`recover(pipeline)` does all of this (and shortens the destination's history of the pipeline's state,
`state_history`) and returns one notice per thing it recovered from (empty when there was
nothing to do; the pruning of loaded packages, done every run, says nothing). It assumes no other process runs
the same pipeline at the same time (dlt does not support that either).
"""

from __future__ import annotations

import logging
import re
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import dlt
from dlt.common.storages.load_package import PackageStorage
from dlt.common.storages.load_storage import LoadStorage
from dlt.common.storages.normalize_storage import NormalizeStorage
from dlt.load.exceptions import LoadClientJobFailed, LoadClientJobTerminalRetry

from .errors import PipedriveError, SettingError, config_place, redact
from .state_history import prune_state_history
from .views import drop_views

logger = logging.getLogger(__name__)

NORMALIZE_VOLUME, LOAD_VOLUME = "normalize", "load"  # dlt's Pipeline._normalize/_load_storage_config
EXTRACT_FOLDER = re.compile(r"[0-9a-f]{16}")  # dlt's ExtractStorage: uniq_id(8)
LOAD_WORK = (
    PackageStorage.STARTED_JOBS_FOLDER,
    PackageStorage.COMPLETED_JOBS_FOLDER,
    PackageStorage.FAILED_JOBS_FOLDER,
)


KEEP_LOADED_PACKAGES = 3  # loaded packages kept in the working folder (module docstring)
KEEP_LOADED_PACKAGES_KEY = "pipedrive.keep_loaded_packages"


def recover(pipeline: dlt.Pipeline, drop: bool = False, option: str = "--drop-pending") -> list[str]:
    """Remove stale leftovers, then finish the packages an interrupted run left (`drop`: drop them, and
    their records are read again; `option`: what the user set to drop them); notices of what was done.
    Also deletes loaded packages past the newest few (`prune_loaded_packages`) and the destination's state
    rows past the newest few (`state_history`)."""
    keep = configured_keep()  # a bad setting fails before anything is touched
    notices = remove_unfinished_extracts(pipeline) + remove_stale_packages(pipeline)
    notices += drop_pending(pipeline, option) if drop else finish_pending(pipeline)
    prune_loaded_packages(pipeline, keep)
    prune_state_history(pipeline)
    return notices


def configured_keep() -> int:
    """`[pipedrive] keep_loaded_packages` (env `PIPEDRIVE__KEEP_LOADED_PACKAGES`); the default if unset."""
    value = dlt.config.get(KEEP_LOADED_PACKAGES_KEY)
    if value is None:
        return KEEP_LOADED_PACKAGES
    # int(2.5) is 2: a TOML 2.5 kept two packages without a word; "" (a variable set empty) kept the default
    text = "" if isinstance(value, bool) else str(value).strip()
    if not text.isdigit():
        raise SettingError(
            "keep_loaded_packages",
            value,
            "a whole number of 0 or more",
            config_place(KEEP_LOADED_PACKAGES_KEY),
        )
    return int(text)


def prune_loaded_packages(pipeline: dlt.Pipeline, keep: int = KEEP_LOADED_PACKAGES) -> None:
    """Delete all but the newest `keep` loaded packages of the pipeline."""
    loaded = pipeline.list_completed_load_packages()  # dlt's list, oldest first (load ids are times)
    old = loaded[: max(0, len(loaded) - keep)]
    folder = Path(pipeline.working_dir) / LOAD_VOLUME / LoadStorage.LOADED_FOLDER
    for load_id in old:
        shutil.rmtree(folder / load_id)
    if old:
        logger.info("removed %d loaded package(s) older than the newest %d", len(old), keep)


def finish_pending(pipeline: dlt.Pipeline) -> list[str]:
    """Normalize and load the packages an interrupted run left, so the next `run()` extracts new data."""
    if not pipeline.has_pending_data:
        return []
    pipeline.activate()  # settings resolve under this pipeline's name (one process may run several)
    if pipeline.list_extracted_load_packages():
        pipeline.normalize()
    load_ids = list(pipeline.list_normalized_load_packages())
    if load_ids:
        drop_views(pipeline)  # one may hold the drops of a full refresh whose load failed
        pipeline.load()
    ids = ", ".join(load_ids) or "none"
    return [f"resumed: loaded {len(load_ids)} package(s) an interrupted run left ({ids}); now syncing"]


def drop_pending(pipeline: dlt.Pipeline, option: str = "--drop-pending") -> list[str]:
    """Abort the pending packages (`option`, the script's `--drop-pending`); dlt rewinds the local state to
    where the oldest started, so the run reads their records again."""
    pipeline.activate()
    plan = pipeline.abort_packages()
    if plan is None:
        return [f"{option}: no pending load package to drop; syncing as usual"]
    aborted = plan["package_to_abort"]
    ids = sorted({*plan["packages_to_delete"], *([aborted["load_id"]] if aborted else [])})
    return [
        f"dropped {len(ids)} pending load package(s) ({', '.join(ids)}); the sync continues from the last "
        "completed load and reads their records from Pipedrive again"
    ]


@dataclass(frozen=True)
class WaysOut:
    """How a refused load's line words the ways out where it is read: `again`, running the sync again;
    `drop`, dropping the pending package, or None where no package outlives a run (Airflow's tasks start
    from a fresh working folder, so each run reads the records again). `refresh`: how a history refused for
    the full refresh it needs (`errors.HistoryNeedsRefresh`) gets one there, given the entity; None: the
    refusal's own words, the pipeline script's flags, which an orchestrator does not have."""

    again: str
    drop: str | None
    refresh: Callable[[str], str] | None = None


SCRIPT_WAYS_OUT = WaysOut("run the same command again", "run it with --drop-pending")


class LoadRefused(PipedriveError):
    """The destination refused a job of a load package for good; the package stays pending."""

    def __init__(self, table: str, load_id: str, error: str) -> None:
        self.table, self.load_id, self.error = table, load_id, error
        super().__init__(self.worded(SCRIPT_WAYS_OUT))

    def worded(self, ways_out: WaysOut) -> str:
        """The one line, with the ways out of where it is read (module docstring)."""
        fix = (
            f"Fix the destination (e.g. a column of {self.table} whose type was changed by hand, or a "
            f"constraint added) and {ways_out.again}"
        )
        head = (
            f"The destination refused to load table {self.table} of load package {self.load_id}: "
            f"{self.error}."
        )
        if ways_out.drop is None:
            return redact(
                f"{head} The records read are not loaded and the sync's state has not moved past them; no "
                "run keeps the package, so every run reads them from Pipedrive again and stops here while "
                f"the destination refuses them. {fix}. Nothing is lost."
            )
        return redact(
            f"{head} The records read are kept in that package and the sync's state has not moved past "
            "them; every run tries the package once again before it reads Pipedrive and stops here while "
            f"the destination refuses it. {fix}; or {ways_out.drop} to drop the package and read its "
            "records from Pipedrive again (needed when the package itself cannot load, e.g. after "
            "upgrading the connector). Nothing is lost either way."
        )


def load_refused(exc: BaseException) -> LoadRefused | None:
    """`LoadRefused` for dlt's terminal job failure `exc`, else None. Its message names the table, the
    package and the destination's error, and says what to do (module docstring)."""
    if not isinstance(exc, LoadClientJobTerminalRetry | LoadClientJobFailed):
        return None
    table = exc.job_id.rsplit(".", 2)[0]  # <table>.<file id>.<format>
    lines = str(exc.client_exception or exc.failed_message).strip().splitlines() or [""]
    error = lines[0] if len(lines[0]) <= 300 else lines[0][:300] + "…"  # an enum lists every value
    return LoadRefused(table, exc.load_id, error)


class _TerminalJobLogs(logging.Filter):
    """dlt's log records of a terminal job failure: a traceback and the whole error again, which
    `LoadRefused` says in one line."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        return not (
            message.startswith("Terminal exception in job") or " failed terminally in load " in message
        )


_TERMINAL_JOB_LOGS = _TerminalJobLogs()


def hide_terminal_job_logs(hide: bool) -> None:
    """Keep dlt's log records of terminal job failures off stderr (`hide`), or let them through again."""
    dlt_logger = logging.getLogger("dlt")  # dlt.common.logger's LOGGER
    if hide:
        dlt_logger.addFilter(_TERMINAL_JOB_LOGS)
    else:
        dlt_logger.removeFilter(_TERMINAL_JOB_LOGS)


def remove_unfinished_extracts(pipeline: dlt.Pipeline) -> list[str]:
    """Delete the folders of extracts that never completed (their packages never reached `extracted`)."""
    normalize = Path(pipeline.working_dir) / NORMALIZE_VOLUME
    extracted = normalize / NormalizeStorage.EXTRACTED_FOLDER
    folders = [path for path in _subfolders(normalize) if EXTRACT_FOLDER.fullmatch(path.name)]
    # a package also in extracted/: its move was cut short (dlt's file-by-file fallback); not ours to judge
    unfinished = [f for f in folders if not any((extracted / p.name).exists() for p in _subfolders(f))]
    if not unfinished:
        return []
    size = sum(file.stat().st_size for folder in unfinished for file in folder.rglob("*") if file.is_file())
    for folder in unfinished:
        shutil.rmtree(folder)
    return [f"removed {len(unfinished)} unfinished extract(s) of failed or killed runs ({size / 1e6:.1f} MB)"]


def _subfolders(path: Path) -> list[Path]:
    return sorted(child for child in path.iterdir() if child.is_dir()) if path.is_dir() else []


def remove_stale_packages(pipeline: dlt.Pipeline) -> list[str]:
    """Delete extracted packages that dlt already committed as normalized (or loaded) packages.

    A package whose only complete copy is the extracted one is never touched: that is pending data.
    """
    root = Path(pipeline.working_dir)
    extracted = root / NORMALIZE_VOLUME / NormalizeStorage.EXTRACTED_FOLDER
    notices = [_resolve(package, root / LOAD_VOLUME) for package in _subfolders(extracted)]
    return [notice for notice in notices if notice]


def _resolve(extracted: Path, load: Path) -> str | None:
    load_id = extracted.name
    new = load / LoadStorage.NEW_PACKAGES_FOLDER / load_id
    normalized = load / LoadStorage.NORMALIZED_FOLDER / load_id
    loaded = load / LoadStorage.LOADED_FOLDER / load_id
    if not (normalized.is_dir() or loaded.is_dir()):
        return None  # not normalized yet: normalize takes it (and replaces a half-built load/new/<id>)
    if new.is_dir() and normalized.is_dir() and not _load_started(normalized):
        # Both copies in load/: a rename done file by file (dlt's fallback when out of file handles) was cut
        # short, or dlt normalized the leftover again and failed renaming it. Which load/normalized/<id> is
        # whole is unknown; the extracted package is: normalize it again. The normalized copy goes first so
        # that a kill in between leaves this case again (or a plain pending package), never a lone partial
        # normalized copy.
        shutil.rmtree(normalized)
        shutil.rmtree(new)
        return f"package {load_id}: discarded a half-committed normalized copy; it is normalized again"
    # dlt's commit (an atomic rename of load/new/<id>) finished, or the load already used the package
    shutil.rmtree(new, ignore_errors=True)
    shutil.rmtree(extracted)
    return f"package {load_id}: removed the extracted copy an interrupted normalize left (already normalized)"


def _load_started(package: Path) -> bool:
    return any(any((package / folder).glob("*")) for folder in LOAD_WORK)
