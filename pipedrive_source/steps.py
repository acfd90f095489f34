"""A sync's dlt steps, as `pipeline.run(source)` takes them, with the analyst views dropped between normalize
and load where the load drops tables (`views.drop_views`). Dropped before the run instead, a full refresh
that the company check then refused left them dropped, and a machine without local state dropped none (the
tables were not known yet), so the load failed under them. The steps share one dlt trace, as in `run`
(`pipeline.last_trace` holds the extraction, normalization and load)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import dlt
from dlt.common.pipeline import LoadInfo
from dlt.common.typing import TRefreshMode
from dlt.pipeline.pipeline import with_runtime_trace

from .destinations import loader_file_format
from .views import drop_views


def refresh_mode(full_refresh: bool, some_tables: bool) -> TRefreshMode | None:
    """dlt's `refresh` for a full refresh (`--full-refresh`, Dagster's run config `full_refresh`, Airflow's
    DAG param): a run of some of the tables (`--entities`, a subset of the assets, one of Airflow's groups)
    starts only those over, as dropping the whole source would drop the other tables and their state
    without loading them again; a run of every table drops the source (its state too: another company's
    token is then accepted)."""
    if not full_refresh:
        return None
    return "drop_resources" if some_tables else "drop_sources"


def run_options(pipeline: dlt.Pipeline, refresh: TRefreshMode | None = None) -> dict[str, Any]:
    """The options `run` gives the extraction: the connector's loader file format for the pipeline's
    destination, and `refresh` (`refresh_mode`)."""
    options: dict[str, Any] = {}
    file_format = loader_file_format(pipeline.destination)
    if file_format:
        options["loader_file_format"] = file_format
    if refresh:
        options["refresh"] = refresh
    return options


@with_runtime_trace()  # as `pipeline.run`
def run(
    pipeline: dlt.Pipeline,
    source: Any,
    options: dict[str, Any],
    say: Callable[[str], None] | None = None,
) -> LoadInfo:
    """Sync with the destination, extract `source` (`options`: `pipeline.extract`'s), normalize, drop the
    views where the load drops tables, load. Returns the load's info, as `pipeline.run` does.
    Packages a killed run left are loaded before (`recovery.recover`), not here. `say` is told when the
    reading ends and when the load starts: the progress lines stop with the reading, and the normalize and
    load after it went on without a word (2.4 s at the emulator's `small`; about 8 s at `large` under a
    burst limit of 120, bench/RESULTS.md)."""
    pipeline.activate()
    if pipeline.config.restore_from_destination and not pipeline.dev_mode:
        pipeline.sync_destination()  # the destination's state and schema, where newer than this machine's
    if options.get("refresh") == "drop_sources" and not _selects_every_table(pipeline, source):
        options = {**options, "refresh": "drop_resources"}
    pipeline.extract(source, **options)
    if say:
        say("reading done; normalizing what was read ...")
    pipeline.normalize()
    drop_views(pipeline)
    if say:
        say(f"loading into {pipeline.dataset_name} ...")
    return pipeline.load()


def _selects_every_table(pipeline: dlt.Pipeline, source: Any) -> bool:
    """Whether `source` loads every table the pipeline holds (as the destination's schema says, synced just
    before). Dropping the whole source drops them all, and a run of some tables (the `entities` setting, or
    tables an earlier run added, such as opt-in ones) would leave the others dropped, not loaded again: such
    a full refresh starts only the run's tables over."""
    if not pipeline.default_schema_name:
        return True
    loaded = {t["resource"] for t in pipeline.default_schema.data_tables() if t.get("resource")}
    return loaded <= set(source.selected_resources)
