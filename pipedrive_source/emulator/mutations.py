"""Changes to a running company: `Company.mutate(body)`.

Every batch first advances the emulator clock (`advance_seconds`, default 60, at least 1) and stamps every
record it changes with the new time as `update_time`, so incremental clients see exactly those records
(an explicit `update_time` in an op's changes is kept; a null one is stamped: the spec has no null there).

Random batch — `{"seed": 1, "creates": 10, "updates": 50, "deletes": 5, "archives": 2}`:
- creates/updates/deletes spread over deals, persons, organizations, activities, products, leads, notes,
  projects, tasks, deal_products, deal_installments and files (weighted towards the big tables);
- a created record copies a random live record of its table (so relations stay valid) with a new id,
  `add_time = update_time = now`; an update changes a title/name-like field, one or two custom fields and
  for deals sometimes value or stage (a deal's changes, custom fields' too, are logged in its flow);
- archives go to deals (`is_archived`), leads (`is_archived`) and projects (`archive_time`).
Explicit operations — `{"ops": [...]}`, applied in order:
- `{"op": "rename_field", "entity", "field_code", "name"}`; `{"op": "relabel_option", "entity",
  "field_code", "option_id", "label"}` (a null label is served as null); `{"op": "add_option", "entity",
  "field_code", "label"}`;
  `{"op": "delete_option", "entity", "field_code", "option_id"}` (the option leaves the field's options,
  v1 lists it under `options_deleted`; records holding its id keep it and are not stamped);
  `{"op": "delete_field", "entity", "field_code"}` (the field leaves the fields endpoint and every
  record's rendering; records are not stamped, as in Pipedrive); `{"op": "add_field", "entity", "name",
  "field_type", "options": [labels]?, "fill": n?}` (n random live records get a value and are stamped);
- `{"op": "archive_deal", "id"}`; `{"op": "update", "table", "id", "changes"}` (`custom_fields` in
  changes is merged key by key; a null value clears a field, `custom_fields: null` all of them, another
  shape is refused; a deal given another `stage_id` gets the batch's time as `stage_change_time` unless
  the changes name one; a value `"\u0000json:<literal>"` is served as the bare JSON `<literal>`, say
  `1e999` or `NaN`: `faults.RAW_JSON`; `"\u0000latin1:<literal>"` too, with a byte per character, not
  UTF-8: `faults.RAW_LATIN1`);
  `{"op": "delete", "table", "id"}`;
  `{"op": "create", "table", "values"?}`; `{"op": "add_mail", "deal_id"}` (a mail message linked to the
  deal: it shows in the deal's flow); `{"op": "advance_clock", "seconds"}`;
  `{"op": "merge", "table": "persons" | "organizations", "id", "merge_with_id"}` (v1
  `PUT /persons/{id}/merge`, `PUT /organizations/{id}/merge`; see `Batch.merge`);
  `{"op": "follow" | "unfollow", "table": "deals" | "persons" | "organizations" | "products", "id",
  "user_id"}` (a follower added or removed, `followers.py`; the record is stamped).
Delete semantics: a deal becomes `status: deleted`, `is_deleted: true` and stays visible through
`status=deleted` for 30 days; a project becomes `status: deleted` (listed only by `status=deleted`, the
spec's documented exception); leads and tasks get an internal deleted flag (a task's subtasks are deleted
with it, as the spec's deleteTask says), notes and files `active_flag: false`, everything else
`is_deleted: true` — all of those vanish from lists.
A change to a deal product, installment or discount also stamps its deal (its products or value changed),
so clients that re-read products for changed deals see it; so do an activity, note or file added to a deal
or deleted, and a mail linked to it (the deal's counts of them change, and its flow shows them).
The result lists affected ids per table: `{"clock", "created", "updated", "deleted", "archived", "relinked",
"fields"}` (`relinked`: records a merge pointed at the record kept, without stamping them).
"""

from __future__ import annotations

import copy
import random
from typing import TYPE_CHECKING, Any

from . import derived, flow_items, followers
from .catalog import CUSTOM_ENTITIES
from .clock import rfc3339
from .fields import FieldDef, field_hash
from .generate import WORDS, CustomValues, det_uuid
from .store import Record, Table

if TYPE_CHECKING:
    from .company import Company

