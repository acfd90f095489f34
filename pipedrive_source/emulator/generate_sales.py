"""Generation steps for the sales core: users, pipelines, stages, organizations, persons, deals, products,
deal products and installments, activities and leads (see `generate.Generator`)."""

from __future__ import annotations

from typing import Any

from .catalog import ACTIVITY_PRIORITY, LABELS
from .clock import DAY, iso_date
from .generate import CURRENCIES, FIRST, LAST, WORDS, Generator, address, det_uuid

ACTIVITY_TYPES = ["call", "meeting", "task", "deadline", "email", "lunch"]
DELETED_SHARE = 0.02


def users(g: Generator) -> None:
    def make(i: int, add: int, upd: int, rng: Any) -> dict:
        name = f"{FIRST[i % len(FIRST)]} {LAST[(i * 7) % len(LAST)]}"
        return {
            "id": i,
            "name": name,
            "default_currency": CURRENCIES[i % 3],
            "locale": "en_US",
            "lang": 1,
            "email": f"user{i}@example.com",
            "phone": None if i % 3 else f"+372 555 {i:04d}",
            "activated": True,
            "last_login": upd,
            "created": add,
            "modified": upd,
            "has_created_company": i == 1,
            "access": [{"app": "sales", "admin": i == 1, "permission_set_id": det_uuid(g.seed, "perm", 1)}],
            "active_flag": i % 11 != 0,
            "timezone_name": "Europe/Tallinn",
            "timezone_offset": "+02:00",
            "role_id": 1 + i % 3,
            "icon_url": None,
            "is_you": i == 1,
            "is_deleted": False,
        }

    g.timed("users", g.n["users"], make)


def pipelines(g: Generator) -> None:
    names = ["Sales", "Partnerships", "Renewals", "Enterprise", "Inbound"]

    def make(i: int, add: int, upd: int, rng: Any) -> dict:
        return {
            "id": i,
            "name": names[(i - 1) % len(names)],
            "order_nr": i,
            "is_selected": i == 1,
            "is_deleted": False,
            "is_deal_probability_enabled": i % 2 == 1,
            "add_time": add,
            "update_time": upd,
        }

    g.timed("pipelines", g.n["pipelines"], make)


def stages(g: Generator) -> None:
    names = ["Qualified", "Contact made", "Demo scheduled", "Proposal made", "Negotiations started"]
    n = g.n["pipelines"] * len(names)

    def make(i: int, add: int, upd: int, rng: Any) -> dict:
        k = (i - 1) % len(names)
        rot = rng.random() < 0.4
        return {
            "id": i,
            "order_nr": k + 1,
            "name": names[k],
            "is_deleted": False,
            "deal_probability": 20 * (k + 1),
            "pipeline_id": 1 + (i - 1) // len(names),
            "is_deal_rot_enabled": rot,
            "days_to_rotten": rng.randrange(5, 60) if rot else None,
            "add_time": add,
            "update_time": upd,
        }

    g.timed("stages", n, make)


def _labels(rng: Any, entity: str) -> list[int]:
    ids = [i for i, _ in LABELS[entity]]
    return sorted(rng.sample(ids, int(rng.random() * 2.4)))


def organizations(g: Generator) -> None:
    cv = g.custom("organization", g.rng("organizations.custom"))
    users_n = g.n["users"]

    def make(i: int, add: int, upd: int, rng: Any) -> dict:
        r = rng.random
        return {
            "id": i,
            "name": f"{WORDS[i % 16]} {WORDS[(i // 16) % 16]} {i} {('OÜ', 'GmbH', 'Ltd', 'S.A.')[i % 4]}",
            "owner_id": 1 + int(r() * users_n),
            "add_time": add,
            "update_time": upd,
            "is_deleted": r() < DELETED_SHARE,
            "visible_to": 3 if r() < 0.8 else 1,
            "address": address(rng, i) if r() < 0.85 else None,
            "label_ids": _labels(rng, "organization"),
            "custom_fields": cv.make(),
        }

    g.timed("organizations", g.n["organizations"], make)


