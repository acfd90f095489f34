"""The company's field catalog: built-in fields per entity and the custom-field zoo.

The zoo gives deals, persons, organizations, products and projects one custom field of every type in
`fields.CUSTOM_TYPES`, plus the nasty cases a connector must survive:
- deals: custom fields named like built-ins ("Status", "Value"), two custom fields with the same name
  ("Region"), a non-ASCII name ("Região de venda"), an enum whose options get relabelled by mutations,
  and a deleted field ("Legacy score") whose values linger in storage but are never rendered;
- activities: custom definitions exist in activityFields (as in the spec example) although the v2
  activity item schema has no `custom_fields`, so activity records carry none.
Leads have no catalog of their own (they inherit deal fields).
"""

from __future__ import annotations

from .fields import CUSTOM_TYPES, FieldDef, FieldRegistry, field_hash

VISIBLE_TO = [
    (1, "Owner & followers"),
    (3, "Entire company"),
    (5, "Owner's visibility group"),
    (7, "Owner's visibility group and sub-groups"),
]
LABELS = {
    "deal": [(1, "Hot"), (2, "Warm"), (3, "Cold"), (4, "VIP")],
    "person": [(5, "Customer"), (6, "Prospect"), (7, "Partner")],
    "organization": [(8, "Enterprise"), (9, "SMB"), (10, "Churned")],
    "project": [(11, "Internal"), (12, "Billable")],
}
ACTIVITY_PRIORITY = [(263, "High"), (264, "Medium"), (265, "Low")]

# (field_code, field_name, field_type, built-in options or None)
BUILTINS: dict[str, list[tuple[str, str, str, list | None]]] = {
    "deal": [
        ("title", "Title", "varchar", None),
        ("value", "Value", "monetary", None),
        ("owner_id", "Owner", "user", None),
        ("person_id", "Contact person", "people", None),
        ("org_id", "Organization", "org", None),
        ("pipeline_id", "Pipeline", "double", None),
        ("stage_id", "Stage", "stage", None),
        ("status", "Status", "status", None),
        ("probability", "Probability", "double", None),
        ("lost_reason", "Lost reason", "varchar_options", None),
        ("visible_to", "Visible to", "visible_to", VISIBLE_TO),
        ("label_ids", "Label", "set", LABELS["deal"]),
        ("expected_close_date", "Expected close date", "date", None),
        ("add_time", "Deal created", "date", None),
        ("update_time", "Update time", "date", None),
        ("won_time", "Won time", "date", None),
        ("lost_time", "Lost time", "date", None),
        ("close_time", "Deal closed on", "date", None),
    ],
    "person": [
        ("name", "Name", "varchar", None),
        ("first_name", "First name", "varchar", None),
        ("last_name", "Last name", "varchar", None),
        ("owner_id", "Owner", "user", None),
        ("org_id", "Organization", "org", None),
        ("emails", "Email", "varchar", None),
        ("phones", "Phone", "phone", None),
        ("label_ids", "Label", "set", LABELS["person"]),
        ("visible_to", "Visible to", "visible_to", VISIBLE_TO),
        ("postal_address", "Postal address", "address", None),
        ("job_title", "Job title", "varchar", None),
        ("birthday", "Birthday", "date", None),
        ("add_time", "Person created", "date", None),
        ("update_time", "Update time", "date", None),
    ],
    "organization": [
        ("name", "Name", "varchar", None),
        ("owner_id", "Owner", "user", None),
        ("address", "Address", "address", None),
        ("label_ids", "Label", "set", LABELS["organization"]),
        ("visible_to", "Visible to", "visible_to", VISIBLE_TO),
        ("add_time", "Organization created", "date", None),
        ("update_time", "Update time", "date", None),
    ],
    "product": [
        ("name", "Name", "varchar", None),
        ("code", "Product code", "varchar", None),
        ("unit", "Unit", "varchar", None),
        ("tax", "Tax", "double", None),
        ("is_linkable", "Linkable", "boolean", None),
        ("owner_id", "Owner", "user", None),
        ("visible_to", "Visible to", "visible_to", VISIBLE_TO),
        ("prices", "Price", "price_list", None),
        ("billing_frequency", "Billing frequency", "billing_frequency", None),
    ],
    "activity": [
        ("subject", "Subject", "varchar", None),
        ("type", "Type", "varchar", None),
        ("owner_id", "Assigned to user", "user", None),
        ("deal_id", "Deal", "deal", None),
        ("person_id", "Contact person", "people", None),
        ("org_id", "Organization", "org", None),
        ("due_date", "Due date", "date", None),
        ("due_time", "Due time", "time", None),
        ("duration", "Duration", "time", None),
        ("busy", "Free/busy", "boolean", None),
        ("done", "Done", "boolean", None),
        ("location", "Location", "address", None),
        ("priority", "Priority", "enum", ACTIVITY_PRIORITY),
        ("note", "Note", "text", None),
    ],
    "project": [
        ("title", "Title", "varchar", None),
        ("description", "Description", "text", None),
        ("status", "Status", "status", None),
        ("board_id", "Board", "projects_board", None),
        ("phase_id", "Phase", "projects_phase", None),
        ("owner_id", "Owner", "user", None),
        ("start_date", "Start date", "date", None),
        ("end_date", "End date", "date", None),
        ("deal_ids", "Deals", "deals", None),
        ("label_ids", "Labels", "set", LABELS["project"]),
    ],
    # v1 noteFields: only types its response schema allows (the allOf of two enums).
    "note": [
        ("content", "Content", "text", None),
        ("person_id", "Person", "people", None),
        ("org_id", "Organization", "org", None),
        ("user_id", "User", "user", None),
        ("add_time", "Created", "date", None),
        ("update_time", "Update time", "date", None),
    ],
    # /v1/leadFields (served although undocumented): lead built-ins; the custom ones are the deal fields.
    "lead": [
        ("title", "Title", "varchar", None),
        ("owner_id", "Owner", "user", None),
        ("person_id", "Contact person", "people", None),
        ("organization_id", "Organization", "org", None),
        ("value", "Value", "monetary", None),
        ("expected_close_date", "Expected close date", "date", None),
        ("label_ids", "Labels", "set", None),
        ("source_name", "Source", "varchar", None),
        ("visible_to", "Visible to", "visible_to", VISIBLE_TO),
    ],
}