RANDOM_TABLES = {
    "deals": 6,
    "persons": 5,
    "organizations": 2,
    "activities": 5,
    "products": 1,
    "leads": 2,
    "notes": 3,
    "projects": 1,
    "tasks": 1,
    "deal_products": 2,
    "deal_installments": 1,
    "files": 1,
}
ARCHIVABLE = ("deals", "leads", "projects")
TITLE_FIELD = {
    "deals": "title",
    "leads": "title",
    "projects": "title",
    "tasks": "title",
    "activities": "subject",
    "persons": "name",
    "organizations": "name",
    "products": "name",
    "notes": "content",
    "files": "description",
    "deal_products": "comments",
    "deal_installments": "description",
    "deal_discounts": "description",
}
CHILD_OF_DEAL = ("deal_products", "deal_installments", "deal_discounts")
STAMPED = ("update_time", "updated_at")  # a record's time of its last change (discounts: `updated_at`)
# where a person's / an organization's id is held, (table, column); a list column holds several ids
LINKS: dict[str, tuple[tuple[str, str], ...]] = {
    "persons": (
        ("deals", "person_id"),
        ("activities", "person_id"),
        ("notes", "person_id"),
        ("files", "person_id"),
        ("leads", "person_id"),
        ("call_logs", "person_id"),
        ("projects", "person_ids"),
    ),
    "organizations": (
        ("persons", "org_id"),
        ("deals", "org_id"),
        ("activities", "org_id"),
        ("notes", "org_id"),
        ("files", "org_id"),
        ("leads", "organization_id"),
        ("call_logs", "org_id"),
        ("projects", "org_ids"),
    ),
}
NAMED_LINKS = {("notes", "person_id"): "person", ("notes", "org_id"): "organization"}  # name frozen with it
MERGE_KEEPS = ("id", "add_time", "update_time", "is_deleted", "custom_fields")  # never filled from the other
IN_DEAL_FLOW = ("activities", "notes", "files")  # items of the deal flow besides its own changes


class MutationError(ValueError):
    """A mutation body the emulator cannot apply (unknown table, id, field or op)."""


