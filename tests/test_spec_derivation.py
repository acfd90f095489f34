"""The committed spec facts: reproducible from the spec files, and saying what the spec says.

`tools/derive_spec.py` rebuilds the v2 seed spec (YAML whose indentation was lost) and writes
`pipedrive_source/emulator/spec_v2.json` / `spec_v1.json`; `spec.py` serves them to the emulator.
"""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import pytest

from pipedrive_source.emulator import spec
from pipedrive_source.entities import ENTITIES

REPO = Path(__file__).resolve().parent.parent
SHARED = REPO.parent / "shared"
PACKAGE = REPO / "pipedrive_source" / "emulator"
needs_shared = pytest.mark.skipif(
    not (SHARED / "seeds").is_dir() or not (SHARED / "reference").is_dir(),
    reason=f"spec sources not present at {SHARED} (../shared next to the repo): cannot re-derive",
)


@pytest.fixture(scope="module")
def derive_spec() -> ModuleType:
    loaded = importlib.util.spec_from_file_location("derive_spec", REPO / "tools" / "derive_spec.py")
    assert loaded is not None and loaded.loader is not None
    module = importlib.util.module_from_spec(loaded)
    sys.modules["derive_spec"] = module  # dataclasses resolve annotations through sys.modules
    loaded.loader.exec_module(module)
    return module


# --- reproducibility -----------------------------------------------------------------------------------


@needs_shared
def test_rederiving_reproduces_the_committed_json_byte_for_byte(tmp_path: Path) -> None:
    subprocess.run(
        [sys.executable, str(REPO / "tools" / "derive_spec.py"), "--out", str(tmp_path)],
        check=True,
        cwd=REPO,
        capture_output=True,
        timeout=300,
    )
    for name in ("spec_v2.json", "spec_v1.json"):
        fresh, committed = (tmp_path / name).read_bytes(), (PACKAGE / name).read_bytes()
        assert fresh == committed, f"{name} is stale: rerun tools/derive_spec.py"


# --- facts the spec states ------------------------------------------------------------------------------


def op(path: str, method: str = "GET") -> spec.Operation:
    api = "v2" if path.startswith("/api/v2") else "v1"
    found = spec.operation(api, method, path)
    assert found is not None, f"{method} {path} missing from the spec facts"
    return found


def test_deals_list_cost_and_incremental_params() -> None:
    deals = op("/api/v2/deals")
    assert deals.token_cost == 10
    wanted = {"updated_since", "updated_until", "sort_by", "sort_direction", "status", "cursor", "limit"}
    assert wanted <= set(deals.params)
    assert set(deals.params["status"].enum or ()) == {"open", "won", "lost", "deleted"}
    assert deals.params["sort_by"].default == "id"
    assert "update_time" in (deals.params["sort_by"].enum or ())


def test_operations_the_spec_keeps_to_higher_plans_name_that_plan() -> None:
    """The seed's "Only available in Growth and above plans" (installments): the emulator's 402 below it."""
    assert op("/api/v2/deals/installments").plan == "growth"
    assert op("/api/v2/deals").plan is None


def test_pipelines_and_stages_cost_5_and_have_no_updated_since() -> None:
    for path in ("/api/v2/pipelines", "/api/v2/stages"):
        o = op(path)
        assert o.token_cost == 5, path
        assert "updated_since" not in o.params, path
        assert "cursor" in o.params, path


def test_deal_items_have_custom_fields_labels_and_deleted_flag() -> None:
    props = op("/api/v2/deals").item_properties
    assert props is not None
    assert props["custom_fields"]["type"] == "object" and props["custom_fields"]["additional_properties"]
    integer = {"type": "integer", "nullable": False}
    assert props["label_ids"] == {"type": "array", "nullable": False, "items": integer}
    assert props["is_deleted"]["type"] == "boolean"
    assert props["value"]["type"] == "number"
    # lists' envelopes carry the cursor
    assert op("/api/v2/deals").envelope["additional_data"]["properties"]["next_cursor"]["type"] == "string"


