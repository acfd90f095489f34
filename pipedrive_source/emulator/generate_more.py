"""Generation steps for notes, files, call logs, projects (boards, phases, tasks, project templates), deal
discounts, organization relationships and the small v1 lookup lists (lead sources, activity types, currencies,
filters, roles, permission sets, goals, legacy teams)."""

from __future__ import annotations

from typing import Any

from .clock import DAY, iso_date
from .generate import CITIES, CURRENCIES, WORDS, Generator, det_uuid
from .generate_sales import ACTIVITY_TYPES, DELETED_SHARE


def notes(g: Generator) -> None:
    deals_, persons_, orgs_, users_ = g.out["deals"], g.out["persons"], g.out["organizations"], g.out["users"]
    leads_ = g.out["leads"]

    def make(i: int, add: int, upd: int, rng: Any) -> dict:
        r = rng.random
        x = r()
        deal = deals_[int(r() * len(deals_))] if x < 0.5 else None
        person = persons_[int(r() * len(persons_))] if 0.5 <= x < 0.8 else None
        org = orgs_[int(r() * len(orgs_))] if 0.8 <= x < 0.95 else None
        lead = leads_[int(r() * len(leads_))] if x >= 0.95 else None
        user = users_[int(r() * len(users_))]
        # Related names are frozen at write time (see render.py) so a note's rendering only changes
        # when the note itself does.
        return {
            "id": i,
            "active_flag": r() >= DELETED_SHARE,
            "add_time": add,
            "content": f"<p>Note {i}: call back</p>",
            "deal": {"title": deal["title"]} if deal else None,
            "lead_id": lead["id"] if lead else None,
            "deal_id": deal["id"] if deal else None,
            "last_update_user_id": user["id"],
            "org_id": org["id"] if org else (deal["org_id"] if deal else None),
            "organization": {"name": org["name"]} if org else None,
            "person": {"name": person["name"]} if person else None,
            "person_id": person["id"] if person else (deal["person_id"] if deal else None),
            "project_id": None,
            "project": None,
            "pinned_to_lead_flag": False,
            "pinned_to_deal_flag": bool(deal) and r() < 0.1,
            "pinned_to_organization_flag": False,
            "pinned_to_person_flag": False,
            "pinned_to_project_flag": False,
            "update_time": upd,
            "user": {
                "email": user["email"],
                "icon_url": None,
                "is_you": user["is_you"],
                "name": user["name"],
            },
            "user_id": user["id"],
        }

    g.timed("notes", g.n["notes"], make)


def files(g: Generator) -> None:
    deals_ = g.out["deals"]
    users_n = g.n["users"]

    def make(i: int, add: int, upd: int, rng: Any) -> dict:
        deal = deals_[int(rng.random() * len(deals_))]
        name = f"proposal_{i}.pdf"
        return {
            "id": i,
            "user_id": 1 + int(rng.random() * users_n),
            "deal_id": deal["id"],
            "person_id": deal["person_id"],
            "org_id": deal["org_id"],
            "product_id": None,
            "activity_id": None,
            "lead_id": None,
            "add_time": add,
            "update_time": upd,
            "file_name": name,
            "file_size": 1000 + int(rng.random() * 5_000_000),
            "active_flag": rng.random() >= DELETED_SHARE,
            "inline_flag": False,
            "remote_location": "s3",
            "remote_id": f"r{i}",
            "cid": "",
            "s3_bucket": "",
            "mail_message_id": "",
            "mail_template_id": "",
            "deal_name": deal["title"],
            "person_name": "",
            "org_name": "",
            "product_name": "",
            "lead_name": "",
            "url": f"https://emulator.pipedrive.local/v1/files/{i}/download",
            "name": name,
            "description": f"File {i}",
        }

    g.timed("files", g.n["files"], make)


