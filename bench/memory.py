"""Peak memory of the connector process for a full sync, small vs large: it should stay flat as the company
grows (pages are streamed; nothing proportional to the company is held).

    uv run python bench/memory.py --scales small large --runs 1 --json memory.json
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import harness


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--scales", nargs="+", default=["small", "large"])
    parser.add_argument("--runs", type=int, default=1)
    parser.add_argument("--json", default=None)
    parser.add_argument("--source-options", default="{}", help="JSON: extra pipedrive_source arguments")
    parser.add_argument("--workdir", default=None)
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    options = json.loads(args.source_options)
    root = Path(args.workdir) if args.workdir else None
    figures: dict[str, Any] = {}
    for scale in args.scales:
        runs = []
        with harness.emulator(scale) as handle:
            for number in range(1, args.runs + 1):
                harness.prepare(handle)
                runs.append(harness.sync(handle, harness.workdir(root, f"memory_{scale}_{number}"), options))
        figures[scale] = harness.summarize(runs)
        harness.print_figures(f"full sync, scale {scale}", figures[scale])
    peaks = {scale: figures[scale]["peak_rss_mb"] for scale in args.scales}
    figures["peak_rss_mb"] = peaks
    print(f"\npeak RSS (MB): {peaks}")
    harness.write_json(args.json, figures)
    return figures


if __name__ == "__main__":
    main()
