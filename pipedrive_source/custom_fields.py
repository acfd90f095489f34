"""Readable custom fields: hash keys -> bound column names, option ids -> labels, every field type.

Build one `Resolver` per entity per run from that entity's field definitions (the `*Fields` endpoint's
`data`, v2 or v1 shape) and the bindings persisted in the pipeline state, then pass every page through
`resolve_page` before yielding it to dlt. Afterwards persist `resolver.bindings` back into the state.

    resolver = Resolver("deals", field_defs, bindings=state.get("deals", {}), builtin_columns=keys)
    for page in pages:
        yield resolver.resolve_page(page)
    state["deals"] = resolver.bindings

A record's custom values may come as v2 (`custom_fields: {hash: value}`) or v1 (hash keys at the record
root, `<hash>_currency` / `<hash>_until` / `<hash>_<address part>` siblings, sets as `"11,12"`); both land
in the same columns. No column named after a hash survives resolution.

Given `refresh` (a callable reading the definitions again), the first option id or field code a record
holds that the definitions lack makes the resolver read them again, once per run; what is still unknown
then is kept visibly (an option id's text in its label column, an unlisted field as text in `cf_<8 chars>`).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from functools import partial
from typing import Any

from pipedrive_source.errors import AccessDenied, ApiError
from pipedrive_source.field_defs import FieldDef, parse_fields
from pipedrive_source.field_values import (
    ALL_SUFFIXES,
    Compiled,
    Converter,
    compile_field,
    enum_converter,
    kind_of,
    option_labels,
    set_converter,
    set_ids,
    suffixes_for,
    to_json_text,
)
from pipedrive_source.naming import (
    HASH_RE,
    MAX_SUFFIX_TRIES,
    FieldSlot,
    bind_columns,
    column_stem,
    group,
    normalize,
)

logger = logging.getLogger(__name__)

# Alternative record keys of built-in option fields: v1 deals call the labels field `label`.
BUILTIN_KEY_ALIASES = {"label": ("label", "label_ids"), "label_ids": ("label_ids", "label")}


@dataclass(frozen=True)
class BuiltinLabels:
    """A built-in option field whose ids get a readable sibling column: `visible_to` -> `visible_to_label`."""

    field: FieldDef
    keys: tuple[str, ...]  # record keys that may hold the ids
    column: str
    conv: Converter
    labels: dict[Any, str]  # what `conv` reads: definitions read again update it in place


def builtin_label_stem(fd: FieldDef) -> str:
    """`label_ids` -> `labels`, `visible_to` -> `visible_to_label`, a set `x_ids` -> `x_labels`."""
    code = normalize(fd.code)
    if kind_of(fd.type) == "set":
        stem = code.removesuffix("_ids")
        return "labels" if stem == "label" else f"{stem}_labels"
    return "label_name" if code == "label" else f"{code.removesuffix('_id')}_label"


class Resolver:
    """Resolves one entity's records; build once per run, then call `resolve_page` on every page."""

    def __init__(
        self,
        entity: str,
        fields: Iterable[Mapping[str, Any] | FieldDef],
        *,
        bindings: Mapping[str, str] | None = None,
        builtin_columns: Iterable[str] = (),
        keep_option_ids: bool = False,
        builtin_labels: bool = True,
        extra_options: Mapping[str, Mapping[Any, str]] | None = None,
        unlabelled: Iterable[str] = (),
        last_seen: Mapping[str, Sequence[str | None]] | None = None,
        parts: Mapping[str, Mapping[str, str]] | None = None,
        refresh: Callable[[], Iterable[Mapping[str, Any] | FieldDef]] | None = None,
    ) -> None:
        self.entity = entity
        self.keep_option_ids = keep_option_ids
        # reads the field definitions again: once per run, when a record holds an option id or a field
        # they did not list (an option or field added in Pipedrive while the run reads)
        self._refresh = refresh
        self._refreshed = False
        self._lock = threading.RLock()
        self._unknown_ids: dict[str, set[str]] = {}  # option ids no definition lists, by field code
        self._unlabelled_ids: dict[str, set[str]] = {}  # option ids listed with a null label, by field code
        self._reported_ids: dict[str, set[str]] = {}
        self._warned_no_id: set[str] = set()  # option fields warned about for a value that is no id
        # field code -> {member: column} of the members composite values had beyond their type's (a part
        # Pipedrive adds to addresses); kept across runs, so the column keeps that part for good
        self.parts: dict[str, dict[str, str]] = {code: dict(m) for code, m in (parts or {}).items()}
        self.revision = 0  # bumped whenever the columns the fields produce may have changed
        defs = parse_fields(fields)
        self.custom = {fd.code: fd for fd in defs if fd.is_custom}
        extra = {code: _extra_field(code, opts) for code, opts in (extra_options or {}).items()}
        builtin_defs = [fd for fd in defs if not fd.is_custom and fd.code not in extra]
        builtin_defs += extra.values()
        self._extra_codes = set(extra)
        # built-in option fields whose labels could not be read in this run (`labelled_options`)
        self._unlabelled = frozenset(unlabelled)
        self._warned: set[str] = set()
        self._initial_bindings = dict(bindings or {})
        self._last_seen = {c: tuple(v) for c, v in (last_seen or {}).items() if len(v) == 2}
        self._builtins = {normalize(c) for c in builtin_columns} | {
            normalize(fd.code) for fd in defs if not fd.is_custom
        }
        # by field code, as `_unknown_option` keys custom and built-in fields alike
        self._builtin_labels = self._compile_builtin_labels(builtin_defs) if builtin_labels else {}
        self._builtins |= {b.column for b in self._builtin_labels.values()}
        # v1 deals call the labels field `label`, v2 `label_ids`: a record has one of them
        self._builtin_convs = [(key, b.conv) for b in self._builtin_labels.values() for key in b.keys]
        # field code -> the column its values went to while it was unlisted, where it is listed now
        self.moved = self._unlisted_before()
        self._bind({c: col for c, col in self._initial_bindings.items() if c not in self.moved})
        for code, old in self.moved.items():
            fd = self.custom[code]
            logger.warning(
                "%s: custom field %r (%s) was unlisted when its values were loaded into %r as text; it is "
                "listed now and goes to column %r",
                entity,
                fd.name,
                fd.type,
                old,
                self.bindings[code],
            )

    # --- binding and compiling -------------------------------------------------------------------

    def _compile_builtin_labels(self, defs: list[FieldDef]) -> dict[str, BuiltinLabels]:
        out = {}
        taken = set(self._builtins)
        for fd in sorted(defs, key=lambda d: d.code):
            if not fd.options:
                continue
            stem = builtin_label_stem(fd)
            column = next(c for c in (stem, *(f"{stem}_{n}" for n in range(2, 1000))) if c not in taken)
            taken.add(column)
            labels = option_labels(fd)
            unknown = partial(self._unknown_option, fd.code)
            conv = (
                set_converter(column, None, labels, unknown)
                if kind_of(fd.type) == "set"
                else enum_converter(column, None, labels, unknown)
            )
            keys = BUILTIN_KEY_ALIASES.get(fd.code, (fd.code,))
            out[fd.code] = BuiltinLabels(fd, keys, column, conv, labels)
        return out

    def _unlisted_before(self) -> dict[str, str]:
        """Fields bound while the definitions did not list them (`cf_<8 chars>`, text: no name or type
        known) that they list now, where their name or type asks for another column than that one."""
        moved = {}
        for code, column in self._initial_bindings.items():
            fd = self.custom.get(code)
            placeholder = column_stem(None, code)
            if fd is None or not column.startswith(placeholder) or self._last_seen.get(code, (None, None))[1]:
                continue
            if column_stem(fd.name, code) != placeholder or kind_of(fd.type) not in ("text", "json"):
                moved[code] = column
        return moved

    def _slots(self) -> list[FieldSlot]:
        return [FieldSlot(fd.code, fd.name, suffixes_for(fd)) for fd in self.custom.values()]

    def _bind(self, previous: Mapping[str, str]) -> None:
        self.revision += 1
        self.bindings: dict[str, str] = bind_columns(
            self._slots(), previous, self._builtins, ALL_SUFFIXES, self._reserved_columns()
        )
        self._compiled: dict[str, Compiled] = {
            code: compile_field(
                fd,
                self.bindings[code],
                self.keep_option_ids,
                unknown=partial(self._unknown_option, code),
                extra_column=partial(self._extra_column, code),
            )
            for code, fd in self.custom.items()
        }
        self._convs = {code: c.conv for code, c in self._compiled.items()}
        # v1 root keys -> (field code, member of the v2-shaped value; None: the value is a plain scalar)
        self._v1_keys: dict[str, tuple[str, str | None]] = {}
        for code, c in self._compiled.items():
            self._v1_keys[code] = (code, "value" if c.composite else None)
            self._v1_keys.update({f"{code}_{m}": (code, m) for m in c.members if m != "value"})
        self._out_columns = frozenset(
            col for code, fd in self.custom.items() for col in group(self.bindings[code], suffixes_for(fd))
        )
        self._change_targets = {
            key: self._change_target(code, member) for key, (code, member) in self._v1_keys.items()
        }

    def _change_target(self, code: str, member: str | None) -> tuple[str, dict[Any, str] | None, bool]:
        """Where `describe_change` puts a change of field `code` (`member`: a part of a composite value): the
        column its value lands in, and an enum or set field's labels by option id (None for other fields),
        with whether it is a set; labelled once per run, not per change."""
        compiled = self._compiled[code]
        column = compiled.members.get(member or "value", self.bindings[code])
        labels = dict(compiled.labels) if member is None and compiled.labels is not None else None
        return column, labels, kind_of(self.custom[code].type) == "set"

    @property
    def changed(self) -> bool:
        """Whether the bindings differ from the ones given (the engine then writes them to the state)."""
        return self.bindings != self._initial_bindings

    @property
    def columns(self) -> dict[str, dict[str, Any]]:
        """dlt column hints for every column the custom fields produce (list columns become child tables)."""
        hints: dict[str, dict[str, Any]] = {}
        for compiled in self._compiled.values():
            for col, data_type in compiled.columns.items():
                if data_type is not None:
                    hints[col] = {"name": col, "data_type": data_type, "nullable": True}
        for b in self._builtin_labels.values():
            if kind_of(b.field.type) != "set":
                hints[b.column] = {"name": b.column, "data_type": "text", "nullable": True}
        return hints

    @property
    def item_types(self) -> dict[str, str]:
        """The dlt type of the items of each list column the custom fields produce where it is known (a set
        field's option ids: bigint), for records that dlt normalizes itself (`output.Outputs.items`)."""
        return {
            col: data_type
            for compiled in self._compiled.values()
            for col, data_type in compiled.items.items()
        }

    # --- resolving -------------------------------------------------------------------------------

    def resolve_page(self, rows: Sequence[dict]) -> Sequence[dict]:
        """Resolve every record of a page in place; returns the same list. Option ids no definition
        lists, met for the first time in this page, are then logged: one warning per field."""
        resolve = self.resolve
        for row in rows:
            resolve(row)
        if self._unknown_ids or self._unlabelled_ids:
            self._report_unknown_options()
        return rows

    def resolve(self, row: dict) -> dict:
        """Resolve one record in place: custom values to their columns, built-in option ids to labels."""
        for key, conv in self._builtin_convs:
            if key in row:
                conv(row[key], row)
        values = row.pop("custom_fields", None)
        if values is None:
            values = self._pop_v1_values(row)
            if not values:
                return row
        elif not values:
            return row
        if not self._out_columns.isdisjoint(row.keys()):
            self._rebind_around(row.keys() & self._out_columns)
        convs = self._convs
        for code, value in values.items():
            conv = convs.get(code)
            if conv is None:
                conv = self._unknown_field(code)
            conv(value, row)
        return row

    def describe_change(self, change: dict) -> None:
        """A change log item's `data` (`field_key`, `old_value`, `new_value`, as a deal's flow has them)
        about one of this entity's custom fields, in place: `column_name` is the column the entity's table
        keeps the changed value in, and an option field's values become its labels, as there (ids the
        field does not list stay). Keys of built-in or unlisted fields are left alone."""
        key = change.get("field_key")
        target = self._change_targets.get(key) if type(key) is str else None
        if target is None:
            return
        change["column_name"], labels, is_set = target
        if labels is not None:
            for side in ("old_value", "new_value"):
                change[side] = _labelled(change.get(side), labels, is_set)

    def _pop_v1_values(self, row: dict) -> dict[str, Any] | None:
        """v1: gather `<hash>` and `<hash>_<suffix>` root keys into v2-shaped values."""
        v1_keys = self._v1_keys
        values: dict[str, Any] = {}
        for key in v1_keys.keys() & row.keys():
            code, part = v1_keys[key]
            if part is None:
                values[code] = row.pop(key)
            else:
                values.setdefault(code, {})[part] = row.pop(key)
        # what is left with a hash in its name: unlisted fields or unexpected suffixes (rare, so slower)
        if row and max(map(len, row)) >= 40:
            self._pop_unlisted_v1(row, values)
        return values

    def _pop_unlisted_v1(self, row: dict, values: dict[str, Any]) -> None:
        found = [k for k in row if len(k) >= 40 and HASH_RE.match(k) and (len(k) == 40 or k[40] == "_")]
        extra: dict[str, dict[str, Any]] = {}
        for key in found:
            extra.setdefault(key[:40], {})[key[41:] or "value"] = row.pop(key)
        for code, members in extra.items():
            if code in values:  # a listed field with a sibling we did not expect
                known = values[code]
                values[code] = {**(known if isinstance(known, dict) else {"value": known}), **members}
            else:
                values[code] = members["value"] if list(members) == ["value"] else members

    def _rebind_around(self, clashing: set[str]) -> None:
        """A record carries a built-in column a custom field was bound to: move the custom field away."""
        logger.warning(
            "%s: built-in column(s) %s clash with custom field columns; re-binding those custom fields",
            self.entity,
            sorted(clashing),
        )
        self._builtins |= clashing
        self._bind(self.bindings)

    def _unknown_field(self, code: str) -> Converter:
        """A value under a code the fields endpoint did not list. Read the definitions again (a field added
        while the run reads is then bound by its name); a code still unlisted keeps its value as JSON text
        in a hash-free column bound like a field's (`cf_<8 chars>`), so `custom_fields` has its row."""
        with self._lock:
            self._refresh_once()
            if code in self.custom:
                return self._convs[code]
            if code not in self.bindings:
                slots = [*self._slots(), FieldSlot(code, None, ())]
                self.bindings = bind_columns(
                    slots, self.bindings, self._builtins, ALL_SUFFIXES, self._reserved_columns()
                )
            column = self.bindings[code]
            if code not in self._warned:
                self._warned.add(code)
                logger.warning(
                    "%s: value for unlisted custom field %s kept as JSON in %r", self.entity, code[:8], column
                )
            compiled = compile_field(FieldDef(code, None, "json", True), column, False)
            self._compiled[code] = compiled
            self._convs[code] = compiled.conv
            self.revision += 1
            return compiled.conv

    def _refresh_once(self) -> None:
        """Read the field definitions again, the first time this run meets something they did not list."""
        if self._refresh is None or self._refreshed:
            return
        self._refreshed = True
        logger.info(
            "%s: a record holds an option or field the field definitions did not list; reading them again",
            self.entity,
        )
        try:
            fresh = parse_fields(self._refresh())
        except (ApiError, AccessDenied) as exc:  # refused as failed: what was read stays, ids stay visible
            logger.warning("%s: could not read the field definitions again (%s)", self.entity, exc)
            return
        # a field gone since stays as it was listed: its column keeps its name for this run
        self.custom.update({fd.code: fd for fd in fresh if fd.is_custom})
        for fd in fresh:
            b = self._builtin_labels.get(fd.code)
            # leads' `label_ids` are named through lead labels, not the deal fields read again
            if b is not None and not fd.is_custom and fd.code not in self._extra_codes and fd.options:
                b.labels.update(option_labels(fd))  # an option gone since keeps the label it had
                self._builtin_labels[fd.code] = replace(b, field=fd)
        self._bind(self.bindings)

    def _unknown_option(self, code: str, option_id: Any) -> str | None:
        """The label column's value for an option id the labels of field `code` (custom or built-in)
        lack: its label once the definitions are read again, else the id's text (kept, not lost;
        reported per page). A value that is no id at all (a list where one id goes, an object without
        an id) is kept as its JSON text, with one warning per field: it was NULL, the value lost."""
        if option_id is None or option_id == "":  # "": no option
            return None
        if isinstance(option_id, (dict, list)):
            self._warn_no_option_id(code)
            return to_json_text(option_id)
        with self._lock:
            self._refresh_once()
            builtin = self._builtin_labels.get(code)
            compiled = self._compiled.get(code)
            labels = builtin.labels if builtin else compiled.labels if compiled else None
            label = labels.get(option_id) if labels else None
            if label is not None:
                return label
            # listed with a null label: a warning about a deleted option would send a user looking for one
            found = self._unlabelled_ids if labels and option_id in labels else self._unknown_ids
            found.setdefault(code, set()).add(str(option_id))
        return str(option_id)

    def _report_unknown_options(self) -> None:
        with self._lock:
            for found, why in (
                (self._unknown_ids, "that Pipedrive does not list (deleted options?)"),
                (self._unlabelled_ids, "that the field definitions list without a label (null)"),
            ):
                for code, ids in sorted(found.items()):
                    reported = self._reported_ids.setdefault(code, set())
                    new = sorted(ids - reported, key=lambda i: (len(i), i))
                    if not new:
                        continue
                    reported.update(new)
                    logger.warning(
                        "%s: %s field %r (column %r) holds option id(s) %s %s; their ids are kept as text "
                        "in that column",
                        self.entity,
                        *self._option_field(code),
                        ", ".join(new),
                        why,
                    )
                found.clear()

    def _warn_no_option_id(self, code: str) -> None:
        with self._lock:
            if code in self._warned_no_id:
                return
            self._warned_no_id.add(code)
        logger.warning(
            "%s: %s field %r (column %r) holds values that are no option id (a list where one id goes, an "
            "object without an id); they are kept as their JSON text in that column",
            self.entity,
            *self._option_field(code),
        )

    def _option_field(self, code: str) -> tuple[str, str, str | None]:
        """How a warning names option field `code`: built-in or custom, its name, its label column."""
        builtin = self._builtin_labels.get(code)
        fd = builtin.field if builtin else self.custom.get(code)
        name = (fd.name or code) if fd else code[:8]
        return (
            "built-in" if builtin else "custom",
            name,
            builtin.column if builtin else self.bindings.get(code),
        )

    def _reserved_columns(self) -> set[str]:
        """Columns no field may be newly bound onto: address parts' and those unlisted fields' values
        were loaded into before they moved (their rows until read again)."""
        parts = {column for members in self.parts.values() for column in members.values()}
        return parts | set(self.moved.values())

    def _extra_column(self, code: str, member: str) -> str:
        """The column of a member a composite value has beyond its type's (a part Pipedrive adds to
        addresses): the one an earlier run gave it, else `<base>_<member>`, unless that is a built-in
        column, another field's or one of the field's own; then `<base>_<member>_2`, `_3` ..."""
        with self._lock:
            column = self.parts.get(code, {}).get(member)
            if column is not None:
                return column
            wanted = normalize(f"{self.bindings[code]}_{member}")
            taken = self._builtins | self._out_columns | self._reserved_columns()
            candidates = (wanted, *(f"{wanted}_{n}" for n in range(2, MAX_SUFFIX_TRIES)))
            column = next(c for c in candidates if c not in taken)
            if column != wanted:
                logger.warning(
                    "%s: part %r of custom field %r goes to column %r (%r is another column's)",
                    self.entity,
                    member,
                    self.custom[code].name,
                    column,
                    wanted,
                )
            self.parts.setdefault(code, {})[member] = column
            return column

    # --- tables about the fields -------------------------------------------------------------------

    @property
    def last_seen(self) -> dict[str, list[str | None]]:
        """[name, type] of every bound field as Pipedrive last listed it, for the state: once a field is
        deleted its `custom_fields` row still says what its column held."""
        seen = {code: list(self._last_seen[code]) for code in self.bindings if code in self._last_seen}
        # never listed: once it is, its column moves (see `_unlisted_before`)
        seen.update({code: [None, None] for code in self.bindings if code not in seen})
        seen.update({code: [fd.name, fd.type] for code, fd in self.custom.items()})
        return seen

    def field_rows(self) -> list[dict[str, Any]]:
        """Rows of the `custom_fields` table: one per bound field, deleted ones with still_exists false."""
        rows = []
        for code in sorted(self.bindings):
            fd = self.custom.get(code)
            compiled = self._compiled.get(code)
            name, field_type = (fd.name, fd.type) if fd else self._last_seen.get(code, (None, None))
            rows.append(
                {
                    "entity": self.entity,
                    "field_code": code,
                    "field_name": name,
                    "column_name": self.bindings[code],
                    "field_type": field_type,
                    "columns": ", ".join(self._listed(code, compiled)) if compiled and fd else None,
                    "still_exists": fd is not None,
                }
            )
        return rows

    def _listed(self, code: str, compiled: Compiled) -> list[str]:
        """A field's columns in this entity's table (the parts its type does not name too), and its lists
        as the child tables that hold them (`deals__<column>`): a list has no column in the table."""
        columns = [col if kind else f"{self.entity}__{col}" for col, kind in compiled.columns.items()]
        return columns + [col for col in self.parts.get(code, {}).values() if col not in columns]

    def labelled_options(self) -> dict[str, tuple[str, dict[str, str | None] | None]]:
        """Every option field this resolver labels: key -> (readable name, {option id as text: label}).

        Custom enum/set fields under their code, built-in ones (deal labels, visible_to, lead labels)
        under their record key; deleted options keep the label records holding them get. A built-in one
        whose labels could not be read (`unlabelled`) maps to None: its rows load without labels."""
        out: dict[str, tuple[str, dict[str, str | None] | None]] = {}
        fields = [(fd.code, fd) for fd in self.custom.values() if kind_of(fd.type) in ("enum", "set")]
        fields += [(b.keys[0], b.field) for b in self._builtin_labels.values()]
        for key, fd in fields:
            labels = {str(oid): label for oid, label in (*fd.deleted_options, *fd.options)}
            out[key] = (fd.name or key, labels)
        out.update({code: (code, None) for code in self._unlabelled})
        return out

    def option_rows(self) -> list[dict[str, Any]]:
        """Rows of the `custom_field_options` table: option id -> current label, custom and built-in."""
        rows = []
        for code, fd in sorted(self.custom.items()):
            rows += _options_of(self.entity, fd, self.bindings[code], True)
        for b in self._builtin_labels.values():
            rows += _options_of(self.entity, b.field, b.column, False)
        return rows