def call_logs(g: Generator) -> None:
    acts = g.out["activities"]
    outcomes = ["connected", "no_answer", "left_message", "left_voicemail", "wrong_number", "busy"]

    def make(i: int, add: int, upd: int, rng: Any) -> dict:
        act = acts[int(rng.random() * len(acts))]
        dur = int(rng.random() * 900)
        return {
            "user_id": act["owner_id"],
            "activity_id": act["id"],
            "subject": f"Call {i}",
            "duration": str(dur),
            "outcome": outcomes[i % len(outcomes)],
            "from_phone_number": "+3725550000",
            "to_phone_number": f"+3725{i:07d}",
            "start_time": add,
            "end_time": add + dur,
            "person_id": act["person_id"],
            "org_id": act["org_id"],
            "deal_id": act["deal_id"],
            "lead_id": None,
            "note": "",
            "id": f"CA{det_uuid(g.seed, 'call_logs', i).replace('-', '')[:28]}",
            "has_recording": rng.random() < 0.3,
            "company_id": 1,
            "_seq": i,
        }

    g.timed("call_logs", g.n["call_logs"], make)


def boards(g: Generator) -> None:
    def make(i: int, add: int, upd: int, rng: Any) -> dict:
        return {"id": i, "name": f"{WORDS[i % 16]} board", "order_nr": i, "add_time": add, "update_time": upd}

    g.timed("boards", g.n["boards"], make)


def phases(g: Generator) -> None:
    names = ["Planning", "In progress", "Review", "Done"]

    def make(i: int, add: int, upd: int, rng: Any) -> dict:
        return {
            "id": i,
            "name": names[(i - 1) % 4],
            "board_id": 1 + (i - 1) // 4,
            "order_nr": 1 + (i - 1) % 4,
            "add_time": add,
            "update_time": upd,
        }

    g.timed("phases", g.n["boards"] * len(names), make)


def projects(g: Generator) -> None:
    cv = g.custom("project", g.rng("projects.custom"))
    phases_ = g.out["phases"]
    deals_n, persons_n, orgs_n, users_n = g.n["deals"], g.n["persons"], g.n["organizations"], g.n["users"]

    def make(i: int, add: int, upd: int, rng: Any) -> dict:
        r = rng.random
        phase = phases_[int(r() * len(phases_))]
        status = ("open", "completed", "canceled")[0 if r() < 0.7 else 1 if r() < 0.8 else 2]
        archived = r() < 0.15
        deleted = r() < DELETED_SHARE
        return {
            "id": i,
            "title": f"Project {WORDS[i % 16]} {i}",
            "description": f"Delivery project {i}",
            "status": "deleted" if deleted else status,
            "board_id": phase["board_id"],
            "phase_id": phase["id"],
            "owner_id": 1 + int(r() * users_n),
            "start_date": iso_date(add),
            "end_date": iso_date(add + int(r() * 90) * DAY) if r() < 0.7 else None,
            "deal_ids": [1 + int(r() * deals_n)] if r() < 0.6 else [],
            "person_ids": [1 + int(r() * persons_n)] if r() < 0.5 else [],
            "org_ids": [1 + int(r() * orgs_n)] if r() < 0.5 else [],
            "label_ids": [11] if r() < 0.3 else [],
            "health_status": None if r() < 0.5 else ("on_track", "at_risk", "off_track")[i % 3],
            "add_time": add,
            "update_time": upd,
            "status_change_time": add + (upd - add) // 2,
            "archive_time": upd if archived else None,
            "custom_fields": cv.make(),
            "_deleted": deleted,
        }

    g.timed("projects", g.n["projects"], make)


