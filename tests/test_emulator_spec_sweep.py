"""Sweep: every list the connector reads, its query parameters and envelope against the spec files.

The spec is read afresh from `../shared` (`tools/derive_spec.py`: the v2 seed, the v1 reference), not from
the emulator's committed `spec_v*.json`, and compared with what the emulator answers over HTTP:
- each query parameter the spec lists for the operation is taken with a plausible value (200);
- a parameter the spec does not list is a 400, and so is a value its type or enum rules out;
- a 200's top-level keys are exactly `success`, `data` and the envelope keys the spec's response declares
  (`additional_data` also where a v2 list pages by cursor: it must hand out `next_cursor`);
- the handler looks at each parameter it takes: a parameter validated and then never read is one the
  emulator accepts and ignores (the emulator runs in this process; the parsed query it hands its handler
  notes which names were read, the answer still comes over HTTP).
"""

from __future__ import annotations

import importlib.util
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from test_emulator_conformance import unlimited_emulator

from pipedrive_source.emulator import EmulatorHandle, api
from pipedrive_source.entities import ENTITIES

REPO = Path(__file__).resolve().parent.parent
SHARED = REPO.parent / "shared"

# parameters whose plausible value the spec's type and enum do not give (a date, a time, a reference)
VALUES = {
    "updated_since": "2020-01-01T00:00:00Z",
    "updated_until": "2030-01-01T00:00:00Z",
    "start_date": "2020-01-01",
    "end_date": "2030-01-01",
    "period.start": "2020-01-01",
    "period.end": "2030-01-01",
    "ids": "1,2",
    "deal_ids": "1,2",
    "parent_task_id": "null",
    "all_changes": "1",
    "items": "note,activity",
    "term": "EU",
    "title": "deals_won goal",
    "status": "open",
    "lead_id": "adf21080-0e10-11eb-879b-05d71fb426ec",
    "expected_outcome.target": "10",
}
# accepted, never applied: saved filters' conditions are not emulated (routes_v2, routes_v1)
NOT_EMULATED = {"filter_id"}
# what a parameter needs beside it (the spec: "When `period.start` is provided, `period.end` must be too")
COMPANIONS = {"period.start": {"period.end": "2030-01-01"}}


@pytest.fixture(scope="module")
def spec_ops() -> dict[tuple[str, str], dict[str, Any]]:
    """GET operations as the spec files state them, by (api, served path)."""
    if not (SHARED / "seeds").is_dir() or not (SHARED / "reference").is_dir():
        pytest.skip(f"spec sources not present at {SHARED}")
    loaded = importlib.util.spec_from_file_location("derive_spec", REPO / "tools" / "derive_spec.py")
    assert loaded is not None and loaded.loader is not None
    module = importlib.util.module_from_spec(loaded)
    sys.modules.setdefault("derive_spec", module)  # dataclasses resolve annotations through sys.modules
    loaded.loader.exec_module(module)
    v2, v1 = module.derive(SHARED / "seeds", SHARED / "reference")
    ops = [*v2["operations"].values(), *v1["operations"].values()]
    return {(op["api"], op["path"]): op for op in ops if op["method"] == "GET"}


READ: dict[str, set[str]] = {}  # operation path -> query parameters a handler looked at


class NotingQuery(dict):
    """A parsed query that notes the names its handler reads (by lookup, membership or iteration)."""

    def __init__(self, values: dict[str, Any], path: str) -> None:
        super().__init__(values)
        self.seen = READ.setdefault(path, set())

    def get(self, key: str, default: Any = None) -> Any:
        self.seen.add(key)
        return super().get(key, default)

    def __getitem__(self, key: str) -> Any:
        self.seen.add(key)
        return super().__getitem__(key)

    def __contains__(self, key: object) -> bool:
        self.seen.add(str(key))
        return super().__contains__(key)

    def __iter__(self) -> Iterator[str]:
        for key in super().__iter__():
            self.seen.add(key)
            yield key

    def items(self) -> Any:
        return [(key, self[key]) for key in self]


@pytest.fixture(scope="module")
def emu() -> Iterator[EmulatorHandle]:
    parse = api.parse_query
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(api, "parse_query", lambda op, query: NotingQuery(parse(op, query), op.path))
        with unlimited_emulator() as handle:
            yield handle