def persons(g: Generator) -> None:
    cv = g.custom("person", g.rng("persons.custom"))
    users_n, orgs_n = g.n["users"], g.n["organizations"]

    def make(i: int, add: int, upd: int, rng: Any) -> dict:
        r = rng.random
        first, last = FIRST[int(r() * len(FIRST))], LAST[int(r() * len(LAST))]
        emails = [{"value": f"{first.lower()}.{i}@example.org", "primary": True, "label": "work"}]
        if r() < 0.2:
            emails.append({"value": f"p{i}@home.example", "primary": False, "label": "home"})
        phones = [{"value": f"+372 5{i:07d}", "primary": True, "label": "mobile"}] if r() < 0.7 else []
        return {
            "id": i,
            "name": f"{first} {last}",
            "first_name": first,
            "last_name": last,
            "owner_id": 1 + int(r() * users_n),
            "org_id": 1 + int(r() * orgs_n) if r() < 0.8 else None,
            "add_time": add,
            "update_time": upd,
            "emails": emails,
            "phones": phones,
            "is_deleted": r() < DELETED_SHARE,
            "visible_to": 3,
            "label_ids": _labels(rng, "person"),
            "picture_id": 10_000 + i if r() < 0.1 else None,
            "postal_address": address(rng, i) if r() < 0.3 else None,
            "notes": None,
            "im": [],
            "birthday": iso_date(add - int(r() * 40 * 365) * DAY) if r() < 0.2 else None,
            "job_title": ("CEO", "CTO", "Buyer", "Engineer", None)[i % 5],
            "custom_fields": cv.make(),
        }

    g.timed("persons", g.n["persons"], make)


def _deal_state(g: Generator, d: dict[str, Any], rng: Any, add: int, upd: int) -> None:
    """Status, closing times, archive and delete flags, consistent with the timestamps."""
    r = rng.random()
    d["status"] = "open" if r < 0.5 else "won" if r < 0.8 else "lost"
    closed = d["status"] != "open"
    close = add + (upd - add) // 2 if closed else None
    d["close_time"] = close
    d["won_time"] = close if d["status"] == "won" else None
    d["lost_time"] = close if d["status"] == "lost" else None
    d["lost_reason"] = "Price too high" if d["status"] == "lost" else None
    d["local_won_date"] = iso_date(d["won_time"])
    d["local_lost_date"] = iso_date(d["lost_time"])
    d["local_close_date"] = iso_date(close)
    d["is_archived"] = closed and rng.random() < 0.12
    d["archive_time"] = upd if d["is_archived"] else None
    x = rng.random()
    if x < 0.05:  # deleted: a third of them within the 30-day window /deals?status=deleted shows
        deleted_at = g.now - int(rng.random() * 29 * DAY) - 60 if x < 0.017 else min(upd, g.now - 40 * DAY)
        deleted_at = max(deleted_at, add)
        d.update(is_deleted=True, status="deleted", update_time=deleted_at, _deleted_at=deleted_at)


def deals(g: Generator) -> None:
    cv = g.custom("deal", g.rng("deals.custom"))
    persons = g.out["persons"]
    stages_ = g.out["stages"]
    users_n = g.n["users"]

    def make(i: int, add: int, upd: int, rng: Any) -> dict:
        r = rng.random
        person = persons[int(r() * len(persons))]
        stage = stages_[int(r() * len(stages_))]
        value = round(r() * 50_000, 2) if r() < 0.9 else 0
        d: dict[str, Any] = {
            "id": i,
            "title": f"{WORDS[i % 16]} deal #{i}",
            "creator_user_id": 1 + int(r() * users_n),
            "owner_id": 1 + int(r() * users_n),
            "person_id": person["id"] if r() < 0.9 else None,
            "org_id": person["org_id"],
            "pipeline_id": stage["pipeline_id"],
            "stage_id": stage["id"],
            "value": value,
            "currency": CURRENCIES[int(r() * 3)],
            "add_time": add,
            "update_time": upd,
            "stage_change_time": add + (upd - add) // 3 if r() < 0.7 else None,
            "is_deleted": False,
            "is_archived": False,
            "status": "open",
            "probability": None if r() < 0.7 else int(r() * 100),
            "lost_reason": None,
            "visible_to": 3,
            "close_time": None,
            "won_time": None,
            "lost_time": None,
            "expected_close_date": iso_date(add + int(r() * 120) * DAY) if r() < 0.6 else None,
            "label_ids": _labels(rng, "deal"),
            "origin": "ManuallyCreated" if r() < 0.8 else "API",
            "origin_id": None,
            "channel": None,
            "channel_id": None,
            "source_lead_id": None,
            "arr": None,
            "mrr": None,
            "acv": None,
            "custom_fields": cv.make(),
        }
        _deal_state(g, d, rng, add, upd)
        return d

    g.timed("deals", g.n["deals"], make)


