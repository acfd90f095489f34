"""dlt's validation of table schemas, without resolving the same type hints over and over.

dlt validates the table schema it computes for every Arrow item it receives (it keeps no cache for Arrow
tables) against its TypedDict specs: `validate_dict` resolves the spec's type hints (`get_type_hints`) for
the table and again for each of its columns, ~50 µs a call, most of that validation's cost: 3-4 s of the
extract thread in a sync of a million records. A class's resolved hints do not change, so they are resolved
once per spec here (dlt's own code marks the call "TODO: get_type_hints is very slow and we possibly should
cache the result").

What changes: `dlt.common.validation` calls a caching wrapper of the same function, for the whole process
(every caller gets a fresh dict equal to what the function returns). Anything else (another module's
`get_type_hints`, a dlt version that no longer calls it there) is left alone.
"""

from __future__ import annotations

import threading
from typing import Any

from dlt.common import validation

_lock = threading.Lock()


def cache_spec_hints() -> None:
    """Make `dlt.common.validation` resolve each spec's type hints once (idempotent)."""
    with _lock:
        resolve = getattr(validation, "get_type_hints", None)
        if resolve is None or getattr(resolve, "caches_spec_hints", False):
            return
        validation.get_type_hints = _cached(resolve)


def _cached(resolve: Any) -> Any:
    resolved: dict[tuple[Any, int], dict[str, Any]] = {}

    def get_type_hints(
        obj: Any, globalns: Any = None, localns: Any = None, include_extras: bool = False
    ) -> dict[str, Any]:
        if localns is not None or include_extras or not isinstance(obj, type):
            return resolve(obj, globalns=globalns, localns=localns, include_extras=include_extras)
        key = (obj, id(globalns))  # dlt passes the spec's module namespace: one per spec
        hints = resolved.get(key)
        if hints is None:
            hints = resolved[key] = resolve(obj, globalns=globalns)
        return dict(hints)

    get_type_hints.caches_spec_hints = True  # type: ignore[attr-defined]
    return get_type_hints
