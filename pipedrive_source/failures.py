"""What a failed sync says: the one line of the pipeline script's `error: ...`, for the orchestrators too.

dlt wraps the connector's errors in its own (`PipelineStepFailed`) and words a missing setting, a broken
settings file or a value it cannot read in many lines naming its classes; `failure_of` finds the cause and
says what to fix, as the user sets it, never with a secret.
"""

from __future__ import annotations

import inspect
import re
from pathlib import Path
from typing import Any

from dlt.common.configuration.exceptions import (
    ConfigFieldMissingException,
    ConfigValueCannotBeCoercedException,
    InvalidNativeValue,
    LookupTraces,
    ValueNotSecretException,
)
from dlt.common.configuration.providers.toml import TomlProviderReadException
from dlt.common.configuration.specs import ConnectionStringCredentials
from dlt.common.destination.exceptions import UnknownDestinationModule
from dlt.pipeline.exceptions import InvalidPipelineName

from .errors import (
    AuthError,
    ConfigError,
    HistoryNeedsRefresh,
    PipedriveError,
    RateLimitExhausted,
    env_setting,
    redact,
    setting_place,
)
from .oauth import PipedriveOAuthCredentials
from .recovery import SCRIPT_WAYS_OUT, LoadRefused, WaysOut, load_refused
from .source import own_section, pipedrive_source

EXIT_OK, EXIT_FAILED, EXIT_CONFIG, EXIT_BUDGET = 0, 1, 2, 3


class SyncFailed(Exception):
    """A sync that failed, its message the one line saying what to fix (the pipeline script's `error: ...`)
    and `exit_code` the script's; the exception it comes from is its cause."""

    def __init__(self, message: str, exit_code: int = EXIT_FAILED, known: bool = True) -> None:
        super().__init__(message)
        self.message = message
        self.exit_code = exit_code
        self.known = known  # False: an exception of no known kind, named by its class and first line


def failure_of(exc: BaseException, ways_out: WaysOut = SCRIPT_WAYS_OUT) -> SyncFailed:
    """`exc` (dlt's, or the connector's wrapped in dlt's) as the one line that says what to fix; a load the
    destination refused, or a history that needs a full refresh, with `ways_out`, those of where the line is
    read (the script's by default)."""
    cause = root_cause(exc)
    if isinstance(cause, LoadRefused):
        return SyncFailed(cause.worded(ways_out))
    if isinstance(cause, HistoryNeedsRefresh) and ways_out.refresh is not None:
        cause = HistoryNeedsRefresh(cause.entity, ways_out.refresh(cause.entity))
    if isinstance(cause, PipedriveError):
        code = EXIT_FAILED
        if isinstance(cause, ConfigError | AuthError):
            code = EXIT_CONFIG
        elif isinstance(cause, RateLimitExhausted):
            code = EXIT_BUDGET
        return SyncFailed(cause.message, code)
    first = redact(str(cause)).strip().splitlines()
    return SyncFailed(f"{type(cause).__name__}: {first[0] if first else ''}".strip(), known=False)


def root_cause(exc: BaseException) -> BaseException:
    """The innermost exception, preferring our own errors (dlt wraps them in PipelineStepFailed) and a
    setting dlt could not read (its own cause, a bare ValueError, would not name the setting)."""
    seen: list[BaseException] = []
    current: BaseException | None = exc
    while current is not None and current not in seen:
        if isinstance(current, PipedriveError):
            return current
        if refused := load_refused(current):  # dlt's own text ended in a traceback and no way out
            return refused
        if isinstance(current, ConfigValueCannotBeCoercedException):
            return setting_error(current)
        if isinstance(current, ConfigFieldMissingException):
            return missing_settings_error(current)
        if isinstance(current, TomlProviderReadException):
            return toml_error(current)
        if isinstance(current, InvalidNativeValue):
            return native_value_error(current)
        if isinstance(current, ValueNotSecretException):
            return secret_in_config_error(current)
        if isinstance(current, InvalidPipelineName):
            return ConfigError(
                f"The pipeline name {current.pipeline_name!r} cannot name a folder (dlt keeps the pipeline's "
                "state in one of that name); give --pipeline-name letters, digits, '_' or '-'."
            )
        if isinstance(current, UnknownDestinationModule):
            return ConfigError(
                f"Unknown destination {current.ref!r}: --destination (or the destination setting under "
                "[pipedrive]) takes a dlt destination such as duckdb, postgres, bigquery, snowflake, "
                "motherduck or filesystem."
            )
        seen.append(current)
        current = current.__cause__ or current.__context__ or getattr(current, "exception", None)
    return seen[-1]


