"""Custom-field resolution wired into the connector: a record hook plus the two tables about the fields.

    resolution = CustomFieldResolution(keep_option_ids=False)
    ctx = SyncContext(..., hooks=(resolution, *record_hooks), ...)      # resolves every page
    resources += resolution.resources(ctx, selected_entities)            # custom_fields, custom_field_options

The hook builds one `Resolver` per entity per run (per `SyncContext`) from the entity's `*_fields` table
(`ctx.field_definitions`, fetched once per run and shared with the field tables) and the bindings kept in
the source state under `custom_field_bindings[<table>]`, which dlt commits with a successful load only, so
a failed run leaves the previous bindings in place. Leads' `label_ids` are named through `lead_labels`
(refused, the leads load without labels: `_lead_label_options`).

Pipedrive does not stamp records when an option is relabelled, so a label stored with a record not changed
since would stay old for good. `option_labels` / `options_summary` / `relabelled_options` let the engine
notice it from the definitions it reads anyway (`source._reread_if_relabelled` keeps the summary in each
entity's state and then reads that entity in full once). Which field-definition changes alter stored values:
- relabelled or removed option (custom enum/set, built-in deal/person labels, visible_to, lead labels; a
  deal field's also for leads, which inherit them): stale labels -> one full read of the entity;
- an option field listed again after runs whose definitions lacked it (the leads' `visible_to` while
  `/v1/leadFields` fails, their `label_ids` while `/v1/leadLabels` does): the rows they loaded have no
  labels -> one full read of the entity;
- renamed field: bindings keep its columns, only `custom_fields.field_name` changes -> nothing to re-read;
- new option or new field: no record holds it until it is changed (and so stamped) -> nothing to re-read;
  one added while a run reads, or an option deleted that records still hold (custom or built-in), makes the
  run's resolver read the entity's definitions again, once (`Resolver._refresh_once`);
- deleted field: its column keeps the last values (`custom_fields.still_exists` is false, its row keeps
  the last name and type, `custom_field_last_seen` in the state) -> no re-read;
- a custom field moved off a column a built-in one turned out to use (`Resolver._rebind_around`): old rows
  keep the value in the old column (rare; logged as a warning);
- a field whose values were loaded while the definitions did not list it (as text in `cf_<8 chars>`) and
  that they list now: it moves to the column its name and type give (`Resolver.moved`) -> one full read
  of the entity, so rows not changed since get their values there too.
"""

from __future__ import annotations

import hashlib
import logging
import threading
import weakref
from collections.abc import Callable, Iterable, Iterator
from typing import TYPE_CHECKING, Any

import dlt
import orjson

from pipedrive_source.custom_fields import Resolver
from pipedrive_source.errors import AccessDenied, ApiError

if TYPE_CHECKING:
    from dlt.extract.resource import DltResource

    from pipedrive_source.entities import Entity
    from pipedrive_source.run import SyncContext

logger = logging.getLogger(__name__)

STATE_KEY = "custom_field_bindings"
LAST_SEEN_KEY = "custom_field_last_seen"  # per table and field code: [name, type] as last listed
PARTS_KEY = "custom_field_parts"  # per table and field code: {member its type does not name: column}
DIGESTS_KEY = "custom_field_tables"  # digest of each entity's rows of a table about the fields, as loaded
LEAD_LABELS = "lead_labels"
INHERITED_FIELDS = {"leads": "deal_fields"}
# the built-in option fields only the entity's own definitions label (leads' label_ids: by lead labels)
OWN_OPTION_FIELDS = {"leads": ("visible_to",)}
Row = dict[str, Any]
# option field -> (name, {option id: label}; None: its labels are not readable in this run)
OptionLabels = dict[str, tuple[str, dict[str, Any] | None]]


