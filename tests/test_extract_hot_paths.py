"""The extract's hot paths, without a pipeline: shaping pages into Arrow tables value by value
(`arrow_pages.py`: which values a column of each type takes as they are, which send the page to dlt's JSON
path, how list items and nested objects become columns), the cursor's boundary digests, decoding a response
body with the garbage collector paused, and `spec_hints` leaving dlt's validation as it was."""

from __future__ import annotations

import gc
from datetime import UTC, date, datetime, time
from typing import Any

import httpx
import orjson
import pyarrow as pa
import pytest
from dlt.common.exceptions import DictValidationException
from dlt.common.schema import Schema
from dlt.common.schema.typing import TColumnSchema, TTableSchema
from dlt.common.utils import digest128
from dlt.common.validation import validate_dict

from pipedrive_source.arrow_pages import PageShaper, Shaped
from pipedrive_source.client import PipedriveClient
from pipedrive_source.entities import BY_NAME
from pipedrive_source.fetching import STATE_KEY, CursorState
from pipedrive_source.oauth import ApiTokenAuth
from pipedrive_source.record_digests import digest
from pipedrive_source.spec_hints import cache_spec_hints

Row = dict[str, Any]
LEAP = date(2024, 2, 29)


def _shape(rows: list[Row], hints: dict[str, str] | None = None, table: str = "things") -> list[Shaped]:
    columns = {name: {"name": name, "data_type": t, "nullable": True} for name, t in (hints or {}).items()}
    shaper = PageShaper(table, "id", Schema("test"), lambda: columns, "load", replace_children=False)
    return shaper.shape(rows)


def _root(rows: list[Row], hints: dict[str, str] | None = None) -> pa.Table:
    root = _shape(rows, hints)[0]
    assert isinstance(root.data, pa.Table), "expected the Arrow path"
    return root.data


@pytest.mark.parametrize(
    ("data_type", "values", "arrow_type", "expected"),
    [
        ("text", ["a", None, "ü"], pa.string(), ["a", None, "ü"]),
        ("text", [None, None, None], pa.string(), [None, None, None]),
        ("bool", [True, None, False], pa.bool_(), [True, None, False]),
        ("bool", [None, None, None], pa.bool_(), [None, None, None]),
        ("bigint", [1, None, 2**62], pa.int64(), [1, None, 2**62]),
        ("bigint", [None, None, None], pa.int64(), [None, None, None]),
        ("double", [1, 2.5, None], pa.float64(), [1.0, 2.5, None]),
        ("date", ["2024-02-29", None, "2024-03-01"], pa.date32(), [LEAP, None, date(2024, 3, 1)]),
        ("date", [date(2024, 2, 29), None, None], pa.date32(), [date(2024, 2, 29), None, None]),
        ("date", [None, None, None], pa.date32(), [None, None, None]),
        ("time", ["10:20:30", None, time(1, 2)], None, None),  # str and time mixed: dlt's JSON path
        ("time", ["10:20:30", None, None], pa.time64("us"), [time(10, 20, 30), None, None]),
        (
            "timestamp",
            ["2024-01-02T03:04:05Z", None, "2024-01-02 03:04:06"],
            None,  # an ISO string with a zone and one without in one page: two formats, JSON path
            None,
        ),
        (
            "timestamp",
            ["2024-01-02 03:04:05", None, "2024-01-02 03:04:06"],
            pa.timestamp("us", tz="UTC"),
            [datetime(2024, 1, 2, 3, 4, 5, tzinfo=UTC), None, datetime(2024, 1, 2, 3, 4, 6, tzinfo=UTC)],
        ),
        (
            "timestamp",
            [datetime(2024, 1, 2, 3, 4, 5, tzinfo=UTC), None, None],
            pa.timestamp("us", tz="UTC"),
            [datetime(2024, 1, 2, 3, 4, 5, tzinfo=UTC), None, None],
        ),
    ],
)
def test_a_column_takes_the_values_of_its_type(
    data_type: str, values: list[Any], arrow_type: pa.DataType | None, expected: list[Any] | None
) -> None:
    rows = [{"id": i, "v": value} for i, value in enumerate(values)]
    part = _shape(rows, {"v": data_type})[0]
    if arrow_type is None:
        assert isinstance(part.data, list)
        return
    assert isinstance(part.data, pa.Table)
    column = part.data.column("v")
    assert column.type == arrow_type
    assert column.to_pylist() == expected


