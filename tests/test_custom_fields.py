"""Unit tests of the custom-field resolver on field definitions and values shaped as the specs give them.

Field definitions: the v2 `*Fields` item (field_code, field_name, field_type, options, subfields,
is_custom_field; the seed spec's dealFields example) and the v1 item (key, name, field_type, options,
options_deleted; the v1 noteFields example). Values: v2 inside `custom_fields`, v1 at the record root
(`"11,12"` sets, `<hash>_currency`, `<hash>_until`, `<hash>_<address part>`), per shared/seeds/README.md.
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
from datetime import date, time

import pytest

from pipedrive_source.client import PipedriveClient
from pipedrive_source.custom_fields import Resolver
from pipedrive_source.field_defs import parse_field
from pipedrive_source.naming import NAMING, column_stem
from pipedrive_source.oauth import ApiTokenAuth

HEX40 = re.compile(r"[0-9a-f]{40}")


def h(name: str) -> str:
    return hashlib.sha1(name.encode()).hexdigest()


def v2_field(code, name, ftype, options=None, subfields=None, custom=True):
    return {
        "field_name": name,
        "field_code": code,
        "description": "",
        "field_type": ftype,
        "options": [{"id": i, "label": lab, "color": None} for i, lab in options] if options else None,
        "subfields": subfields,
        "is_custom_field": custom,
        "is_optional_response_field": False,
    }


ADDRESS_SUBFIELDS = [
    {"field_code": c, "field_name": c, "field_type": "varchar"}
    for c in (
        "value",
        "street_number",
        "route",
        "subpremise",
        "locality",
        "admin_area_level_1",
        "admin_area_level_2",
        "country",
        "postal_code",
        "formatted_address",
    )
]
MONETARY_SUBFIELDS = [
    {"field_code": "value", "field_name": "Amount", "field_type": "double"},
    {"field_code": "currency", "field_name": "Currency", "field_type": "varchar"},
]
TIER = [(11, "Bronze"), (12, "Silver"), (13, "Gold")]
LABELS = [(1, "Hot"), (2, "Warm"), (3, "Cold")]
VISIBLE_TO = [(1, "Owner & followers"), (3, "Entire company")]

# Hashes named after what they hold, so a failing test says which field it is about.
F = {
    name: h(name)
    for name in (
        "varchar",
        "text",
        "phone",
        "varchar_auto",
        "int",
        "double",
        "boolean",
        "monetary",
        "date",
        "daterange",
        "time",
        "timerange",
        "enum",
        "set",
        "address",
        "user",
        "org",
        "people",
        "status",
        "value",
        "region_a",
        "region_b",
        "regiao",
        "tier",
        "picture",
    )
}

DEAL_FIELDS = [
    # built-ins, as the seed spec's dealFields example shows them
    v2_field("title", "Deal Title", "varchar", custom=False),
    v2_field("value", "Value", "monetary", subfields=MONETARY_SUBFIELDS, custom=False),
    v2_field("status", "Status", "status", custom=False),
    v2_field("label_ids", "Label", "set", LABELS, custom=False),
    v2_field("visible_to", "Visible to", "visible_to", VISIBLE_TO, custom=False),
    # the custom-field zoo
    v2_field(F["varchar"], "Varchar field", "varchar"),
    v2_field(F["text"], "Notes long", "text"),
    v2_field(F["phone"], "Phone field", "phone"),
    v2_field(F["varchar_auto"], "Auto field", "varchar_auto"),
    v2_field(F["int"], "Seats", "int"),
    v2_field(F["double"], "Score", "double"),
    v2_field(F["boolean"], "Is partner", "boolean"),
    v2_field(F["monetary"], "Budget", "monetary", subfields=MONETARY_SUBFIELDS),
    v2_field(F["date"], "Signed on", "date"),
    v2_field(F["daterange"], "Campaign", "daterange"),
    v2_field(F["time"], "Call time", "time"),
    v2_field(F["timerange"], "Office hours", "timerange"),
    v2_field(F["enum"], "Deal Tier", "enum", TIER),
    v2_field(F["set"], "Interests", "set", TIER),
    v2_field(F["address"], "Billing address", "address", subfields=ADDRESS_SUBFIELDS),
    v2_field(F["user"], "Account manager", "user"),
    v2_field(F["org"], "Partner org", "org"),
    v2_field(F["people"], "Champion", "people"),
    v2_field(F["status"], "Status", "enum", TIER),
    v2_field(F["value"], "Value", "double"),
    v2_field(F["region_a"], "Region", "varchar"),
    v2_field(F["region_b"], "Region", "enum", TIER),
    v2_field(F["regiao"], "Região de venda", "enum", TIER),
]
DEAL_BUILTIN_KEYS = [
    "id",
    "title",
    "value",
    "currency",
    "status",
    "label_ids",
    "visible_to",
    "custom_fields",
    "owner_id",
    "update_time",
]

ADDRESS = {
    "value": "Main street 5, 10115 Berlin, Germany",
    "street_number": "5",
    "route": "Main street",
    "subpremise": None,
    "locality": "Berlin",
    "admin_area_level_1": "Berlin",
    "admin_area_level_2": None,
    "country": "Germany",
    "postal_code": "10115",
    "formatted_address": "Main street 5, 10115 Berlin, Germany",
}
V2_VALUES = {
    F["varchar"]: "hello",
    F["text"]: "long\ntext ✓",
    F["phone"]: "+372 5555555",
    F["varchar_auto"]: "auto",
    F["int"]: 42,
    F["double"]: 12.5,
    F["boolean"]: True,
    F["monetary"]: {"value": 1500.25, "currency": "EUR"},
    F["date"]: "2025-03-01",
    F["daterange"]: {"value": "2025-03-01", "until": "2025-03-31"},
    F["time"]: "09:30:00",
    F["timerange"]: {"value": "09:00:00", "until": "17:30:00"},
    F["enum"]: 12,
    F["set"]: [11, 13],
    F["address"]: ADDRESS,
    F["user"]: 7,
    F["org"]: 8,
    F["people"]: 9,
    F["status"]: 13,
    F["value"]: 3.5,
    F["region_a"]: "EMEA",
    F["region_b"]: 11,
    F["regiao"]: 12,
}


def v1_values() -> dict:
    """The same values as V2_VALUES in v1's root-level shape."""
    out = {}
    for code, v in V2_VALUES.items():
        if code == F["set"]:
            out[code] = "11,13"
        elif code == F["monetary"]:
            out[code], out[code + "_currency"] = v["value"], v["currency"]
        elif code in (F["daterange"], F["timerange"]):
            out[code], out[code + "_until"] = v["value"], v["until"]
        elif code == F["address"]:
            out.update({code: v["value"], **{f"{code}_{k}": x for k, x in v.items() if k != "value"}})
        else:
            out[code] = v
    return out