class Batch:
    def __init__(self, company: Company, rng: random.Random):
        self.c, self.rng = company, rng
        self.result: dict[str, Any] = {
            "created": {},
            "updated": {},
            "deleted": {},
            "archived": {},
            "relinked": {},
            "fields": [],
        }

    def note(self, kind: str, table: str, rid: Any) -> None:
        ids = self.result[kind].setdefault(table, [])
        if rid not in ids:
            ids.append(rid)

    # --- helpers ---------------------------------------------------------------------------------
    def table(self, name: str) -> Table:
        if name not in self.c.t:
            raise MutationError(f"unknown table {name!r}")
        return self.c.t[name]

    def pick(self, name: str, view: str = "live") -> Record | None:
        ix = self.table(name).index(view, "id")
        return self.table(name).rows[ix[int(self.rng.random() * len(ix))][1]] if ix else None

    def record(self, name: str, rid: Any) -> Record:
        t = self.table(name)
        rec = t.get(rid) if rid in t.rows else t.get(_as_int(rid))
        if rec is None:
            raise MutationError(f"{name}: no record with id {rid!r}")
        return rec

    def stamp(self, name: str, rec: Record, changes: dict[str, Any], kind: str = "updated") -> None:
        t = self.table(name)
        for key in STAMPED:
            if key in rec and changes.get(key) is None:
                # Pipedrive stamps every change, and every list's spec has update_time as a non-nullable
                # string: a change asking for none gets the batch's time too (an explicit time is kept)
                changes[key] = self.c.clock
        if name == "deals":
            for key, new in changes.items():
                if (
                    key not in ("update_time", "custom_fields")
                    and not key.startswith("_")
                    and rec.get(key) != new
                ):
                    derived.log_change(self.c, rec, key, rec.get(key), new)
            if "custom_fields" in changes:
                old = rec.get("custom_fields") or {}
                derived.log_custom_changes(self.c, rec, old, changes["custom_fields"] or {})
        t.update(rec["id"], changes)
        self.note(kind, name, rec["id"])
        self.touch_parent_deal(name, rec, kind)

    def touch_parent_deal(self, name: str, rec: Record, kind: str) -> None:
        """A deal's products/installments changed, or an activity, note or file was added to it or deleted:
        the deal itself counts as updated (it holds their counts; and its flow lists them)."""
        deals = self.c.t["deals"]
        deal = deals.rows.get(rec.get("deal_id"))
        linked = name in IN_DEAL_FLOW and kind in ("created", "deleted")
        if (name in CHILD_OF_DEAL or linked) and deal is not None and not deal["is_deleted"]:
            deals.update(rec["deal_id"], {"update_time": self.c.clock})
            self.note("updated", "deals", rec["deal_id"])

    def add_mail(self, deal: Record) -> None:
        """A mail message linked to the deal: in its flow, and the deal counts as updated (mail counts)."""
        if deal["is_deleted"]:
            raise MutationError(f"deal {deal['id']} is deleted")
        flow_items.log_mail(self.c, deal)
        self.c.t["deals"].update(deal["id"], {"update_time": self.c.clock})
        self.note("updated", "deals", deal["id"])

    # --- record operations -----------------------------------------------------------------------
    def create(self, name: str, values: dict[str, Any] | None = None) -> Any:
        t = self.table(name)
        template = self.pick(name)
        if template is None:
            raise MutationError(f"{name}: no live record to model a new one on")
        rec = copy.deepcopy(template)
        now = self.c.clock
        rid: Any = (
            det_uuid(self.c.seed, f"{name}/created", t.max_id + 1) if isinstance(rec["id"], str) else None
        )
        rec["id"] = rid if rid is not None else t.max_id + 1
        if isinstance(rec["id"], str):
            t.max_id += 1
            rec["_seq"] = 10**9 + t.max_id
        for key in ("add_time", "update_time", "created", "modified", "start_time", *STAMPED, "created_at"):
            if key in rec:
                rec[key] = now
        rec.update(self._fresh_state(name, rec))
        title = TITLE_FIELD.get(name)
        if title:
            rec[title] = f"{WORDS[int(self.rng.random() * 16)]} new {name[:-1]} {rec['id']}"
        rec.update(copy.deepcopy(values or {}))
        t.insert(rec)
        self.note("created", name, rec["id"])
        self.touch_parent_deal(name, rec, "created")
        return rec["id"]

    def _fresh_state(self, name: str, rec: Record) -> dict[str, Any]:
        fresh: dict[str, Any] = {}
        if name == "deals":
            fresh = dict(
                status="open",
                is_deleted=False,
                is_archived=False,
                archive_time=None,
                local_won_date=None,
                local_lost_date=None,
                local_close_date=None,
                _deleted_at=None,
                close_time=None,
                won_time=None,
                lost_time=None,
                lost_reason=None,
                stage_change_time=None,
            )
        elif name in ("leads", "projects", "tasks"):
            fresh = {"_deleted": False, "is_archived": False} if name == "leads" else {"_deleted": False}
            if name == "projects":
                fresh.update(archive_time=None, status="open")
        elif name in ("notes", "files"):
            fresh = {"active_flag": True}
        elif "is_deleted" in rec:
            fresh = {"is_deleted": False}
        if name in CHILD_OF_DEAL or name in ("activities", "notes", "files"):
            deal = self.pick("deals")
            if deal is not None and "deal_id" in rec and rec["deal_id"] is not None:
                fresh["deal_id"] = deal["id"]
                if name == "notes":
                    fresh["deal"] = {"title": deal["title"]}
                elif name == "files":
                    fresh["deal_name"] = deal["title"]
        return fresh

    def update(self, name: str, rec: Record, changes: dict[str, Any] | None = None) -> None:
        if changes is None:
            changes = self._random_changes(name, rec)
        changes = copy.deepcopy(changes)
        if name == "deals" and changes.get("stage_id", rec.get("stage_id")) != rec.get("stage_id"):
            # the spec's "last updated date and time of the deal stage": a move sets it as a random one does
            changes.setdefault("stage_change_time", self.c.clock)
        if "custom_fields" in changes and "custom_fields" in rec:
            given = changes["custom_fields"]
            if given is None:  # as a null value clears one field (it answered HTTP 500, an AttributeError)
                given = dict.fromkeys(rec["custom_fields"] or {})
            elif not isinstance(given, dict):
                raise MutationError(f"custom_fields must be an object of field values or null, not {given!r}")
            merged = dict(rec["custom_fields"] or {})
            for k, v in given.items():
                if v is None:
                    merged.pop(k, None)
                else:
                    merged[k] = v
            changes["custom_fields"] = merged
        self.stamp(name, rec, changes)

    def _random_changes(self, name: str, rec: Record) -> dict[str, Any]:
        r = self.rng.random
        title = TITLE_FIELD[name]
        changes: dict[str, Any] = {title: f"{rec.get(title) or ''} (edited {self.c.clock})".strip()}
        if name == "deals" and r() < 0.5:
            changes["value"] = round(r() * 50_000, 2)
        if name == "deals" and r() < 0.3:
            stage = self.pick("stages")
            if stage is not None:
                changes.update(
                    stage_id=stage["id"], pipeline_id=stage["pipeline_id"], stage_change_time=self.c.clock
                )
        entity = (
            "deal"
            if name == "leads"
            else {
                "deals": "deal",
                "persons": "person",
                "organizations": "organization",
                "products": "product",
                "projects": "project",
            }.get(name)
        )
        if entity:
            fields = self.c.fields.custom(entity)
            if fields:
                fd = fields[int(r() * len(fields))]
                cv = CustomValues([fd], self.rng, _refs(self.c), self.c.clock)
                changes["custom_fields"] = {fd.code: cv.one(fd.code) if r() < 0.85 else None}
        return changes

    def delete(self, name: str, rec: Record) -> None:
        now = self.c.clock
        if name == "deals":
            changes: dict[str, Any] = {"is_deleted": True, "status": "deleted", "_deleted_at": now}
        elif name == "projects":  # listed again only through status=deleted
            changes = {"_deleted": True, "status": "deleted", "status_change_time": now}
        elif name in ("leads", "tasks"):
            changes = {"_deleted": True}
        elif name in ("notes", "files"):
            changes = {"active_flag": False}
        else:
            changes = {"is_deleted": True}
        self.stamp(name, rec, changes, "deleted")
        if name == "tasks":  # the spec's deleteTask: "If the task has subtasks, those will also be deleted."
            tasks = self.table("tasks")
            for sub in sorted(tasks.group("parent_task_id").get(rec["id"], ())):
                if tasks.view_of(tasks.rows[sub]) == "live":
                    self.delete("tasks", tasks.rows[sub])

    def merge(self, name: str, gone: Record, kept: Record) -> None:
        """`PUT /v1/{persons|organizations}/{id}/merge` with `merge_with_id`, as Pipedrive's merge tutorials
        describe it: the record of the URL (`gone`) is removed; the `merge_with_id` one (`kept`) keeps its
        values and takes the other's where its own are empty (custom fields too), so it changes and is
        stamped; "all related data (activities, emails, filters, notes, products, followers,
        participants)" moves to it. Whether the moved records get a new update_time the docs do not say:
        the emulator takes the conservative reading, they do not (a client cannot count on seeing them
        change), and lists them under `relinked`."""
        if name not in LINKS:
            raise MutationError(f"{name} cannot be merged")
        views = {self.table(name).view_of(rec) for rec in (gone, kept)}
        if gone["id"] == kept["id"] or views != {"live"}:
            raise MutationError(f"{name}: {gone['id']} and {kept['id']} are not two live records")
        changes = {
            key: copy.deepcopy(value)
            for key, value in gone.items()
            if key not in MERGE_KEEPS
            and not key.startswith("_")
            and _empty(kept.get(key))
            and not _empty(value)
        }
        theirs, ours = gone.get("custom_fields") or {}, kept.get("custom_fields") or {}
        filled = {k: copy.deepcopy(v) for k, v in theirs.items() if _empty(ours.get(k)) and not _empty(v)}
        if filled:
            changes["custom_fields"] = filled  # merged key by key into the kept record's by update()
        followers.move(self.c, name, gone, kept)
        self.update(name, kept, changes)
        for table, column in LINKS[name]:
            for rec in list(self.c.t[table].rows.values()):
                relinked = _relinked(rec, column, gone["id"], kept)
                if table == "activities" and name == "persons" and rec.get("participants"):
                    moved = [
                        {**p, "person_id": kept["id"]} if p.get("person_id") == gone["id"] else p
                        for p in rec["participants"]
                    ]
                    if moved != rec["participants"]:
                        relinked["participants"] = moved
                if relinked:
                    if (table, column) in NAMED_LINKS and column in relinked:
                        relinked[NAMED_LINKS[table, column]] = {"name": kept["name"]}
                    self.c.t[table].update(rec["id"], relinked)
                    self.note("relinked", table, rec["id"])
        self.delete(name, gone)
        if name == "persons":
            self.c.merged_into[gone["id"]] = kept["id"]

    def follow(self, name: str, rid: Any, user_id: Any, follow: bool) -> None:
        """A user starts or stops following a live record, which is stamped (its followers_count)."""
        rec = self.record(name, rid)
        if self.table(name).view_of(rec) != "live":
            raise MutationError(f"{name} {rid} is not live")
        try:
            followers.change(self.c, name, rec, user_id, follow)
        except (TypeError, ValueError) as exc:
            raise MutationError(str(exc)) from None
        self.stamp(name, rec, {})

    def archive(self, name: str, rec: Record) -> None:
        if name == "deals":
            changes: dict[str, Any] = {"is_archived": True, "archive_time": self.c.clock}
        elif name == "leads":
            changes = {"is_archived": True}
        elif name == "projects":
            changes = {"archive_time": self.c.clock}
        else:
            raise MutationError(f"{name} cannot be archived")
        self.stamp(name, rec, changes, "archived")


