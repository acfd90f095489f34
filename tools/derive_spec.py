"""Derive the emulator's spec facts from Pipedrive's OpenAPI files.

    uv run python tools/derive_spec.py [--seeds DIR] [--reference DIR] [--out DIR] [--check]

Writes `pipedrive_source/emulator/spec_v2.json` (from the v2 seed spec, whose YAML indentation was lost) and
`spec_v1.json` (from the parseable v1 reference). `--check` writes nothing; it reports
(1) a self-test: the parser run on the *flattened* v2 reference compared with the real (indented) YAML, and
(2) where the seed reconstruction disagrees with the older v2 reference on the paths both have.

How the flat v2 seed is rebuilt (see `FlatParser`): every line is tokenized into (dash, key, value), with
`|`/`>` block scalars and multi-line quoted scalars folded into one token. A recursive-descent parser then
follows the OpenAPI grammar (which keys an operation, parameter, response, media type, schema may have), so
nesting comes from the grammar, not from indentation:
- a keyword occurs once per schema, so a repeated `type:`/`description:` closes the innermost schema;
- a property name is a `name:` line with an empty value followed by a schema keyword, so a property can be
  called `type`, `description`, `items`… (`items:`/`properties:` are keywords only where the schema can
  take them: an array without items / an object without properties);
- `example:` blocks are read back by walking them against the schema they illustrate (`ExampleReader`).
The one thing grammar cannot decide is where a nested object's `properties` end (`location: {...}` followed
by `participants:` could be a sibling or a child). `NestingOracle` settles it from evidence, first match wins:
 1. the same operation in the older v2 reference (exact, for the 87 operations both files have);
 2. `success` / `additional_data` belong to the response root;
 3. the object's own `required` list;
 4. what earlier operations on the same resource settled (`/dealFields` before `/dealFields/{field_code}`);
 5. the property's description names the innermost object ("The subfield type") -> it stays inside;
 6. every earlier child named the object and this one does not -> the object has ended;
 7. child names of same-named objects in the references and in operations parsed so far;
 8. names the operation's `include_fields` / `sort_by` enums list sit at item level;
otherwise the innermost map keeps it. `--check` lists the decisions taken without reference evidence.

Known limits: a block-scalar line that reads as a one-word key (`Note: ...`) ends the block; `example` is
never taken as a property name; rules 5-8 are heuristics (the self-test shows what they get wrong without
rule 1: three nested objects of activities/persons/organizations).
"""

from __future__ import annotations

import argparse
import functools
import json
import re
import sys
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

REPO = Path(__file__).resolve().parent.parent
SEED_V2 = "002_a00f74d36d51d740.txt"
REF_V2 = "pipedrive-api-v2-openapi-2025-12.yaml"
REF_V1 = "pipedrive-api-v1-openapi.yaml"
OUT_DIR = REPO / "pipedrive_source" / "emulator"
V1_LIST_COST = 20  # the README's rule for v1 lists whose spec gives no x-token-cost

_Loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


class _Empty:
    """Value of a `key:` line with nothing after it (a nested block follows, or YAML null)."""

    def __repr__(self) -> str:
        return "EMPTY"


EMPTY = _Empty()

# ---------------------------------------------------------------------------------------------------------
# Tokenizer
# ---------------------------------------------------------------------------------------------------------

_KEY_RE = re.compile(
    # a quoted key, or a plain one (no colon; may start with "-" only if not "- ")
    r"""^(?P<key>'(?:[^']|'')*'|"(?:[^"\\]|\\.)*"|[^\s'"#|>\[{\-][^:]*?|-[^\s:][^:]*?)"""
    r""":(?:[ \t]+(?P<val>.*?))?[ \t]*$"""
)
_BLOCK_INDICATORS = {"|", "|-", "|+", ">", ">-", ">+"}


@dataclass(frozen=True)
class Tok:
    line: int  # 1-based line number in the flat file
    dash: bool  # the line started a list item ("- ")
    key: str | None  # mapping key, None for a bare scalar
    value: Any  # scalar value, or EMPTY


def _ends_block(line: str) -> bool:
    """A block scalar's text runs until a line that reads as a key (one word, or quoted) or a list item."""
    m = _KEY_RE.match(line)
    if m and (m["key"][0] in "'\"" or not re.search(r"\s", m["key"])):
        return True
    return line.startswith("- ") or line == "-"


@functools.cache
def _scalar(text: str) -> Any:
    value = yaml.load(text, Loader=_Loader)
    # unquoted dates/times in examples: keep them as the strings they were
    return value if isinstance(value, str | int | float | bool | list | dict | type(None)) else text


def _complete_flow_scalar(text: str, lines: list[str], i: int) -> tuple[Any, int]:
    """A quoted scalar may run over several lines: join lines until YAML accepts it."""
    while True:
        try:
            return _scalar(text), i
        except yaml.YAMLError:
            if i >= len(lines) or text[:1] not in "'\"[{":
                raise
            text, i = text + "\n" + lines[i], i + 1


def tokenize(text: str) -> list[Tok]:
    lines = text.split("\n")
    toks: list[Tok] = []
    i = 0
    while i < len(lines):
        raw, no = lines[i], i + 1
        i += 1
        if not raw.strip() or raw.lstrip().startswith("#"):
            continue
        dash = raw.startswith("- ")
        body = raw[2:] if dash else raw
        m = _KEY_RE.match(body)
        key = _scalar(m["key"]) if m and m["key"][0] in "'\"" else (m["key"] if m else None)
        rest = (m["val"] or "") if m else body.strip()
        if m is None and not dash:
            raise ValueError(f"line {no}: text outside any scalar: {raw[:80]!r}")
        if rest in _BLOCK_INDICATORS:
            start = i
            while i < len(lines) and not _ends_block(lines[i]):
                i += 1
            value: Any = "\n".join(lines[start:i]) + "\n"
        elif rest == "":
            value = EMPTY
        else:
            value, i = _complete_flow_scalar(rest, lines, i)
        toks.append(Tok(no, dash, None if key is None else str(key), value))
    return toks


# ---------------------------------------------------------------------------------------------------------
# Grammar of the OpenAPI objects the seed uses (schemas are parsed by FlatParser.schema)
# ---------------------------------------------------------------------------------------------------------

S, SCHEMA, EXAMPLE = "scalar", "schema", "example"
METHODS = ("get", "post", "put", "patch", "delete")  # the specs use no head/options


@dataclass(frozen=True)
class ListOf:
    kind: Any


@dataclass(frozen=True)
class MapOf:
    kind: Any
    key_ok: Callable[[str], bool] = lambda _k: True


