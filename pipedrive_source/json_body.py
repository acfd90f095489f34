"""Decoding Pipedrive's JSON answers: orjson first, then leniently where orjson refuses a body that is JSON
all the same (`loads`). The data client and the OAuth token refresh decode with it alike: a byte order mark a
proxy put before the token endpoint's answer read as a refusal to refresh."""

from __future__ import annotations

import contextlib
import json
import math
import re
from typing import Any

import orjson

BOM = b"\xef\xbb\xbf"  # UTF-8's byte order mark, which some proxies and gateways put before a body
# a UTF-16 surrogate written as a JSON escape (not text reading `\ud800`, after an escaped backslash): a high
# one then a low one are a pair (one character beyond U+FFFF), any other stands alone
_SURROGATE = re.compile(
    rb"(?<!\\)((?:\\\\)*)"
    rb"(\\u[dD][89abAB][0-9a-fA-F]{2}\\u[dD][c-fC-F][0-9a-fA-F]{2}|\\u[dD][89a-fA-F][0-9a-fA-F]{2})"
)


class _NumbersAsText:
    """Decodes a body orjson refused for a number no double holds (`1e999`, 400 digits) or a `NaN`,
    `Infinity` or `-Infinity` token (JSON has none; Python's encoder writes them): each is kept as its
    text, which the shaping then keeps in `<column>__v_text`. Refused, such a page was retried as
    "malformed JSON body", failed the run, and every later run while the record was there. Every other
    number comes out as orjson gives it (an integer beyond 64 bits as a float), so the page loads as it
    would have."""

    def __init__(self) -> None:
        self.kept = False  # a number was kept as text: the page had what orjson refuses

    def on_constant(self, text: str) -> str:
        self.kept = True
        return text

    def on_float(self, text: str) -> float | str:
        number = float(text)
        if math.isfinite(number):
            return number
        self.kept = True
        return text

    def on_int(self, text: str) -> int | float | str:
        if len(text) <= 20:  # up to 2**64 - 1 (and -2**63): orjson's integers
            number = int(text)
            if -(2**63) <= number < 2**64:
                return number
        return self.on_float(text)


class NotJson(ValueError):
    """A body that is not JSON, even to `_lenient`."""


def loads(content: bytes) -> Any:
    """The body decoded by orjson, or by `_lenient` where orjson refuses it (rare: the common path pays
    nothing for it); raises `NotJson`."""
    try:
        return orjson.loads(content)
    except orjson.JSONDecodeError:
        return _lenient(content)


def _lenient(content: bytes) -> Any:
    """A body orjson refused that is JSON all the same, which Pipedrive's answers can be: a UTF-8 byte order
    mark before it (a proxy's or gateway's) is dropped; a lone surrogate escape (`"\\ud800"`, half of a
    character beyond U+FFFF, which Pipedrive echoes from text a user entered) becomes U+FFFD, the
    replacement character, as a browser shows it (no text column of Arrow, Parquet, DuckDB or Postgres
    holds the surrogate itself; its escape as text would read like text a user typed); a number no double
    holds or a `NaN` token is kept as its text (`_NumbersAsText`); bytes that are not UTF-8 (Latin-1 text a
    user pasted, a proxy that re-encoded the body) become U+FFFD as a browser shows them, one for each
    maximal part of a sequence that went wrong (`b"Caf\\xe9"` is `Caf\ufffd`). Refused, such a page was
    retried as "malformed JSON body", failed the run, and every later run while the record was there. A body
    that is not JSON otherwise (cut off, HTML) raises `NotJson`, and so does one nested deeper than both
    decoders go (orjson 1024 levels, Python's recursion limit): its `RecursionError` escaped, a traceback."""
    repaired = content.removeprefix(BOM)
    if b"\\ud" in repaired or b"\\uD" in repaired:
        repaired = _SURROGATE.sub(_pair_or_replacement, repaired)
    if repaired != content:
        with contextlib.suppress(orjson.JSONDecodeError):
            return orjson.loads(repaired)
    # only now, as a proxy that adds a byte order mark adds it to every page: valid UTF-8 comes back as it
    # was (Latin-1 guessed instead would garble a page that mixes encodings)
    valid = repaired.decode("utf-8", "replace").encode()
    if valid != repaired:
        with contextlib.suppress(orjson.JSONDecodeError):
            return orjson.loads(valid)
    body = _with_numbers_as_text(valid)
    if body is None:
        raise NotJson
    return body


def _pair_or_replacement(match: re.Match[bytes]) -> bytes:
    escapes, surrogate = match.group(1, 2)
    return match[0] if len(surrogate) == 12 else escapes + rb"\ufffd"


def _with_numbers_as_text(content: bytes) -> Any:
    """The body orjson refused, decoded with such numbers kept as their text (`_NumbersAsText`); None when
    it is not JSON anyway, or orjson refused it for something else: retried as before."""
    numbers = _NumbersAsText()
    try:
        body = json.loads(
            content,
            parse_constant=numbers.on_constant,
            parse_float=numbers.on_float,
            parse_int=numbers.on_int,
        )
    except (ValueError, RecursionError):  # JSONDecodeError, UnicodeDecodeError; nested past ~1000 levels
        return None
    return body if numbers.kept else None


class _Raw(str):
    """Text `dumps` writes as it is (a bracket, a separator, a key), never a value's own string."""


def dumps(value: Any, sort_keys: bool = False) -> str:
    """The JSON text of a decoded value, by orjson; a value nested deeper than orjson writes (254 levels; it
    decodes up to 1024) is written here, level by level without recursion, as orjson writes the rest.
    Left to orjson alone, one such value failed the run with `Recursion limit reached`. A value of another
    type than JSON's is written as its `str()`."""
    try:
        return orjson.dumps(value, default=str, option=orjson.OPT_SORT_KEYS if sort_keys else None).decode()
    except orjson.JSONEncodeError:
        if type(value) not in (dict, list):
            raise
    parts: list[str] = []
    stack: list[Any] = [value]
    while stack:
        item = stack.pop()
        if type(item) is _Raw:
            parts.append(item)
        elif isinstance(item, dict):
            stack.append(_Raw("}"))
            entries = sorted(item.items()) if sort_keys else list(item.items())
            for index in range(len(entries) - 1, -1, -1):
                key, member = entries[index]
                stack += [member, _Raw(("," if index else "") + orjson.dumps(str(key)).decode() + ":")]
            stack.append(_Raw("{"))
        elif isinstance(item, list):
            stack.append(_Raw("]"))
            for index in range(len(item) - 1, -1, -1):
                stack += [item[index], _Raw(",")] if index else [item[index]]
            stack.append(_Raw("["))
        else:
            parts.append(orjson.dumps(item, default=str).decode())
    return "".join(parts)