class CustomFieldResolution:
    """A `RecordHook` resolving custom fields of every entity that has a fields table."""

    def __init__(self, *, keep_option_ids: bool = False, builtin_labels: bool = True) -> None:
        self.keep_option_ids = keep_option_ids
        self.builtin_labels = builtin_labels
        self._runs: weakref.WeakKeyDictionary[SyncContext, dict[str, Resolver]] = weakref.WeakKeyDictionary()
        # per run, the resolver revision whose column hints each entity's resource has
        self._hinted: weakref.WeakKeyDictionary[SyncContext, dict[str, int]] = weakref.WeakKeyDictionary()
        self._lock = threading.RLock()
        self._fallback_state: dict[str, dict[str, Any]] = {}  # outside a dlt pipeline (tests, scripts)

    def __call__(self, entity: Entity, rows: list[Row], ctx: SyncContext) -> list[Row]:
        if entity.changes_of and rows:
            return self._describe_changes(entity.changes_of, rows, ctx)
        if not entity.fields_entity or not rows:
            return rows
        resolver = self.resolver(entity, ctx)
        self._hint(entity, ctx, resolver)
        revision = resolver.revision
        resolver.resolve_page(rows)
        # a record may have revealed a built-in column that moved a custom field: keep what was decided
        self._bindings()[entity.name] = resolver.bindings
        if resolver.parts:  # an address part once given a column keeps it in the runs to come
            self._state(PARTS_KEY)[entity.name] = resolver.parts
        if resolver.revision != revision:  # definitions read again, an unlisted field bound: hint them
            self._state(LAST_SEEN_KEY)[entity.name] = resolver.last_seen
            self._hint(entity, ctx, resolver)
        return rows

    def _hint(self, entity: Entity, ctx: SyncContext, resolver: Resolver) -> None:
        with self._lock:
            hinted = self._hinted.setdefault(ctx, {})
            if hinted.get(entity.name) == resolver.revision:
                return
            ctx.outputs.list_items(entity.name, resolver.item_types)
            if _apply_column_hints(entity.name, resolver):
                hinted[entity.name] = resolver.revision

    def _describe_changes(self, table: str, rows: list[Row], ctx: SyncContext) -> list[Row]:
        """A change log's items (`data.field_key`) naming custom fields of `table`'s entity: each gets the
        column that table keeps the field in, under its destination name (as `custom_fields` tells it),
        and option labels (`Resolver.describe_change`), through the run's resolver of that entity: the
        same bindings, and field definitions read once per run anyway (its records come first)."""
        from pipedrive_source.entities import BY_NAME  # the engine's table; imported late to avoid a cycle

        resolver = self.resolver(BY_NAME[table], ctx)
        name = _destination_naming()
        for row in rows:
            data = row.get("data")
            if isinstance(data, dict) and "field_key" in data:
                resolver.describe_change(data)
                if data.get("column_name"):
                    data["column_name"] = name(data["column_name"])
        return rows

    def resolver(self, entity: Entity, ctx: SyncContext) -> Resolver:
        """The run's resolver of `entity`, built on first use."""
        with self._lock:
            run = self._runs.setdefault(ctx, {})
            if entity.name not in run:
                run[entity.name] = self._build(entity, ctx)
            return run[entity.name]

    def _build(self, entity: Entity, ctx: SyncContext) -> Resolver:
        try:
            definitions, unlabelled = _field_definitions(entity, ctx)
        except AccessDenied as exc:
            # the entity is skipped as a refused table is: loaded without its definitions, its custom
            # fields would get columns named by hash, renamed without a word once the definitions come
            raise AccessDenied(
                f"its field definitions, which name its columns and labels, are refused: {exc.message}",
                exc.status,
                exc.detail,
            ) from None
        extra = None
        if entity.name == "leads":
            labels = _lead_label_options(ctx)
            # unreadable, the labels alone go missing (no column is named by them): the leads load
            extra = {"label_ids": labels or {}}
            unlabelled += ("label_ids",) if labels is None else ()
        bindings, last_seen = self._bindings(), self._state(LAST_SEEN_KEY)
        resolver = Resolver(
            entity.name,
            definitions,
            bindings=bindings.get(entity.name) or {},
            last_seen=last_seen.get(entity.name),
            parts=self._state(PARTS_KEY).get(entity.name),
            builtin_columns=_builtin_columns(entity),
            keep_option_ids=self.keep_option_ids,
            builtin_labels=self.builtin_labels,
            extra_options=extra,
            unlabelled=unlabelled,
            refresh=lambda: _field_definitions(entity, ctx, fresh=True)[0],
        )
        bindings[entity.name] = resolver.bindings
        last_seen[entity.name] = resolver.last_seen
        return resolver

    def option_labels(self, entity: Entity, ctx: SyncContext) -> OptionLabels:
        """The option labels the run's resolver of `entity` applies (see `Resolver.labelled_options`)."""
        return self.resolver(entity, ctx).labelled_options()

    def moved_fields(self, entity: Entity, ctx: SyncContext) -> list[str]:
        """Names of `entity`'s fields that move to a column of their own in this run (`Resolver.moved`):
        the rows loaded before hold their values in the old column until read again."""
        resolver = self.resolver(entity, ctx)
        return [resolver.custom[code].name or code for code in sorted(resolver.moved)]

    def _bindings(self) -> dict[str, dict[str, str]]:
        return self._state(STATE_KEY)

    def _state(self, key: str) -> dict[str, Any]:
        try:
            state = dlt.current.source_state()
        except Exception:  # no pipeline/source context: keep it in memory
            return self._fallback_state.setdefault(key, {})
        return state.setdefault(key, {})

    # --- the tables about the fields ----------------------------------------------------------------

    def resources(self, ctx: SyncContext, entities: Iterable[Entity]) -> list[DltResource]:
        """`custom_fields` and `custom_field_options` for the entities with fields: merged on `entity`, so
        a run replaces the rows of the entities it covers (and only those whose rows changed) and leaves
        the other entities' rows alone."""
        with_fields = [e for e in entities if e.fields_entity]
        if not with_fields:
            return []

        def resolvers() -> Iterator[Resolver]:
            for entity in with_fields:
                try:
                    yield self.resolver(entity, ctx)
                except AccessDenied as exc:  # its rows here stay as they were, as its table does
                    if not ctx.monitor.progress(entity.name).skipped:  # it read no record to skip on
                        logger.warning("custom_fields: nothing new of %s: %s", entity.name, exc.message)

        def field_rows() -> list[Row]:
            return _as_destination_names([row for r in resolvers() for row in r.field_rows()])

        def option_rows() -> list[Row]:
            return _as_destination_names([row for r in resolvers() for row in r.option_rows()])

        def custom_fields() -> Iterator[list[Row] | None]:
            yield from _after_reads(ctx, with_fields)
            yield from ctx.until_budget_runs_out(lambda: _if_changed(field_rows()))

        def custom_field_options() -> Iterator[list[Row] | None]:
            yield from _after_reads(ctx, with_fields)
            yield from ctx.until_budget_runs_out(lambda: _if_changed(option_rows()))

        return [
            dlt.resource(
                custom_fields,
                name="custom_fields",
                write_disposition="merge",
                merge_key="entity",
                primary_key=("entity", "field_code"),
                columns=FIELD_COLUMNS,
            ),
            dlt.resource(
                custom_field_options,
                name="custom_field_options",
                write_disposition="merge",
                merge_key="entity",
                primary_key=("entity", "field_code", "option_id"),
                columns=OPTION_COLUMNS,
            ),
        ]