_HTTP_STATUSES = {
    *range(100, 104),
    *range(200, 209),
    226,
    *range(300, 309),
    *range(400, 419),
    *range(421, 427),
    428,
    429,
    431,
    451,
    *range(500, 512),
}


def _is_status(key: str) -> bool:
    """Response keys; real HTTP codes only, since properties can be named '128' or '512' (picture sizes)."""
    if key == "default" or re.fullmatch(r"[1-5]XX", key):
        return True
    return key.isdigit() and int(key) in _HTTP_STATUSES


def _is_media_type(key: str) -> bool:
    return bool(re.fullmatch(r"[\w.+-]+/[\w.+*-]+", key))


GRAMMAR: dict[str, dict[str, Any]] = {
    "root": {
        "openapi": S,
        "info": "info",
        "servers": ListOf("server"),
        "tags": ListOf("tag"),
        "paths": MapOf("path_item", lambda k: k.startswith("/")),
        "components": "components",
        "security": ListOf(MapOf(ListOf(S))),
        "externalDocs": "external_docs",
    },
    "info": {
        "title": S,
        "version": S,
        "description": S,
        "termsOfService": S,
        "contact": "contact",
        "license": "license",
    },
    "contact": {"name": S, "url": S, "email": S},
    "license": {"name": S, "url": S},
    "external_docs": {"url": S, "description": S},
    "server": {"url": S, "description": S},
    "tag": {"name": S, "description": S},
    "path_item": {
        **{m: "operation" for m in METHODS},
        "parameters": ListOf("parameter"),
        "summary": S,
        "description": S,
    },
    "operation": {
        "summary": S,
        "description": S,
        "operationId": S,
        "tags": ListOf(S),
        "deprecated": S,
        "security": ListOf(MapOf(ListOf(S))),
        "parameters": ListOf("parameter"),
        "requestBody": "request_body",
        "responses": MapOf("response", _is_status),
    },
    "parameter": {
        "in": S,
        "name": S,
        "description": S,
        "required": S,
        "schema": SCHEMA,
        "example": EXAMPLE,
        "deprecated": S,
        "style": S,
        "explode": S,
        "allowEmptyValue": S,
    },
    "request_body": {"content": MapOf("media", _is_media_type), "required": S, "description": S},
    "response": {"description": S, "content": MapOf("media", _is_media_type), "headers": MapOf("header")},
    "header": {"description": S, "schema": SCHEMA},
    "media": {"schema": SCHEMA, "example": EXAMPLE},
    "components": {
        "schemas": MapOf(SCHEMA, lambda k: k not in ("securitySchemes",)),
        "securitySchemes": MapOf("security_scheme"),
    },
    "security_scheme": {
        "type": S,
        "scheme": S,
        "description": S,
        "name": S,
        "in": S,
        "bearerFormat": S,
        "flows": "oauth_flows",
    },
    "oauth_flows": {
        f: "oauth_flow" for f in ("authorizationCode", "implicit", "password", "clientCredentials")
    },
    "oauth_flow": {"authorizationUrl": S, "tokenUrl": S, "refreshUrl": S, "scopes": MapOf(S)},
}

# schema keywords that take a scalar on their own line
SCHEMA_SCALARS = {
    "type",
    "format",
    "title",
    "description",
    "default",
    "nullable",
    "example",
    "minimum",
    "maximum",
    "exclusiveMinimum",
    "exclusiveMaximum",
    "minLength",
    "maxLength",
    "pattern",
    "minItems",
    "maxItems",
    "uniqueItems",
    "readOnly",
    "writeOnly",
    "deprecated",
    "multipleOf",
    "additionalProperties",
    "enum",
    "required",
    "minProperties",
    "maxProperties",
}
SCHEMA_BLOCKS = {
    "properties",
    "items",
    "allOf",
    "oneOf",
    "anyOf",
    "not",
    "additionalProperties",
    "enum",
    "required",
    "default",
    "example",
}
SCHEMA_KEYWORDS = SCHEMA_SCALARS | SCHEMA_BLOCKS
COMBINERS = ("allOf", "oneOf", "anyOf")


def _is_structural_key(key: str) -> bool:
    """Keys that continue the enclosing OpenAPI document, never an example's data."""
    return key in STRUCTURAL_KEYS or key.startswith(("/", "x-")) or _is_status(key)


STRUCTURAL_KEYS = {k for table in GRAMMAR.values() for k in table} - {
    "name",
    "description",
    "type",
    "title",
    "summary",
    "required",
    "url",
    "in",
}


def _is_keyword(key: str | None) -> bool:
    return key is not None and (key in SCHEMA_KEYWORDS or key.startswith("x-"))


def declared_properties(schema: Any) -> dict[str, Any]:
    """Properties of a schema including those of its allOf/oneOf/anyOf parts."""
    if not isinstance(schema, dict):
        return {}
    props = dict(schema.get("properties") or {})
    for comb in COMBINERS:
        for part in schema.get(comb) or []:
            props.update(declared_properties(part))
    return props


def is_free_form(schema: Any) -> bool:
    """An object whose keys are not declared (custom_fields, additionalProperties maps, untyped)."""
    if not isinstance(schema, dict):
        return True
    return not declared_properties(schema) and schema.get("type") in (None, "object")


# ---------------------------------------------------------------------------------------------------------
# Where a property name belongs when several `properties` maps are open
# ---------------------------------------------------------------------------------------------------------


@dataclass
class Frame:
    """An open `properties` map: its place in the schema (names from the schema root) and names so far."""

    spath: tuple[str, ...]
    names: dict[str, Any] = field(default_factory=dict)
    required: frozenset[str] = frozenset()
    response: bool = False  # the map is the root of a response body


ENVELOPE_KEYS = frozenset({"success", "additional_data"})


