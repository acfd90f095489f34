"""Credentials: API token (header or query), OAuth bearer tokens and the OAuth refresh-token grant.

Pipedrive accepts `x-api-token: <token>`, `?api_token=<token>` and `Authorization: Bearer <access_token>`.
Access tokens come from `POST https://oauth.pipedrive.com/oauth/token` (v1 spec, operation `refresh-tokens`:
form `grant_type=refresh_token&refresh_token=...`, client id/secret via HTTP Basic); the emulator serves that
endpoint at its own root. Access tokens expire `expires_in` real seconds after issue or on demand.
"""

from __future__ import annotations

import base64
import binascii
import secrets
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

import orjson

from .faults import ERROR_INFO

MAIN = "main"
OTHER = "other"


@dataclass(frozen=True)
class Credential:
    token: str  # the secret itself: the burst window is per token
    oauth: bool
    company: str  # MAIN or OTHER


@dataclass(frozen=True)
class AuthFailure:
    reason: str  # "missing" | "invalid" | "expired"
    bearer: str | None = None  # an OAuth access token refused (its burst window is the one to report)


class OAuthServer:
    """Issues and checks access tokens for one configured OAuth client."""

    def __init__(
        self,
        client_id: str,
        client_secret: str,
        refresh_token: str,
        expires_in: int = 3599,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.client_id = client_id
        self.client_secret = client_secret
        self.refresh_token = refresh_token
        self.expires_in = expires_in
        self._clock = clock
        self._lock = threading.Lock()
        self._tokens: dict[str, float] = {}  # access token -> monotonic expiry

    def grant(self, authorization: str | None, form: dict[str, str], api_domain: str) -> tuple[int, bytes]:
        """Answer `POST /oauth/token`: (status, JSON body). Errors use RFC 6749 section 5.2 codes."""
        if not self._client_ok(authorization):
            return 401, _oauth_error("invalid_client", "Client authentication failed")
        if form.get("grant_type") != "refresh_token":
            return 400, _oauth_error("unsupported_grant_type", "Only grant_type=refresh_token is emulated")
        if not _same(form.get("refresh_token", ""), self.refresh_token):
            return 400, _oauth_error("invalid_grant", "Invalid refresh token")
        token = "v1u:" + secrets.token_urlsafe(32)
        with self._lock:
            self._tokens[token] = self._clock() + self.expires_in
        body = {
            "access_token": token,
            "token_type": "Bearer",
            # Pipedrive keeps the refresh token and renews its 60-day life on every use
            "refresh_token": self.refresh_token,
            "scope": "base,deals:read,contacts:read,activities:read,products:read,leads:read,users:read",
            "expires_in": self.expires_in,
            "api_domain": api_domain,
        }
        return 200, orjson.dumps(body)

    def check(self, token: str) -> str:
        """'valid', 'expired' or 'invalid'."""
        with self._lock:
            expiry = self._tokens.get(token)
        if expiry is None:
            return "invalid"
        return "valid" if self._clock() < expiry else "expired"

    def expire_all(self) -> int:
        """Expire every access token issued so far; returns how many were live."""
        with self._lock:
            now = self._clock()
            live = sum(1 for expiry in self._tokens.values() if expiry > now)
            self._tokens = {token: now for token in self._tokens}
        return live

    def _client_ok(self, authorization: str | None) -> bool:
        if not authorization or not authorization.lower().startswith("basic "):
            return False
        try:
            decoded = base64.b64decode(authorization[6:].strip(), validate=True).decode()
        except (binascii.Error, UnicodeDecodeError):
            return False
        client_id, _, secret = decoded.partition(":")
        return _same(client_id, self.client_id) and _same(secret, self.client_secret)


class Authenticator:
    """Maps a request's credentials to a company, or to the reason it is refused."""

    def __init__(self, api_token: str, other_company_token: str | None, oauth: OAuthServer) -> None:
        self.api_token = api_token
        self.other_company_token = other_company_token
        self.oauth = oauth

    def authenticate(self, headers: dict[str, str], query: list[tuple[str, str]]) -> Credential | AuthFailure:
        bearer = _bearer(headers.get("authorization"))
        if bearer is not None:
            state = self.oauth.check(bearer)
            return Credential(bearer, True, MAIN) if state == "valid" else AuthFailure(state, bearer)
        token = headers.get("x-api-token") or next((v for k, v in query if k == "api_token"), None)
        if not token:
            return AuthFailure("missing")
        if _same(token, self.api_token):
            return Credential(token, False, MAIN)
        if self.other_company_token and _same(token, self.other_company_token):
            return Credential(token, False, OTHER)
        return AuthFailure("invalid")


def unauthorized_body(api: str, reason: str) -> bytes:
    """401 body. v1: the spec's `unathorizedResponse` (GET /users/me: success, error 'unauthorized access',
    errorCode 401) plus the usual `error_info`; v2: the v2 spec's error shape (success, error, error_info,
    data, additional_data). An expired OAuth token says so in `error` (the exact live wording is not in the
    spec)."""
    error = "access token expired" if reason == "expired" else "unauthorized access"
    if api == "v1":
        return orjson.dumps({"success": False, "error": error, "errorCode": 401, "error_info": ERROR_INFO})
    return orjson.dumps(
        {"success": False, "error": error, "error_info": ERROR_INFO, "data": None, "additional_data": None}
    )


def _same(given: str, expected: str) -> bool:
    """Constant-time comparison that also accepts non-ASCII input (compare_digest on str does not)."""
    return secrets.compare_digest(given.encode(), expected.encode())


def _bearer(value: str | None) -> str | None:
    if value and value[:7].lower() == "bearer ":
        return value[7:].strip()
    return None


def _oauth_error(code: str, description: str) -> bytes:
    return orjson.dumps({"success": False, "error": code, "error_description": description})
