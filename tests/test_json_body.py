"""`json_body.loads` on bodies orjson refuses: what each decodes to (the syncs over HTTP are in
test_reliability_bad_input.py)."""

from __future__ import annotations

from typing import Any

import orjson
import pytest

from pipedrive_source import json_body

BOM = json_body.BOM


@pytest.mark.parametrize(
    ("body", "decoded"),
    [
        (b'{"n":"Caf\xe9"}', {"n": "Caf\ufffd"}),  # Latin-1
        (b'{"n":"Caf\xc3\xa9 \xff"}', {"n": "Caf\xe9 \ufffd"}),  # UTF-8 next to it stays
        (b'{"n":"\xf0\x9f\x98!"}', {"n": "\ufffd!"}),  # a character cut short: one U+FFFD, as a browser
        (b'{"n":"\xed\xa0\x80"}', {"n": "\ufffd" * 3}),  # a surrogate encoded as UTF-8 (CESU-8)
        (b'{"n\xe9":1}', {"n\ufffd": 1}),  # in a key too
        # with everything else the lenient path repairs, in one body
        (BOM + b'{"n":"\xe9 \\ud800","v":1e999}', {"n": "\ufffd \ufffd", "v": "1e999"}),
    ],
)
def test_bytes_that_are_not_utf8_become_replacement_characters(body: bytes, decoded: Any) -> None:
    assert json_body.loads(body) == decoded


@pytest.mark.parametrize("body", [b'{"n":"\xe9', b"<html>\xe9</html>", b"\xff\xfe{}"])
def test_a_body_that_is_not_json_otherwise_is_still_refused(body: bytes) -> None:
    with pytest.raises(json_body.NotJson):
        json_body.loads(body)


def test_a_body_nested_deeper_than_both_decoders_go_is_refused() -> None:
    """orjson refuses past 1024 levels and Python's decoder hits its recursion limit: a `RecursionError`
    escaped as a traceback instead of the malformed body's retry and one line."""
    with pytest.raises(json_body.NotJson):
        json_body.loads(b'{"a":' + b"[" * 1100 + b"]" * 1100 + b"}")


def test_dumps_writes_what_orjson_writes_and_what_it_refuses() -> None:
    shallow = {"a": [1, {"b": 'x"', "": None}, [], {}], "c": 1.5}
    assert json_body.dumps(shallow) == orjson.dumps(shallow).decode()
    text = "[" * 600 + '{"k":[true,"s"]},2' + "]" * 600
    assert json_body.dumps(orjson.loads(text)) == text