class NestingOracle:
    """Decides which open `properties` map a property name belongs to."""

    def __init__(self, ref_shapes: dict[tuple, dict[tuple, set[str]]], vocab: dict[str, set[str]]):
        self.ref_shapes = ref_shapes  # (path, method, location) -> spath -> names, from the older v2 file
        self.vocab = vocab  # object property name -> child names seen in the references
        self.item_level: set[str] = set()  # names the current operation's query enums put at item level
        self.decisions: list[tuple] = []  # (where, name, innermost spath, chosen spath, rule)
        self.description = ""  # of the property being placed
        self.learned: dict[str, dict[tuple, set[str]]] = {}  # resource -> item-relative path -> names
        self.where: tuple = ()

    def choose(self, name: str, frames: list[Frame], description: str = "") -> int:
        open_ = [i for i, f in enumerate(frames) if name not in f.names]  # a name occurs once per map
        if not open_:
            return -1
        if not frames[-1].names:
            return len(frames) - 1  # `properties:` is followed by at least one of its own properties
        self.description = description
        for rule in (
            self._reference,
            self._envelope,
            self._required,
            self._learned,
            self._mentions_owner,
            self._breaks_pattern,
            self._vocabulary,
            self._item_level,
        ):
            hit = rule(name, frames, open_)
            if hit is not None:
                self._note(rule.__name__.strip("_"), name, frames, hit)
                return hit
        self._note("innermost", name, frames, open_[-1])
        return open_[-1]

    def _note(self, rule: str, name: str, frames: list[Frame], hit: int) -> None:
        """Record decisions that had a real alternative, for --check to show."""
        if len(frames) > 1:
            self.decisions.append((self.where, name, frames[-1].spath, frames[hit].spath, rule))

    def _reference(self, name: str, frames: list[Frame], open_: list[int]) -> int | None:
        shapes = self.ref_shapes.get(self.where)
        if not shapes:
            return None
        return next((i for i in reversed(open_) if name in shapes.get(frames[i].spath, ())), None)

    @staticmethod
    def _envelope(name: str, frames: list[Frame], open_: list[int]) -> int | None:
        """`success` / `additional_data` belong to the response root (the `data` items never have them)."""
        if name not in ENVELOPE_KEYS:
            return None
        return next((i for i in open_ if frames[i].spath == () and frames[i].response), None)

    def learn(self, path: str, op: dict) -> None:
        """Remember the item shapes an operation ended up with, for later operations on the same resource."""
        shapes = self.learned.setdefault(_resource(path), {})
        for location, schema in _media_schemas(op):
            if location.startswith("response 2"):
                found: dict[tuple, set[str]] = {}
                _shape(schema, (), found)
                for spath, names in found.items():
                    rel = _item_relative(spath)
                    if rel is not None:
                        shapes.setdefault(rel, set()).update(names)
                    self.vocab.setdefault(_owner(spath), set()).update(names)

    def _learned(self, name: str, frames: list[Frame], open_: list[int]) -> int | None:
        shapes = self.learned.get(_resource(self.where[0])) if self.where else None
        if not shapes:
            return None
        owns = (i for i in reversed(open_) if name in shapes.get(_item_relative(frames[i].spath), ()))
        return next(owns, None)

    def _mentions_owner(self, name: str, frames: list[Frame], open_: list[int]) -> int | None:
        """A child's description usually names its object ("The subfield type", "When the option was
        created"): if the property's description names the innermost object, it stays there."""
        inner = len(frames) - 1
        stems = _stems(_owner(frames[inner].spath))
        text = self.description.lower()
        return inner if inner in open_ and stems and any(stem in text for stem in stems) else None

    def _breaks_pattern(self, name: str, frames: list[Frame], open_: list[int]) -> int | None:
        """If every child so far names its object and this property does not, the object has ended."""
        inner = len(frames) - 1
        stems = _stems(_owner(frames[inner].spath))
        descriptions = [str(sub.get("description", "")).lower() for sub in frames[inner].names.values()]
        if not stems or len(descriptions) < 2 or len(open_) < 2 or open_[-1] != inner:
            return None
        if all(any(stem in d for stem in stems) for d in descriptions) and not any(
            stem in self.description.lower() for stem in stems
        ):
            return open_[-2]
        return None

    @staticmethod
    def _required(name: str, frames: list[Frame], open_: list[int]) -> int | None:
        return next((i for i in reversed(open_) if name in frames[i].required), None)

    def _item_level(self, name: str, frames: list[Frame], open_: list[int]) -> int | None:
        if name not in self.item_level:
            return None
        # a map holding `success`/`data` is an envelope even at an item path (`data[].data` in some schemas)
        return next(
            (
                i
                for i in reversed(open_)
                if _is_item_path(frames[i].spath) and not ENVELOPE_KEYS & frames[i].names.keys()
            ),
            None,
        )

    def _vocabulary(self, name: str, frames: list[Frame], open_: list[int]) -> int | None:
        return self._closed_by(name, frames, open_, self.vocab)

    @staticmethod
    def _closed_by(name: str, frames: list[Frame], open_: list[int], known: dict) -> int | None:
        """Innermost open map whose owner is known to contain `name`, skipping known owners that lack it.

        Once a known owner excluded the name, the next map outwards whose owner is unknown takes it.
        """
        excluded = False
        for i in reversed(open_):
            owner = _owner(frames[i].spath)
            if owner not in known:
                return i if excluded else None
            if name in known[owner]:
                return i
            excluded = True
        return None


_GENERIC_WORDS = {"field", "fields", "data", "id", "ids", "in", "is", "item", "items", "of", "the", "ui"}


def _stems(owner: str) -> list[str]:
    """Word stems of an object's name, generic words dropped: show_in_pipelines -> ['show', 'pipel']."""
    return [w[:5] for w in owner.lower().split("_") if w not in _GENERIC_WORDS and len(w) >= 3]


def _resource(path: str) -> str:
    """'/dealFields/{field_code}' -> '/dealFields': list and single-item operations share item shapes."""
    return re.sub(r"/\{[^}]+\}$", "", path)


def _item_relative(spath: tuple[str, ...]) -> tuple[str, ...] | None:
    """Position inside the `data` item: ('data', '[]', 'options') and ('data', 'options') -> ('options',)."""
    if spath[:1] != ("data",):
        return None
    return spath[2:] if spath[1:2] == ("[]",) else spath[1:]


def _owner(spath: tuple[str, ...]) -> str:
    names = [p for p in spath if p not in ("[]", "{}")]
    return names[-1] if names else ""


def _is_item_path(spath: tuple[str, ...]) -> bool:
    return spath in (("data",), ("data", "[]"))


# ---------------------------------------------------------------------------------------------------------
# Parser
# ---------------------------------------------------------------------------------------------------------


class ParseError(ValueError):
    pass