def toml_error(exc: TomlProviderReadException) -> ConfigError:
    """A settings file that is not TOML, where (and, but for secrets.toml, why: its values stay out of the
    message). dlt's own exception went out as a traceback."""
    where = [path for path in exc.full_paths if Path(path).is_file()] or exc.full_paths
    reason = str(exc).splitlines()[-1]
    if "secrets" in exc.file_name:
        position = re.search(r"at line \d+ col \d+", reason)
        reason = position.group(0) if position else "see the file"
    return ConfigError(f"{' or '.join(where)} is not valid TOML: {reason}.")


def secret_in_config_error(exc: ValueNotSecretException) -> ConfigError:
    """A secret (`api_token`, `oauth`) in .dlt/config.toml, which dlt refuses to read secrets from: its own
    words, "Provider `config.toml` cannot hold secret values ...", ended in exit 1 and no place to put it.
    Never the value."""
    key = exc.key.rsplit(".", 1)[-1]
    variable = "__".join(exc.key.upper().split("."))
    return ConfigError(
        f"{key} is a secret, which dlt does not read from {exc.provider_name} (a file meant to be shared): "
        f"move it, with its section, to .dlt/secrets.toml, or set {variable}"
        f"{'__*' if key == 'oauth' else ''} instead."
    )


def native_value_error(exc: InvalidNativeValue) -> ConfigError:
    """Settings given in one value (a connection string, OAuth as JSON) that do not parse, named as the user
    sets them and without the value (credentials): dlt's own error went out with exit 1, or a TypeError."""
    if issubclass(exc.spec, PipedriveOAuthCredentials):
        setting = env_setting("oauth", own_section())  # a named company's own, where it has them
        expected = "a JSON object of refresh_token, client_id, client_secret"
    elif issubclass(exc.spec, ConnectionStringCredentials):  # dlt.destinations.impl.<name>.configuration
        destination = exc.spec.__module__.partition(".impl.")[2].partition(".")[0] or "<name>"
        setting = f"DESTINATION__{destination.upper()}__CREDENTIALS"
        expected = "a connection string such as postgresql://user:password@host:5432/database"
    else:
        setting, expected = "__".join(exc.embedded_sections).upper(), f"a valid {exc.spec.__name__}"
    return ConfigError(
        f"The setting {setting} is not {expected}; or set its fields one by one ({setting}__<FIELD>, or "
        f"under [{setting.lower().replace('__', '.')}] in .dlt/secrets.toml)."
    )


def missing_settings_error(exc: ConfigFieldMissingException) -> ConfigError:
    """Settings dlt found nowhere, named by their environment variables (dlt's own message lists every
    place it looked, dozens of lines, and its first line names only the configuration class)."""
    keys = missing_keys(exc.traces)
    message = (
        f"Missing setting{'s' if len(keys) > 1 else ''} {', '.join(keys)}: set "
        f"{'them' if len(keys) > 1 else 'it'} in the environment or in .dlt/secrets.toml "
        f"({keys[0].lower().replace('__', '.')})"
    )
    whole = keys[0].rpartition("__")[0]
    if whole.endswith("__CREDENTIALS"):  # a connection string (or a service account's JSON) in one value
        message += f"; or all of them in one value, {whole} (a connection string for SQL databases)"
    return ConfigError(message + ".")


def missing_keys(traces: Any) -> list[str]:
    """Each missing field's environment variable as dlt reads it outside a pipeline's own section (nested
    configurations, such as credentials, by their fields)."""
    keys: list[str] = []
    for name, tried in traces.items():
        nested = [trace for trace in tried if isinstance(trace, LookupTraces)]
        if nested:
            keys += missing_keys(nested[0].traces)
            continue
        env = [trace.key for trace in tried if trace.provider == "Environment Variables"]
        plain = [key for key in env if key.startswith(("DESTINATION__", "SOURCES__"))] or env
        keys.append(max(plain, key=lambda key: key.count("__")) if plain else name)
    return keys


def setting_error(exc: ConfigValueCannotBeCoercedException) -> ConfigError:
    """A setting of the wrong type, named as the user sets it (the value only when it is no secret)."""
    name = str(exc.field_name)
    expected = getattr(exc.hint, "__name__", str(exc.hint))
    secret = any(word in name for word in ("token", "secret", "password", "credentials"))
    value = "" if secret else f" {str(exc.field_value)[:40]!r}"
    where = "it in the environment or .dlt/config.toml"
    if name in inspect.signature(pipedrive_source).parameters:  # a named company's own, where it has them
        where = setting_place(name, own_section())
    if expected in ("Sequence", "list"):  # a comma string is the mistake: say what a list looks like
        expected = 'list (a TOML list, ["deals", "persons"]; in the environment the same JSON)'
    return ConfigError(f"The setting {name}{value} is not a valid {expected}; fix {where}.")
