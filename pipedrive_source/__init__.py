"""Pipedrive CRM -> any dlt destination: `from pipedrive_source import pipedrive_source`."""

from .entities import DEFAULT_ENTITIES, ENTITIES, FIELDS_TABLES, Entity
from .errors import AccessDenied, ApiError, AuthError, ConfigError, PipedriveError, RateLimitExhausted
from .oauth import PipedriveOAuthCredentials
from .run import EntityProgress, RecordHook, SyncMonitor
from .source import pipedrive_source

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