class FlatParser:
    """Recursive descent over the token list; each parse method stops at the first token it cannot own."""

    def __init__(self, toks: list[Tok], oracle: NestingOracle):
        self.toks = toks
        self.i = 0
        self.oracle = oracle
        self.frames: list[Frame] = []
        self.where: list[Any] = []
        self.open: list[Callable[[Tok], bool]] = []  # accept-predicates of the containers being parsed

    # -- cursor -------------------------------------------------------------------------------------------
    def peek(self, ahead: int = 0) -> Tok | None:
        j = self.i + ahead
        return self.toks[j] if j < len(self.toks) else None

    def take(self) -> Tok:
        tok = self.toks[self.i]
        self.i += 1
        return tok

    def _next_is_dash(self) -> bool:
        t = self.peek()
        return t is not None and t.dash

    # -- documents ----------------------------------------------------------------------------------------
    def document(self) -> dict:
        doc = self.obj("root", first_dash=False)
        if self.i != len(self.toks):
            t = self.toks[self.i]
            raise ParseError(f"line {t.line}: cannot place {t.key or t.value!r} (context {self.where})")
        return doc

    def value(self, kind: Any, tok: Tok, owner: dict) -> Any:
        if kind == S:
            if tok.value is EMPTY and self._next_is_dash():
                return self.list_of(S)
            return None if tok.value is EMPTY else tok.value
        if tok.value is not EMPTY:
            return tok.value  # e.g. `security: []`, `custom_fields: {}`
        if kind == SCHEMA:
            return self.schema(())
        if kind == EXAMPLE:
            return ExampleReader(self).read(owner.get("schema"))
        if isinstance(kind, ListOf):
            return self.list_of(kind.kind)
        if isinstance(kind, MapOf):
            return self.map_of(kind)
        return self.obj(kind)

    def _run(
        self,
        accepts: Callable[[Tok], bool],
        consume: Callable[[Tok], None],
        first_dash: bool = False,
        continues: Callable[[Tok], bool] | None = None,
    ) -> None:
        """Feed tokens to a container while it accepts them (only its first token may be a list item).

        Open containers register `continues` (default: `accepts`) so an example can ask whether a token
        continues the document rather than the example."""

        def takes(t: Tok) -> bool:
            return not t.dash and accepts(t)

        self.open.append(takes if continues is None else lambda t: not t.dash and continues(t))
        try:
            while (t := self.peek()) is not None and (accepts(t) if first_dash and t.dash else takes(t)):
                first_dash = False
                self.take()
                consume(t)
        finally:
            self.open.pop()

    def could_continue(self, t: Tok, skip_innermost: int = 1) -> bool:
        """Would an open container (other than the innermost `skip_innermost`) take this token?"""
        return any(takes(t) for takes in self.open[: len(self.open) - skip_innermost])

    def obj(self, kind: str, first_dash: bool = False) -> dict:
        table, out = GRAMMAR[kind], {}

        def accepts(t: Tok) -> bool:
            return t.key is not None and t.key not in out and (t.key in table or t.key.startswith("x-"))

        def consume(t: Tok) -> None:
            with self._context(kind, t.key):
                out[t.key] = self.value(table.get(t.key, S), t, out)
            if kind == "operation" and t.key == "parameters":
                self.oracle.item_level = item_level_names(out["parameters"])
            if kind == "path_item" and t.key in METHODS:
                self.oracle.learn(self.where[-1][1], out[t.key])

        # the scalars of an OpenAPI object precede its blocks, so after a nested example only blocks follow
        self._run(accepts, consume, first_dash, continues=lambda t: accepts(t) and table.get(t.key, S) != S)
        return out

    def list_of(self, kind: Any) -> list:
        out: list = []

        def takes(t: Tok) -> bool:
            return t.dash and (t.key is None) == (kind == S)

        self.open.append(takes)
        try:
            while (t := self.peek()) is not None and takes(t):
                if kind == S:
                    out.append(self.take().value)
                elif kind == SCHEMA:
                    out.append(self.schema((), first_dash=True))
                elif isinstance(kind, MapOf):
                    out.append(self.map_of(kind, first_dash=True))
                else:
                    out.append(self.obj(kind, first_dash=True))
        finally:
            self.open.pop()
        return out

    def map_of(self, kind: MapOf, first_dash: bool = False) -> dict:
        out: dict = {}

        def accepts(t: Tok) -> bool:
            return (
                t.key is not None
                and t.key not in out
                and kind.key_ok(t.key)
                and self._map_value_fits(kind.kind, t)
            )

        def consume(t: Tok) -> None:
            with self._context("map", t.key):
                out[t.key] = self.value(kind.kind, t, out)

        self._run(accepts, consume, first_dash)
        return out

    def _map_value_fits(self, kind: Any, t: Tok) -> bool:
        if kind == S:
            return t.value is not EMPTY
        if isinstance(kind, ListOf):  # e.g. `oauth2:` followed by `- 'deals:read'` items
            nxt = self._after(t)
            return isinstance(t.value, list) or (
                t.value is EMPTY and nxt is not None and nxt.dash and (nxt.key is None) == (kind.kind == S)
            )
        return t.value is EMPTY

    # -- schemas ------------------------------------------------------------------------------------------
    def schema(self, spath: tuple[str, ...], first_dash: bool = False) -> dict:
        s: dict[str, Any] = {}

        def accepts(t: Tok) -> bool:
            return t.key is not None and t.key not in s and self._schema_takes(s, t)

        def consume(t: Tok) -> None:
            s[t.key] = self._schema_value(s, t, spath)

        self._run(accepts, consume, first_dash)
        return s

    def _schema_takes(self, s: dict, t: Tok) -> bool:
        k = t.key
        if t.value is not EMPTY:
            return k in SCHEMA_SCALARS or k.startswith("x-")
        nxt = self._after(t)
        if k == "properties":
            return s.get("type", "object") == "object" and "items" not in s
        if k == "items":
            return s.get("type", "array") == "array" and "properties" not in s
        if k in COMBINERS:
            return nxt is not None and nxt.dash and nxt.key is not None
        if k in ("enum", "required", "default"):
            return nxt is not None and nxt.dash and nxt.key is None
        if k == "additionalProperties":
            return nxt is not None and not nxt.dash and _is_keyword(nxt.key)
        if k == "example":
            return ExampleReader.fits(s, nxt, self.frames)
        return k == "not"

    def _after(self, t: Tok) -> Tok | None:
        """The token after `t`; predicates are only ever asked about the next token."""
        assert self.peek() is t
        return self.peek(1)

    def _schema_value(self, s: dict, t: Tok, spath: tuple[str, ...]) -> Any:
        k = t.key
        if t.value is not EMPTY:
            return t.value
        if k == "properties":
            return self.properties(spath, frozenset(s.get("required") or ()))
        if k == "items":
            return self.schema(spath + ("[]",))
        if k in COMBINERS:
            return self._schema_list(spath)
        if k in ("enum", "required", "default"):
            return self.list_of(S)
        if k == "additionalProperties":
            return self.schema(spath + ("{}",))
        if k == "example":
            return ExampleReader(self).read(s)
        return self.schema(spath)

    def _schema_list(self, spath: tuple[str, ...]) -> list:
        out: list = []

        def takes(t: Tok) -> bool:
            return t.dash and t.key is not None

        self.open.append(takes)
        try:
            while (t := self.peek()) is not None and takes(t):
                out.append(self.schema(spath, first_dash=True))
        finally:
            self.open.pop()
        return out

    def properties(self, spath: tuple[str, ...], required: frozenset[str]) -> dict:
        in_response = len(self.oracle.where) == 3 and self.oracle.where[2].startswith("response")
        frame = Frame(spath, required=required, response=in_response)

        def accepts(t: Tok) -> bool:
            return self._starts_property(t) and t.key not in frame.names

        def consume(t: Tok) -> None:
            frame.names[t.key] = self.schema(spath + (t.key,))

        self.frames.append(frame)
        try:
            self._run(lambda t: accepts(t) and self._chosen(t), consume)
        finally:
            self.frames.pop()
        return frame.names

    def _chosen(self, t: Tok) -> bool:
        """Does the innermost open `properties` map own this property name (see NestingOracle)?"""
        return self.oracle.choose(t.key, self.frames, self._description_ahead()) == len(self.frames) - 1

    def _description_ahead(self) -> str:
        """The description of the property starting at the next token, read ahead over its keywords."""
        for j in range(self.i + 1, min(self.i + 8, len(self.toks))):
            t = self.toks[j]
            if t.dash or not _is_keyword(t.key):
                break
            if t.key == "description" and isinstance(t.value, str):
                return t.value
        return ""

    def _starts_property(self, t: Tok) -> bool:
        """`name:` with an empty value, followed by the first keyword of the property's schema."""
        if t.dash or t.key is None or t.value is not EMPTY or t.key == "example":
            return False
        if _is_status(t.key) or t.key.startswith("/") or t.key in METHODS:
            return False  # a response code, path or method of the enclosing document
        nxt = self._after(t)
        return nxt is not None and not nxt.dash and _is_keyword(nxt.key)

    # -- context for the oracle ---------------------------------------------------------------------------
    def _context(self, kind: str, key: str) -> _Ctx:
        return _Ctx(self, kind, key)


