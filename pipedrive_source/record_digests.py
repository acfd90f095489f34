"""Digests of records, the packed table of them a full read keeps in its state, and compact id listings.

A full read loads only the records whose content changed since the last run (`source._Changes`), so the
state keeps a digest of every record it listed. Kept as a dict of key text to hex digest, a record cost
about 250 bytes of memory (two strings and a dict slot) and 35 bytes of state: for the 38,000 call logs,
tasks and projects of a large company, about 10 MB while they were read and 6.6 MB through the load (dlt
decodes the pipeline state again there). Packed (`DigestTable`), a record costs 16 bytes: an 8-byte hash
of its key and the first 8 bytes of its digest, sorted by key hash, stored as base64 (the state is JSON).
"""

from __future__ import annotations

import base64
import hashlib
import sys
from array import array
from bisect import bisect_left
from collections.abc import Callable, Collection, Iterable, Iterator, Mapping, Sequence
from itertools import accumulate
from typing import Any

import orjson

from . import json_body

DIGEST_BYTES = 10  # `digest` (hex); a packed table keeps the first 8 bytes
_PACKED = "Q"  # unsigned 64-bit, little-endian in the state


def key_text(row: Mapping[str, Any], primary_key: str) -> str:
    """A record's key as JSON text (ids are numbers or strings)."""
    return orjson.dumps(row.get(primary_key)).decode()


def digest(row: Any) -> str:
    """A digest of a record's content (hex), independent of key order."""
    return _content_digest(row).hex()


def entry(row: Mapping[str, Any], primary_key: str) -> tuple[int, int]:
    """A record's entry in a `DigestTable`: its key's hash and its packed digest, each computed once."""
    return _key_hash(key_text(row, primary_key)), int.from_bytes(_content_digest(row)[:8], "little")


def set_entry(key: Any, digests: Iterable[str]) -> tuple[int, int]:
    """A `DigestTable` entry of a set of records under one key (a parent's children), from each record's
    `digest`: the key's hash and a packed digest of the set, whatever the records' order."""
    packed = _content_digest(sorted(digests))[:8]
    return _key_hash(orjson.dumps(key).decode()), int.from_bytes(packed, "little")


def _content_digest(row: Any) -> bytes:
    try:
        text = orjson.dumps(row, option=orjson.OPT_SORT_KEYS, default=str)
    except orjson.JSONEncodeError:  # nested past orjson's 254 levels: written level by level instead
        text = json_body.dumps(row, sort_keys=True).encode()
    return hashlib.blake2b(text, digest_size=DIGEST_BYTES).digest()


def _key_hash(key: str) -> int:
    return int.from_bytes(hashlib.blake2b(key.encode(), digest_size=8).digest(), "little")


