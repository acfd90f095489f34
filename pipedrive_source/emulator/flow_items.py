"""The deal flow's items other than `dealChange`: activities, notes, files and mail messages of the deal.

A real deal's flow is mostly these, and their `data` look nothing like a field change: the spec's example
(GetDealUpdates) shows an `activity` with strings for times and durations, `attendees` and `participants`
lists and a nested `file`, and a `mailMessage` with `from`/`to`/`cc`/`bcc` and `attachments` lists, 0/1
flags next to booleans and RFC3339 times (`.000Z`) next to v1 ones. Items are rendered in those shapes:
- activity: each live activity linked to the deal (the example's keys), at its `add_time`;
- note, file: each live note / file linked to the deal, as `/v1/notes` and `/v1/files` render it (the spec
  has no flow example for them), at its `add_time`;
- mailMessage: 0-2 per deal chosen from the deal id (about 0.8 a deal), within 30 days after the deal was
  added and before the company's start, plus each mail a mutation linked to the deal (`add_mail`).
Ids are each kind's own: a mail, an activity and a field change of one deal may share an id, as in Pipedrive.

Linked records are found through the tables' `deal_id` groups (kept up to date by every mutation), so a
deal's flow costs a few dict lookups more than before, not a scan.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

import orjson

from .clock import DAY, rfc3339_ms, v1_time
from .fields import ADDRESS_SUBFIELDS
from .render import record_bytes

if TYPE_CHECKING:
    from .company import Company
    from .store import Record, Table

MAIL_WINDOW = 30 * DAY
LINKED = (("activities", "activity"), ("notes", "note"), ("files", "file"))


def linked_items(company: Company, deal: Record) -> list[dict[str, Any]]:
    """The deal's activities, notes, files and mail messages as flow items (unsorted)."""
    out: list[dict[str, Any]] = []
    for t, kind, rec in _linked(company, deal):
        if kind == "activity":
            data = activity_data(company, rec)
        else:  # the record as its own v1 list renders it
            data = orjson.loads(record_bytes(company, t, rec, "v1"))
        out.append({"object": kind, "timestamp": v1_time(rec["add_time"]), "data": data})
    out.extend(mail_items(company, deal))
    return out


def linked_count(company: Company, deal: Record) -> int:
    n = sum(1 for _ in _linked(company, deal))
    return n + len(_mail_times(company, deal)) + len(company.mail_log.get(deal["id"], ()))


def _linked(company: Company, deal: Record) -> Iterator[tuple[Table, str, Record]]:
    """The deal's live activities, notes and files: (table, flow item kind, record)."""
    for table, kind in LINKED:
        t = company.t[table]
        for rid in t.group("deal_id").get(deal["id"], ()):
            rec = t.rows[rid]
            if t.view_of(rec) == "live":
                yield t, kind, rec


# ---- activity ---------------------------------------------------------------------------------------------