@pytest.mark.parametrize(
    ("data_type", "values"),
    [
        ("text", ["a", 1]),  # a number in a text column
        ("text", [1, "a"]),
        ("text", ["a", date(2024, 1, 2)]),
        ("bool", [True, 1]),  # Arrow would read 1 as true
        ("bigint", [1, 1.5]),  # Arrow would cut the fraction
        ("bigint", [1, True]),
        ("double", [1.5, True]),  # Arrow would read true as 1.0
        ("date", ["2024-01-01", date(2024, 1, 2)]),
        ("date", [date(2024, 1, 2), datetime(2024, 1, 2, 3)]),  # a datetime is a date to Arrow
        ("date", ["not a date", None]),
        ("timestamp", ["yesterday", None]),
    ],
)
def test_a_value_that_does_not_fit_sends_the_page_to_dlts_json_path(
    data_type: str, values: list[Any]
) -> None:
    rows = [{"id": i, "v": value} for i, value in enumerate(values)]
    part = _shape(rows, {"v": data_type})[0]
    assert isinstance(part.data, list)
    assert [row.get("v") for row in part.data] == values


def test_columns_keep_the_order_a_walk_through_the_records_meets_them() -> None:
    rows = [
        {"id": 1, "a": "x", "address": None, "b": 1},
        {"id": 2, "address": {"city": "Tallinn", "zip": "1"}, "c": True},
        {"id": 3, "A": "y", "address": {"street": "Pikk"}},  # `A` and `a` are one column: the later wins
    ]
    table = _root(rows)
    assert table.column_names == [
        "id",
        "a",
        "b",
        "address__city",
        "address__zip",
        "c",
        "address__street",
        "_dlt_load_id",
        "_dlt_id",
    ]  # `address` only ever null: no column, as dlt makes none without a value
    assert table.column("a").to_pylist() == ["x", None, "y"]
    assert table.column("address__city").to_pylist() == [None, "Tallinn", None]
    assert table.column("_dlt_id").to_pylist() == [digest128(f"things:{i}", 10) for i in (1, 2, 3)]


def test_list_items_become_child_rows_as_dlt_makes_them() -> None:
    rows = [
        {"id": 1, "emails": [{"value": "a@x", "label": "work"}, {"label": "home", "Value": "b@x"}]},
        {"id": 2, "emails": [], "tags": ["red", None]},
        {"id": 3, "tags": [{"value": "blue"}, "green"]},  # an object's `value` and a plain item share it
    ]
    parts = {part.table: part.data for part in _shape(rows)}
    emails, tags = parts["things__emails"], parts["things__tags"]
    assert isinstance(emails, pa.Table) and isinstance(tags, pa.Table)
    # `Value` and `value` are one column: an item's later key wins
    assert emails.column("value").to_pylist() == ["a@x", "b@x"]
    assert emails.column("label").to_pylist() == ["work", "home"]
    assert emails.column("_dlt_list_idx").to_pylist() == [0, 1]
    assert tags.column_names[0] == "value"
    assert tags.column("value").to_pylist() == ["red", None, "blue", "green"]
    parent = digest128("things:2", 10)
    assert tags.column("_dlt_id").to_pylist()[:2] == [f"{parent}.0", f"{parent}.1"]