def test_person_items_have_emails_and_phones_arrays_of_objects() -> None:
    props = op("/api/v2/persons").item_properties
    assert props is not None
    for name in ("emails", "phones"):
        assert props[name]["type"] == "array"
        assert set(props[name]["items"]["properties"]) == {"value", "primary", "label"}
    # the address object ends where the grammar cannot see it: its siblings must stay at item level
    assert {"postal_address", "notes", "im", "birthday", "job_title", "custom_fields"} <= set(props)
    assert "custom_fields" not in props["postal_address"]["properties"]


def test_activity_nested_objects_close_at_the_right_property() -> None:
    props = op("/api/v2/activities").item_properties
    assert props is not None
    assert "participants" not in props["location"]["properties"]
    assert {"participants", "attendees", "priority", "note"} <= set(props)
    assert set(props["participants"]["items"]["properties"]) == {"person_id", "primary"}


def test_field_endpoints_shapes() -> None:
    props = op("/api/v2/dealFields").item_properties
    assert props is not None
    assert {
        "field_code",
        "field_name",
        "field_type",
        "options",
        "subfields",
        "is_custom_field",
        "ui_visibility",
        "important_fields",
        "required_fields",
    } <= set(props)
    assert props["options"]["nullable"] and set(props["options"]["items"]["properties"]) == {
        "id",
        "label",
        "color",
        "update_time",
        "add_time",
    }
    assert set(props["subfields"]["items"]["properties"]) == {"field_code", "field_name", "field_type"}
    assert "monetary" in props["field_type"]["enum"]
    assert "show_in_pipelines" in props["ui_visibility"]["properties"]
    assert "statuses" in props["required_fields"]["properties"]


def test_seed_only_endpoints_are_present() -> None:
    for path in (
        "/api/v2/projects",
        "/api/v2/projects/archived",
        "/api/v2/tasks",
        "/api/v2/boards",
        "/api/v2/phases",
        "/api/v2/projectFields",
        "/api/v2/activityFields",
        "/api/v2/deals/archived",
        "/api/v2/deals/products",
        "/api/v2/deals/installments",
    ):
        o = op(path)
        assert o.data == "array" and o.item_properties, path


def test_v1_served_operations() -> None:
    assert op("/v1/leads").token_cost == 20
    assert op("/v1/leads/archived").token_cost == 40
    assert {"start", "limit"} <= set(op("/v1/leads").params)
    assert op("/v1/deals/{id}/flow").path_params["id"].required
    assert op("/v1/goals/find").data == "object"
    assert not op("/v1/leadFields").documented  # served though the v1 reference lacks it


def test_match_prefers_static_paths_and_extracts_params() -> None:
    archived = spec.match("GET", "/api/v2/deals/archived")
    assert archived is not None and archived[0].path == "/api/v2/deals/archived" and archived[1] == {}
    one = spec.match("get", "/api/v2/deals/42")
    assert one is not None and one[0].path == "/api/v2/deals/{id}" and one[1] == {"id": "42"}
    changelog = spec.match("GET", "/api/v2/deals/7/followers/changelog")
    assert changelog is not None and changelog[0].path == "/api/v2/deals/{id}/followers/changelog"
    flow = spec.match("GET", "/v1/deals/7/flow")
    assert flow is not None and flow[0].token_cost == 40 and flow[1] == {"id": "7"}
    assert spec.match("GET", "/api/v2/nothing") is None
    assert spec.match("GET", "/api/v2/deals/1/2/3/4") is None


# --- the flat-YAML parser on small inputs ---------------------------------------------------------------

