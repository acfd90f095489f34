"""dlt's log of configuration lookups, without the same lookup logged again and again.

dlt logs every lookup it makes to resolve a configuration (`TraceLogContext`, one per thread) and keeps the
log until the pipeline's run ends; the run's trace reports the lookups that found a value. Each extraction
file a sync opens resolves its writer's configuration again: about 200 lookups, the same keys in the same
places each time. A small sync logged 24,700 lookups by the end of its extraction and 29,200 by the end of
its load (5 MB of Python objects, made all through the extraction among the pages' objects and kept through
the load; 27,600 and 32,100 at scale large). A lookup equal to one already logged since the log was last
cleared (same key, sections, provider and place, value, default, type hint and kind of configuration) is
not logged again: the trace reports the same values, each once.

What changes: `TraceLogContext.log` and `clear` are wrapped for the whole process. Lookups whose value cannot
be compared this way (not hashable) are logged as before.
"""

from __future__ import annotations

import threading
from typing import Any

from dlt.common.configuration.utils import ResolvedValueTrace, TraceLogContext

_lock = threading.Lock()
_LOGGED = "_lookups_logged"  # the lookups a log holds: set on the context, emptied with it


def log_each_lookup_once() -> None:
    """Make dlt's configuration log keep one entry per distinct lookup (idempotent)."""
    with _lock:
        if getattr(TraceLogContext.log, "logs_once", False):
            return
        log, clear = TraceLogContext.log, TraceLogContext.clear

        def log_once(context: TraceLogContext, trace: ResolvedValueTrace) -> None:
            logged = context.__dict__.get(_LOGGED)
            if logged is None:  # (lookups logged before this was in place count too)
                logged = context.__dict__[_LOGGED] = {_key(t) for t in context.all_traces}
            key = _key(trace)
            if key is not None:
                if key in logged:
                    return
                logged.add(key)
            log(context, trace)

        def clear_all(context: TraceLogContext) -> None:
            context.__dict__.pop(_LOGGED, None)
            clear(context)

        log_once.logs_once = True  # type: ignore[attr-defined]
        TraceLogContext.log = log_once  # type: ignore[method-assign]
        TraceLogContext.clear = clear_all  # type: ignore[method-assign]


def _key(trace: ResolvedValueTrace) -> tuple[Any, ...] | None:
    """What makes a lookup the same as another; None if it cannot be compared (an unhashable value)."""
    key = (
        *(trace.key, trace.value, trace.default_value, trace.hint, tuple(trace.sections)),
        *(trace.provider_name, trace.provider_location, type(trace.config)),
    )
    try:
        hash(key)
    except TypeError:
        return None
    return key