def deal_v2(**extra) -> dict:
    return {
        "id": 1,
        "title": "Big deal",
        "value": 100.0,
        "currency": "USD",
        "status": "open",
        "label_ids": [1, 3],
        "visible_to": 3,
        "owner_id": 5,
        "update_time": "2025-03-01T10:00:00Z",
        "custom_fields": dict(V2_VALUES),
        **extra,
    }


def deal_v1() -> dict:
    row = {k: v for k, v in deal_v2().items() if k != "custom_fields"}
    row["label"] = "1,3"  # v1 deals: the labels field is `label`, a comma string
    del row["label_ids"]
    return {**row, **v1_values()}


@pytest.fixture
def resolver() -> Resolver:
    return Resolver("deals", DEAL_FIELDS, builtin_columns=DEAL_BUILTIN_KEYS)


EXPECTED = {
    "varchar_field": "hello",
    "notes_long": "long\ntext ✓",
    "phone_field": "+372 5555555",
    "auto_field": "auto",
    "seats": 42,
    "score": 12.5,
    "is_partner": True,
    "budget": 1500.25,
    "budget_currency": "EUR",
    "signed_on": date(2025, 3, 1),
    "campaign": date(2025, 3, 1),
    "campaign_until": date(2025, 3, 31),
    "call_time": time(9, 30),
    "office_hours": time(9, 0),
    "office_hours_until": time(17, 30),
    "deal_tier": "Silver",
    "interests": ["Bronze", "Gold"],
    "billing_address": "Main street 5, 10115 Berlin, Germany",
    "billing_address_street_number": "5",
    "billing_address_route": "Main street",
    "billing_address_locality": "Berlin",
    "billing_address_country": "Germany",
    "billing_address_postal_code": "10115",
    "billing_address_subpremise": None,
    "account_manager": 7,
    "partner_org": 8,
    "champion": 9,
    "status_cf": "Gold",
    "value_cf": 3.5,
    "regiao_de_venda": "Silver",
}


