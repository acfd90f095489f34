"""The digests a full read keeps of the records it listed (`record_digests`): 16 bytes per record in the
state, found again by key; a state written by an earlier version (a dict of key text to hex digest) still
tells which records are unchanged, so an upgrade does not load every record again."""

from __future__ import annotations

import base64
import gc
import random
import tracemalloc
from pathlib import Path

from connector_fixtures import sync

from pipedrive_source.record_digests import DigestTable, IdListing, digest, entry, key_text

FULL_READS = ["tasks", "call_logs", "projects"]


def _records() -> list[dict]:
    ids = random.Random(5).sample(range(1, 10**9), 2000)
    numbered = [{"id": i, "subject": f"call {i}", "done": i % 2 == 0} for i in ids]
    return numbered + [{"id": f"c0ffee-{i}", "title": None} for i in range(300)]  # leads' ids are text


def test_a_packed_table_finds_each_record_by_key_and_tells_changed_content() -> None:
    records = _records()
    built = DigestTable()
    for row in records:
        built.add(*entry(row, "id"))
    packed = built.pack()
    assert len(base64.b64decode(packed)) == 16 * len(records)

    table = DigestTable.from_state(packed)
    assert all(table.holds(*entry(row, "id")) for row in records)
    edited = {**records[7], "subject": "edited"}
    assert not table.holds(*entry(edited, "id"))
    assert not table.holds(entry({"id": 0}, "id")[0], entry(records[7], "id")[1])  # a key it never saw
    assert not DigestTable.from_state(None).holds(*entry(records[0], "id"))


def test_a_table_built_from_entries_tells_a_key_it_lacks_from_one_whose_content_differs() -> None:
    records = _records()
    table = DigestTable.of(entry(row, "id") for row in reversed(records))  # sorted as it is built
    assert all(table.holds(*entry(row, "id")) for row in records)
    key_hash, packed = entry({**records[3], "done": not records[3]["done"]}, "id")
    assert table.digest_of(key_hash) not in (None, packed)
    assert table.digest_of(entry({"id": 0}, "id")[0]) is None


def test_a_state_of_the_earlier_dict_format_still_tells_unchanged_records() -> None:
    records = _records()
    earlier = {key_text(row, "id"): digest(row) for row in records}  # what versions before kept
    table = DigestTable.from_state(earlier)
    assert all(table.holds(*entry(row, "id")) for row in records)
    edited = {**records[-1], "title": "now titled"}
    assert not table.holds(*entry(edited, "id"))


def test_full_reads_keep_16_bytes_per_record_and_load_only_what_changed(emulator, tmp_path: Path) -> None:
    first = sync(emulator, tmp_path, entities=FULL_READS, full_read_interval_hours=0)
    resources = first.pipeline.state["sources"]["pipedrive"]["resources"]
    for table in FULL_READS:
        listed = first.monitor.live_ids[table]
        assert first.loaded[table] == len(listed) > 0
        assert len(base64.b64decode(resources[table]["digests"])) == 16 * len(listed), table

    assert sync(emulator, tmp_path, entities=FULL_READS, full_read_interval_hours=0).loaded == {}

    changes = emulator.control.mutate(seed=4, updates=40, deletes=0, advance_seconds=60)
    updated = {t: len(changes["updated"].get(t) or []) for t in FULL_READS}
    assert any(updated.values()), changes["updated"]
    third = sync(emulator, tmp_path, entities=FULL_READS, full_read_interval_hours=0)
    loaded = {t: n for t, n in third.loaded.items() if t in FULL_READS}
    assert loaded == {t: n for t, n in updated.items() if n}


def test_an_id_listing_answers_membership_as_the_set_of_its_ids() -> None:
    texts = {f"CA{random.Random(n).getrandbits(120):x}" for n in range(300)} | {
        "",
        "é-1",
        "c0ffee-1",
        "\ud800",
    }
    ids = {int(r["id"]) for r in _records()[:2000]} | texts | {2**70, (1, 2)}  # too big for 8 bytes; a tuple
    listing = IdListing(ids)
    assert len(listing) == len(ids) and set(listing) == ids
    assert all(i in listing for i in ids)
    assert 7.0 in IdListing({7}) and 7.5 not in IdListing({7})  # a value from a float column, as in a set
    probes = [0, -1, 10**9, "c0ffee-2", "c0ffee-", "CA", "é", "é-1", "\udfff", None, 2**70 + 1, (1, 3)]
    probes += [b"c0ffee-1", type("Text", (str,), {})("c0ffee-1")]  # bytes are not text; a str subclass is
    probes += random.Random(6).sample(range(1, 10**9), 500)
    probes += [*(t + "0" for t in texts), *(t[:-1] for t in texts)]  # text ids around the listed ones
    assert [p in listing for p in probes] == [p in ids for p in probes]


def test_an_id_listing_of_text_ids_holds_their_bytes_not_the_strings() -> None:
    """The strings a read made are not kept through the load: a set of 20,000 call log ids of 30 characters
    takes 2.1 MB besides the strings (1.6 MB); their bytes in one buffer and its offsets, under 1 MB."""
    ids = [f"CA{random.Random(n).getrandbits(112):028x}" for n in range(20_000)]
    tracemalloc.start()
    try:
        listing = IdListing(ids)
        del ids
        gc.collect()
        held, _ = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert len(listing) == 20_000 and held < 1_000_000, held