FLAT = """openapi: 3.0.1
paths:
/things:
get:
summary: Things
description: |
Lists things.
Second line of the block, with a: colon
x-token-cost: 7
operationId: getThings
parameters:
- in: query
name: kind
description: 'A quoted description
over two lines'
schema:
type: string
default: a
enum:
- a
- b
responses:
'200':
description: OK
content:
application/json:
schema:
type: object
properties:
success:
type: boolean
data:
type: array
items:
type: object
properties:
type:
type: string
description: A property called type
description:
type: string
nullable: true
description: A property called description
box:
type: object
properties:
items:
type: integer
description: A property of box called items
size:
type: integer
description: Size of the box
labels:
type: array
description: Labels of the thing
items:
type: string
additional_data:
type: object
properties:
next_cursor:
type: string
example:
success: true
data:
- type: t
description: d
box:
items: 1
labels:
- x
extra: shown only by the example
additional_data:
next_cursor: null
"""


def test_flat_parser_tells_keywords_from_property_names(derive_spec: ModuleType) -> None:
    doc = derive_spec.parse_flat(FLAT, derive_spec.NestingOracle({}, {}))
    rec = derive_spec.v2_operations(doc)["GET /api/v2/things"]
    assert rec["token_cost"] == 7 and rec["operation_id"] == "getThings"
    assert rec["params"]["kind"] == {"type": "string", "enum": ["a", "b"], "default": "a", "required": False}
    props = rec["item_properties"]
    assert set(props) == {"type", "description", "box", "labels", "extra"}
    assert props["description"] == {"type": "string", "nullable": True}
    assert set(props["box"]["properties"]) == {"items", "size"}
    assert props["labels"]["items"]["type"] == "string"
    assert props["extra"]["from_example"] and props["extra"]["type"] == "string"
    assert set(rec["envelope"]) == {"success", "additional_data"}
    description = doc["paths"]["/things"]["get"]["description"]
    assert "Second line of the block, with a: colon" in description


def test_flat_parser_rejects_what_it_cannot_place(derive_spec: ModuleType) -> None:
    with pytest.raises(ValueError, match="line"):
        derive_spec.parse_flat(FLAT + "stray text that is no YAML key\n", derive_spec.NestingOracle({}, {}))


def test_list_limits_carry_the_maximum_and_default_the_spec_states() -> None:
    """The ceilings the emulator enforces (`paging.page_limit`) come from here: the schema's `maximum`
    (v1 files), else the description's "a maximum value of N is allowed" (v2) or "The upper limit is N"
    (v1 call logs); the default from "If not provided, N items will be returned"."""
    limits = {path: op(path).params["limit"] for path in ("/api/v2/deals", "/v1/files", "/v1/callLogs")}
    assert [(p.maximum, p.default) for p in limits.values()] == [(500, 100), (100, None), (50, None)]
    assert op("/v1/leads").params["limit"].default == 100
    assert op("/v1/notes").params["limit"].maximum is None  # the v1 reference states none
    v2_lists = [o for o in spec.operations() if o.api == "v2" and o.method == "GET" and "limit" in o.params]
    assert {o.params["limit"].maximum for o in v2_lists if o.path != "/api/v2/itemSearch"} == {500}


def test_the_connectors_page_sizes_and_costs_agree_with_each_lists_spec() -> None:
    """Above a stated maximum the emulator (as Pipedrive's validation) answers 400, so a page size the
    connector asks for must fit every listing it reads with it (files 100, call logs 50); and the cost it
    budgets per request is the operation's x-token-cost."""
    wrong = []
    for entity in ENTITIES:
        for listing in entity.listings:
            found = spec.match("GET", listing.path.replace("{id}", "1"))
            assert found is not None, listing.path
            limit = found[0].params.get("limit")
            maximum = limit.maximum if limit is not None else None
            if entity.page_size and maximum is not None and entity.page_size > maximum:
                wrong.append(f"{entity.name} {listing.path}: page_size {entity.page_size} > {maximum}")
            if (listing.cost or entity.cost) != found[0].token_cost:
                cost = listing.cost or entity.cost
                wrong.append(f"{entity.name} {listing.path}: cost {cost}, x-token-cost {found[0].token_cost}")
    assert not wrong, wrong