# --- naming ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "column"),
    [
        ("Deal Tier", "deal_tier"),
        ("Região de venda", "regiao_de_venda"),
        ("Straße", "strasse"),
        ("Budget (€)", "budget_eur"),
        ("R&D share %", "r_and_d_share_pct"),
        ("dealTier", "deal_tier"),
        ("  Net   value  ", "net_value"),
        ("2nd contact", "_2nd_contact"),
        ("Ünïcödé — name", "unicode_name"),
    ],
)
def test_column_stem_is_readable_ascii_snake_case(name: str, column: str) -> None:
    assert column_stem(name, h(name)) == column
    assert NAMING.normalize_identifier(column) == column  # dlt creates exactly the column we bind


def test_unreadable_name_falls_back_to_short_code() -> None:
    code = h("顧客ランク")
    assert column_stem("顧客ランク", code) == f"cf_{code[:8]}"
    assert not HEX40.search(column_stem("顧客ランク", code))


def test_bindings_name_every_field_and_handle_collisions(resolver: Resolver) -> None:
    b = resolver.bindings
    assert b[F["enum"]] == "deal_tier"
    assert b[F["regiao"]] == "regiao_de_venda"
    assert b[F["status"]] == "status_cf"  # built-in `status` is never overwritten
    assert b[F["value"]] == "value_cf"
    first, second = sorted([F["region_a"], F["region_b"]])  # the lower hash wins the plain name
    assert (b[first], b[second]) == ("region", "region_2")
    assert set(b) == {fd["field_code"] for fd in DEAL_FIELDS if fd["is_custom_field"]}


def test_group_collision_moves_the_whole_group() -> None:
    """A monetary `Budget` needs `budget` and `budget_currency`; a text field already holds the latter."""
    fields = [v2_field(h("x"), "Budget currency", "varchar"), v2_field(h("y"), "Budget", "monetary")]
    r = Resolver("deals", fields, bindings={h("x"): "budget_currency"})
    assert r.bindings == {h("x"): "budget_currency", h("y"): "budget_2"}
    row = r.resolve({"id": 1, "custom_fields": {h("y"): {"value": 5, "currency": "EUR"}}})
    assert (row["budget_2"], row["budget_2_currency"]) == (5.0, "EUR")


def test_binding_survives_rename_and_same_name_field_gets_suffix() -> None:
    first = Resolver("deals", DEAL_FIELDS, builtin_columns=DEAL_BUILTIN_KEYS)
    renamed = [
        dict(fd, field_name="Customer tier") if fd["field_code"] == F["enum"] else fd for fd in DEAL_FIELDS
    ]
    renamed.append(v2_field(h("new tier"), "Deal Tier", "enum", TIER))
    again = Resolver("deals", renamed, bindings=first.bindings, builtin_columns=DEAL_BUILTIN_KEYS)
    assert again.bindings[F["enum"]] == "deal_tier"
    assert again.bindings[h("new tier")] == "deal_tier_2"
    assert (
        again.changed
        and not Resolver(
            "deals", DEAL_FIELDS, bindings=first.bindings, builtin_columns=DEAL_BUILTIN_KEYS
        ).changed
    )
    rows = {r["field_code"]: r for r in again.field_rows()}
    assert rows[F["enum"]]["field_name"] == "Customer tier"
    assert rows[F["enum"]]["column_name"] == "deal_tier"


