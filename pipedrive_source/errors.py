"""User-facing errors and secret redaction.

Every error a user may read derives from `PipedriveError`, whose text is one plain line that says what to
fix. Secrets are registered with `register_secret` the moment they are configured, and `redact` scrubs them
from any text we produce (error messages, log records), so a token cannot leak through a message by accident.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator


def env_setting(key: str, section: str | None = None) -> str:
    """The environment variable of a source setting: under `section` (a named company's pipeline, where dlt
    looks first), else the single company's."""
    return f"{section.upper() + '__' if section else ''}SOURCES__PIPEDRIVE__{key.upper()}"


def setting_place(key: str, section: str | None = None) -> str:
    """Both places a source setting is set (see `env_setting`), as a message names them."""
    where = f"{section}.sources.pipedrive" if section else "sources.pipedrive"
    return f"{env_setting(key, section)}, or {key} under [{where}]"


def config_place(key: str) -> str:
    """Both places a setting of the connector outside the source (`pipedrive.companies`) is set."""
    section, _, setting = key.rpartition(".")
    return f"{key.upper().replace('.', '__')}, or {setting} under [{section}]"


def token_setting(section: str | None = None) -> str:
    """Where to set the API token (see `env_setting`), as the messages say it."""
    where = f"{section}.sources.pipedrive" if section else "sources.pipedrive"
    return f"{env_setting('api_token', section)} (or api_token under [{where}] in .dlt/secrets.toml)"


def oauth_setting(section: str | None = None) -> str:
    """Where to set OAuth (see `env_setting`), as the messages say it."""
    where = f"{section}.sources.pipedrive.oauth" if section else "sources.pipedrive.oauth"
    return f"[{where}] in .dlt/secrets.toml ({env_setting('oauth__refresh_token', section)}, ...)"


TOKEN_SETTING = token_setting()
OAUTH_SETTING = oauth_setting()

_secrets: set[str] = set()
_secrets_lock = threading.Lock()
_MIN_SECRET_LEN = 6  # shorter strings would redact ordinary words


class PipedriveError(Exception):
    """An error with a one-line, secret-free message meant for the person running the sync."""

    def __init__(self, message: str) -> None:
        super().__init__(redact(message))

    @property
    def message(self) -> str:
        return str(self)


class Interrupted(PipedriveError):
    """Requests still retrying when the run was interrupted or failed elsewhere end with this."""


class ConfigError(PipedriveError):
    """Settings are missing or invalid; nothing was requested."""


class SettingError(ConfigError):
    """A value a setting does not accept, in one line that names the setting, where it is set and what it
    accepts. Where a value is checked (the source) it cannot be told whether it came from the settings or
    from the pipeline script's flag of the same name: `for_flag` says the same of the flag."""

    def __init__(self, name: str, value: object, accepted: str, where: str | None = None) -> None:
        self.name, self.accepted = name, accepted
        self.shown = repr(value)[:80] if isinstance(value, str | list | tuple) else str(value)
        super().__init__(f"{name} must be {accepted}, not {self.shown} ({where or setting_place(name)}).")

    @property
    def flag(self) -> str:
        return "--" + self.name.replace("_", "-")

    def for_flag(self) -> ConfigError:
        return ConfigError(f"{self.flag} must be {self.accepted}, not {self.shown}.")


class HistoryNeedsRefresh(ConfigError):
    """A history started on `entity` whose lists loaded as tables of their own: dlt refuses to turn them
    into its nested tables. Worded for `--history`, which a refusal cannot tell from the setting:
    `for_setting` says the same of `[pipedrive] history`."""

    def __init__(self, entity: str, asked: str | None = None) -> None:
        self.entity = entity
        asked = asked or f"--full-refresh --entities {entity} --history {entity}"
        super().__init__(
            f"{entity} was loaded without history, whose records make its nested tables ({entity}__*) "
            f"another way: start its history with a full refresh of it ({asked}), which also gives the "
            "history every record"
        )

    def for_setting(self) -> ConfigError:
        return HistoryNeedsRefresh(
            self.entity,
            f"--full-refresh --entities {self.entity}, as [pipedrive] history names it; or leave it out of "
            "[pipedrive] history",
        )


class AuthError(PipedriveError):
    """Pipedrive refused the credentials."""


class AccessDenied(PipedriveError):
    """The credentials are fine but this endpoint is not available to them (plan or permissions)."""

    def __init__(self, message: str, status: int | None = None, detail: str = "") -> None:
        super().__init__(message)
        self.status = status  # 402 (plan, subscription) or 403 (permission)
        self.detail = redact(detail)  # Pipedrive's own words


class NothingReadable(AuthError):
    """Pipedrive refused (402/403) everything the run asked for: a lapsed subscription, or a selection of
    tables none of which the plan or the user's permissions include."""


class RateLimitExhausted(PipedriveError):
    """The daily token budget (or the share a run may spend) is used up."""


class ApiError(PipedriveError):
    """Pipedrive answered something we cannot continue from, after bounded retries."""


def causes(exc: BaseException) -> Iterator[BaseException]:
    """`exc` and the errors it was raised from or during (libraries wrap their own), each once."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        yield current
        seen.add(id(current))
        current = current.__cause__ or current.__context__


def caused_by(exc: BaseException, kind: type[BaseException]) -> bool:
    """Whether `kind` is `exc` or among the errors it was raised from or during."""
    return any(isinstance(cause, kind) for cause in causes(exc))


def register_secret(value: str | None) -> None:
    """Remember a secret so `redact` removes it from every message and log record from now on."""
    if value and len(value) >= _MIN_SECRET_LEN:
        with _secrets_lock:
            _secrets.add(value)


def redact(text: str) -> str:
    with _secrets_lock:
        secrets = sorted(_secrets, key=len, reverse=True)
    for secret in secrets:
        if secret in text:
            text = text.replace(secret, "***")
    return text


_installed = False


def install_log_redaction() -> None:
    """Redact registered secrets from every log record at creation (idempotent).

    A record factory rather than a logger filter: filters on a logger do not see records of its child loggers,
    and handlers may be added after us; the factory sees every record of every logger.
    """
    global _installed
    if _installed:
        return
    previous = logging.getLogRecordFactory()

    def factory(*args: object, **kwargs: object) -> logging.LogRecord:
        record = previous(*args, **kwargs)
        if _secrets:
            _scrub(record)
        return record

    logging.setLogRecordFactory(factory)
    _installed = True


def _scrub(record: logging.LogRecord) -> None:
    try:
        message = record.getMessage()
    except Exception:  # a malformed record is not ours to fix; logging reports it itself
        return
    clean = redact(message)
    if clean != message:
        record.msg, record.args = clean, None
    if record.exc_info and record.exc_info[1] is not None:
        exc = record.exc_info[1]
        if redact(str(exc)) != str(exc):
            record.exc_info, record.exc_text = None, None
            record.msg = f"{record.msg} ({type(exc).__name__}: {redact(str(exc))})"