def test_the_newest_records_are_digested_for_the_boundary_when_the_state_is_written() -> None:
    entity = BY_NAME["deals"]
    cursor = CursorState({}, entity, None)
    old = {"id": 1, "update_time": "2024-01-01T00:00:00Z"}
    first = {"id": 2, "update_time": "2024-01-02T00:00:00Z", "v": 1}
    again = {"id": 2, "update_time": "2024-01-02T00:00:00Z", "v": 2}  # the same record twice: the later
    other = {"id": 3, "update_time": "2024-01-02T00:00:00Z"}
    assert cursor.admit([old, first]) == [old, first]
    assert cursor.admit([again, other]) == [again, other]
    state: dict[str, Any] = {}
    cursor.commit(state, complete=True, resume_from=None)
    assert state[STATE_KEY] == {
        "last_value": "2024-01-02T00:00:00Z",
        "boundary": {"2": digest(again), "3": digest(other)},
    }


def test_cached_spec_hints_validate_as_before() -> None:
    cache_spec_hints()
    cache_spec_hints()  # idempotent
    column: TColumnSchema = {"name": "a", "data_type": "text", "nullable": True}
    table: TTableSchema = {"name": "t", "columns": {"a": column}}
    for _ in range(2):
        validate_dict(TTableSchema, table, "t")
        with pytest.raises(DictValidationException):
            validate_dict(TTableSchema, {"name": "t", "columns": {"a": {**column, "nullable": "yes"}}}, "t")
        with pytest.raises(DictValidationException):
            validate_dict(TTableSchema, {"name": "t", "unknown": 1}, "t")


@pytest.mark.parametrize("collecting", [True, False])
def test_decoding_a_body_leaves_the_garbage_collector_as_it_was(collecting: bool) -> None:
    client = PipedriveClient("http://127.0.0.1:9", ApiTokenAuth("token"))
    body = {"data": [{"id": 1, "emails": [{"value": "a@x"}]}]}
    response = httpx.Response(200, content=orjson.dumps(body))
    bad = httpx.Response(200, content=b'{"data": [')
    was = gc.isenabled()
    try:
        (gc.enable if collecting else gc.disable)()
        assert client._interpret(response, "/x", {}, 1, "x") == body
        assert gc.isenabled() is collecting
        with pytest.raises(Exception, match="malformed JSON"):
            client._interpret(bad, "/x", {}, 1, "x")
        assert gc.isenabled() is collecting
    finally:
        (gc.enable if was else gc.disable)()
        client.close()


@pytest.mark.parametrize(
    ("data_type", "value", "text"),
    [
        ("double", "NaN", "NaN"),
        ("double", " -Infinity", " -Infinity"),
        ("double", "1e999", "1e999"),
        ("double", float("inf"), "inf"),  # a record hook's float: the fast path would load it as is
        ("bigint", float("nan"), "nan"),  # dlt would make a `__v_double` column of it
        ("double", "9" * 400, "9" * 400),  # a literal JSON cannot give as a double, kept as text
        # beyond 64 bits: dlt's coercion makes the integer, which its writers cannot hold (the load failed)
        ("bigint", "123456789012345678901234", "123456789012345678901234"),
        ("bigint", " 0x" + "F" * 20, " 0x" + "F" * 20),  # dlt strips the text, reads hex
        ("bigint", "9" * 5000, "9" * 5000),  # more digits than Python's int() reads
        ("bigint", 1e25, "1e+25"),
        ("bigint", 2**64 - 1, "18446744073709551615"),
    ],
)
def test_a_number_that_is_not_finite_goes_to_the_text_variant(data_type: str, value: Any, text: str) -> None:
    """dlt's coercion loaded the text as NaN or inf, and every SUM over the column with it; a whole number
    beyond 64 bits in a `bigint` column failed the load."""
    rows = [{"id": 1, "v": 2}, {"id": 2, "v": value}, {"id": 3, "v": "12.5"}]
    part = _shape(rows, {"v": data_type})[0]
    assert isinstance(part.data, list)
    assert [row.get("v") for row in part.data] == [2, None, "12.5"]  # dlt coerces the finite text
    assert [row.get("v__v_text") for row in part.data] == [None, text, None]
    assert part.columns["v__v_text"]["data_type"] == "text"


