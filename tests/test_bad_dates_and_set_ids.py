"""A number in a built-in date or timestamp column, and an empty string among a set field's option ids:
what loads, on both paths (Arrow pages and records), rows in DuckDB against what the emulator serves."""

from __future__ import annotations

import sys
from pathlib import Path

import duckdb
import pytest

sys.path.insert(0, str(Path(__file__).parent))
from connector_fixtures import DATASET, custom_columns, sync  # noqa: E402
from reliability_support import EXACT  # noqa: E402
from test_reliability_bad_input import (  # noqa: E402, F401 (data_emulator: a fixture)
    child_rows,
    data_emulator,
    deal_field_codes,
    inject_changes,
)

from pipedrive_source.emulator import EmulatorHandle  # noqa: E402

# (change, column, variant, what the variant keeps): a number where Pipedrive sends an ISO date or timestamp
NUMBERS_FOR_DATES = [
    ({"expected_close_date": 20240101}, "expected_close_date", "v_bigint", 20240101),
    ({"expected_close_date": 1.5}, "expected_close_date", "v_double", 1.5),
    # not `close_time` (a timestamp column, handled alike): the emulator writes a number given for one as
    # its ISO text, and fails on a raw literal there (HTTP 500)
]


@pytest.mark.parametrize("arrow", [True, False], ids=["arrow", "records"])
def test_a_number_in_a_built_in_date_or_timestamp_column_is_kept_as_the_number(
    data_emulator: EmulatorHandle,  # noqa: F811
    tmp_path: Path,
    arrow: bool,
) -> None:
    """A deal's `expected_close_date` (or a timestamp such as `close_time`) sent as a number (a proxy, a
    bug) loaded as the date dlt's coercion made of it, seconds since 1970 (20240101 as 1970-08-23): a wrong
    date that looked real, the number lost. As a custom date field's number: NULL in the column, the number
    in its variant."""
    deals = inject_changes(data_emulator, [change for change, _, _, _ in NUMBERS_FOR_DATES])
    sync(data_emulator, tmp_path, entities=["deals"], arrow=arrow, **EXACT)
    with duckdb.connect(str(tmp_path / "crm.duckdb"), read_only=True) as con:
        for rid, (_, column, variant, kept) in zip(deals, NUMBERS_FOR_DATES, strict=True):
            query = f'SELECT "{column}", "{column}__{variant}" FROM {DATASET}.deals WHERE id = ?'
            assert con.execute(query, [rid]).fetchall() == [(None, kept)], (column, kept)
        others = con.execute(
            f"SELECT count(*) FROM {DATASET}.deals WHERE id NOT IN ({', '.join('?' * len(deals))}) "
            "AND expected_close_date IS NOT NULL",
            deals,
        ).fetchone()
    served = [
        d
        for d in data_emulator.control.snapshot("deals")
        if d["id"] not in deals and d["expected_close_date"]
    ]
    assert others == (len(served),)  # the dates sent as dates still load as dates


@pytest.mark.parametrize("arrow", [True, False], ids=["arrow", "records"])
def test_an_empty_string_among_a_set_fields_ids_is_no_option(
    data_emulator: EmulatorHandle,  # noqa: F811
    tmp_path: Path,
    arrow: bool,
) -> None:
    """`""` among a set custom field's ids made a child row (NULL, or the unknown id's text), counted by
    every COUNT of the set's options; a null there makes none, nor does v1's `"12,,13"`."""
    codes = deal_field_codes(data_emulator)
    fields = {f["field_code"]: f for f in data_emulator.control.snapshot("deal_fields")}
    option = fields[codes["set"]]["options"][0]
    [deal] = inject_changes(data_emulator, [{"custom_fields": {"set": [option["id"], "", " ", None]}}])
    sync(data_emulator, tmp_path, entities=["deals"], arrow=arrow, keep_option_ids=True, **EXACT)
    db = tmp_path / "crm.duckdb"
    column = custom_columns(db, "deals")[codes["set"]]
    assert child_rows(db, f"deals__{column}", deal) == [(option["label"],)]
    assert child_rows(db, f"deals__{column}_ids", deal) == [(option["id"],)]
