"""Variants of a full sync side by side: run by run, taking turns, against one emulator, so that the drift
of a noisy machine (peaks here move 10-20 MB between hours for the same code) hits every variant alike.

A variant is `NAME=` followed by comma-separated parts: `@PATH`, another checkout (a git worktree) whose
`bench/sync_worker.py` and connector run instead of this one's, and `KEY=VALUE` settings added to the sync
process's environment (dlt's configuration, `MALLOC_*`, `ARROW_*`, ...). The first variant is the reference.

    uv run python bench/side_by_side.py --scale large --runs 3 --json side.json \\
        --variant main= --variant mmap64=MALLOC_MMAP_THRESHOLD_=65536 --variant change=@/work/other-worktree
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import harness

FIGURES = ("peak_rss_mb", "extract_peak_mb", "seconds", "load_s", "failed_job_attempts")


@dataclass
class Variant:
    name: str
    worker: Path = harness.WORKER
    env: dict[str, str] = field(default_factory=dict)


def parse_variant(text: str) -> Variant:
    """`NAME=[@PATH][,KEY=VALUE...]` as a variant (module docstring)."""
    name, sep, rest = text.partition("=")
    if not name or not sep:
        raise argparse.ArgumentTypeError(f"a variant is NAME=[@PATH][,KEY=VALUE...], not {text!r}")
    variant = Variant(name)
    for part in filter(None, rest.split(",")):
        if part.startswith("@"):
            variant.worker = Path(part[1:]).resolve() / "bench" / "sync_worker.py"
            if not variant.worker.is_file():
                raise argparse.ArgumentTypeError(f"{name}: no {variant.worker}")
        elif "=" in part:
            key, _, value = part.partition("=")
            variant.env[key] = value
        else:
            raise argparse.ArgumentTypeError(f"{name}: {part!r} is neither @PATH nor KEY=VALUE")
    return variant


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--scale", default="large")
    parser.add_argument("--runs", type=int, default=3, help="runs of each variant")
    parser.add_argument("--variant", type=parse_variant, action="append", required=True)
    parser.add_argument("--json", default=None)
    parser.add_argument("--workdir", default=None)
    return parser.parse_args(argv)


def figures(result: dict[str, Any]) -> dict[str, Any]:
    """The figures of one run that variants are compared on."""
    return {
        "peak_rss_mb": result["peak_rss_mb"],
        "extract_peak_mb": result.get("peak_rss_mb_after", {}).get("extract"),
        "seconds": result["seconds"],
        "load_s": result["phases"].get("load"),
        "failed_job_attempts": result.get("failed_job_attempts", 0),
        "rows": result["rows"],
    }


def medians(runs: list[dict[str, Any]]) -> dict[str, float]:
    return {key: harness.median_of(runs, key) for key in FIGURES}


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    root = Path(args.workdir) if args.workdir else None
    runs: dict[str, list[dict[str, Any]]] = {v.name: [] for v in args.variant}
    with harness.emulator(args.scale) as handle:
        for number in range(1, args.runs + 1):
            for variant in args.variant:
                harness.prepare(handle)
                with harness.workdir(root, f"side_{variant.name}_{number}") as where:
                    result = figures(harness.sync(handle, where, worker=variant.worker, env=variant.env))
                runs[variant.name].append(result)
                shown = ", ".join(f"{k} {v}" for k, v in result.items())
                print(f"  run {number} {variant.name}: {shown}", flush=True)
    summary = {name: medians(results) for name, results in runs.items()}
    reference = summary[args.variant[0].name]
    print(f"\nscale {args.scale}, medians of {args.runs} (ratio to {args.variant[0].name}):")
    for name, figs in summary.items():
        peak, time = (figs[k] / reference[k] if reference[k] else 0 for k in ("peak_rss_mb", "seconds"))
        shown = ", ".join(f"{k} {v:.1f}" for k, v in figs.items())
        print(f"  {name}: {shown}; peak x{peak:.3f}, time x{time:.3f}")
    variants = {v.name: {"checkout": str(v.worker.parent.parent), "env": v.env} for v in args.variant}
    payload = {"scale": args.scale, "variants": variants, "medians": summary, "runs": runs}
    harness.write_json(args.json, payload)
    return payload


if __name__ == "__main__":
    main()
