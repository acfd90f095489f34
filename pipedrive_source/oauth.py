"""Authentication strategies: a personal API token, or OAuth 2.0 with refresh.

Both put credentials in headers only (`x-api-token` / `Authorization: Bearer`), never in a URL. OAuth
refreshes with the refresh-token grant (client id and secret in HTTP Basic, as Pipedrive documents) when the
access token is missing or Pipedrive answers 401, then talks to the `api_domain` the token endpoint returns.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any, Protocol

import httpx
import orjson
from dlt.common.configuration import configspec
from dlt.common.configuration.specs import CredentialsConfiguration
from dlt.common.typing import TSecretStrValue

from . import json_body
from .errors import OAUTH_SETTING, TOKEN_SETTING, AuthError, register_secret
from .settings import OAUTH_TOKEN_URL


@configspec
class PipedriveOAuthCredentials(CredentialsConfiguration):
    """`[sources.pipedrive.oauth]` in secrets.toml; the access token is optional (refreshed on demand).
    The others are needed too, but typed optional: dlt resolves OAuth set in part to None, and the run then
    asked for credentials one had configured; `OAuthAuth` names the one missing."""

    refresh_token: TSecretStrValue | None = None
    client_id: str | None = None
    client_secret: TSecretStrValue | None = None
    access_token: TSecretStrValue | None = None
    token_url: str = OAUTH_TOKEN_URL

    def parse_native_representation(self, native_value: Any) -> None:
        """OAuth in one value (`SOURCES__PIPEDRIVE__OAUTH`): a JSON object of these fields. dlt passed any
        other string on, and failed on it with a TypeError that named nothing."""
        try:
            fields = orjson.loads(native_value) if isinstance(native_value, str | bytes) else native_value
        except orjson.JSONDecodeError:
            fields = None
        if not isinstance(fields, dict):
            raise ValueError("not a JSON object")  # never the value: it holds secrets
        for name, value in fields.items():
            if name in self.get_resolvable_fields():
                setattr(self, name, value)


# POSTs to the OAuth token endpoint: the client's, which retries a 5xx or a failed connection like any request
TokenPost = Callable[..., httpx.Response]


class Auth(Protocol):
    def headers(self) -> dict[str, str]:
        """Headers that authenticate the next request."""

    def recover(self, post: TokenPost, sent_headers: dict[str, str]) -> str | None:
        """After a 401: renew credentials and return the base URL to continue with, or raise AuthError."""

    def prepare(self, post: TokenPost) -> str | None:
        """Before the first request: obtain credentials if needed; returns a base URL override or None."""

    def rejected(self) -> AuthError:
        """The error to raise when Pipedrive refuses even renewed credentials."""


class ApiTokenAuth:
    def __init__(self, token: str, setting: str = TOKEN_SETTING) -> None:
        """`setting`: where the token is set, for the messages (a named company's own section)."""
        token = (token or "").strip()
        self.setting = setting
        if not token:
            raise AuthError(f"No Pipedrive API token configured. Set {setting}.")
        register_secret(token)
        if not (token.isascii() and token.isprintable()):
            # typographic quotes or a stray character copied along: httpx failed on the header with a
            # UnicodeEncodeError (exit 1, naming no setting) after the run had started
            raise AuthError(
                "The Pipedrive API token holds characters a token cannot have (quotes copied along?). "
                f"Set a valid token in {setting}."
            )
        self._headers = {"x-api-token": token}

    def headers(self) -> dict[str, str]:
        return self._headers

    def prepare(self, post: TokenPost) -> str | None:
        return None

    def recover(self, post: TokenPost, sent_headers: dict[str, str]) -> str | None:
        raise self.rejected()

    def rejected(self) -> AuthError:
        return AuthError(
            f"Pipedrive rejected the API token (HTTP 401 unauthorized). Set a valid token in {self.setting}."
        )


class OAuthAuth:
    """Access token + refresh token; thread-safe so concurrent requests refresh only once."""

    def __init__(self, credentials: PipedriveOAuthCredentials, setting: str = OAUTH_SETTING) -> None:
        """`setting`: where OAuth is set, for the messages (a named company's own section)."""
        self.setting = setting
        for name in ("refresh_token", "client_id", "client_secret"):
            if not getattr(credentials, name, None):
                raise AuthError(f"OAuth is configured without {name}. Set it in {setting}.")
        for secret in (credentials.refresh_token, credentials.client_secret, credentials.access_token):
            register_secret(secret)
        self._creds = credentials
        self._access_token: str | None = credentials.access_token
        self._lock = threading.Lock()
        self.refreshes = 0

    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self._access_token}"}

    def prepare(self, post: TokenPost) -> str | None:
        with self._lock:
            return None if self._access_token else self._refresh(post)

    def recover(self, post: TokenPost, sent_headers: dict[str, str]) -> str | None:
        with self._lock:
            if sent_headers != self.headers():
                return None  # another thread refreshed meanwhile: just retry with the new token
            return self._refresh(post)

    def rejected(self) -> AuthError:
        return AuthError(
            "Pipedrive rejected a freshly refreshed OAuth access token (HTTP 401). Check the app's scopes "
            f"and credentials in {self.setting}."
        )

    def _refresh(self, post: TokenPost) -> str | None:
        response = post(  # retries a failed connection or a 5xx, and gives up with its own error
            self._creds.token_url,
            data={"grant_type": "refresh_token", "refresh_token": self._creds.refresh_token},
            auth=(self._creds.client_id, self._creds.client_secret),
        )
        body = _json_or_empty(response.content)
        token = body.get("access_token")
        if response.status_code != 200 or not token:
            error = body.get("error") or f"HTTP {response.status_code}"
            raise AuthError(
                f"Pipedrive refused to refresh the OAuth access token ({error}). "
                f"Check refresh_token, client_id and client_secret in {self.setting}."
            )
        register_secret(token)
        self._access_token = token
        if body.get("refresh_token"):
            # Pipedrive normally returns the same refresh token; keep whatever it hands out for this run
            register_secret(body["refresh_token"])
            self._creds.refresh_token = body["refresh_token"]
        self.refreshes += 1
        domain = body.get("api_domain")
        return str(domain).rstrip("/") if domain else None


def _json_or_empty(content: bytes) -> dict[str, Any]:
    """The token endpoint's answer, decoded as the data client decodes Pipedrive's (a byte order mark a proxy
    put before it read as a refusal to refresh); {} where it is no JSON object."""
    try:
        body = json_body.loads(content)
    except json_body.NotJson:
        return {}
    return body if isinstance(body, dict) else {}