FIELD_COLUMNS: dict[str, dict[str, Any]] = {
    "entity": {"data_type": "text", "nullable": False},
    "field_code": {"data_type": "text", "nullable": False},
    "field_name": {"data_type": "text"},
    "column_name": {"data_type": "text", "nullable": False},
    "field_type": {"data_type": "text"},
    "columns": {"data_type": "text"},
    "still_exists": {"data_type": "bool", "nullable": False},
}
OPTION_COLUMNS: dict[str, dict[str, Any]] = {
    "entity": {"data_type": "text", "nullable": False},
    "field_code": {"data_type": "text", "nullable": False},
    "column_name": {"data_type": "text"},
    "option_id": {"data_type": "bigint", "nullable": False},
    "label": {"data_type": "text"},
    "is_custom": {"data_type": "bool"},
    "is_deleted": {"data_type": "bool"},
}


def _after_reads(ctx: SyncContext, entities: list[Entity]) -> Iterator[None]:
    """Nothing (dlt serves the other resources meanwhile) until the run has read every one of `entities`
    it extracts: a record may bind a field the definitions did not list, or read them again and learn a
    field or option added since, and the tables about the fields then describe it in this run, not the
    next. Outside a dlt source, or for entities it does not extract, there is nothing to wait for."""
    try:
        selected = dlt.current.source().selected_resources
    except Exception:  # no source context (the resource iterated on its own)
        return
    names = {entity.name for entity in entities if entity.name in selected}
    while not names <= ctx.done:
        yield None


def _as_destination_names(rows: list[Row]) -> list[Row]:
    """The rows with the names the destination really has: one with short identifiers (Postgres: 63
    characters) shortens a long field name's column, and a child table's name as a whole, and the table
    must name that column and table, not the field's full name (which an analyst would then look for in
    vain)."""
    name = _destination_naming()
    for row in rows:
        row["column_name"] = name(row["column_name"])
        if row.get("columns"):
            row["columns"] = ", ".join(name(column) for column in row["columns"].split(", "))
    return rows


