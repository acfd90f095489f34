"""A sync's dlt steps, as `pipeline.run(source)` takes them, with the analyst views dropped between normalize
and load where the load drops tables (`views.drop_views`). Dropped before the run instead, a full refresh
that the company check then refused left them dropped, and a machine without local state dropped none (the
tables were not known yet), so the load failed under them. The steps share one dlt trace, as in `run`
(`pipeline.last_trace` holds the extraction, normalization and load)."""

from __future__ import annotations

from typing import Any

import dlt
from dlt.common.pipeline import LoadInfo
from dlt.pipeline.pipeline import with_runtime_trace

from .views import drop_views


@with_runtime_trace()  # as `pipeline.run`
def run(pipeline: dlt.Pipeline, source: Any, options: dict[str, Any]) -> LoadInfo:
    """Sync with the destination, extract `source` (`options`: `pipeline.extract`'s), normalize, drop the
    views where the load drops tables, load. Returns the load's info, as `pipeline.run` does.
    Packages a killed run left are loaded before (`recovery.recover`), not here."""
    pipeline.activate()
    if pipeline.config.restore_from_destination and not pipeline.dev_mode:
        pipeline.sync_destination()  # the destination's state and schema, where newer than this machine's
    pipeline.extract(source, **options)
    pipeline.normalize()
    drop_views(pipeline)
    return pipeline.load()
