"""Rows of `deal_flow`: one per item of `/v1/deals/{id}/flow`, whatever its kind, in the same columns.

A deal's flow mixes its field changes (`dealChange`) with its activities, notes, files, mail messages,
invoices, documents ..., each kind with a `data` of its own (GetDealUpdates' example: an activity's times
and duration are strings, it has `attendees` and `participants` lists and a `file` object; a mail message
has `from`/`to`/`cc`/`bcc` and `attachments` lists, 0/1 flags and RFC3339 times). Flattened as they came,
they made a column per key of every kind (120 for five kinds, more with each new kind or key), each typed
by the first value a pipeline met: an undone activity's `marked_as_done_time` "" next to a done one's time
went to `data__marked_as_done_time__v_text`, and the column was a timestamp in one company, text in another.

Every row has the same typed columns (`COLUMNS`): `flow_id` ('<object>:<id>': ids are unique per kind
only), `deal_id`, `object`, `timestamp`, the item's own id `data__id` and its user `data__user_id`, and a
field change's fields (`data__field_key`, `data__old_value`/`data__new_value` as text ...). Every other
kind's `data`, whole, is the JSON column `item_data` (as is a key of a field change beyond those): its keys
and their meaning differ per kind and keep growing, and its lists nest records. Activities, notes and files
are loaded typed in their own tables anyway (join on `data__id`), and as they are now: a deal's flow is read
again only when the deal changes (adding or deleting an item does that, editing one need not); mail
messages are read with the warehouse's JSON functions. Nothing is lost, and no kind a company uses later
changes the table.

Custom field changes are asked for (`all_changes=1`: Pipedrive leaves them out otherwise; the same requests,
one parameter more). `data__field_key` keeps the field's hash (`<hash>_currency` ... for a part of a
composite value), the key `custom_fields.field_code` joins on and that no rename changes; next to it,
`data__column_name` is the column `deals` keeps the changed value in (null for a built-in field, whose
key is its column already), and an enum or set field's old and new values are its labels (a set's joined
by ", "), as `deals` shows them: both through the run's resolver of `deals`, its bindings and definitions.
"""

from __future__ import annotations

import hashlib
from typing import Any

import orjson

Row = dict[str, Any]

CHANGE = "dealChange"
# a field change's `data` as columns (the spec example's keys): old and new values of any field type as text
CHANGE_COLUMNS: dict[str, str] = {
    "id": "bigint",
    "item_id": "bigint",
    "user_id": "bigint",
    "field_key": "text",
    "column_name": "text",  # not Pipedrive's: a custom field's column in `deals` (custom_fields_hook)
    "old_value": "text",
    "new_value": "text",
    "is_bulk_update_flag": "bool",
    "log_time": "timestamp",
    "change_source": "text",
    "change_source_user_agent": "text",
    "additional_data": "json",
}
SHARED = ("id", "user_id")  # columns of every kind's item, where they are integers
JSON_COLUMN = "item_data"
COLUMNS: dict[str, dict[str, Any]] = {
    "flow_id": {"data_type": "text"},
    "deal_id": {"data_type": "bigint"},
    "object": {"data_type": "text"},
    "timestamp": {"data_type": "timestamp"},
    **{f"data__{key}": {"data_type": data_type} for key, data_type in CHANGE_COLUMNS.items()},
    JSON_COLUMN: {"data_type": "json"},  # an object kept whole (see `arrow_pages.PageShaper`)
}


def flow_row(row: Row, parent_id: Any) -> None:
    """A flow item as a row of the columns above (in place)."""
    kind = row.get("object")
    data = row.get("data")
    if not isinstance(data, dict):
        data = {}
    item_id = data.get("id")
    row["flow_id"] = f"{kind}:{_digest(row) if item_id is None else item_id}"
    row["deal_id"] = parent_id
    if kind == CHANGE:
        row["data"] = {key: value for key, value in data.items() if _fits(key, value)}
        rest = {key: value for key, value in data.items() if not _fits(key, value)}
    else:
        row["data"] = {key: value for key in SHARED if type(value := data.get(key)) is int}
        rest = data
    row[JSON_COLUMN] = rest or None


def _digest(item: Row) -> str:
    """The key of an item without an id (none in the spec's examples, but the kinds are open-ended): its
    content, so two of them in one deal stay two rows ('<kind>:None' kept the last), a re-read keeps one."""
    return "#" + hashlib.blake2b(orjson.dumps(item, option=orjson.OPT_SORT_KEYS), digest_size=8).hexdigest()


def _fits(key: str, value: Any) -> bool:
    """Whether a field change's value goes to its column: ids only when they are integers (text ids stay in
    the JSON: a bigint column would split them into a variant column)."""
    data_type = CHANGE_COLUMNS.get(key)
    return data_type is not None and (data_type != "bigint" or value is None or type(value) is int)