def products(g: Generator) -> None:
    cv = g.custom("product", g.rng("products.custom"))
    users_n = g.n["users"]
    variations: list[dict] = []

    def make(i: int, add: int, upd: int, rng: Any) -> dict:
        r = rng.random
        price = round(5 + r() * 995, 2)
        freq = "one-time" if r() < 0.7 else ("monthly", "annually", "quarterly")[i % 3]
        p = {
            "id": i,
            "name": f"{WORDS[i % 16]} {('Pencil', 'License', 'Seat', 'Support')[i % 4]} {i}",
            "code": f"P-{i:05d}",
            "description": f"{WORDS[(i + 5) % 16]} product line item" if r() < 0.7 else "",
            "category": ("Hardware", "Software", "Services")[i % 3],
            "unit": ("pcs", "seat", "h", "")[i % 4],
            "tax": (0, 9, 20, 22)[i % 4],
            "is_deleted": r() < DELETED_SHARE,
            "is_linkable": True,
            "visible_to": 3,
            "owner_id": 1 + int(r() * users_n),
            "add_time": add,
            "update_time": upd,
            "custom_fields": cv.make(),
            "billing_frequency": freq,
            "billing_frequency_cycles": None if freq == "one-time" else int(1 + r() * 12),
            "prices": [
                {
                    "product_id": i,
                    "price": price,
                    "currency": c,
                    "cost": round(price / 2, 2),
                    "direct_cost": 0,
                    "notes": "",
                }
                for c in CURRENCIES[: 1 + i % 2]
            ],
        }
        if i % 5 == 0:  # every fifth product has variations
            for k in range(1 + i % 3):
                vid = len(variations) + 1
                variations.append(
                    {
                        "id": vid,
                        "name": f"{p['name']} v{k + 2}",
                        "product_id": i,
                        "prices": [
                            {
                                "product_variation_id": vid,
                                "price": round(price * 1.2, 2),
                                "currency": CURRENCIES[0],
                                "cost": 0,
                                "direct_cost": 0,
                                "notes": "",
                            }
                        ],
                    }
                )
        return p

    g.timed("products", g.n["products"], make)
    g.out["product_variations"] = variations


def deal_products(g: Generator) -> None:
    deals_, products_ = g.out["deals"], g.out["products"]
    by_product: dict[int, list[int]] = {}
    for v in g.out["product_variations"]:
        by_product.setdefault(v["product_id"], []).append(v["id"])

    def make(i: int, add: int, upd: int, rng: Any) -> dict:
        r = rng.random
        deal = deals_[int(r() * len(deals_))]
        prod = products_[int(r() * len(products_))]
        qty, price = 1 + int(r() * 20), prod["prices"][0]["price"]
        discount = 0 if r() < 0.8 else 10
        add = max(add, deal["add_time"])
        upd = max(upd, add)
        variation = by_product.get(prod["id"])
        return {
            "id": i,
            "sum": round(qty * price * (1 - discount / 100), 2),
            "tax": prod["tax"],
            "deal_id": deal["id"],
            "name": prod["name"],
            "product_id": prod["id"],
            "product_variation_id": variation[0] if variation and r() < 0.5 else None,
            "order_nr": i % 5,
            "add_time": add,
            "update_time": upd,
            "comments": "",
            "currency": deal["currency"],
            "discount": discount,
            "discount_type": "percentage",
            "quantity": qty,
            "item_price": price,
            "tax_method": "inclusive",
            "is_enabled": True,
            "billing_frequency": prod["billing_frequency"],
            "billing_frequency_cycles": prod["billing_frequency_cycles"],
            "billing_start_date": iso_date(add) if prod["billing_frequency"] != "one-time" else None,
        }

    g.timed("deal_products", g.n["deal_products"], make)


def deal_installments(g: Generator) -> None:
    deals_ = g.out["deals"]

    def make(i: int, add: int, upd: int, rng: Any) -> dict:
        deal = deals_[int(rng.random() * len(deals_))]
        return {
            "id": i,
            "amount": round(100 + rng.random() * 5000, 2),
            "billing_date": iso_date(deal["add_time"] + int(rng.random() * 365) * DAY),
            "description": f"Installment {i}",
            "deal_id": deal["id"],
        }

    g.timed("deal_installments", g.n["deal_installments"], make)