class _Ctx:
    """Tracks (path, method, location) while parsing so the oracle can look the operation up."""

    def __init__(self, parser: FlatParser, kind: str, key: str):
        self.p, self.kind, self.key = parser, kind, key

    def __enter__(self) -> None:
        self.p.where.append((self.kind, self.key))
        self.p.oracle.where = _where(self.p.where)
        if self.kind == "path_item" and self.key in METHODS:
            self.p.oracle.item_level = set()

    def __exit__(self, *exc: object) -> None:
        self.p.where.pop()
        self.p.oracle.where = _where(self.p.where)


def _where(stack: list[tuple[str, str]]) -> tuple:
    """(path, method, location) for the oracle, e.g. ('/deals', 'get', 'response 200 application/json')."""
    keys = [k for _kind, k in stack]
    if len(keys) < 3 or keys[0] != "paths":
        return ()
    path, method, rest = keys[1], keys[2], keys[3:]
    if rest[:1] == ["responses"] and len(rest) >= 4:
        return (path, method, f"response {rest[1]} {rest[3]}")
    if rest[:1] == ["requestBody"] and len(rest) >= 3:
        return (path, method, f"request {rest[2]}")
    return (path, method, "")


class ExampleReader:
    """Reads an `example:` block back into data by walking it against the schema it illustrates.

    A key belongs to the innermost open level that declares it and has not had it yet; then spec structure
    (a response code, `schema:`, a property or keyword an enclosing container would take) ends the example;
    then the innermost free-form level (custom_fields, untyped objects) takes it; otherwise it is a key the
    schema forgot, kept in the innermost map. List items (`- `) go to the innermost list that fits.
    """

    def __init__(self, parser: FlatParser):
        self.p = parser

    @staticmethod
    def fits(schema: dict, nxt: Tok | None, frames: list[Frame]) -> bool:
        """Is an example starting with `nxt` an instance of `schema` (rather than of an enclosing one)?"""
        if nxt is None:
            return False
        if nxt.dash:
            return schema.get("type") == "array" or "items" in schema
        if nxt.key is None:
            return False
        if nxt.key in declared_properties(schema):
            return True
        free = is_free_form(schema) and schema.get("type") == "object"
        return free and not any(nxt.key in f.names for f in frames)

    def read(self, schema: Any) -> Any:
        first = self.p.peek()
        if first is None:
            return None
        root = _Level.of(schema, first.dash)
        levels = [root]
        while (t := self.p.peek()) is not None and self._place(levels, t):
            pass
        return root.value

    def _place(self, levels: list[_Level], t: Tok) -> bool:
        if t.dash:
            idx = self._list_level(levels, t)
            if idx is None:
                return False
            del levels[idx + 1 :]
            self.p.take()
            if t.key is None:
                levels[idx].value.append(t.value)
                return True
            element: dict = {}
            levels[idx].value.append(element)
            levels.append(_Level(levels[idx].schema, is_list=False, value=element))
            self._take_key(levels, t)
            return True
        idx = self._map_level(levels, t) if t.key is not None else None
        if idx is None:
            return False
        del levels[idx + 1 :]
        self.p.take()
        self._take_key(levels, t)
        return True

    def _take_key(self, levels: list[_Level], t: Tok) -> None:
        level = levels[-1]
        level.seen.add(t.key)
        if t.value is not EMPTY:
            level.value[t.key] = t.value
            return
        child = declared_properties(level.schema).get(t.key) if isinstance(level.schema, dict) else None
        if child is None and isinstance(level.schema, dict):
            extra = level.schema.get("additionalProperties")
            child = extra if isinstance(extra, dict) else None
        nxt = self.p.peek()
        if nxt is not None and nxt.dash:
            items = child.get("items") if isinstance(child, dict) else None
            level.value[t.key] = []
            levels.append(_Level(items, is_list=True, value=level.value[t.key]))
        elif nxt is None or (isinstance(child, dict) and child.get("type") not in (None, "object", "array")):
            level.value[t.key] = None  # `key:` with nothing is a YAML null
        else:
            level.value[t.key] = {}
            levels.append(_Level(child, is_list=False, value=level.value[t.key]))

    def _list_level(self, levels: list[_Level], t: Tok) -> int | None:
        lists = [i for i in range(len(levels) - 1, -1, -1) if levels[i].is_list]
        if t.key is None:
            return lists[0] if lists else None
        for i in lists:
            if t.key in declared_properties(levels[i].schema):
                return i
        free = next((i for i in lists if is_free_form(levels[i].schema)), None)
        if free is not None or not lists or self.p.could_continue(t):
            return free
        return lists[0]

    def _map_level(self, levels: list[_Level], t: Tok) -> int | None:
        maps = [i for i in range(len(levels) - 1, -1, -1) if not levels[i].is_list]
        unseen = [i for i in maps if t.key not in levels[i].seen]
        declared = next((i for i in unseen if t.key in declared_properties(levels[i].schema)), None)
        if declared is not None:
            return declared
        if _is_structural_key(t.key):
            return None
        if t.key in ENVELOPE_KEYS and maps and maps[-1] == 0 and 0 in unseen:
            return 0  # an example given before its schema: the envelope keys still sit at the root
        free = next((i for i in unseen if is_free_form(levels[i].schema)), None)
        if free is not None:
            return free
        if self.p.could_continue(t):
            return None
        return maps[0] if maps else None