_OPTION_LABELS = ["Bronze", "Silver", "Gold", "Platinum", "Diamond", "Other"]
CUSTOM_ENTITIES = ("deal", "person", "organization", "product", "project")

# Extra deal fields beyond one-per-type: the collisions and edge cases the connector must resolve.
DEAL_NASTIES = [
    ("Status", "enum"),
    ("Value", "double"),
    ("Region", "varchar"),
    ("Region", "enum"),
    ("Região de venda", "enum"),
    ("Deal Tier", "enum"),
    ("Legacy score", "int"),
]
DELETED_NAMES = {("deal", "Legacy score")}


def _type_label(field_type: str) -> str:
    return f"{field_type.replace('_', ' ').capitalize()} field"


def build_registry(seed: int, origin: int) -> FieldRegistry:
    """All field definitions of a company, deterministic from `seed` (ids, hashes, option ids)."""
    reg = FieldRegistry()
    option_id = iter(range(1000, 1_000_000))
    for entity, builtins in BUILTINS.items():
        for code, name, ftype, opts in builtins:
            options = (
                [
                    {"id": i, "label": lab, "color": None, "add_time": None, "update_time": None}
                    for i, lab in opts
                ]
                if opts
                else None
            )
            reg.add(FieldDef(entity, code, name, ftype, False, reg.next_id(), origin, origin, options))
    for entity in (*CUSTOM_ENTITIES, "activity"):
        specs = [(_type_label(t), t) for t in (CUSTOM_TYPES if entity != "activity" else ("enum", "varchar"))]
        if entity == "deal":
            specs += DEAL_NASTIES
        seen: dict[str, int] = {}
        for name, ftype in specs:
            ordinal = seen.get(name, 0)
            seen[name] = ordinal + 1
            options = None
            if ftype in ("enum", "set"):
                options = [
                    {
                        "id": next(option_id),
                        "label": lab,
                        "color": None,
                        "add_time": origin,
                        "update_time": origin,
                    }
                    for lab in _OPTION_LABELS
                ]
            fd = FieldDef(
                entity,
                field_hash(seed, entity, name, ordinal),
                name,
                ftype,
                True,
                reg.next_id(),
                origin,
                origin,
                options,
            )
            fd.deleted = (entity, name) in DELETED_NAMES
            reg.add(fd)
    return reg