def _empty(value: Any) -> bool:
    return value is None or value == "" or value == [] or value == {}


def _relinked(rec: Record, column: str, gone: Any, kept: Record) -> dict[str, Any]:
    """The change pointing `rec`'s `column` (an id, or a list of ids) at `kept` instead of `gone`."""
    value = rec.get(column)
    if isinstance(value, list) and gone in value:
        return {column: list(dict.fromkeys(kept["id"] if v == gone else v for v in value))}
    return {column: kept["id"]} if value == gone and value is not None else {}


def _as_int(v: Any) -> Any:
    try:
        return int(v)
    except (TypeError, ValueError):
        return v


def _refs(company: Company) -> dict[str, int]:
    return {
        "user": company.t["users"].max_id,
        "org": company.t["organizations"].max_id,
        "people": company.t["persons"].max_id,
    }


# --- field operations ------------------------------------------------------------------------------------
def _field(company: Company, op: dict[str, Any]) -> FieldDef:
    fd = company.fields.find(op.get("entity", ""), op.get("field_code", ""))
    if fd is None or fd.deleted:
        raise MutationError(f"no field {op.get('field_code')!r} on {op.get('entity')!r}")
    return fd


def _option(fd: FieldDef, option_id: Any) -> dict[str, Any]:
    for o in fd.options or ():
        if o["id"] == _as_int(option_id):
            return o
    raise MutationError(f"field {fd.code} has no option {option_id!r}")