@dataclass
class _Level:
    schema: Any
    is_list: bool
    value: Any = None  # the dict or list being rebuilt
    seen: set[str] = field(default_factory=set)

    @classmethod
    def of(cls, schema: Any, dash: bool) -> _Level:
        if dash:
            items = schema.get("items") if isinstance(schema, dict) else None
            return cls(items, is_list=True, value=[])
        return cls(schema, is_list=False, value={})


def parse_flat(text: str, oracle: NestingOracle) -> dict:
    return FlatParser(tokenize(text), oracle).document()


def item_level_names(params: list[dict]) -> set[str]:
    """Names an operation's `include_fields` / `sort_by` enums list: they are properties of the items."""
    names: set[str] = set()
    for p in params or []:
        if p.get("in") == "query" and p.get("name") in ("include_fields", "sort_by"):
            for value in (p.get("schema") or {}).get("enum") or []:
                names.update(str(value).split(","))
    return names


# ---------------------------------------------------------------------------------------------------------
# Evidence from the parseable references
# ---------------------------------------------------------------------------------------------------------


def load_yaml(path: Path) -> dict:
    with path.open(encoding="utf-8") as fh:
        return yaml.load(fh, Loader=_Loader)


def _media_schemas(op: dict) -> Iterable[tuple[str, dict]]:
    for code, resp in (op.get("responses") or {}).items():
        for media, body in ((resp or {}).get("content") or {}).items():
            yield f"response {code} {media}", (body or {}).get("schema") or {}
    for media, body in (((op.get("requestBody") or {}).get("content")) or {}).items():
        yield f"request {media}", (body or {}).get("schema") or {}


def _shape(schema: Any, spath: tuple[str, ...], out: dict[tuple, set[str]]) -> None:
    """spath -> property names declared there, the way FlatParser numbers its `properties` maps."""
    if not isinstance(schema, dict):
        return
    props = schema.get("properties")
    if isinstance(props, dict):
        out.setdefault(spath, set()).update(props)
        for name, sub in props.items():
            _shape(sub, spath + (name,), out)
    for comb in COMBINERS:
        for part in schema.get(comb) or []:
            _shape(part, spath, out)
    _shape(schema.get("items"), spath + ("[]",), out)
    extra = schema.get("additionalProperties")
    if isinstance(extra, dict):
        _shape(extra, spath + ("{}",), out)


def reference_shapes(doc: dict) -> dict[tuple, dict[tuple, set[str]]]:
    shapes: dict[tuple, dict[tuple, set[str]]] = {}
    for path, item in (doc.get("paths") or {}).items():
        for method, op in item.items():
            if method not in METHODS:
                continue
            for location, schema in _media_schemas(op):
                _shape(schema, (), shapes.setdefault((path, method, location), {}))
    return shapes


def vocabulary(*docs: dict) -> dict[str, set[str]]:
    """object property name -> names of its children, over every schema of the given documents."""
    vocab: dict[str, set[str]] = {}

    def walk(node: Any) -> None:
        if isinstance(node, dict):
            props = node.get("properties")
            for name, sub in props.items() if isinstance(props, dict) else ():
                target = sub.get("items", sub) if isinstance(sub, dict) else None
                children = declared_properties(target)
                if children:
                    vocab.setdefault(name, set()).update(children)
            for key, value in node.items():
                if key != "example":
                    walk(value)
        elif isinstance(node, list):
            for value in node:
                walk(value)

    for doc in docs:
        walk(doc.get("paths"))
        for item in (doc.get("paths") or {}).values():
            for method, op in item.items():
                for location, schema in _media_schemas(op) if method in METHODS else ():
                    if location.startswith("response"):
                        vocab.setdefault("", set()).update(declared_properties(schema))
    return vocab


# ---------------------------------------------------------------------------------------------------------
# Reduction to the facts the emulator needs
# ---------------------------------------------------------------------------------------------------------

JSON_TYPES = ("string", "integer", "number", "boolean", "object", "array")


def merged(schema: Any) -> dict:
    """allOf parts folded into one schema (properties merged, first type/nullable wins)."""
    if not isinstance(schema, dict):
        return {}
    out = {k: v for k, v in schema.items() if k != "allOf"}
    for part in schema.get("allOf") or []:
        part = merged(part)
        for key, value in part.items():
            if key == "properties":
                out["properties"] = {**(out.get("properties") or {}), **value}
            else:
                out.setdefault(key, value)
    return out


def json_type(schema: dict) -> str | list[str]:
    if schema.get("type") in JSON_TYPES:
        return schema["type"]
    variants = schema.get("oneOf") or schema.get("anyOf")
    if variants:
        types = sorted({t for v in variants for t in _as_list(json_type(merged(v)))})
        return types[0] if len(types) == 1 else types
    if "properties" in schema or "additionalProperties" in schema:
        return "object"
    if "items" in schema:
        return "array"
    return "any"


def _as_list(value: str | list[str]) -> list[str]:
    return value if isinstance(value, list) else [value]


_CONDITIONAL = re.compile(r"\bincluded (when|if)\b", re.IGNORECASE)


def type_tree(schema: Any) -> dict:
    """Compact shape of a schema: type, nullable, conditional, enum, properties or additional_properties,
    items."""
    schema = merged(schema)
    kind = json_type(schema)
    node: dict[str, Any] = {"type": kind, "nullable": bool(schema.get("nullable"))}
    if _CONDITIONAL.search(str(schema.get("description", ""))):
        node["conditional"] = True  # "only included when requested via include_fields", "included if ..."
    if schema.get("enum") and kind in ("string", "integer", "number"):
        node["enum"] = [v for v in schema["enum"] if v is not None]
    if "object" in _as_list(kind):
        props = declared_properties(schema)
        if props:
            node["properties"] = {name: type_tree(sub) for name, sub in props.items()}
        if not props or schema.get("additionalProperties") not in (None, False):
            node["additional_properties"] = True
    if "array" in _as_list(kind):
        items = schema.get("items")
        node["items"] = type_tree(items) if items else {"type": "any", "nullable": True}
    return node


# v1 `sort` parameters (notes, files) name their fields only in prose: "Supported fields: `id`, `update_time`"
_SUPPORTED_FIELDS = re.compile(r"Supported fields: ((?:`[^`]+`(?:, )?)+)")


