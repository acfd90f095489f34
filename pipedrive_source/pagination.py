"""Pipedrive's two paging schemes as generators of pages.

v2: `limit` + opaque `cursor`, next one in `additional_data.next_cursor` (null on the last page).
v1: `start` + `limit`, continuation in `additional_data.pagination.more_items_in_collection` / `next_start`
(leads and the per-deal lists put `more_items_in_collection` directly in `additional_data`).
Both yield one `Page` per HTTP response, so callers can stop early (sorted reads) without fetching more.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from .client import PipedriveClient
from .errors import ApiError


@dataclass(frozen=True)
class Page:
    items: list[dict[str, Any]]
    number: int  # 1-based within one listing
    has_more: bool


def cursor_pages(
    client: PipedriveClient,
    path: str,
    params: Mapping[str, Any],
    *,
    cost: int,
    label: str,
    page_size: int,
    missing_ok: bool = False,
) -> Iterator[Page]:
    query = dict(params, limit=page_size)
    number = 0
    while True:
        body = client.get(path, query, cost=cost, label=label, missing_ok=missing_ok)
        number += 1
        cursor = (body.get("additional_data") or {}).get("next_cursor")
        yield Page(_items(body, path), number, bool(cursor))
        if not cursor:
            return
        query["cursor"] = cursor


def offset_pages(
    client: PipedriveClient,
    path: str,
    params: Mapping[str, Any],
    *,
    cost: int,
    label: str,
    page_size: int | None,
    missing_ok: bool = False,
    overlap: int = 0,
) -> Iterator[Page]:
    """`overlap` re-reads that many records before each next page: offsets shift left when records are
    deleted while we page, and a record crossing the page boundary would otherwise be skipped (the
    duplicates this causes are merged away by primary key)."""
    query = dict(params, start=0)
    if page_size:
        query["limit"] = page_size
    number = 0
    while True:
        body = client.get(path, query, cost=cost, label=label, missing_ok=missing_ok)
        number += 1
        extra = body.get("additional_data") or {}
        pagination = extra.get("pagination") or extra  # leads and per-deal lists use a flat envelope
        more = bool(pagination.get("more_items_in_collection"))
        items = _items(body, path)
        yield Page(items, number, more)
        if not more or not items:
            return
        next_start = pagination.get("next_start")
        following = next_start if isinstance(next_start, int) else query["start"] + len(items)
        query["start"] = max(query["start"] + 1, following - overlap)


def single_page(
    client: PipedriveClient,
    path: str,
    params: Mapping[str, Any],
    *,
    cost: int,
    label: str,
    missing_ok: bool = False,
) -> Iterator[Page]:
    """Endpoints that return everything at once (users, currencies, boards, ...)."""
    body = client.get(path, dict(params), cost=cost, label=label, missing_ok=missing_ok)
    yield Page(_items(body, path), 1, False)


def _items(body: dict, path: str) -> list[dict[str, Any]]:
    data = body.get("data")
    if data is None:
        return []
    if isinstance(data, dict):
        return [data]
    if not isinstance(data, list) or not all(isinstance(item, dict) for item in data):
        raise ApiError(f"Unexpected response shape from {path}: `data` is not a list of objects.")
    return data