def field_op(batch: Batch, op: dict[str, Any]) -> None:
    c, now, kind = batch.c, batch.c.clock, op["op"]
    if kind == "add_field":
        fd = _add_field(batch, op)
    else:
        fd = _field(c, op)
        if kind == "rename_field":
            fd.name = str(op["name"])
        elif kind == "relabel_option":
            o = _option(fd, op["option_id"])
            o.update(label=None if op["label"] is None else str(op["label"]), update_time=now)
        elif kind == "add_option":
            if fd.options is None:
                raise MutationError(f"field {fd.code} has no options")
            new_id = 1 + max((o["id"] for o in _all_options(c)), default=1000)
            fd.options.append(
                {"id": new_id, "label": str(op["label"]), "color": None, "add_time": now, "update_time": now}
            )
            op = {**op, "option_id": new_id}
        elif kind == "delete_option":
            o = _option(fd, op["option_id"])
            fd.options.remove(o)
            fd.deleted_options.append(o)
        elif kind == "delete_field":
            fd.deleted = True
    fd.update_time = now
    c.fields_changed(fd.entity)
    batch.result["fields"].append({k: v for k, v in {**op, "field_code": fd.code}.items() if k != "fill"})


def _all_options(company: Company) -> list[dict[str, Any]]:
    """Every option ever made, deleted ones too: a new option never takes a deleted one's id."""
    fds = [fd for fds in company.fields.by_entity.values() for fd in fds]
    return [o for fd in fds for o in (*(fd.options or ()), *fd.deleted_options)]