def activity_data(company: Company, a: Record) -> dict[str, Any]:
    users, persons = company.t["users"].rows, company.t["persons"].rows
    deal = company.t["deals"].rows.get(a.get("deal_id"))
    org = company.t["organizations"].rows.get(a.get("org_id"))
    person = persons.get(a.get("person_id"))
    owner = users.get(a["owner_id"])
    loc = a.get("location") or {}
    return {
        "id": a["id"],
        "company_id": company_id(company),
        "user_id": a["owner_id"],
        "done": a["done"],
        "type": a["type"],
        "reference_type": "none",
        "reference_id": None,
        "conference_meeting_client": a.get("conference_meeting_client"),
        "conference_meeting_url": a.get("conference_meeting_url"),
        "conference_meeting_id": a.get("conference_meeting_id"),
        "due_date": a.get("due_date"),
        "due_time": (a.get("due_time") or "")[:5],
        "duration": (a.get("duration") or "")[:5],
        "busy_flag": a["busy"],
        "add_time": v1_time(a["add_time"]),
        "marked_as_done_time": v1_time(a.get("marked_as_done_time")) or "",
        "last_notification_time": None,
        "last_notification_user_id": None,
        "notification_language_id": 1,
        "subject": a["subject"],
        "public_description": a.get("public_description") or "",
        "calendar_sync_include_context": "",
        "location": loc.get("value"),
        "org_id": a.get("org_id"),
        "person_id": a.get("person_id"),
        "deal_id": a.get("deal_id"),
        "lead_id": a.get("lead_id"),
        "project_id": a.get("project_id"),
        "active_flag": not a["is_deleted"],
        "update_time": v1_time(a["update_time"]),
        "update_user_id": a["owner_id"],
        "gcal_event_id": "",
        "google_calendar_id": "",
        "google_calendar_etag": "",
        "source_timezone": "",
        "rec_rule": None,
        "rec_rule_extension": None,
        "rec_master_activity_id": None,
        "series": [],
        "note": a.get("note") or "",
        "created_by_user_id": a["creator_user_id"],
        **{f"location_{k}": loc.get(k, "") if loc else None for k in LOCATION_PARTS},
        "attendees": [_attendee(x) for x in a.get("attendees") or ()],
        "participants": [
            {"person_id": p["person_id"], "primary_flag": bool(p.get("primary"))}
            for p in a.get("participants") or ()
        ],
        "org_name": org["name"] if org else None,
        "person_name": person["name"] if person else None,
        "deal_title": deal["title"] if deal else None,
        "owner_name": owner["name"] if owner else None,
        "person_dropbox_bcc": f"company{company.seed}@pipedrivemail.example",
        "deal_dropbox_bcc": f"company{company.seed}+deal{a.get('deal_id')}@pipedrivemail.example",
        "assigned_to_user_id": a["owner_id"],
        "file": _recording(a) if a["type"] == "call" and a["id"] % 3 == 0 else None,
    }


# an activity's location: an address field's parts (and `sublocality`, which values carry too)
LOCATION_PARTS = (*(part for part, _label in ADDRESS_SUBFIELDS if part != "value"), "sublocality")


def _attendee(x: dict[str, Any]) -> dict[str, Any]:
    return {
        "email_address": x.get("email"),
        "is_organizer": int(bool(x.get("is_organizer"))),
        "name": x.get("name"),
        "person_id": x.get("person_id"),
        "status": x.get("status"),
        "user_id": x.get("user_id"),
    }


def _recording(a: Record) -> dict[str, Any]:
    """A call's recording, as in the example (whose file id is a string, trailing comma included)."""
    return {
        "id": f"{a['id']},",
        "clean_name": f"Call {a['id']}.m4a",
        "url": f"https://files.pipedrive.example/recordings/{a['id']}.m4a",
    }


# ---- mail --------------------------------------------------------------------------------------------------


def company_id(company: Company) -> int:
    return 7_000_000 + company.seed  # as /v1/users/me tells it


