"""How fast the emulator serves v2 list pages (it must never be the connector's bottleneck).

    uv run python bench/emulator_serve.py --scale small large --runs 5 --json emulator_serve.json

For each scale, starts the emulator in process mode (its own interpreter, rate limits out of the way) and, for
each endpoint, pages through the whole list with `limit=500` following `next_cursor`, with 1 client and then
with 2 and 4 concurrent clients (each paging the whole list on its own keep-alive httpx connection, in
threads). The clients do not decode the JSON: they only pick `next_cursor` from the end of the body, so the
figures measure the server. In process mode each figure also comes with the emulator process's CPU time
(`server_cpu_s`, `rows_per_server_cpu_s`): on a loaded machine that is the steadier measure of its cost.

- `first`: the first pass after startup, 1 client. With `--prerender on` (the emulator's default) every
  record was rendered at startup; with `--prerender off` each record is rendered on this first read;
- `repeat`: later passes (records served from the render cache); each run repeats whole passes for at
  least `--min-seconds`. Prints and records the median of `--runs` runs of rows/s and requests/s.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import orjson

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from sync_worker import rss_mb  # noqa: E402

from pipedrive_source.emulator import run_emulator  # noqa: E402

CURSOR_KEY = b'"next_cursor":'


def next_cursor(body: bytes) -> str | None:
    """The cursor at the end of a v2 list envelope, without parsing the whole body."""
    at = body.rindex(CURSOR_KEY) + len(CURSOR_KEY)
    return orjson.loads(body[at : body.rindex(b"}", at, len(body) - 1)])


def page_through(client: httpx.Client, path: str, limit: int, decode: bool = False) -> tuple[int, int]:
    """(rows, requests) of one full pass over `path`; rows are counted only when `decode` (the warm-up pass:
    nothing changes the company during a benchmark, so every later pass returns as many)."""
    params: dict[str, Any] = {"limit": limit}
    rows = requests = 0
    while True:
        r = client.get(path, params=params)
        r.raise_for_status()
        body = r.content
        requests += 1
        if decode:
            rows += len(orjson.loads(body)["data"])
        cursor = next_cursor(body)
        if cursor is None:
            return rows, requests
        params["cursor"] = cursor


def one_run(
    emu: Any, path: str, limit: int, clients: int, rows_per_pass: int, min_seconds: float, cpu: ServerCpu
) -> dict[str, Any]:
    """`clients` threads each repeat whole passes over `path` until `min_seconds` have passed."""
    passes: list[int] = []
    requests: list[int] = []
    lock = threading.Lock()
    start_gate = threading.Barrier(clients + 1)
    t0 = 0.0

    def worker() -> None:
        with httpx.Client(base_url=emu.base_url, headers={"x-api-token": emu.api_token}, timeout=120) as c:
            c.get("/_emulator/health")  # open the connection before the clock starts
            start_gate.wait()
            n = q = 0
            while n == 0 or time.perf_counter() - t0 < min_seconds:
                q += page_through(c, path, limit)[1]
                n += 1
        with lock:
            passes.append(n)
            requests.append(q)

    threads = [threading.Thread(target=worker) for _ in range(clients)]
    for t in threads:
        t.start()
    cpu0 = cpu()
    t0 = time.perf_counter()
    start_gate.wait()
    for t in threads:
        t.join()
    seconds = time.perf_counter() - t0
    return rates(rows_per_pass * sum(passes), sum(requests), seconds, spent(cpu, cpu0))


def rates(rows: int, requests: int, seconds: float, cpu: float | None) -> dict[str, Any]:
    return {
        "rows": rows,
        "requests": requests,
        "seconds": seconds,
        "rows_per_s": rows / seconds,
        "requests_per_s": requests / seconds,
        "server_cpu_s": cpu,
        "rows_per_server_cpu_s": rows / cpu if cpu else None,
    }


class ServerCpu:
    """CPU seconds (user + system) the emulator process has used; None in thread mode."""

    def __init__(self, pid: int | None) -> None:
        self.pid = pid

    def __call__(self) -> float | None:
        if self.pid is None:
            return None
        fields = Path(f"/proc/{self.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def server_rss_mb(pid: int | None) -> float | None:
    return None if pid is None else rss_mb(pid)


def spent(cpu: ServerCpu, before: float | None) -> float | None:
    after = cpu()
    return None if after is None or before is None else after - before


def first_pass(emu: Any, path: str, limit: int, cpu: ServerCpu) -> dict[str, Any]:
    """One timed pass on a fresh emulator, then an untimed decoding pass that counts the rows."""
    with httpx.Client(base_url=emu.base_url, headers={"x-api-token": emu.api_token}, timeout=300) as c:
        c.get("/_emulator/health")
        cpu0 = cpu()
        t0 = time.perf_counter()
        _, requests = page_through(c, path, limit)
        seconds = time.perf_counter() - t0
        used = spent(cpu, cpu0)
        rows, _ = page_through(c, path, limit, decode=True)
    return rates(rows, requests, seconds, used)


def median_of(runs: list[dict[str, Any]]) -> dict[str, Any]:
    return {k: None if runs[0][k] is None else statistics.median(r[k] for r in runs) for k in runs[0]}


def bench_scale(scale: str, args: argparse.Namespace) -> list[dict[str, Any]]:
    out = []
    settings: dict[str, Any] = {"burst_limit": 10**9, "daily_budget": 10**15}
    if args.prerender == "off":  # "on" is the emulator's default (and older emulators lack the setting)
        settings["prerender"] = False
    t0 = time.perf_counter()
    with run_emulator(seed=7, scale=scale, mode=args.mode, **settings) as emu:
        startup = time.perf_counter() - t0
        print(
            f"scale {scale}: emulator ({args.mode} mode, prerender {args.prerender}) up in {startup:.1f} s "
            f"at {emu.base_url}"
        )
        pid = emu.process.pid if emu.process else None
        cpu, rss = ServerCpu(pid), server_rss_mb(pid)
        if rss:
            print(f"  emulator RSS after startup: {rss:,.0f} MB")
        for endpoint in args.endpoints:
            path = f"/api/v2/{endpoint}"
            first = first_pass(emu, path, args.limit, cpu)
            out.append(record(scale, path, args, "first", 1, [first]) | {"startup_s": startup, "rss_mb": rss})
            for clients in args.clients:
                runs = [
                    one_run(emu, path, args.limit, clients, first["rows"], args.min_seconds, cpu)
                    for _ in range(args.runs)
                ]
                out.append(record(scale, path, args, "repeat", clients, runs))
    return out


def record(
    scale: str, path: str, args: argparse.Namespace, kind: str, clients: int, runs: list[dict[str, Any]]
) -> dict[str, Any]:
    med = median_of(runs)
    per_cpu = med["rows_per_server_cpu_s"]
    print(
        f"  {path:<16} {kind:<6} clients={clients}  rows={int(med['rows']):>7}  "
        f"{med['rows_per_s']:>9,.0f} rows/s  {med['requests_per_s']:>7,.1f} req/s  "
        + (f"{per_cpu:>9,.0f} rows/server-cpu-s  " if per_cpu else "")
        + f"(median of {len(runs)}, {med['seconds']:.2f} s)"
    )
    return {
        "scale": scale,
        "endpoint": path,
        "limit": args.limit,
        "pass": kind,
        "prerender": args.prerender,
        "clients": clients,
        "runs": len(runs),
        **med,
        "all_rows_per_s": [r["rows_per_s"] for r in runs],
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--scale", nargs="+", default=["small", "large"], choices=["tiny", "small", "large"])
    parser.add_argument("--endpoints", nargs="+", default=["deals", "persons"])
    parser.add_argument("--clients", nargs="+", type=int, default=[1, 2, 4])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--limit", type=int, default=500)
    parser.add_argument("--min-seconds", type=float, default=1.0, help="length of each repeat run")
    parser.add_argument("--mode", default="process", choices=["process", "thread"])
    parser.add_argument("--prerender", default="on", choices=["on", "off"], help="the emulator setting")
    parser.add_argument("--json", type=Path, help="write the results here")
    args = parser.parse_args(argv)
    results = [r for scale in args.scale for r in bench_scale(scale, args)]
    if args.json:
        args.json.write_text(json.dumps({"benchmark": "emulator_serve", "results": results}, indent=2))
        print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