def tasks(g: Generator) -> None:
    projects_ = g.out["projects"]
    users_n = g.n["users"]
    previous: list[dict] = [projects_[0]]
    deleted: set[int] = set()  # deleting a task deletes its subtasks (the spec's deleteTask)

    def make(i: int, add: int, upd: int, rng: Any) -> dict:
        r = rng.random
        # a third of the tasks join the previous task's project, half of those as its sub-task
        same = i > 1 and r() < 0.35
        proj = previous[0] if same else projects_[int(r() * len(projects_))]
        previous[0] = proj
        add, upd = max(add, proj["add_time"]), max(upd, proj["add_time"])
        done = r() < 0.4
        record = {
            "id": i,
            "title": f"Task {i}",
            "creator_id": proj["owner_id"],
            "description": None if r() < 0.5 else f"Do step {i}",
            "project_id": proj["id"],
            "is_done": done,
            "is_milestone": r() < 0.05,
            "due_date": iso_date(add + 14 * DAY) if r() < 0.6 else None,
            "start_date": iso_date(add) if r() < 0.3 else None,
            "parent_task_id": i - 1 if same and r() < 0.5 else None,
            "assignee_ids": [1 + int(r() * users_n)],
            "priority": None if r() < 0.6 else int(r() * 3),
            "add_time": add,
            "update_time": max(upd, add),
            "marked_as_done_time": upd if done else None,
            "_deleted": r() < DELETED_SHARE,
        }
        if record["_deleted"] or record["parent_task_id"] in deleted:
            record["_deleted"] = True
            deleted.add(i)
        return record

    g.timed("tasks", g.n["tasks"], make)