class DigestTable:
    """Records' digests by key, packed: key hashes and, in the same order, digests; sorted by key hash
    when read from the state or packed into it, and looked up by bisection."""

    def __init__(self) -> None:
        self._keys = array(_PACKED)
        self._digests = array(_PACKED)

    @classmethod
    def from_state(cls, saved: Any) -> DigestTable:
        """The table a state holds: packed text, or the dict of key text to hex digest of earlier versions
        (converted, so that an upgrade does not load every record again)."""
        table = cls()
        if isinstance(saved, dict):
            for key, hex_digest in saved.items():
                table.add(_key_hash(key), int.from_bytes(bytes.fromhex(hex_digest)[:8], "little"))
        elif saved:
            raw = base64.b64decode(saved)
            table._keys.frombytes(raw[: len(raw) // 2])
            table._digests.frombytes(raw[len(raw) // 2 :])
            _little_endian(table._keys, table._digests)
        table._sort()
        return table

    def add(self, key_hash: int, packed_digest: int) -> None:
        self._keys.append(key_hash)
        self._digests.append(packed_digest)

    @classmethod
    def of(cls, entries: Iterable[tuple[int, int]]) -> DigestTable:
        """A (sorted) table of these entries."""
        table = cls()
        for key_hash, packed_digest in entries:
            table.add(key_hash, packed_digest)
        table._sort()
        return table

    def holds(self, key_hash: int, packed_digest: int) -> bool:
        """Whether the (sorted) table holds this key with this digest."""
        return self.digest_of(key_hash) == packed_digest

    def digest_of(self, key_hash: int) -> int | None:
        """The packed digest the (sorted) table holds for this key, or None."""
        at = _sorted_index(self._keys, key_hash)
        return None if at is None else self._digests[at]

    def updated(self, entries: Mapping[int, int]) -> DigestTable:
        """A (sorted) table of these entries and of this table's other keys."""
        kept = ((k, d) for k, d in zip(self._keys, self._digests, strict=True) if k not in entries)
        return DigestTable.of([*kept, *entries.items()])

    def pack(self) -> str:
        """The state's text of the table."""
        self._sort()
        keys, digests = array(_PACKED, self._keys), array(_PACKED, self._digests)
        _little_endian(keys, digests)
        return base64.b64encode(keys.tobytes() + digests.tobytes()).decode()

    def _sort(self) -> None:
        order = sorted(range(len(self._keys)), key=self._keys.__getitem__)
        self._keys = array(_PACKED, (self._keys[i] for i in order))
        self._digests = array(_PACKED, (self._digests[i] for i in order))


def _little_endian(*arrays: array) -> None:
    """The state's byte order, from and to this machine's (a byte swap is its own inverse)."""
    if sys.byteorder == "big":
        for packed in arrays:
            packed.byteswap()


class IdListing(Collection[Any]):
    """A complete listing of ids, kept from the read until the deletion check after the load: integer ids
    as one sorted array of 8 bytes each (the sets of the 38,000 ids of a large company's full-read lists
    held 3.5 MB through the load), text ids (call logs', leads' uuids) as their sorted UTF-8 bytes in one
    buffer (the 20,000 call log ids of a large company held 3.6 MB as a set of strings, strings that the
    read had made and that then stayed scattered through the memory of the load), other ids as a set."""

    def __init__(self, ids: Iterable[Any]) -> None:
        ints: list[int] = []
        texts: set[bytes] = set()
        others: list[Any] = []
        for i in ids:
            if _is_int64(i):
                ints.append(i)
            elif isinstance(i, str):
                texts.add(_utf8(i))
            else:
                others.append(i)
        self._ints = array("q", sorted(ints))
        ordered = sorted(texts)
        self._text = b"".join(ordered)
        self._text_starts = array("q", accumulate(map(len, ordered), initial=0))  # and the end
        self._others = frozenset(others)

    def __contains__(self, value: object) -> bool:
        if isinstance(value, float) and value.is_integer():
            value = int(value)  # as a set would: 7.0 == 7
        if isinstance(value, str):
            return _sorted_index(self._texts, _utf8(value), key=self._text_at) is not None
        if not _is_int64(value):
            return value in self._others
        return _sorted_index(self._ints, value) is not None

    def __iter__(self) -> Iterator[Any]:
        yield from self._ints
        yield from (self._text_at(at).decode("utf-8", "surrogatepass") for at in self._texts)
        yield from self._others

    def __len__(self) -> int:
        return len(self._ints) + len(self._texts) + len(self._others)

    @property
    def _texts(self) -> range:
        """The text ids' places."""
        return range(len(self._text_starts) - 1)

    def _text_at(self, at: int) -> bytes:
        return self._text[self._text_starts[at] : self._text_starts[at + 1]]


def _sorted_index(items: Sequence[Any], value: Any, key: Callable[[Any], Any] | None = None) -> int | None:
    """Where `value` is in `items`, sorted (by `key`), or None."""
    at = bisect_left(items, value, key=key)
    if at < len(items) and (items[at] if key is None else key(items[at])) == value:
        return at
    return None


def _utf8(text: str) -> bytes:
    return text.encode("utf-8", "surrogatepass")  # a lone surrogate is an id too, not an error


def _is_int64(value: object) -> bool:
    return type(value) is int and -(2**63) <= value < 2**63