def activities(g: Generator) -> None:
    deals_, persons_, leads_ = g.out["deals"], g.out["persons"], g.out["leads"]
    users_n, projects_n = g.n["users"], g.n["projects"]
    priorities = [p for p, _ in ACTIVITY_PRIORITY]

    def make(i: int, add: int, upd: int, rng: Any) -> dict:
        r = rng.random
        deal = deals_[int(r() * len(deals_))] if r() < 0.7 else None
        lead = leads_[int(r() * len(leads_))] if deal is None and r() < 0.3 else None
        person_id = deal["person_id"] if deal else persons_[int(r() * len(persons_))]["id"]
        done = r() < 0.6
        due = add + int(r() * 30) * DAY
        video = ACTIVITY_TYPES[i % 6] == "meeting" and r() < 0.5
        return {
            "id": i,
            "subject": f"{ACTIVITY_TYPES[i % 6].capitalize()} {i}",
            "type": ACTIVITY_TYPES[i % 6],
            "owner_id": 1 + int(r() * users_n),
            "creator_user_id": 1 + int(r() * users_n),
            "is_deleted": r() < DELETED_SHARE,
            "add_time": add,
            "update_time": upd,
            "deal_id": deal["id"] if deal else None,
            "lead_id": lead["id"] if lead else None,
            "person_id": person_id,
            "org_id": deal["org_id"] if deal else None,
            "project_id": 1 + int(r() * projects_n) if r() < 0.05 else None,
            "due_date": iso_date(due) if r() < 0.95 else None,
            "due_time": f"{9 + i % 8:02d}:00:00" if r() < 0.6 else None,
            "duration": "01:00:00" if r() < 0.5 else None,
            "busy": r() < 0.5,
            "done": done,
            "marked_as_done_time": upd if done else None,
            "location": address(rng, i) if r() < 0.1 else None,
            "participants": [{"person_id": person_id, "primary": True}] if person_id else [],
            "attendees": [
                {
                    "email": f"user{1 + i % users_n}@example.com",
                    "name": "Attendee",
                    "status": "accepted",
                    "is_organizer": True,
                    "person_id": None,
                    "user_id": 1 + i % users_n,
                }
            ]
            if r() < 0.2
            else [],
            "conference_meeting_client": "google_meet" if video else None,
            "conference_meeting_url": f"https://meet.google.com/emu-{i}" if video else None,
            "conference_meeting_id": f"emu-{i}" if video else None,
            "public_description": f"Agenda for {ACTIVITY_TYPES[i % 6]} {i}" if r() < 0.2 else None,
            "priority": priorities[int(r() * 3)] if r() < 0.5 else None,
            "note": f"Note for activity {i}" if r() < 0.3 else None,
        }

    g.timed("activities", g.n["activities"], make)


def lead_labels(g: Generator) -> None:
    colors = ["red", "blue", "yellow", "green", "purple"]
    names = ["Hot", "Cold", "Warm", "Referral", "Event"]

    def make(i: int, add: int, upd: int, rng: Any) -> dict:
        return {
            "id": det_uuid(g.seed, "lead_labels", i),
            "name": names[i - 1],
            "color": colors[i - 1],
            "add_time": add,
            "update_time": upd,
        }

    g.timed("lead_labels", len(names), make)


def leads(g: Generator) -> None:
    cv = g.custom("deal", g.rng("leads.custom"))  # leads inherit the deal custom fields
    labels = [lab["id"] for lab in g.out["lead_labels"]]
    persons_ = g.out["persons"]
    users_n = g.n["users"]

    def make(i: int, add: int, upd: int, rng: Any) -> dict:
        r = rng.random
        person = persons_[int(r() * len(persons_))]
        archived = r() < 0.15
        return {
            "id": det_uuid(g.seed, "leads", i),
            "title": f"{person['name']} lead",
            "owner_id": 1 + int(r() * users_n),
            "creator_id": 1 + int(r() * users_n),
            "label_ids": sorted(rng.sample(labels, int(r() * 2.5))),
            "person_id": person["id"] if r() < 0.9 else None,
            "organization_id": person["org_id"],
            "source_name": "Manually created" if r() < 0.7 else "API",
            "origin": "ManuallyCreated",
            "origin_id": None,
            "channel": None,
            "channel_id": None,
            "is_archived": archived,
            "was_seen": r() < 0.5,
            "value": {"amount": round(r() * 20_000, 2), "currency": "EUR"} if r() < 0.7 else None,
            "expected_close_date": iso_date(add + 30 * DAY) if r() < 0.4 else None,
            "next_activity_id": None,
            "add_time": add,
            "update_time": upd,
            "visible_to": "3",
            "cc_email": f"company+1+lead{i}@pipedrivemail.example",
            "_deleted": r() < DELETED_SHARE,
            "_seq": i,
            "custom_fields": cv.make(),
        }

    rows = g.timed("leads", g.n["leads"], make)
    for lead in rows:  # an organization-only lead must still name an organization
        if lead["person_id"] is None and lead["organization_id"] is None:
            lead["organization_id"] = 1


STEPS = (
    users,
    pipelines,
    stages,
    organizations,
    persons,
    deals,
    products,
    deal_products,
    deal_installments,
    lead_labels,
    leads,
    activities,
)