def _destination_naming() -> Callable[[str], str]:
    """How the destination names a column or a child table (`deals__<column>`); as given outside a
    pipeline. dlt names a child table after its parent and its list's column name, shortened as a whole
    where too long (Postgres): not the column's shortened name behind `deals__`."""
    try:
        naming = dlt.current.source_schema().naming
    except Exception:  # no pipeline/source context (tests, scripts)
        return str

    def name(path: str) -> str:
        return naming.shorten_fragments(*(naming.normalize_identifier(part) for part in path.split("__")))

    return name


def _if_changed(rows: list[Row]) -> Iterator[list[Row]]:
    """The rows of each entity whose rows differ from the last loaded ones; nothing for the others.

    The tables merge on `entity`: the loaded entities' rows replace that entity's rows (a field or option
    that is gone goes with them), the other entities' rows stay, so a run without changes in Pipedrive
    loads no rows at all. The digests live in the table's resource state, committed with a successful load
    only, and dropped by dlt together with the table (`refresh="drop_resources"`, which `--full-refresh
    --entities` uses): kept in the source state they outlived the dropped table, and no run loaded its rows
    again.
    """
    dlt.current.source_state().pop(DIGESTS_KEY, None)  # where earlier versions kept them: load them again
    state = dlt.current.resource_state()
    if not isinstance(state.get(DIGESTS_KEY), dict):
        state[DIGESTS_KEY] = {}
    digests = state[DIGESTS_KEY]
    by_entity: dict[str, list[Row]] = {}
    for row in rows:
        by_entity.setdefault(row["entity"], []).append(row)
    changed = []
    for entity, entity_rows in by_entity.items():
        digest = hashlib.blake2b(orjson.dumps(entity_rows, option=orjson.OPT_SORT_KEYS), digest_size=10)
        if digests.get(entity) != digest.hexdigest():
            digests[entity] = digest.hexdigest()
            changed += entity_rows
    if changed:
        yield changed


def options_summary(labels: OptionLabels, previous: Any = None) -> dict[str, Any]:
    """What the state keeps of an entity's option labels: per option field its option ids and one digest
    of their labels (a few bytes per option, whatever the labels' length). A field of the `previous`
    summary that `labels` lack stays, marked unlabelled: its rows were loaded without its labels (the leads'
    `visible_to` while `/v1/leadFields` fails), so the next run that lists it again reads the entity again
    (`relabelled_options`); a field deleted for good is never listed again and costs nothing. A field whose
    labels `labels` give as None (not readable: the leads' `label_ids` while `/v1/leadLabels` is refused) is
    marked so too, in a first run as well."""
    summary = {}
    for key, before in (previous or {}).items():
        if (key not in labels or labels[key][1] is None) and isinstance(before, dict):
            summary[key] = {"ids": before.get("ids") or [], "digest": UNLABELLED}
    for key, (_name, by_id) in labels.items():
        if by_id is None:  # not readable now (lead labels refused), in a first run too: rows go unlabelled
            summary.setdefault(key, {"ids": [], "digest": UNLABELLED})
            continue
        ids = sorted(by_id)
        summary[key] = {"ids": ids, "digest": _labels_digest(by_id, ids)}
    return summary


UNLABELLED = ""  # the digest of an option field whose labels the rows last loaded lack: no digest is empty


def relabelled_options(previous: Any, labels: OptionLabels) -> list[str]:
    """Names of the option fields where an option listed in the `previous` summary has another label now
    or is gone: records not changed since hold stale labels (Pipedrive does not stamp records when an
    option is relabelled). New options change no stored value, and neither does a deleted field (its
    column keeps the last values; `custom_fields.still_exists` tells it is gone)."""
    changed = []
    for key, before in sorted((previous or {}).items()):
        name, by_id = labels.get(key, (key, None))
        if by_id is None or not isinstance(before, dict):
            continue
        ids = [str(i) for i in before.get("ids") or ()]
        if any(i not in by_id for i in ids) or _labels_digest(by_id, ids) != before.get("digest"):
            changed.append(name)
    return changed


def _labels_digest(by_id: dict[str, Any], ids: list[str]) -> str:
    return hashlib.blake2b(orjson.dumps([by_id.get(i) for i in ids]), digest_size=8).hexdigest()