def test_a_bigint_column_keeps_what_64_bits_hold() -> None:
    values = [2**63 - 1, "-9223372036854775808", 1.5, "1e25", "abc"]  # the last three: dlt's own variants
    rows = [{"id": i, "v": value} for i, value in enumerate(values)]
    part = _shape(rows, {"v": "bigint"})[0]
    assert isinstance(part.data, list)
    assert [row.get("v") for row in part.data] == values
    assert "v__v_text" not in part.columns


def _decoded(content: bytes) -> Any:
    client = PipedriveClient("http://127.0.0.1:9", ApiTokenAuth("token"))
    try:
        return client._interpret(httpx.Response(200, content=content), "/x", {}, 1, "x")
    finally:
        client.close()


def test_a_body_with_numbers_json_cannot_give_as_doubles_keeps_them_as_text() -> None:
    """orjson refuses the whole body: it was retried as malformed and failed every run while the record was
    there. Every other number comes out as orjson gives it (beyond 64 bits a float)."""
    digits = "9" * 400
    others = b'[1.5, 18446744073709551615, 18446744073709551616, -9223372036854775809, 1e-999, "NaN"]'
    content = b'{"data": [{"value": 1e999, "p": NaN, "q": -Infinity, "big": %s, "ok": %s}]}' % (
        digits.encode(),
        others,
    )
    row = {"value": "1e999", "p": "NaN", "q": "-Infinity", "big": digits, "ok": orjson.loads(others)}
    assert repr(_decoded(content)) == repr({"data": [row]})  # repr: an int and its float are equal


BOM = b"\xef\xbb\xbf"


def test_a_byte_order_mark_before_the_body_is_dropped() -> None:
    """Some proxies and gateways put one before a body: orjson refused it, the page was retried as
    malformed and the run failed."""
    body = {"data": [{"id": 1, "name": "x", "value": 1.5}], "success": True}
    assert _decoded(BOM + orjson.dumps(body)) == body
    assert _decoded(BOM + b'{"data": [{"value": NaN}]}') == {"data": [{"value": "NaN"}]}


def test_a_lone_surrogate_escape_becomes_the_replacement_character() -> None:
    """Half of a character beyond U+FFFF (which Pipedrive echoes from text a user entered): orjson refused
    the whole page. A pair stays the character it makes; a backslash written before `ud800` is text."""
    content = (
        b'{"data": [{"a": "x\\ud800y", "b": "\\udc00\\uD83D\\ud83d\\ude00\\uDBFF", '
        b'"c": "\\\\ud800", "d": "\\\\\\ud800", "\\ud800": [1.5, "\\ud83d\\ude00"]}]}'
    )
    row = {"a": "x\ufffdy", "b": "\ufffd\ufffd\U0001f600\ufffd", "c": "\\ud800", "d": "\\\ufffd"}
    row["\ufffd"] = [1.5, "\U0001f600"]
    assert _decoded(content) == {"data": [row]}
    assert _decoded(BOM + content.replace(b"1.5", b"-Infinity"))["data"][0]["\ufffd"][0] == "-Infinity"


@pytest.mark.parametrize(
    "content",
    [
        b'{"data": [{"value": 1e999',  # cut off
        b'{"data": [{"value": 1e999x}]}',
        b'{"data": [{"name": "\\ud800", "value": 1',
        BOM + b'{"data": [{"value": 1',
        BOM,
        b"<html><body>NaN</body></html>",
        BOM + b"<html><body>\\ud800</body></html>",
        # JSON only in UTF-8 here (bytes that are not UTF-8 in a JSON body decode: tests/test_json_body.py)
        b'{"data": [{"name": "\\ud800"}]}'.decode().encode("utf-16"),
    ],
)
def test_a_body_that_is_not_json_otherwise_is_still_malformed(content: bytes) -> None:
    with pytest.raises(Exception, match="malformed JSON|HTML page"):
        _decoded(content)


def test_an_html_page_after_a_byte_order_mark_is_named_one() -> None:
    with pytest.raises(Exception, match="an HTML page instead of JSON"):
        _decoded(BOM + b"  <!DOCTYPE html><html></html>")