def _labelled(value: Any, labels: Mapping[Any, str], is_set: bool) -> Any:
    """An option id as its label; a set's ids ("11,12") as their labels joined by ", "."""
    if value is None:
        return None
    if is_set:
        return ", ".join(str(labels.get(oid, oid)) for oid in set_ids(value))
    try:
        return labels.get(value, value)
    except TypeError:  # an object: nothing known to label
        return value


def _options_of(entity: str, fd: FieldDef, column: str, is_custom: bool) -> list[dict[str, Any]]:
    listed = [(oid, label, False) for oid, label in fd.options]
    listed += [(oid, label, True) for oid, label in fd.deleted_options]
    return [
        {
            "entity": entity,
            "field_code": fd.code,
            "column_name": column,
            "option_id": oid,
            "label": label,
            "is_custom": is_custom,
            "is_deleted": deleted,
        }
        for oid, label, deleted in listed
        if isinstance(oid, int)  # lead labels (UUIDs) have their own table, lead_labels
    ]


def _extra_field(code: str, options: Mapping[Any, str]) -> FieldDef:
    """A built-in option field whose options come from elsewhere (leads' `label_ids` from lead labels)."""
    return FieldDef(code, code, "set" if code.endswith("_ids") else "enum", False, tuple(options.items()))