def _field_definitions(
    entity: Entity, ctx: SyncContext, fresh: bool = False
) -> tuple[list[Row], tuple[str, ...]]:
    """The entity's fields, and its built-in option fields they cannot label in this run; leads add the deal
    fields' custom ones, which they inherit (v1 leads docs). Read once per run and shared, or (`fresh`)
    read again from Pipedrive.

    `/v1/leadFields` is not in the v1 spec: when it fails or is refused (402/403), leads still resolve with
    the deal fields, which name every custom field they have; only their own option fields (`visible_to`)
    go without labels, which the first run that reads them fills in (`options_summary`), a first run's
    rows too. A refusal is no reason to skip leads (as refused deal fields skip deals): no column would be
    named otherwise than with the lead fields.
    """
    from pipedrive_source.entities import BY_NAME  # the engine's table; imported late to avoid a cycle

    inherited = INHERITED_FIELDS.get(entity.name)
    if not inherited:
        return ctx.field_definitions(entity, fresh=fresh), ()
    unlabelled: tuple[str, ...] = ()
    try:
        own = ctx.field_definitions(entity, fresh=fresh)
    except (ApiError, AccessDenied) as exc:
        # read again (`fresh`) after the run's first read: that one said it already, or it worked
        logger.log(
            logging.INFO if fresh else logging.WARNING,
            "%s: its own field definitions (%s) are not readable (%s); its custom fields are named by %s, "
            "which it shares, and its own option fields (visible_to) get no labels in this run",
            entity.name,
            entity.fields_entity,
            _why(exc),
            inherited,
        )
        own, unlabelled = [], OWN_OPTION_FIELDS.get(entity.name, ())
    custom = [f for f in ctx.full_rows(BY_NAME[inherited], fresh=fresh) if f.get("is_custom_field")]
    return [*custom, *own], unlabelled  # later definitions win: the entity's own come last


def _builtin_columns(entity: Entity) -> set[str]:
    """The columns the entity's records fill themselves: the spec's (objects by their flattened and their
    own name, lists by their child table's), the engine's (`is_deleted`, listing flags, its hints). A custom
    field named like one ("ID", "Emails") is bound elsewhere from the start, rather than moved once a
    record shows the clash (which left `custom_fields` naming the old column for that run)."""
    from pipedrive_source import column_types  # imports the engine's table: late, as above

    names = set(column_types.root_columns(entity)) | set(entity.columns)
    names |= {name.split("__", 1)[0] for name in names}
    names |= {child.removeprefix(f"{entity.name}__") for child in column_types.child_columns(entity.name)}
    names |= {entity.primary_key, "is_deleted", *(flag for lst in entity.listings for flag in lst.flags)}
    return names | ({entity.cursor_field} if entity.cursor_field else set())


def _lead_label_options(ctx: SyncContext) -> dict[Any, str] | None:
    """The leads' labels by id; None when `/v1/leadLabels` is refused (402/403) or fails after every retry.

    Leads then load with `label_ids` and no `labels`, as their `visible_to` goes unlabelled without the
    lead fields: skipping them (as refused deal fields skip deals) would hold back every lead for a
    column that only labels ids. The option summary marks `label_ids` unlabelled (`options_summary`), so
    the first run that reads the labels reads every lead again and fills them."""
    from pipedrive_source.entities import BY_NAME

    try:
        rows = ctx.full_rows(BY_NAME[LEAD_LABELS])
    except (ApiError, AccessDenied) as exc:
        logger.warning(
            "leads: its labels (%s) are not readable (%s); leads load with label_ids and no labels in this "
            "run, and the first run that reads them reads every lead again to fill them",
            LEAD_LABELS,
            _why(exc),
        )
        return None
    return {row["id"]: row.get("name") for row in rows if row.get("id") is not None}


def _why(exc: ApiError | AccessDenied) -> str:
    return f"HTTP {exc.status}: {exc.detail}" if isinstance(exc, AccessDenied) else exc.message


def _apply_column_hints(table: str, resolver: Resolver) -> bool:
    """Type the custom columns up front (dates as date, all-null columns still created, unknown as JSON).

    Applied to the running resource before its first page is yielded, so dlt computes the table with them.
    Returns whether it could (only from inside the table's own resource).
    """
    try:
        resource = dlt.current.resource()
    except Exception:  # not inside a dlt resource (tests, scripts): nothing to hint
        return False
    if resource.name != table:
        return False
    if resolver.columns:
        resource.apply_hints(columns=resolver.columns)
    return True