def test_deleted_field_keeps_its_column_reserved_and_is_reported() -> None:
    first = Resolver("deals", DEAL_FIELDS, builtin_columns=DEAL_BUILTIN_KEYS)
    without = [fd for fd in DEAL_FIELDS if fd["field_code"] != F["enum"]]
    without.append(v2_field(h("tier again"), "Deal Tier", "varchar"))
    again = Resolver("deals", without, bindings=first.bindings, builtin_columns=DEAL_BUILTIN_KEYS)
    assert again.bindings[F["enum"]] == "deal_tier"
    assert again.bindings[h("tier again")] == "deal_tier_2"
    rows = {r["field_code"]: r for r in again.field_rows()}
    assert rows[F["enum"]]["still_exists"] is False
    assert rows[h("tier again")]["still_exists"] is True


def test_persisted_binding_that_hits_a_builtin_is_rebound() -> None:
    r = Resolver("deals", DEAL_FIELDS, bindings={F["varchar"]: "title"}, builtin_columns=DEAL_BUILTIN_KEYS)
    assert r.bindings[F["varchar"]] == "varchar_field"


def test_binding_is_deterministic_whatever_the_order_of_definitions() -> None:
    a = Resolver("deals", DEAL_FIELDS, builtin_columns=DEAL_BUILTIN_KEYS).bindings
    b = Resolver("deals", list(reversed(DEAL_FIELDS)), builtin_columns=DEAL_BUILTIN_KEYS).bindings
    assert a == b


# --- values ---------------------------------------------------------------------------------------


def test_v2_values_land_in_their_columns_with_types(resolver: Resolver) -> None:
    row = resolver.resolve(deal_v2())
    for col, value in EXPECTED.items():
        assert row[col] == value, col
        assert type(row[col]) is type(value), col
    first, second = sorted([F["region_a"], F["region_b"]])
    assert row["region" if first == F["region_a"] else "region_2"] == "EMEA"
    # built-ins untouched; built-in option fields get readable siblings
    assert (row["status"], row["value"], row["title"]) == ("open", 100.0, "Big deal")
    assert row["label_ids"] == [1, 3] and row["labels"] == ["Hot", "Cold"]
    assert row["visible_to"] == 3 and row["visible_to_label"] == "Entire company"
    assert "custom_fields" not in row
    assert not [k for k in row if HEX40.search(k)]


def test_v1_root_level_values_resolve_to_the_same_columns(resolver: Resolver) -> None:
    v2 = resolver.resolve(deal_v2())
    v1 = resolver.resolve(deal_v1())
    assert not [k for k in v1 if HEX40.search(k)]
    for col in EXPECTED:
        assert v1[col] == v2[col], col
    assert v1["interests"] == ["Bronze", "Gold"]  # "11,13" -> labels, like [11, 13]
    assert v1["labels"] == ["Hot", "Cold"]  # v1 `label: "1,3"`


def test_option_labels_objects_and_keep_ids() -> None:
    r = Resolver("deals", DEAL_FIELDS, builtin_columns=DEAL_BUILTIN_KEYS, keep_option_ids=True)
    row = r.resolve(
        deal_v2(
            custom_fields={F["enum"]: {"id": 13, "label": "Gold"}, F["set"]: [{"id": 12, "label": "Silver"}]}
        )
    )
    assert (row["deal_tier"], row["deal_tier_id"]) == ("Gold", 13)
    assert (row["interests"], row["interests_ids"]) == (["Silver"], [12])
    v1 = r.resolve({"id": 2, F["enum"]: "11", F["set"]: "12,13"})
    assert (v1["deal_tier"], v1["deal_tier_id"], v1["interests_ids"]) == ("Bronze", 11, [12, 13])


def test_nulls_and_unknown_option_ids(resolver: Resolver) -> None:
    row = resolver.resolve(
        deal_v2(
            custom_fields={
                F["enum"]: 999,
                F["set"]: None,
                F["monetary"]: None,
                F["date"]: None,
                F["address"]: None,
            }
        )
    )
    assert row["deal_tier"] == "999"  # an id no definition lists is kept, as its text
    assert "interests" not in row  # no child rows (and no untyped all-null column for dlt)
    assert row["budget"] is None and row["signed_on"] is None
    assert row["billing_address"] is None


