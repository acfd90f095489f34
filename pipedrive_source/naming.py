"""Column names for custom fields: readable, ASCII, dlt snake_case, collision-free and stable.

Rules (documented in the README):
- A field's name is folded to ASCII (NFKD, accents dropped, a few letters spelled out: ß -> ss, ø -> o ...)
  and passed through dlt's own snake_case naming convention, so the column we bind is exactly the column
  dlt creates: ``Deal Tier`` -> ``deal_tier``, ``Região de venda`` -> ``regiao_de_venda``.
- A name with nothing readable left (``顧客ランク``) becomes ``cf_<first 8 chars of the hash>``.
- A name longer than ``MAX_STEM`` (150) characters is shortened as dlt shortens identifiers (a tag from the
  whole name in its middle): its column may name a child table, and dlt names files after tables.
- A field owns a *group* of columns: its base name plus the suffixed columns its type can produce
  (``_currency``, ``_until``, ``_id`` ...). A group never overlaps a built-in column or another field's group.
- If the group would hit a built-in column the base gets ``_cf`` (``status`` -> ``status_cf``), then
  ``_cf_2``, ``_cf_3`` ...; if it only hits another custom field it gets ``_2``, ``_3`` ...
- Fields already bound (persisted bindings) keep their column, even after a rename; new fields are named in
  ascending hash order, so every run with the same bindings decides the same way.
- A binding whose column now hits a built-in column is re-bound (a built-in is never overwritten).
"""

from __future__ import annotations

import logging
import re
import unicodedata
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from dlt.common.normalizers.naming.snake_case import NamingConvention

logger = logging.getLogger(__name__)

NAMING = NamingConvention()

# Letters NFKD does not decompose into ASCII; enough for the Latin-script languages Pipedrive is used in.
_SPELLED_OUT = str.maketrans(
    {
        "ß": "ss",
        "ẞ": "SS",
        "æ": "ae",
        "Æ": "AE",
        "œ": "oe",
        "Œ": "OE",
        "ø": "o",
        "Ø": "O",
        "đ": "d",
        "Đ": "D",
        "ð": "d",
        "Ð": "D",
        "þ": "th",
        "Þ": "TH",
        "ł": "l",
        "Ł": "L",
        "ı": "i",
        "ħ": "h",
        "Ħ": "H",
        # symbols are words of their own: glued on, "R&D" became "RandD" and dlt's camelCase split
        # made it `rand_d` ("ID#" -> `i_dno`, "Margin%" -> `marginpct`)
        "€": " eur ",
        "£": " gbp ",
        "$": " usd ",
        "%": " pct ",
        "&": " and ",
        "#": " no ",
    }
)
_EDGE_NON_ALNUM = re.compile(r"^[^A-Za-z0-9]+|[^A-Za-z0-9]+$")
HASH_RE = re.compile(r"[0-9a-f]{40}")
RESERVED_PREFIX = "_dlt"
MAX_SUFFIX_TRIES = 10_000
# A field's column may name a child table (a set field, a list in a text field): `deals__<column>`, whose
# job files dlt names `<table>.<file id>.<retry>.<format>`, and a file name has at most 255 bytes. Pipedrive
# allows 255 characters for a field name: such a column failed every run (`File name too long`). 150 leaves
# room for the longest table prefix (`organizations_history__`), a suffix and dlt's file name parts.
MAX_STEM = 150


def ascii_fold(text: str) -> str:
    """`Região de venda` -> `Regiao de venda`: accents dropped, other letters spelled out."""
    decomposed = unicodedata.normalize("NFKD", text.translate(_SPELLED_OUT))
    return decomposed.encode("ascii", "ignore").decode("ascii")


def normalize(identifier: str) -> str:
    """dlt's snake_case of an identifier that is already ASCII (idempotent on its own output)."""
    return NAMING.normalize_identifier(identifier)


def column_stem(name: str | None, field_code: str) -> str:
    """The readable column a field would get if nothing collided."""
    # Edge punctuation would become `_` and dlt turns a trailing `_` into `x` ("Budget (€)" -> budget_eurx).
    folded = _EDGE_NON_ALNUM.sub("", ascii_fold(name or ""))
    if not folded:
        return f"cf_{field_code[:8]}"
    stem = normalize(folded)
    # as dlt shortens an identifier for a destination's limit: a tag from the whole name keeps two long
    # names that differ only at their end apart
    return NAMING.shorten_identifier(stem, stem, MAX_STEM)


@dataclass(frozen=True)
class FieldSlot:
    """What the binder needs to know about one custom field."""

    code: str
    name: str | None
    suffixes: tuple[str, ...]  # suffixed columns the field's type can produce, e.g. ("_currency",)


def group(base: str, suffixes: Iterable[str]) -> list[str]:
    return [base, *(base + s for s in suffixes)]


def _clashes(columns: Iterable[str], blocked: set[str]) -> bool:
    return any(c in blocked or c.startswith(RESERVED_PREFIX) for c in columns)


def _candidates(stem: str, builtin_hit: bool) -> Iterable[str]:
    first = f"{stem}_cf" if builtin_hit else stem
    yield first
    for n in range(2, MAX_SUFFIX_TRIES):
        yield f"{first}_{n}"


def _pick(slot: FieldSlot, builtins: set[str], taken: set[str]) -> str:
    stem = column_stem(slot.name, slot.code)
    builtin_hit = _clashes(group(stem, slot.suffixes), builtins)
    blocked = builtins | taken
    for base in _candidates(stem, builtin_hit):
        if not _clashes(group(base, slot.suffixes), blocked):
            return base
    return f"cf_{slot.code[:8]}"  # pragma: no cover - 10k fields with one name


def bind_columns(
    slots: Iterable[FieldSlot],
    bindings: Mapping[str, str],
    builtins: Iterable[str],
    orphan_suffixes: tuple[str, ...] = (),
    reserved: Iterable[str] = (),
) -> dict[str, str]:
    """Bind every field code to a base column; returns the new bindings (old ones kept where possible).

    `bindings` may hold codes of fields that no longer exist: they keep their column reserved (with every
    suffix in `orphan_suffixes`) so a new field with the same name never reuses an old field's column.
    `reserved`: other columns custom values are in (a part of an address value its type does not name):
    no field is newly bound onto one.
    """
    builtin_set = set(builtins)
    by_code = {s.code: s for s in slots}
    taken: set[str] = set()
    result: dict[str, str] = {}
    # Live fields first: a deleted field's guessed suffixes ("region" -> "region_id") must not push a live
    # field ("Region ID") off the column its values are in, nor a built-in column ("owner" -> "owner_id")
    # drop the deleted field's reservation. Such a suffix was never the deleted field's own (its group
    # avoided them while it lived), so it keeps the rest.
    for code in sorted(bindings, key=lambda c: (c not in by_code, c)):
        slot, base = by_code.get(code), bindings[code]
        if slot is None:
            blocked = builtin_set | taken
            cols = [base, *(base + s for s in orphan_suffixes if base + s not in blocked)]
        else:
            cols = group(base, slot.suffixes)
        if _clashes(cols, builtin_set | taken):
            logger.warning("custom field %s: column %r collides, re-binding it", code[:8], bindings[code])
            continue
        result[code] = bindings[code]
        taken.update(cols)
    taken.update(reserved)
    for code in sorted(by_code):
        if code in result:
            continue
        slot = by_code[code]
        base = _pick(slot, builtin_set, taken)
        result[code] = base
        taken.update(group(base, slot.suffixes))
    return result