# A list's `limit` states its ceiling and default mostly in prose: "Please note that a maximum value of 500 is
# allowed." (v2, v1 files, whose schema also says `maximum: 100`), "The upper limit is 50." (v1 call logs),
# "If not provided, 100 items will be returned."
_MAXIMUM = re.compile(r"maximum value of (\d+) is allowed|upper limit is (\d+)")
_DEFAULT_COUNT = re.compile(r"If not provided, (\d+) items will be returned")


def param_record(param: dict) -> dict:
    schema = merged(param.get("schema"))
    description = param.get("description") or ""
    enum = schema.get("enum")
    if not enum and (found := _SUPPORTED_FIELDS.search(description)):
        enum = re.findall(r"`([^`]+)`", found[1])
    maximum, default = schema.get("maximum"), schema.get("default")
    if maximum is None and (found := _MAXIMUM.search(description)):
        maximum = int(found[1] or found[2])
    if default is None and (found := _DEFAULT_COUNT.search(description)):
        default = int(found[1])
    record = {
        "type": json_type(schema) if schema else "string",
        "enum": [v for v in enum or []] or None,
        "default": default,
        "required": bool(param.get("required")),
    }
    if maximum is not None:
        record["maximum"] = maximum
    return record


def _params(path_item: dict, op: dict, where: str) -> dict[str, dict]:
    params = [*(path_item.get("parameters") or []), *(op.get("parameters") or [])]
    return {p["name"]: param_record(p) for p in params if p.get("in") == where}


def _success_media(op: dict) -> dict | None:
    for code in ("200", "201"):
        content = ((op.get("responses") or {}).get(code) or {}).get("content") or {}
        if "application/json" in content:
            return content["application/json"] or {}
    return None


def _example_items(media: dict, is_list: bool) -> list[dict]:
    """The `data` items of the response example (media-level, else on the schema)."""
    example = media.get("example", (media.get("schema") or {}).get("example"))
    data = example.get("data") if isinstance(example, dict) else None
    items = data if is_list and isinstance(data, list) else [data]
    return [it for it in items if isinstance(it, dict)]


def example_tree(value: Any) -> dict:
    """Type node of an example value (for keys the schema forgot but the example shows)."""
    if value is None:
        return {"type": "any", "nullable": True}
    if isinstance(value, bool):
        return {"type": "boolean", "nullable": False}
    kind = {int: "integer", float: "number", str: "string", dict: "object", list: "array"}[type(value)]
    node: dict[str, Any] = {"type": kind, "nullable": False}
    if isinstance(value, dict):
        if value:
            node["properties"] = {k: example_tree(v) for k, v in value.items()}
        else:
            node["additional_properties"] = True
    if isinstance(value, list):
        node["items"] = example_tree(next((v for v in value if v is not None), None))
    return node


def _from_examples(items: list[dict], declared: dict) -> dict[str, dict]:
    """Item keys only the example shows, typed from the first non-null sample (nullable if any is null)."""
    extra: dict[str, dict] = {}
    for key in sorted({k for it in items for k in it} - declared.keys()):
        samples = [it[key] for it in items if key in it]
        known = next((v for v in samples if v is not None), None)
        node = example_tree(known)
        node["nullable"] = node["nullable"] or None in samples
        node["from_example"] = True
        extra[key] = node
    return extra


def response_facts(op: dict) -> dict:
    """For a GET: the `data` item's property tree and the envelope's other keys."""
    media = _success_media(op)
    if media is None:
        return {"data": None, "item_properties": None, "envelope": None}
    schema = merged(media.get("schema"))
    top = declared_properties(schema)
    data = merged(top.get("data"))
    is_list = json_type(data) == "array"
    item = merged(data.get("items")) if is_list else data
    facts: dict[str, Any] = {}
    if set(declared_properties(item)) == {"success", "data"}:
        # GET /products declares its items as whole single-product responses; its example (and the API)
        # has bare products in `data`, so the item is the inner `data`
        item = merged(declared_properties(item)["data"])
        facts["quirk"] = "items declared as {success, data} responses; item_properties are the inner data"
    tree = type_tree(item) if item else None
    props = dict((tree or {}).get("properties") or {})
    props.update(_from_examples(_example_items(media, is_list), props))
    return {
        "data": "array" if is_list else json_type(data) if data else None,
        "item_properties": props or None,
        "envelope": {name: type_tree(sub) for name, sub in top.items() if name != "data"},
        **facts,
    }


# "Only available in Growth and above plans" (installments): below that plan Pipedrive refuses the call
_PLAN_RE = re.compile(r"Only available in (\w+) and above plans")


def operation_record(
    api: str, prefix: str, path: str, method: str, path_item: dict, op: dict, default_cost: int | None = None
) -> dict:
    cost = op.get("x-token-cost", default_cost)
    plan = _PLAN_RE.search(op.get("description") or "")
    rec = {
        "api": api,
        "method": method.upper(),
        "path": prefix + path,
        "spec_path": path,
        "operation_id": op.get("operationId"),
        "token_cost": int(cost) if cost is not None else None,
        "path_params": _params(path_item, op, "path"),
        "params": _params(path_item, op, "query"),
        "deprecated": bool(op.get("deprecated")),
    }
    if plan:
        rec["plan"] = plan[1].lower()
    if method == "get":
        rec.update(response_facts(op))
    return rec


def v2_operations(doc: dict) -> dict[str, dict]:
    ops = {}
    for path, item in doc["paths"].items():
        for method, op in item.items():
            if method in METHODS:
                rec = operation_record("v2", "/api/v2", path, method, item, op)
                ops[f"{rec['method']} {rec['path']}"] = rec
    return ops


# v1 GET operations the emulator serves (lists for what v2 lacks); the v1 reference has no `/leadFields`
V1_SERVED = (
    "/leads",
    "/leads/archived",
    "/leadLabels",
    "/leadSources",
    "/leadFields",
    "/notes",
    "/noteFields",
    "/files",
    "/users",
    "/users/me",
    "/callLogs",
    "/activityTypes",
    "/currencies",
    "/filters",
    "/roles",
    "/permissionSets",
    "/goals/find",
    "/legacyTeams",
    "/deals/{id}/flow",
    "/deals/{id}/participants",
    "/organizationRelationships",
)


def v1_operations(doc: dict) -> dict[str, dict]:
    ops = {}
    for path in V1_SERVED:
        item = doc["paths"].get(path)
        if item and "get" in item:
            rec = operation_record("v1", "/v1", path, "get", item, item["get"], default_cost=V1_LIST_COST)
            rec["documented"] = True
        else:
            rec = _undocumented_v1(path)
        ops[f"GET {rec['path']}"] = rec
    return ops


