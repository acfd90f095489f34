"""Run the emulator on 127.0.0.1: in a background thread (tests) or a subprocess (benchmarks).

    with run_emulator(seed=7, scale="tiny") as emu:
        httpx.get(f"{emu.base_url}/api/v2/deals", headers={"x-api-token": emu.api_token})
        emu.control.counts()

Thread mode shares the process (and the GIL) and exposes `.company` for direct inspection; process mode runs
`python -m pipedrive_source.emulator` so the emulator gets its own interpreter.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import os
import re
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import uvicorn

from .app import EmulatorApp, EmulatorSettings
from .control import EmulatorControl

STARTUP_TIMEOUT_S = 300.0  # generating `large` takes ~35 s here; leave room for a loaded CI machine
URL_RE = re.compile(r"https?://\S+")


@dataclass
class EmulatorHandle:
    """What `run_emulator` yields."""

    base_url: str  # e.g. "http://127.0.0.1:54321", no trailing slash
    api_token: str
    control: EmulatorControl
    settings: EmulatorSettings
    company: Any = None  # the live Company (thread mode only)
    app: EmulatorApp | None = None  # thread mode only
    process: subprocess.Popen[str] | None = None  # process mode only


class _NoDropNoise(logging.Filter):
    """Injected dropped connections make uvicorn log an error per drop; they are intended, so hide them."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "returned without completing response" not in record.getMessage()


def quiet_uvicorn_drops() -> None:
    logger = logging.getLogger("uvicorn.error")
    if not any(isinstance(f, _NoDropNoise) for f in logger.filters):
        logger.addFilter(_NoDropNoise())


def bind(host: str, port: int) -> socket.socket:
    """A listening socket (port 0 -> a free port chosen by the OS)."""
    sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    sock.listen(2048)
    sock.set_inheritable(True)
    return sock


def url_of(sock: socket.socket) -> str:
    host, port = sock.getsockname()[:2]
    return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"


def uvicorn_config(app: EmulatorApp, log_config: dict[str, Any] | None = None) -> uvicorn.Config:
    """httptools/uvloop when installed ("auto"), no access log, no uvicorn Date/Server headers (the app sends
    the emulator-clock Date)."""
    return uvicorn.Config(
        app,
        lifespan="off",
        access_log=False,
        log_level="warning",
        log_config=log_config,
        date_header=False,
        server_header=False,
        timeout_graceful_shutdown=5,
        timeout_keep_alive=30,
    )


class _Server(uvicorn.Server):
    """uvicorn.Server that signals a threading.Event once it accepts connections (or failed to start)."""

    def __init__(self, config: uvicorn.Config) -> None:
        super().__init__(config)
        self.ready = threading.Event()

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        try:
            await super().startup(sockets)
        finally:
            self.ready.set()


@contextlib.contextmanager
def run_emulator(
    seed: int = 7,
    scale: str = "small",
    api_token: str = "emulator-token",
    port: int = 0,
    mode: str = "thread",
    **settings: Any,
) -> Iterator[EmulatorHandle]:
    """Start an emulator on 127.0.0.1, yield its handle, stop it on exit.

    `settings` are `EmulatorSettings` fields (burst_limit, daily_budget, error_rate, oauth_*, ...).
    """
    full = EmulatorSettings(seed=seed, scale=scale, api_token=api_token, **settings)
    if mode == "thread":
        with _run_thread(full, port) as handle:
            yield handle
    elif mode == "process":
        with _run_process(full, port) as handle:
            yield handle
    else:
        raise ValueError(f"mode must be 'thread' or 'process', not {mode!r}")


@contextlib.contextmanager
def _run_thread(settings: EmulatorSettings, port: int) -> Iterator[EmulatorHandle]:
    from .company import Company  # late: generation is the CORE layer's business

    company = Company.generate(seed=settings.seed, scale=settings.scale)
    if settings.prerender:
        company.prerender()
    app = EmulatorApp(company, settings)
    sock = bind("127.0.0.1", port)
    app.base_url = url_of(sock)
    quiet_uvicorn_drops()
    server = _Server(uvicorn_config(app))
    thread = threading.Thread(
        target=server.run, kwargs={"sockets": [sock]}, name="pipedrive-emulator", daemon=True
    )
    thread.start()
    try:
        if not server.ready.wait(STARTUP_TIMEOUT_S) or not server.started:
            raise RuntimeError("the emulator server did not start")
        control = EmulatorControl(app.base_url)
        with control:
            yield EmulatorHandle(app.base_url, settings.api_token, control, settings, company, app)
    finally:
        server.should_exit = True
        thread.join(timeout=30)
        sock.close()


@contextlib.contextmanager
def _run_process(settings: EmulatorSettings, port: int) -> Iterator[EmulatorHandle]:
    cmd = [sys.executable, "-m", "pipedrive_source.emulator", "--host", "127.0.0.1", "--port", str(port)]
    cmd += ["--exit-with-parent"]
    cmd += settings_to_args(settings)
    env = {**os.environ, **secrets_env(settings)}
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True, env=env)
    # A hung start must not hang the caller: kill the child if it has not printed its URL in time.
    watchdog = threading.Timer(STARTUP_TIMEOUT_S, proc.kill)
    watchdog.start()
    try:
        line = proc.stdout.readline() if proc.stdout else ""
        watchdog.cancel()
        found = URL_RE.search(line)
        if not found:
            raise RuntimeError(f"the emulator process did not print its URL (exit code {proc.poll()})")
        control = EmulatorControl(found.group(0))
        with control:
            yield EmulatorHandle(found.group(0), settings.api_token, control, settings, process=proc)
    finally:
        watchdog.cancel()
        _stop(proc)


def _stop(proc: subprocess.Popen[str]) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    if proc.stdout:
        proc.stdout.close()


def settings_to_args(settings: EmulatorSettings) -> list[str]:
    """CLI flags for every non-secret setting that differs from its default (flag = field name with dashes).

    Secrets go through the environment (`secrets_env`) so they do not show in the process list."""
    default = EmulatorSettings()
    args: list[str] = []
    for f in dataclasses.fields(EmulatorSettings):
        value = getattr(settings, f.name)
        if f.name not in EmulatorSettings.SECRETS and value != getattr(default, f.name):
            args += [f"--{f.name.replace('_', '-')}", str(value)]
    return args


def secrets_env(settings: EmulatorSettings) -> dict[str, str]:
    """`PIPEDRIVE_EMULATOR_<FIELD>` variables that `__main__` reads as defaults of the secret flags."""
    return {env_name(name): str(getattr(settings, name)) for name in EmulatorSettings.SECRETS}


def env_name(field_name: str) -> str:
    return f"PIPEDRIVE_EMULATOR_{field_name.upper()}"