def listings() -> list[tuple[str, str]]:
    """(api, path) of every list request the connector makes, once each."""
    seen: dict[tuple[str, str], None] = {}
    for entity in ENTITIES:
        for listing in entity.listings:
            seen[(entity.api, listing.path)] = None
    return list(seen)


def documented(op: dict[str, Any] | None) -> bool:
    return op is not None and op.get("documented", True)


def required(path: str, op: dict[str, Any]) -> dict[str, Any]:
    """The query the list cannot do without: a required parameter, or the parent id an entity names."""
    base = {name: sample(name, p) for name, p in op["params"].items() if p["required"]}
    parent = next(
        (e.parent_param for e in ENTITIES for x in e.listings if x.path == path and e.parent_param), None
    )
    if parent:
        base[parent] = 1
    return base


def sample(name: str, p: dict[str, Any]) -> Any:
    if name in VALUES:
        return VALUES[name]
    if name == "sort":
        return f"{p['enum'][0]} ASC" if p["enum"] else "id ASC"
    if p["enum"]:
        value = p["enum"][0]
        return ("true" if value else "false") if isinstance(value, bool) else value
    return {"integer": 1, "number": 1, "boolean": "true", "array": "1", "string": "x"}[p["type"]]


def invalid(p: dict[str, Any]) -> str | None:
    """A value the spec's type or enum rules out (None where any text goes)."""
    if p["enum"] or p["type"] in ("integer", "number", "boolean", "array"):
        return "no_such_value"
    return None


def url(path: str) -> str:
    return path.replace("{id}", "1")


def envelope(op: dict[str, Any]) -> set[str]:
    keys = {"success", "data", *(op["envelope"] or {})}
    if "cursor" in op["params"]:
        keys.add("additional_data")
    return keys


def test_the_sweep_covers_every_list_the_connector_reads(spec_ops: dict) -> None:
    missing = [f"{a} {path}" for a, path in listings() if not documented(spec_ops.get((a, path)))]
    assert missing == ["v1 /v1/leadFields"], missing  # the one list the v1 reference lacks (see spec.py)


@pytest.mark.parametrize(("api", "path"), listings(), ids=lambda x: x)
def test_each_list_takes_the_spec_params_and_answers_the_spec_envelope(
    client: httpx.Client, spec_ops: dict, api: str, path: str
) -> None:
    op = spec_ops[(api, path)]
    if not documented(op):
        pytest.skip(f"{path}: not in the spec")
    base = required(path, op)
    wrong = []
    r = client.get(url(path), params=base)
    assert r.status_code == 200, f"{path} {base}: {r.status_code} {r.text[:200]}"
    if set(r.json()) != envelope(op):
        wrong.append(f"top-level keys {sorted(r.json())}, spec {sorted(envelope(op))}")
    cursor = None
    if "cursor" in op["params"]:
        page = client.get(url(path), params={**base, "limit": 1}).json()
        cursor = (page.get("additional_data") or {}).get("next_cursor")
    for name, p in op["params"].items():
        if name in base:
            continue
        if name == "cursor":
            if cursor is None:
                continue
            value: Any = cursor
        else:
            value = sample(name, p)
        query = {**base, name: value, **COMPANIONS.get(name, {})}
        r = client.get(url(path), params=query)
        if r.status_code != 200:
            wrong.append(f"{name}={value!r}: {r.status_code} {r.text[:160]}")
        elif set(r.json()) != envelope(op):
            wrong.append(f"{name}={value!r}: top-level keys {sorted(r.json())}")
        elif name not in READ.get(path, ()) and name not in NOT_EMULATED:
            wrong.append(f"{name}={value!r}: accepted, never read by the handler")
        bad = invalid(p)
        if bad is not None and name != "cursor":
            r = client.get(url(path), params={**base, name: bad, **COMPANIONS.get(name, {})})
            if r.status_code != 400 or name not in r.json().get("error", ""):
                wrong.append(f"{name}={bad!r} (outside its type or values): {r.status_code} {r.text[:160]}")
    r = client.get(url(path), params={**base, "no_such_parameter": "1"})
    if r.status_code != 400 or "no_such_parameter" not in r.json().get("error", ""):
        wrong.append(f"an unlisted parameter: {r.status_code} {r.text[:160]}")
    assert not wrong, f"GET {path}:\n" + "\n".join(wrong)