def lookups(g: Generator) -> None:
    """Small v1 lists: lead sources, activity types, currencies, filters, roles, permission sets, goals."""
    origin = g.now - 6 * 365 * DAY
    g.out["lead_sources"] = [
        {"id": i + 1, "name": n}
        for i, n in enumerate(["Manually created", "API", "Web forms", "Prospector", "Import"])
    ]
    g.out["activity_types"] = [
        {
            "id": i + 1,
            "name": t.capitalize(),
            "icon_key": t,
            "color": "FFFFFF",
            "order_nr": i + 1,
            "key_string": t,
            "active_flag": True,
            "is_custom_flag": False,
            "add_time": origin + i * DAY,
            "update_time": origin + i * DAY,
        }
        for i, t in enumerate(ACTIVITY_TYPES)
    ]
    names = {
        "EUR": ("Euro", "€"),
        "USD": ("US Dollar", "$"),
        "GBP": ("Pound", "£"),
        "BRL": ("Real", "R$"),
        "JPY": ("Yen", "¥"),
    }
    g.out["currencies"] = [
        {
            "id": i + 1,
            "code": c,
            "name": names[c][0],
            "decimal_points": 0 if c == "JPY" else 2,
            "symbol": names[c][1],
            "active_flag": True,
            "is_custom_flag": False,
        }
        for i, c in enumerate(CURRENCIES)
    ]
    ftypes = ["deals", "leads", "org", "people", "products", "activity", "projects"]
    g.out["filters"] = [
        {
            "id": i + 1,
            "name": f"All {t}",
            "active_flag": True,
            "type": t,
            "user_id": 1,
            "add_time": origin,
            "update_time": origin + i * DAY,
            "visible_to": 7,
            "custom_view_id": i + 1,
        }
        for i, t in enumerate(ftypes)
    ]
    g.out["roles"] = [
        {
            "parent_role_id": None if i == 0 else 1,
            "name": n,
            "id": i + 1,
            "active_flag": True,
            "assignment_count": str(max(1, g.n["users"] // 3)),
            "sub_role_count": "0" if i else "2",
            "level": 1 + (i > 0),
        }
        for i, n in enumerate(["Sales manager", "Account executive", "SDR"])
    ]
    g.out["permission_sets"] = [
        {
            "id": det_uuid(g.seed, "perm", i + 1),
            "name": n,
            "description": f"{n} permissions",
            "app": app,
            "type": "admin" if "admin" in n.lower() else "regular",
            "assignment_count": 1 + i,
        }
        for i, (n, app) in enumerate(
            [
                ("Regular user", "sales"),
                ("Global admin", "global"),
                ("Account settings admin", "account_settings"),
                ("Projects user", "projects"),
            ]
        )
    ]
    g.out["goals"] = [
        {
            "id": det_uuid(g.seed, "goals", i + 1),
            "owner_id": 1,
            "title": f"{t} goal",
            "type": {"name": t, "params": {"pipeline_id": [1], "activity_type_id": []}},
            # the third is a team's (team 1: every company has teams) and has ended: hidden from /goals/find
            # by `is_active`'s default (true) and by its answering only the user's goals unless asked
            "assignee": {"id": 1, "type": "team"}
            if i == 2
            else {"id": 1 + i % g.n["users"], "type": "person"},
            "interval": "monthly",
            "duration": {"start": iso_date(g.now - 90 * DAY), "end": iso_date(g.now + 90 * DAY)},
            "expected_outcome": {"target": 10 * (i + 1), "tracking_metric": ("quantity", "sum")[i % 2]},
            "is_active": i != 2,
            "report_ids": [det_uuid(g.seed, "reports", i + 1)],
        }
        for i, t in enumerate(["deals_won", "deals_progressed", "activities_completed", "deals_started"])
    ]


def project_templates(g: Generator) -> None:
    """Two templates per project board (GetProjectTemplates' item: title, description, board, owner)."""
    users_n = g.n["users"]

    def make(i: int, add: int, upd: int, rng: Any) -> dict:
        return {
            "id": i,
            "title": f"{WORDS[i % 16]} template",
            "description": f"Template for {WORDS[i % 16].lower()} projects" if i % 3 else None,
            "projects_board_id": 1 + (i - 1) % g.n["boards"],
            "owner_id": 1 + int(rng.random() * users_n),
            "add_time": add,
            "update_time": upd,
            "is_deleted": False,
        }

    g.timed("project_templates", 2 * g.n["boards"], make)


def teams(g: Generator) -> None:
    """Legacy teams (GetTeams' item): about one per four users, each with a manager among its members."""
    users_n = g.n["users"]

    def make(i: int, add: int, upd: int, rng: Any) -> dict:
        members = sorted(rng.sample(range(1, users_n + 1), min(users_n, 2 + int(rng.random() * 4))))
        return {
            "id": i,
            "name": f"{WORDS[(i * 5) % 16]} team",
            "description": f"{CITIES[i % len(CITIES)][0]} office sales team",
            "manager_id": members[0],
            "users": members,
            "active_flag": 0 if i % 5 == 0 else 1,
            "deleted_flag": 0,
            "add_time": add,
            "created_by_user_id": 1,
            "is_deleted": False,
        }

    g.timed("teams", max(2, users_n // 4), make)


def deal_discounts(g: Generator) -> None:
    """Discounts of about one deal in five (GetAdditionalDiscounts' item), ids UUIDs as in its example."""
    deals_ = g.out["deals"]
    users_n = g.n["users"]

    def make(i: int, add: int, upd: int, rng: Any) -> dict:
        deal = deals_[int(rng.random() * len(deals_))]
        percentage = rng.random() < 0.6
        amount = float(5 * (1 + int(rng.random() * 6))) if percentage else round(50 + rng.random() * 900, 2)
        created = max(add, deal["add_time"])
        return {
            "id": det_uuid(g.seed, "deal_discounts", i),
            "type": "percentage" if percentage else "amount",
            "amount": amount,
            "description": f"{amount:g}%" if percentage else f"Loyalty discount {i}",
            "deal_id": deal["id"],
            "created_at": created,
            "created_by": 1 + int(rng.random() * users_n),
            "updated_at": max(upd, created),
            "updated_by": 1 + int(rng.random() * users_n),
            "is_deleted": False,
            "_seq": i,
        }

    g.timed("deal_discounts", g.n["deals"] // 5, make)


def organization_relationships(g: Generator) -> None:
    """Relationships between organizations (`org_relationships.py`), about one per ten organizations: a
    parent and its daughter, or two related ones; never an organization with itself."""
    orgs_ = g.out["organizations"]

    def make(i: int, add: int, upd: int, rng: Any) -> dict:
        owner, linked = rng.sample(orgs_, 2)
        added = max(add, owner["add_time"], linked["add_time"])
        return {
            "id": i,
            "type": "parent" if rng.random() < 0.7 else "related",
            "rel_owner_org_id": owner["id"],
            "rel_linked_org_id": linked["id"],
            "add_time": added,
            "update_time": max(upd, added),
            "is_deleted": False,
        }

    g.timed("organization_relationships", max(2, len(orgs_) // 10), make)


STEPS = (
    notes,
    files,
    call_logs,
    boards,
    phases,
    projects,
    tasks,
    lookups,
    project_templates,
    teams,
    deal_discounts,
    organization_relationships,
)