def test_a_builtin_option_added_while_the_run_reads_gets_its_label() -> None:
    """A deal label created after the definitions were read: the definitions read again name it (a
    built-in option field is looked up as a custom one is), one read for the run."""
    added = [*LABELS, (4, "Frozen")]
    fresh = [
        v2_field("label_ids", "Label", "set", added, custom=False) if f["field_code"] == "label_ids" else f
        for f in DEAL_FIELDS
    ]
    reads: list[int] = []
    resolver = Resolver(
        "deals", DEAL_FIELDS, builtin_columns=DEAL_BUILTIN_KEYS, refresh=lambda: reads.append(1) or fresh
    )
    rows = resolver.resolve_page([deal_v2(label_ids=[4, 1]), deal_v2(label_ids=[5], visible_to=7)])
    assert [r["labels"] for r in rows] == [["Frozen", "Hot"], ["5"]]
    assert rows[1]["visible_to_label"] == "7"
    assert len(reads) == 1


def test_definitions_refused_when_read_again_leave_the_ones_read_in_place(clean_emulator, caplog) -> None:
    """Read again for an unknown option, the definitions refused (403: a permission taken away while the
    run reads) ended the entity's read there, skipped as a refused table after some of its pages had
    loaded; a failure of that read kept the definitions read and the id's text, as a refusal now does."""
    client = PipedriveClient(clean_emulator.base_url, ApiTokenAuth(clean_emulator.api_token))
    clean_emulator.control.settings(forbidden="/api/v2/dealFields")
    try:
        resolver = Resolver(
            "deals",
            DEAL_FIELDS,
            builtin_columns=DEAL_BUILTIN_KEYS,
            refresh=lambda: client.get("/api/v2/dealFields", cost=20, label="dealFields")["data"],
        )
        with caplog.at_level(logging.WARNING, logger="pipedrive_source"):
            rows = resolver.resolve_page([deal_v2(label_ids=[5, 1])])
    finally:
        clean_emulator.control.settings(forbidden="")
    assert rows[0]["labels"] == ["5", "Hot"]
    assert "could not read the field definitions again" in caplog.text and "HTTP 403" in caplog.text


def test_unparseable_values_are_kept_not_dropped(resolver: Resolver) -> None:
    row = resolver.resolve(deal_v2(custom_fields={F["date"]: "someday", F["int"]: "many"}))
    assert (row["signed_on"], row["seats"]) == ("someday", "many")


def test_unknown_type_is_kept_as_json_text_with_one_warning(caplog: pytest.LogCaptureFixture) -> None:
    fields = [*DEAL_FIELDS, v2_field(F["picture"], "Photo", "hologram")]
    with caplog.at_level(logging.WARNING):
        r = Resolver("deals", fields, builtin_columns=DEAL_BUILTIN_KEYS)
        for _ in range(3):
            row = r.resolve(deal_v2(custom_fields={F["picture"]: {"url": "x", "w": 3}}))
    assert json.loads(row["photo"]) == {"url": "x", "w": 3}
    assert r.resolve({"id": 2, F["picture"]: "v1 scalar"})["photo"] == "v1 scalar"
    assert r.resolve({"id": 3, F["picture"]: 7})["photo"] == "7"
    assert r.columns["photo"]["data_type"] == "text"
    assert len([m for m in caplog.messages if "hologram" in m]) == 1


def test_unlisted_hash_never_becomes_a_column(resolver: Resolver, caplog: pytest.LogCaptureFixture) -> None:
    ghost = h("ghost")
    with caplog.at_level(logging.WARNING):
        v2 = resolver.resolve(deal_v2(custom_fields={ghost: 5}))
        v1 = resolver.resolve({"id": 3, ghost: "x", ghost + "_until": "y"})
    assert v2[f"cf_{ghost[:8]}"] == "5"  # kept as text: JSON unless a string
    assert json.loads(v1[f"cf_{ghost[:8]}"]) == {"value": "x", "until": "y"}
    assert not [k for k in (*v1, *v2) if HEX40.search(k)]
    assert len([m for m in caplog.messages if ghost[:8] in m]) == 1
    # bound like a field (kept in the state, never reused) and described in `custom_fields`
    assert resolver.bindings[ghost] == f"cf_{ghost[:8]}"
    row = next(r for r in resolver.field_rows() if r["field_code"] == ghost)
    assert (row["column_name"], row["field_name"], row["still_exists"]) == (f"cf_{ghost[:8]}", None, False)