def _add_field(batch: Batch, op: dict[str, Any]) -> FieldDef:
    c, entity, ftype = batch.c, op.get("entity"), op.get("field_type")
    if entity not in (*CUSTOM_ENTITIES, "activity"):
        raise MutationError(f"custom fields cannot be added to {entity!r}")
    name = str(op.get("name") or "New field")
    ordinal = sum(1 for f in c.fields.by_entity.get(entity, ()) if f.name == name) + 100
    options = None
    if ftype in ("enum", "set"):
        base = 1 + max((o["id"] for o in _all_options(c)), default=1000)
        labels = op.get("options") or ["Yes", "No"]
        options = [
            {"id": base + i, "label": str(lab), "color": None, "add_time": c.clock, "update_time": c.clock}
            for i, lab in enumerate(labels)
        ]
    from .fields import CUSTOM_TYPES

    if ftype not in CUSTOM_TYPES:
        raise MutationError(f"unsupported field_type {ftype!r}")
    fd = FieldDef(
        entity,
        field_hash(c.seed, entity, name, ordinal),
        name,
        ftype,
        True,
        c.fields.next_id(),
        c.clock,
        c.clock,
        options,
    )
    c.fields.add(fd)
    table = {
        "deal": "deals",
        "person": "persons",
        "organization": "organizations",
        "product": "products",
        "project": "projects",
    }.get(entity)
    if table and op.get("fill"):
        cv = CustomValues([fd], batch.rng, _refs(c), c.clock)
        for _ in range(int(op["fill"])):
            rec = batch.pick(table)
            if rec is not None:
                batch.update(table, rec, {"custom_fields": {fd.code: cv.one(fd.code)}})
    return fd


# --- entry point -----------------------------------------------------------------------------------------
def _random_batch(batch: Batch, body: dict[str, Any]) -> None:
    names, weights = list(RANDOM_TABLES), list(RANDOM_TABLES.values())
    rng = batch.rng
    for _ in range(int(body.get("creates", 0))):
        batch.create(rng.choices(names, weights)[0])
    for _ in range(int(body.get("updates", 0))):
        name = rng.choices(names, weights)[0]
        rec = batch.pick(name)
        if rec is not None:
            batch.update(name, rec)
    for _ in range(int(body.get("deletes", 0))):
        name = rng.choices(names, weights)[0]
        rec = batch.pick(name)
        if rec is not None:
            batch.delete(name, rec)
    for _ in range(int(body.get("archives", 0))):
        name = ARCHIVABLE[int(rng.random() * len(ARCHIVABLE))]
        rec = batch.pick(name)
        if rec is not None:
            batch.archive(name, rec)


def _explicit(batch: Batch, op: dict[str, Any]) -> None:
    kind = op.get("op")
    if kind in ("rename_field", "relabel_option", "add_option", "delete_option", "delete_field", "add_field"):
        field_op(batch, op)
    elif kind == "archive_deal":
        batch.archive("deals", batch.record("deals", op.get("id")))
    elif kind == "update":
        batch.update(op["table"], batch.record(op["table"], op.get("id")), op.get("changes") or {})
    elif kind == "delete":
        batch.delete(op["table"], batch.record(op["table"], op.get("id")))
    elif kind == "create":
        batch.create(op["table"], op.get("values"))
    elif kind == "add_mail":
        batch.add_mail(batch.record("deals", op.get("deal_id")))
    elif kind == "merge":
        table = op.get("table", "")
        batch.merge(table, batch.record(table, op.get("id")), batch.record(table, op.get("merge_with_id")))
    elif kind in ("follow", "unfollow"):
        batch.follow(op.get("table", ""), op.get("id"), op.get("user_id"), kind == "follow")
    elif kind == "advance_clock":
        batch.c.tick(int(op.get("seconds", 1)))
    else:
        raise MutationError(f"unknown op {kind!r}")


def apply(company: Company, body: dict[str, Any]) -> dict[str, Any]:
    """Apply one mutation batch (see module docstring); returns what changed."""
    company.tick(int(body.get("advance_seconds", 60)))
    batch = Batch(company, random.Random(body.get("seed", company.clock)))
    for op in body.get("ops") or ():
        _explicit(batch, op)
    _random_batch(batch, body)
    result = batch.result
    for kind in ("created", "updated", "deleted", "archived", "relinked"):
        result[kind] = {k: v for k, v in result[kind].items() if v}
    result["clock"] = rfc3339(company.clock)
    return result
