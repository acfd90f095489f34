"""Custom-field resolution speed: rows/s of `Resolver.resolve_page` on the emulator's records.

    uv run python bench/resolver.py [--scale small] [--runs 5] [--json result.json]

The emulator company is generated in process (no HTTP: this measures the resolver alone). Figures are
medians of `--runs` passes over every deals and persons page, timed in process CPU seconds.
"""

from __future__ import annotations

import argparse
import copy
import json
import statistics
import time

import orjson

from pipedrive_source.custom_fields import Resolver
from pipedrive_source.emulator.api import handle
from pipedrive_source.emulator.company import Company

ENTITIES = {"deals": "/api/v2/dealFields", "persons": "/api/v2/personFields"}


def fetch_all(company: Company, path: str) -> list[dict]:
    rows: list[dict] = []
    cursor = None
    while True:
        query = [("limit", "500")] + ([("cursor", cursor)] if cursor else [])
        body = orjson.loads(handle(company, "GET", path, query).body)
        rows += body["data"]
        cursor = (body.get("additional_data") or {}).get("next_cursor")
        if not cursor:
            return rows


def measure(company: Company, entity: str, fields_path: str, runs: int) -> dict:
    fields = fetch_all(company, fields_path)
    records = fetch_all(company, f"/api/v2/{entity}")
    rates = []
    for _ in range(runs):
        pages = [copy.deepcopy(records[i : i + 500]) for i in range(0, len(records), 500)]
        resolver = Resolver(entity, fields)
        started = time.process_time()
        for page in pages:
            resolver.resolve_page(page)
        rates.append(len(records) / max(time.process_time() - started, 1e-9))
    return {"entity": entity, "rows": len(records), "rows_per_s_median": round(statistics.median(rates))}


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--scale", default="small")
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--json", default=None)
    args = parser.parse_args()
    company = Company.generate(seed=7, scale=args.scale)
    with company.lock:
        results = [measure(company, entity, path, args.runs) for entity, path in ENTITIES.items()]
    for r in results:
        print(
            f"{r['entity']:<10}{r['rows']:>8,} rows  "
            f"{r['rows_per_s_median']:>10,} rows/s (median of {args.runs})"
        )
    if args.json:
        with open(args.json, "w") as fh:
            json.dump({"scale": args.scale, "runs": args.runs, "results": results}, fh, indent=2)


if __name__ == "__main__":
    main()
