"""Pipedrive CRM -> any dlt destination: `from pipedrive_source import pipedrive_source`.

The names below are imported on first use (PEP 562): `python -m pipedrive_source.emulator` and other
subpackages start without importing dlt (about 3.5 s per process).
"""

from __future__ import annotations

import os
import sys
from importlib import import_module
from typing import TYPE_CHECKING, Any

# Arrow's default allocator keeps freed memory that only the freeing thread can return; with the system
# allocator the connector's periodic release (concurrency.py) gives it back from any thread (a large sync's
# peak: 503 -> 414 MB). Set before pyarrow is imported; an explicit setting wins.
os.environ.setdefault("ARROW_DEFAULT_MEMORY_POOL", "system")
# dlt imports Airflow wherever it is installed, to offer Airflow Variables as a secrets provider: 90 MB more
# for every sync (a small one peaked at 325 MB instead of 231). Inside Airflow, Airflow is imported before
# this package (the DAG file imports it first) and the provider stays on; elsewhere it is off unless
# PROVIDERS__ENABLE_AIRFLOW_SECRETS says otherwise.
if "airflow" not in sys.modules:
    os.environ.setdefault("PROVIDERS__ENABLE_AIRFLOW_SECRETS", "false")

if TYPE_CHECKING:
    from .entities import DEFAULT_ENTITIES, ENTITIES, FIELDS_TABLES, Entity
    from .errors import AccessDenied, ApiError, AuthError, ConfigError, PipedriveError, RateLimitExhausted
    from .oauth import PipedriveOAuthCredentials
    from .run import EntityProgress, RecordHook, SyncMonitor
    from .source import pipedrive_source

_HOME = {
    "DEFAULT_ENTITIES": "entities",
    "ENTITIES": "entities",
    "FIELDS_TABLES": "entities",
    "Entity": "entities",
    "AccessDenied": "errors",
    "ApiError": "errors",
    "AuthError": "errors",
    "ConfigError": "errors",
    "PipedriveError": "errors",
    "RateLimitExhausted": "errors",
    "PipedriveOAuthCredentials": "oauth",
    "EntityProgress": "run",
    "RecordHook": "run",
    "SyncMonitor": "run",
    "pipedrive_source": "source",
}
__all__ = [
    "DEFAULT_ENTITIES",
    "ENTITIES",
    "FIELDS_TABLES",
    "AccessDenied",
    "ApiError",
    "AuthError",
    "ConfigError",
    "Entity",
    "EntityProgress",
    "PipedriveError",
    "PipedriveOAuthCredentials",
    "RateLimitExhausted",
    "RecordHook",
    "SyncMonitor",
    "pipedrive_source",
]


def __getattr__(name: str) -> Any:
    module = _HOME.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(import_module(f".{module}", __name__), name)
    globals()[name] = value  # later lookups skip this function
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *_HOME])
