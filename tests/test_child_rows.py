"""Child tables of entities replaced as a set per parent (`merge_key`): a record leaving its parent's set
takes its own child rows along (`arrow_pages.py`: child rows carry the parent's merge-key value).

A deal's participants and a product's variations are loaded as whole sets; a participant removed from a
deal, or a variation deleted, is simply absent from the next load, so nothing in that load names its
child rows (`deal_participants__email`, `product_variations__prices`, ...) by their own root row."""

from __future__ import annotations

from pathlib import Path

import dlt
import pytest
from connector_fixtures import sync
from reliability_support import DATASET, assert_equal_to_truth

from pipedrive_source.emulator import EmulatorHandle

TABLES = ["deals", "persons", "products", "deal_participants", "product_variations"]


def _one(pipeline: dlt.Pipeline, sql: str) -> tuple:
    rows = pipeline.dataset().query(sql).fetchall()
    assert rows, sql
    return rows[0]


@pytest.mark.parametrize("arrow", [True, False])  # the Arrow path, and dlt's own records path
def test_removed_members_take_their_child_rows_along(
    emulator: EmulatorHandle, tmp_path: Path, arrow: bool
) -> None:
    first = sync(emulator, tmp_path, entities=TABLES, arrow=arrow)
    pipeline = first.pipeline
    # a deal's contact person who is its participant and has e-mails: dropping the contact drops it
    deal_id, person_id = _one(
        pipeline,
        f"SELECT d.id, d.person_id FROM {DATASET}.deals d JOIN {DATASET}.deal_participants p "
        "ON p.participant_id = d.id || ':' || d.person_id "
        f"JOIN {DATASET}.deal_participants__email e ON e._dlt_parent_id = p._dlt_id "
        "ORDER BY d.id LIMIT 1",
    )
    # a variation with prices, of a product with another variation (so its set is not emptied)
    product_id, variation_id = _one(
        pipeline,
        f"SELECT v.product_id, v.id FROM {DATASET}.product_variations v "
        f"JOIN {DATASET}.product_variations__prices c ON c._dlt_parent_id = v._dlt_id "
        f"WHERE (SELECT count(*) FROM {DATASET}.product_variations w WHERE w.product_id = v.product_id) > 1 "
        "ORDER BY v.id LIMIT 1",
    )
    emulator.control.mutate(
        ops=[
            {"op": "update", "table": "deals", "id": deal_id, "changes": {"person_id": None}},
            {"op": "delete", "table": "product_variations", "id": variation_id},
            {"op": "update", "table": "products", "id": product_id, "changes": {}},  # re-read its set
        ]
    )
    sync(emulator, tmp_path, entities=TABLES, pipeline=pipeline, arrow=arrow)

    participant = f"{deal_id}:{person_id}"
    kept = _one(
        pipeline, f"SELECT count(*) FROM {DATASET}.deal_participants WHERE participant_id = '{participant}'"
    )
    assert kept == (0,)  # the test removed what it meant to remove
    assert_equal_to_truth(emulator, tmp_path, TABLES)  # no orphan child rows, child sets as in Pipedrive
