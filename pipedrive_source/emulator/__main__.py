"""`python -m pipedrive_source.emulator --port 8765 --seed 7 --scale small --api-token TOKEN`

Prints one line with the URL it listens on, then serves until Ctrl-C / SIGTERM. Every `EmulatorSettings`
field is a flag (`--burst-limit`, `--daily-budget`, `--latency-ms`, `--error-rate`, `--oauth-client-id`, ...);
secret flags also default to `PIPEDRIVE_EMULATOR_<FIELD>` environment variables; boolean flags take
true/false.

Before it prints the URL it generates the company and renders every record's JSON once (`large`: about half
a minute; `--prerender false` starts sooner but renders each record on its first read instead).
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import gc
import os
import signal
import sys
import threading
import time
import typing

from .app import EmulatorApp, EmulatorSettings
from .server import _Server, bind, env_name, quiet_uvicorn_drops, url_of, uvicorn_config

PARENT_CHECK_S = 0.5  # how soon an orphaned emulator stops


def parse_args(argv: list[str] | None = None) -> tuple[argparse.Namespace, EmulatorSettings]:
    parser = argparse.ArgumentParser(prog="python -m pipedrive_source.emulator", description=__doc__)
    parser.add_argument("--host", default="127.0.0.1", help="interface to listen on (default 127.0.0.1)")
    parser.add_argument("--port", type=int, default=8765, help="port; 0 picks a free one (default 8765)")
    parser.add_argument(
        "--exit-with-parent", action="store_true", help="stop when the process that started this one is gone"
    )
    hints = typing.get_type_hints(EmulatorSettings)
    for f in dataclasses.fields(EmulatorSettings):
        default = f.default
        if f.name in EmulatorSettings.SECRETS:
            default = os.environ.get(env_name(f.name), default)
        parser.add_argument(
            f"--{f.name.replace('_', '-')}",
            type=_converter(hints[f.name]),
            default=default,
            help=f"{f.metadata.get('help', '')} (default {f.default!r})",
        )
    args = parser.parse_args(argv)
    names = [f.name for f in dataclasses.fields(EmulatorSettings)]
    settings = EmulatorSettings(**{name: getattr(args, name) for name in names})
    return args, settings


def _converter(hint: object) -> typing.Callable[[str], typing.Any]:
    args = [a for a in typing.get_args(hint) if a is not type(None)]
    kind = args[0] if args else hint
    return _flag_bool if kind is bool else kind  # type: ignore[return-value]


def _flag_bool(text: str) -> bool:
    """`--prerender false` (bool("false") would be True)."""
    lowered = text.strip().lower()
    if lowered in ("1", "true", "yes", "on"):
        return True
    if lowered in ("0", "false", "no", "off"):
        return False
    raise argparse.ArgumentTypeError(f"expected true or false, not {text!r}")


def _announce(server: _Server, url: str) -> None:
    """Print the URL once the server accepts connections (the one line a parent process waits for)."""
    server.ready.wait()
    if server.started:
        print(f"Pipedrive emulator listening on {url}", flush=True)


def _exit_with_parent(server: _Server, parent: int) -> None:
    """Stop serving once the parent is gone: killed (SIGKILL, OOM), it could not stop this process, which
    would serve on for ever (a `--demo` killed by SIGTERM left one behind, 190 MB)."""
    while os.getppid() == parent:
        time.sleep(PARENT_CHECK_S)
    server.should_exit = True


def main(argv: list[str] | None = None) -> int:
    args, settings = parse_args(argv)
    from .company import Company

    company = Company.generate(seed=settings.seed, scale=settings.scale)
    # This process only serves the company: move its millions of long-lived objects out of the cyclic GC's
    # reach for good. Thread mode must not do this (it would freeze the host's objects too).
    gc.freeze()
    if settings.prerender:
        company.prerender()
    app = EmulatorApp(company, settings)
    sock = bind(args.host, args.port)
    app.base_url = url_of(sock)
    quiet_uvicorn_drops()
    server = _Server(uvicorn_config(app, log_config=_log_config()))
    # uvicorn re-raises the stop signal after its graceful shutdown; make that a clean exit.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    threading.Thread(target=_announce, args=(server, app.base_url), daemon=True).start()
    if args.exit_with_parent:
        threading.Thread(target=_exit_with_parent, args=(server, os.getppid()), daemon=True).start()
    with contextlib.suppress(KeyboardInterrupt):
        server.run(sockets=[sock])
    return 0 if server.started else 1


def _log_config() -> dict[str, typing.Any]:
    from uvicorn.config import LOGGING_CONFIG

    return LOGGING_CONFIG


if __name__ == "__main__":
    sys.exit(main())