def _undocumented_v1(path: str) -> dict:
    """An endpoint the emulator serves although the v1 reference lacks it: no params, list cost."""
    return {
        "api": "v1",
        "method": "GET",
        "path": "/v1" + path,
        "spec_path": path,
        "operation_id": None,
        "token_cost": V1_LIST_COST,
        "path_params": {},
        "params": {},
        "deprecated": False,
        "data": "array",
        "item_properties": None,
        "envelope": None,
        "documented": False,
    }


# ---------------------------------------------------------------------------------------------------------
# --check: self-test on the flattened reference, and seed vs reference
# ---------------------------------------------------------------------------------------------------------


def flatten(text: str) -> str:
    return "\n".join(line.lstrip(" ") for line in text.split("\n"))


def diff_ops(a: dict[str, dict], b: dict[str, dict], a_name: str, b_name: str) -> list[str]:
    out = []
    for key in sorted(a.keys() & b.keys()):
        for fld in ("operation_id", "token_cost", "data"):
            if a[key].get(fld) != b[key].get(fld):
                out.append(f"{key}: {fld}: {a_name} {a[key].get(fld)!r}, {b_name} {b[key].get(fld)!r}")
        for fld in ("path_params", "params", "envelope", "item_properties"):
            out += diff_tree(a[key].get(fld), b[key].get(fld), f"{key}: {fld}", a_name, b_name)
    return out


def diff_tree(a: Any, b: Any, where: str, a_name: str, b_name: str) -> list[str]:
    if isinstance(a, dict) and isinstance(b, dict):
        out = []
        for k in sorted(a.keys() | b.keys(), key=str):
            if k not in b:
                out.append(f"{where}.{k}: only in {a_name}")
            elif k not in a:
                out.append(f"{where}.{k}: only in {b_name}")
            else:
                out += diff_tree(a[k], b[k], f"{where}.{k}", a_name, b_name)
        return out
    return [] if a == b else [f"{where}: {a_name} {a!r}, {b_name} {b!r}"]


def run_check(seed_text: str, ref_v2: dict, ref_v2_text: str, ref_v1: dict) -> int:
    truth = v2_operations(ref_v2)
    blind = NestingOracle({}, vocabulary(ref_v1))
    self_test = diff_ops(v2_operations(parse_flat(flatten(ref_v2_text), blind)), truth, "parsed", "yaml")
    print(
        f"# self-test: flattened v2 reference parsed without same-operation evidence: "
        f"{len(self_test)} differences from the YAML parse"
    )
    for line in self_test:
        print("  " + line)
    seed = v2_operations(parse_seed(seed_text, ref_v2, ref_v1))
    common = seed.keys() & truth.keys()
    disagreements = diff_ops(seed, truth, "seed", "reference")
    only_seed, only_ref = len(seed.keys() - truth.keys()), len(truth.keys() - seed.keys())
    print(
        f"# seed vs older reference: {len(common)} common operations, {only_seed} only in the seed, "
        f"{only_ref} only in the reference, {len(disagreements)} disagreements (the seed wins)"
    )
    for key in sorted(truth.keys() - seed.keys()):
        print(f"  only in reference: {key}")
    for line in disagreements:
        print("  " + line)
    print_guesses(seed_text, ref_v2, ref_v1)
    return 0


WEAK_RULES = {"vocabulary", "item_level", "innermost"}


def print_guesses(seed_text: str, ref_v2: dict, ref_v1: dict) -> None:
    """Nesting decisions in GET responses that no reference operation backs, for a human to audit."""
    oracle = NestingOracle(reference_shapes(ref_v2), vocabulary(ref_v2, ref_v1))
    FlatParser(tokenize(seed_text), oracle).document()
    seen = set()
    for where, name, inner, chosen, rule in oracle.decisions:
        if rule not in WEAK_RULES or len(where) < 3 or where[1] != "get" or where in oracle.ref_shapes:
            continue
        if not where[2].startswith("response 200") or (_resource(where[0]), name, inner, chosen) in seen:
            continue
        if chosen == inner and not _item_relative(inner):
            continue  # a property of a top-level item staying there: no nested object was open
        seen.add((_resource(where[0]), name, inner, chosen))
        print(
            f"  {where[0]}: {name} after {'.'.join(inner) or '<root>'} -> placed in "
            f"{'.'.join(chosen) or '<root>'} ({rule})"
        )
    print(f"# {len(seen)} nesting decisions in GET responses rest on weak evidence (listed above)")


# ---------------------------------------------------------------------------------------------------------
# main
# ---------------------------------------------------------------------------------------------------------


def parse_seed(seed_text: str, ref_v2: dict, ref_v1: dict) -> dict:
    return parse_flat(seed_text, NestingOracle(reference_shapes(ref_v2), vocabulary(ref_v2, ref_v1)))


def dump(obj: Any) -> str:
    return json.dumps(obj, indent=1, sort_keys=True, ensure_ascii=False) + "\n"


def derive(seeds: Path, reference: Path) -> tuple[dict, dict]:
    ref_v2 = load_yaml(reference / REF_V2)
    ref_v1 = load_yaml(reference / REF_V1)
    seed = parse_seed((seeds / SEED_V2).read_text(encoding="utf-8"), ref_v2, ref_v1)
    spec_v2 = {
        "source": f"seeds/{SEED_V2} (flat YAML rebuilt by tools/derive_spec.py)",
        "operations": v2_operations(seed),
    }
    spec_v1 = {
        "source": f"reference/{REF_V1}",
        "operations": v1_operations(ref_v1),
    }
    return spec_v2, spec_v1


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seeds", type=Path, default=REPO.parent / "shared" / "seeds")
    ap.add_argument("--reference", type=Path, default=REPO.parent / "shared" / "reference")
    ap.add_argument("--out", type=Path, default=OUT_DIR)
    ap.add_argument(
        "--check",
        action="store_true",
        help="report the parser self-test and seed/reference disagreements; write nothing",
    )
    args = ap.parse_args(argv)
    if args.check:
        ref_text = (args.reference / REF_V2).read_text(encoding="utf-8")
        seed_text = (args.seeds / SEED_V2).read_text(encoding="utf-8")
        ref_v2 = yaml.load(ref_text, Loader=_Loader)
        return run_check(seed_text, ref_v2, ref_text, load_yaml(args.reference / REF_V1))
    spec_v2, spec_v1 = derive(args.seeds, args.reference)
    args.out.mkdir(parents=True, exist_ok=True)
    for name, obj in (("spec_v2.json", spec_v2), ("spec_v1.json", spec_v1)):
        (args.out / name).write_text(dump(obj), encoding="utf-8")
    n2, n1 = len(spec_v2["operations"]), len(spec_v1["operations"])
    print(f"wrote {n2} v2 and {n1} v1 operations to {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