def _mail_times(company: Company, deal: Record) -> list[tuple[int, int]]:
    """(mail id, epoch) of the deal's generated mails: 0, 0, 1, 1 or 2 of them, chosen from the deal id."""
    h = int(hashlib.md5(f"{company.seed}/mail/{deal['id']}".encode()).hexdigest()[:12], 16)
    end = min(deal["add_time"] + MAIL_WINDOW, company.start)
    span = max(1, end - deal["add_time"])
    start = deal["add_time"]
    return [(deal["id"] * 4 + k + 1, start + (h >> (8 + 12 * k)) % span) for k in range(h % 5 // 2)]


def mail_items(company: Company, deal: Record) -> list[dict[str, Any]]:
    made = [mail_item(company, deal, mid, ts) for mid, ts in _mail_times(company, deal)]
    return made + list(company.mail_log.get(deal["id"], ()))


def log_mail(company: Company, deal: Record) -> dict[str, Any]:
    """A mail linked to the deal now (mutation op `add_mail`)."""
    item = mail_item(company, deal, 1_000_000_000 + company.next_change_id(), company.clock)
    company.mail_log.setdefault(deal["id"], []).append(item)
    return item


def mail_item(company: Company, deal: Record, mail_id: int, ts: int) -> dict[str, Any]:
    person = company.t["persons"].rows.get(deal.get("person_id"))
    user = company.t["users"].rows.get(deal["owner_id"])
    sent = mail_id % 2 == 0
    them = _party(mail_id, person["emails"][0]["value"], person["name"], person["id"]) if person else None
    owner_email, owner_name = (user["email"], user["name"]) if user else ("owner@example.com", "")
    us = _party(mail_id + 1, owner_email, owner_name, None)
    sender, to = (us, them) if sent else (them, us)
    stamp = rfc3339_ms(ts)
    attachments = [_attachment(company, deal, mail_id, ts)] if mail_id % 3 == 0 else []
    return {
        "object": "mailMessage",
        "timestamp": v1_time(ts),
        "data": {
            "attachments": attachments,
            "id": mail_id,
            "from": [sender] if sender else [],
            "to": [to] if to else [],
            "cc": [],
            "bcc": [],
            "body_url": f"https://mail.pipedrive.example/messages/{mail_id}/body",
            "nylas_id": f"emu{mail_id:020d}",
            "account_id": f"acc{deal['owner_id']:020d}",
            "user_id": deal["owner_id"],
            "mail_thread_id": mail_id,
            "subject": f"Re: {deal['title']}",
            "snippet": f"About {deal['title']}",
            "mail_tracking_status": "opened" if sent else None,
            "mail_link_tracking_enabled_flag": 0,
            "read_flag": 1,
            "draft": "",
            "s3_bucket": "pipedrive-mail-emulated",
            "s3_bucket_path": f"{company_id(company)}/{mail_id}/body",
            "draft_flag": 0,
            "synced_flag": 1,
            "deleted_flag": 0,
            "external_deleted_flag": False,
            "has_body_flag": 1,
            "sent_flag": int(sent),
            "sent_from_pipedrive_flag": int(sent),
            "smart_bcc_flag": 0,
            "message_time": stamp,
            "add_time": stamp,
            "update_time": stamp,
            "has_attachments_flag": int(bool(attachments)),
            "has_inline_attachments_flag": 0,
            "has_real_attachments_flag": int(bool(attachments)),
            "mua_message_id": f"emu-{mail_id}@mailer.example",
            "template_id": None,
            "item_type": "mailMessage",
            "timestamp": stamp,
            "company_id": company_id(company),
        },
    }


def _party(pid: int, email: str, name: str, person_id: int | None) -> dict[str, Any]:
    return {
        "id": pid,
        "email_address": email,
        "name": name,
        "linked_person_id": person_id,
        "linked_person_name": name if person_id else "",
        "mail_message_party_id": pid,
    }


def _attachment(company: Company, deal: Record, mail_id: int, ts: int) -> dict[str, Any]:
    name = f"offer_{mail_id}.pdf"
    return {
        "id": mail_id,
        "user_id": deal["owner_id"],
        "deal_id": deal["id"],
        "person_id": deal.get("person_id"),
        "org_id": deal.get("org_id"),
        "product_id": None,
        "activity_id": None,
        "lead_id": None,
        "log_id": None,
        "add_time": v1_time(ts),
        "update_time": v1_time(ts),
        "file_name": name,
        "file_type": "pdf",
        "file_size": 1000 + mail_id % 90_000,
        "active_flag": True,
        "inline_flag": False,
        "remote_location": "s3",
        "remote_id": name,
        "cid": "",
        "s3_bucket": "",
        "mail_message_id": str(mail_id),
        "mail_template_id": "",
        "deal_name": deal["title"],
        "person_name": "",
        "people_name": "",
        "org_name": "",
        "product_name": "",
        "lead_name": "",
        "url": f"https://emulator.pipedrive.local/v1/files/m{mail_id}/download",
        "name": name,
        "description": "",
    }