def test_an_unlisted_field_listed_later_moves_to_the_column_its_name_and_type_give() -> None:
    """A field bound while unlisted (`cf_<8 chars>`, text) kept that column once listed, whatever its name
    and type. Listed, it moves (`moved` tells the engine to read the entity again), unless its name gives
    that very column and its values are text anyway; once moved, it stays."""
    score, rank, count = h("score"), h("rank"), h("count")
    first = Resolver("deals", DEAL_FIELDS, builtin_columns=DEAL_BUILTIN_KEYS)
    first.resolve(deal_v2(custom_fields={score: 5, rank: "A", count: 3}))
    assert first.last_seen[score] == [None, None]  # never listed: what the next run goes by
    listed = [
        *DEAL_FIELDS,
        v2_field(score, "Win score", "double"),
        v2_field(rank, "顧客ランク", "varchar"),
        v2_field(count, "件数", "int"),
    ]

    def later(before: Resolver) -> Resolver:
        return Resolver(
            "deals",
            listed,
            bindings=before.bindings,
            last_seen=before.last_seen,
            builtin_columns=DEAL_BUILTIN_KEYS,
        )

    second = later(first)
    assert second.moved == {score: f"cf_{score[:8]}", count: f"cf_{count[:8]}"}
    assert second.bindings == {
        **first.bindings,
        score: "win_score",
        count: f"cf_{count[:8]}_2",  # its name gives the text column it had: the next one, typed
    }
    row = second.resolve(deal_v2(custom_fields={score: "2.5", count: "7"}))
    assert (row["win_score"], row[f"cf_{count[:8]}_2"]) == (2.5, 7)
    assert later(second).moved == {}


def test_builtin_key_seen_only_in_data_is_not_overwritten(caplog: pytest.LogCaptureFixture) -> None:
    """No builtin_columns given: the record itself reveals `region`; the custom Region moves away."""
    fields = [v2_field(F["region_a"], "Region", "varchar")]
    r = Resolver("deals", fields)
    assert r.bindings[F["region_a"]] == "region"
    with caplog.at_level(logging.WARNING):
        row = r.resolve({"id": 1, "region": "builtin", "custom_fields": {F["region_a"]: "custom"}})
    assert row["region"] == "builtin" and row["region_cf"] == "custom"
    assert r.bindings[F["region_a"]] == "region_cf"


def test_leads_labels_from_lead_labels_and_v1_note_fields() -> None:
    hot, cold = "8f4b27b0-ea52-11ec-8d17-1d9b9ac8b7f4", "9d2c1f10-ea52-11ec-8d17-1d9b9ac8b7f4"
    r = Resolver("leads", DEAL_FIELDS, extra_options={"label_ids": {hot: "Hot", cold: "Cold"}})
    row = r.resolve({"id": "a1", "title": "Lead", "label_ids": [cold, hot], **v1_values()})
    assert row["labels"] == ["Cold", "Hot"]
    assert row["interests"] == ["Bronze", "Gold"]
    notes = Resolver(
        "notes",
        [  # the v1 noteFields example from the v1 spec
            {
                "id": 1,
                "key": "content",
                "name": "Content",
                "field_type": "text",
                "active_flag": True,
                "edit_flag": False,
                "bulk_edit_allowed": True,
                "mandatory_flag": True,
            },
            {
                "id": 2,
                "key": "pinned_to_deal_flag",
                "name": "Note is pinned to deal",
                "field_type": "enum",
                "active_flag": True,
                "edit_flag": True,
                "bulk_edit_allowed": True,
                "options": [{"id": 1, "label": "Yes"}, {"id": 0, "label": "No"}],
                "mandatory_flag": True,
            },
        ],
    )
    note = notes.resolve({"id": 1, "content": "hi", "pinned_to_deal_flag": True})
    assert note["pinned_to_deal_flag_label"] == "Yes" and notes.bindings == {}


