"""Python client of the emulator's `/_emulator/*` control endpoints (not part of Pipedrive)."""

from __future__ import annotations

from typing import Any

import httpx


class EmulatorControl:
    """Small synchronous client: `EmulatorControl("http://127.0.0.1:8765").counts()`."""

    def __init__(self, base_url: str, timeout: float = 120.0) -> None:
        self.base_url = base_url.rstrip("/")
        self._client = httpx.Client(base_url=f"{self.base_url}/_emulator", timeout=timeout)

    def __enter__(self) -> EmulatorControl:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._client.close()

    def counts(self) -> dict[str, int]:
        """Live (not deleted) records per connector table name."""
        return self._call("GET", "counts")

    def snapshot(self, table: str) -> list[dict[str, Any]]:
        """Every record of `table` the API can still reveal, as the API renders it (ground truth)."""
        return self._call("GET", f"snapshot/{table}")

    def stats(self) -> dict[str, Any]:
        """Requests per endpoint template and status, tokens spent, 429s by kind, faults injected."""
        return self._call("GET", "stats")

    def reset_stats(self) -> None:
        self._call("POST", "stats/reset")

    def mutate(self, **body: Any) -> dict[str, Any]:
        """`company.mutate(body)`: random {seed, creates, updates, deletes, archives} or {ops: [...]}."""
        return self._call("POST", "mutate", body)

    def settings(self, **changes: Any) -> dict[str, Any]:
        """Current settings (secrets left out); with keyword arguments, change runtime settings first."""
        if changes:
            return self._call("POST", "settings", changes)
        return self._call("GET", "settings")

    def expire_oauth(self) -> int:
        """Expire every OAuth access token issued so far; returns how many were still live."""
        return self._call("POST", "oauth/expire")["expired"]

    def reset_ratelimit(self) -> None:
        """Forget burst windows and spent daily budgets."""
        self._call("POST", "ratelimit/reset")

    def _call(self, method: str, route: str, body: dict[str, Any] | None = None) -> Any:
        response = self._client.request(method, f"/{route}", json=body)
        if response.status_code >= 400:
            raise EmulatorControlError(f"{method} /_emulator/{route}: {response.status_code} {response.text}")
        return response.json()


class EmulatorControlError(RuntimeError):
    pass
