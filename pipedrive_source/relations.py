"""Which columns of a table hold ids of another table: the table reference, the Dagster asset graph and a
reconcile's search for records a merge moved (`relinks.py`) use it.

Pipedrive names its links by convention (`owner_id` is a user, `org_id` an organization, ...). `FOREIGN_KEYS`
lists, per table, the columns that are links; `COLUMN_TABLE` says where each kind of column points. A test
checks both against the schema of a real sync, so a link that disappears or a new `*_id` column is noticed.
"""

from __future__ import annotations

from .entities import BY_NAME

COLUMN_TABLE: dict[str, str] = {
    "activity_id": "activities",
    "board_id": "boards",
    "calculated_related_org_id": "organizations",  # the other organization of a relationship
    "created_by_user_id": "users",
    "creator_id": "users",
    "creator_user_id": "users",
    "deal_id": "deals",
    "last_update_user_id": "users",
    "last_activity_id": "activities",
    "lead_id": "leads",
    "manager_id": "users",
    "next_activity_id": "activities",
    "org_id": "organizations",
    "organization_id": "organizations",
    "owner_id": "users",
    "parent_role_id": "roles",
    "parent_task_id": "tasks",
    "person_id": "persons",
    "phase_id": "phases",
    "pipeline_id": "pipelines",
    "product_id": "products",
    "product_variation_id": "product_variations",
    "project_id": "projects",
    "projects_board_id": "boards",
    "role_id": "roles",
    "source_lead_id": "leads",
    "stage_id": "stages",
    "user_id": "users",
}

# `*_id` columns that are not links to a synced table: ids of things the connector does not load
NOT_LINKS = frozenset(
    {
        "channel_id",
        "company_id",
        "conference_meeting_id",
        "custom_view_id",
        "flow_id",
        "log_id",
        "mail_message_id",
        "mail_template_id",
        "origin_id",
        "participant_id",
        "picture_id",
        "related_item_id",
        "remote_id",
    }
)

# links Pipedrive keeps as a summary of other records (a lead's next activity): real links, but no order of
# loading follows from them, and as upstream edges they would close cycles (activities -> deals -> leads)
SUMMARY_LINKS = frozenset({"last_activity_id", "next_activity_id"})

FOREIGN_KEYS: dict[str, tuple[str, ...]] = {
    "activities": ("owner_id", "creator_user_id", "deal_id", "person_id", "org_id", "lead_id", "project_id"),
    "deals": (
        "creator_user_id",
        "owner_id",
        "pipeline_id",
        "stage_id",
        "person_id",
        "org_id",
        "source_lead_id",
    ),  # fmt: skip
    "persons": ("owner_id", "org_id"),
    "organizations": ("owner_id", "org_id"),  # org_id: the spec's example has it (the record's own id)
    "deal_products": ("deal_id", "product_id", "product_variation_id"),
    "deal_installments": ("deal_id",),
    "products": ("owner_id",),
    "product_variations": ("product_id",),
    "stages": ("pipeline_id",),
    "projects": ("board_id", "phase_id", "owner_id"),
    "tasks": ("creator_id", "project_id", "parent_task_id"),
    "phases": ("board_id",),
    "project_templates": ("projects_board_id", "owner_id"),
    "leads": ("owner_id", "creator_id", "person_id", "organization_id", "next_activity_id"),
    "notes": ("user_id", "last_update_user_id", "deal_id", "person_id", "org_id", "lead_id", "project_id"),
    "files": ("user_id", "deal_id", "person_id", "org_id", "activity_id", "lead_id", "product_id"),
    "users": ("role_id",),
    "call_logs": ("user_id", "activity_id", "person_id", "org_id", "deal_id", "lead_id"),
    "filters": ("user_id",),
    "roles": ("parent_role_id",),
    "goals": ("owner_id",),
    "teams": ("manager_id", "created_by_user_id"),
    "deal_flow": ("deal_id",),
    "deal_participants": ("deal_id", "last_activity_id", "next_activity_id"),
    "deal_discounts": ("deal_id",),
    "deal_followers": ("deal_id", "user_id"),
    "person_followers": ("person_id", "user_id"),
    "organization_followers": ("org_id", "user_id"),
    "product_followers": ("product_id", "user_id"),
    "organization_relationships": ("org_id", "calculated_related_org_id"),
}


def references(table: str) -> list[tuple[str, str]]:
    """(column, referenced table) for every link column of `table`."""
    return [(column, COLUMN_TABLE[column]) for column in FOREIGN_KEYS.get(table, ())]


def upstream(table: str) -> list[str]:
    """Tables `table` refers to (links, its custom-field definitions, its parent), without itself, sorted."""
    entity = BY_NAME.get(table)
    tables = {target for column, target in references(table) if column not in SUMMARY_LINKS}
    if entity is not None:
        tables |= {name for name in (entity.fields_entity, entity.parent) if name}
        tables |= {target for _, target in entity.references}
    tables.discard(table)
    return sorted(tables)