def test_v1_field_definitions_parse() -> None:
    code = h("v1 field")
    fd = parse_field(
        {
            "id": 9,
            "key": code,
            "name": "Tier",
            "field_type": "set",
            "options": [{"id": 1, "label": "A"}],
            "options_deleted": [{"id": 2, "label": "Old"}],
        }
    )
    assert (fd.code, fd.name, fd.type, fd.is_custom) == (code, "Tier", "set", True)
    r = Resolver("persons", [fd])
    assert r.resolve({"id": 1, code: "1,2"})["tier"] == ["A", "Old"]
    assert {(o["option_id"], o["is_deleted"]) for o in r.option_rows()} == {(1, False), (2, True)}


def test_spec_example_custom_code_is_resolved_by_is_custom_field() -> None:
    """The seed spec's example uses a non-hex placeholder code; v2 tells custom fields by the flag."""
    fd = v2_field(
        "40characterhashforcustomfieldidentifier",
        "Priority",
        "enum",
        [(1, "Low"), (2, "Medium"), (3, "High")],
    )
    r = Resolver("deals", [fd])
    row = r.resolve({"id": 1, "custom_fields": {"40characterhashforcustomfieldidentifier": 3}})
    assert row == {"id": 1, "priority": "High"}


# --- tables about the fields ----------------------------------------------------------------------


def test_field_and_option_rows(resolver: Resolver) -> None:
    fields = {r["field_code"]: r for r in resolver.field_rows()}
    assert fields[F["monetary"]] == {
        "entity": "deals",
        "field_code": F["monetary"],
        "field_name": "Budget",
        "column_name": "budget",
        "field_type": "monetary",
        "columns": "budget, budget_currency",
        "still_exists": True,
    }
    options = {(o["field_code"], o["option_id"]): o for o in resolver.option_rows()}
    assert options[(F["enum"], 12)]["label"] == "Silver"
    assert options[(F["enum"], 12)]["column_name"] == "deal_tier"
    assert options[("label_ids", 1)] | {} == {
        "entity": "deals",
        "field_code": "label_ids",
        "column_name": "labels",
        "option_id": 1,
        "label": "Hot",
        "is_custom": False,
        "is_deleted": False,
    }


def test_column_hints_type_every_declared_column(resolver: Resolver) -> None:
    cols = resolver.columns
    assert cols["budget"]["data_type"] == "double" and cols["budget_currency"]["data_type"] == "text"
    assert cols["signed_on"]["data_type"] == "date" and cols["call_time"]["data_type"] == "time"
    assert cols["seats"]["data_type"] == "bigint" and cols["is_partner"]["data_type"] == "bool"
    assert "interests" not in cols  # a list: dlt makes it a child table
    assert not [c for c in cols if HEX40.search(c)]


# --- speed ----------------------------------------------------------------------------------------


def test_an_address_part_never_overwrites_a_builtin_column(caplog: pytest.LogCaptureFixture) -> None:
    """A part Pipedrive adds to address values (`id` here) went to `<base>_<part>` even where that is a
    built-in column the record fills (`site_id` below); the part gets a column of its own."""
    fields = [v2_field(F["address"], "Site", "address", subfields=ADDRESS_SUBFIELDS)]
    r = Resolver("deals", fields, builtin_columns=[*DEAL_BUILTIN_KEYS, "site_id"])
    with caplog.at_level(logging.WARNING):
        rows = r.resolve_page(
            [
                {"id": 1, "custom_fields": {F["address"]: {"value": "Main st 1", "id": 7}}},
                {"id": 2, "site_id": 42, "custom_fields": {F["address"]: {"value": "Main st 2", "id": 8}}},
            ]
        )
    assert [(row.get("site_id"), row["site_id_2"]) for row in rows] == [(None, 7), (42, 8)]
    assert len([m for m in caplog.messages if "site_id_2" in m]) == 1


def test_an_empty_option_value_is_no_option_and_reads_nothing_again() -> None:
    """v1 may send "" for an enum field without a value: no option id, so neither a re-read of the
    definitions nor a warning, and no label."""
    reads: list[int] = []
    resolver = Resolver(
        "deals", DEAL_FIELDS, builtin_columns=DEAL_BUILTIN_KEYS, refresh=lambda: reads.append(1)
    )
    row = resolver.resolve_page([deal_v2(visible_to="", custom_fields={F["enum"]: ""})])[0]
    assert (row["visible_to_label"], row["deal_tier"]) == (None, None)
    assert reads == []
