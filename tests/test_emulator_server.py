"""The emulator's transport layer over real HTTP: auth, OAuth, rate limits, faults, control API, CLI."""

from __future__ import annotations

import json
import os
import select
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from email.utils import parsedate_to_datetime

import httpx
import pytest

from pipedrive_source.emulator import EmulatorControlError, EmulatorHandle, run_emulator, spec
from pipedrive_source.emulator.faults import RAW_JSON
from pipedrive_source.emulator.ratelimit import RateLimiter

V2_LIST = "/api/v2/deals"
V1_LIST = "/v1/leads"
ERROR_INFO = "Please check developers.pipedrive.com for more information about Pipedrive API."


def cost(path: str) -> int:
    found = spec.match("GET", path)
    assert found is not None, path
    return found[0].token_cost


@pytest.fixture
def emu(clean_emulator: EmulatorHandle) -> EmulatorHandle:
    return clean_emulator


@pytest.fixture
def client(emu: EmulatorHandle) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=emu.base_url, timeout=10) as c:
        yield c


def auth(emu: EmulatorHandle) -> dict[str, str]:
    return {"x-api-token": emu.api_token}


def oauth_grant(client: httpx.Client, secret: str = "emulator-client-secret", **form: str) -> httpx.Response:
    data = {"grant_type": "refresh_token", "refresh_token": "emulator-refresh-token", **form}
    return client.post("/oauth/token", data=data, auth=("emulator-client-id", secret))


# ---- auth ------------------------------------------------------------------------------------------------


def test_missing_token_gets_401_with_v2_and_v1_bodies(client: httpx.Client) -> None:
    v2 = client.get(V2_LIST)
    assert v2.status_code == 401
    assert v2.json() == {
        "success": False,
        "error": "unauthorized access",
        "error_info": ERROR_INFO,
        "data": None,
        "additional_data": None,
    }
    v1 = client.get(V1_LIST)
    assert v1.status_code == 401
    assert v1.json() == {
        "success": False,
        "error": "unauthorized access",
        "errorCode": 401,
        "error_info": ERROR_INFO,
    }
    assert "x-ratelimit-limit" in v1.headers and "date" in v1.headers


@pytest.mark.parametrize(
    "kwargs",
    [
        {"headers": {"x-api-token": "wrong"}},
        {"params": {"api_token": "wrong"}},
        {"headers": {"Authorization": "Bearer wrong"}},
    ],
    ids=["header", "query", "bearer"],
)
def test_wrong_credentials_get_401(client: httpx.Client, kwargs: dict) -> None:
    response = client.get(V2_LIST, **kwargs)
    assert response.status_code == 401
    assert response.json()["error"] == "unauthorized access"


def test_header_and_query_token_both_work(client: httpx.Client, emu: EmulatorHandle) -> None:
    by_header = client.get(V2_LIST, headers=auth(emu))
    by_query = client.get(V2_LIST, params={"api_token": emu.api_token})
    assert by_header.status_code == by_query.status_code == 200
    assert by_header.json() == by_query.json()
    assert by_header.json()["data"]


def test_v1_is_served_under_api_v1_too(client: httpx.Client, emu: EmulatorHandle) -> None:
    plain = client.get(V1_LIST, headers=auth(emu), params={"limit": 3})
    prefixed = client.get(f"/api{V1_LIST}", headers=auth(emu), params={"limit": 3})
    assert plain.status_code == prefixed.status_code == 200
    assert prefixed.json() == plain.json() and plain.json()["data"]
    assert emu.control.stats()["tokens_spent"] == 2 * cost(V1_LIST)
    assert client.get("/api/v1/no_such_thing", headers=auth(emu)).status_code == 404


def test_other_company_token_sees_a_different_company(client: httpx.Client, emu: EmulatorHandle) -> None:
    main = client.get(V2_LIST, headers=auth(emu)).json()["data"]
    other = client.get(V2_LIST, headers={"x-api-token": emu.settings.other_company_token})
    assert other.status_code == 200
    assert other.json()["data"] != main


# ---- OAuth -----------------------------------------------------------------------------------------------


def test_oauth_refresh_grant_and_bearer_use(client: httpx.Client, emu: EmulatorHandle) -> None:
    grant = oauth_grant(client)
    assert grant.status_code == 200
    body = grant.json()
    assert set(body) == {"access_token", "token_type", "refresh_token", "scope", "expires_in", "api_domain"}
    assert body["token_type"] == "Bearer" and body["expires_in"] == 3599
    assert body["api_domain"] == emu.base_url
    response = client.get(V2_LIST, headers={"Authorization": f"Bearer {body['access_token']}"})
    assert response.status_code == 200
    assert int(response.headers["x-ratelimit-limit"]) == emu.settings.oauth_burst_limit


def test_oauth_expired_token_gets_401_and_refresh_recovers(client: httpx.Client, emu: EmulatorHandle) -> None:
    token = oauth_grant(client).json()["access_token"]
    assert client.get(V1_LIST, headers={"Authorization": f"Bearer {token}"}).status_code == 200
    assert emu.control.expire_oauth() >= 1
    expired = client.get(V1_LIST, headers={"Authorization": f"Bearer {token}"})
    assert expired.status_code == 401
    assert expired.json()["error"] == "access token expired"
    assert 'error="invalid_token"' in expired.headers["www-authenticate"]
    # the token's own burst window under the OAuth limit (it showed the API token's), charged nothing;
    # x-daily-requests-left is documented for api_token requests only
    limit = emu.settings.oauth_burst_limit
    assert int(expired.headers["x-ratelimit-limit"]) == limit
    assert int(expired.headers["x-ratelimit-remaining"]) == limit - 1
    assert "x-daily-requests-left" not in expired.headers
    fresh = oauth_grant(client).json()["access_token"]
    assert client.get(V1_LIST, headers={"Authorization": f"Bearer {fresh}"}).status_code == 200


def test_oauth_token_lifetime_is_configurable(client: httpx.Client, emu: EmulatorHandle) -> None:
    emu.control.settings(oauth_expires_in=0)
    body = oauth_grant(client).json()
    assert body["expires_in"] == 0
    response = client.get(V2_LIST, headers={"Authorization": f"Bearer {body['access_token']}"})
    assert response.status_code == 401 and response.json()["error"] == "access token expired"


def test_oauth_rejects_bad_client_and_bad_refresh_token(client: httpx.Client) -> None:
    bad_client = oauth_grant(client, secret="nope")
    assert bad_client.status_code == 401 and bad_client.json()["error"] == "invalid_client"
    bad_grant = oauth_grant(client, refresh_token="nope")
    assert bad_grant.status_code == 400 and bad_grant.json()["error"] == "invalid_grant"
    bad_type = oauth_grant(client, grant_type="password")
    assert bad_type.status_code == 400 and bad_type.json()["error"] == "unsupported_grant_type"


def test_the_oauth_token_endpoint_answers_with_a_byte_order_mark_at_bom_rate(
    client: httpx.Client, emu: EmulatorHandle
) -> None:
    """As a proxy in front of it may; its refusals too, and none without `bom_rate`."""
    bom = b"\xef\xbb\xbf"
    assert not oauth_grant(client).content.startswith(bom)
    emu.control.settings(bom_rate=1.0)
    for grant, status in ((oauth_grant(client), 200), (oauth_grant(client, refresh_token="nope"), 400)):
        assert grant.status_code == status and grant.content.startswith(bom)
        assert json.loads(grant.content[3:])


# ---- rate limits -----------------------------------------------------------------------------------------


def test_rate_limit_headers_decrease_and_date_is_emulator_clock(
    client: httpx.Client, emu: EmulatorHandle
) -> None:
    responses = [client.get(V2_LIST, headers=auth(emu)) for _ in range(3)]
    limit = emu.settings.burst_limit
    assert [int(r.headers["x-ratelimit-limit"]) for r in responses] == [limit] * 3
    assert [int(r.headers["x-ratelimit-remaining"]) for r in responses] == [limit - 1, limit - 2, limit - 3]
    assert all(1 <= int(r.headers["x-ratelimit-reset"]) <= 2 for r in responses)
    daily = [int(r.headers["x-daily-ratelimit-token-remaining"]) for r in responses]
    budget = emu.settings.daily_budget
    assert daily == [budget - cost(V2_LIST) * n for n in (1, 2, 3)]
    served = parsedate_to_datetime(responses[-1].headers["date"])
    assert served == emu.company.now().astimezone(UTC).replace(microsecond=0)


def test_burst_limit_gives_429_with_burst_body(client: httpx.Client, emu: EmulatorHandle) -> None:
    emu.control.settings(burst_limit=3)
    statuses = [client.get(V2_LIST, headers=auth(emu)).status_code for _ in range(3)]
    refused = client.get(V2_LIST, headers=auth(emu))
    assert statuses == [200, 200, 200]
    assert refused.status_code == 429
    assert refused.json()["error"] == "Request over limit" and refused.json()["errorCode"] == 429
    assert refused.headers["x-ratelimit-remaining"] == "0"
    assert 1 <= int(refused.headers["retry-after"]) <= 2
    assert int(refused.headers["x-daily-ratelimit-token-remaining"]) > 0
    stats = emu.control.stats()
    assert stats["rate_limited"]["burst"] == 1 and stats["tokens_spent"] == 3 * cost(V2_LIST)


def test_daily_budget_gives_distinct_429(client: httpx.Client, emu: EmulatorHandle) -> None:
    emu.control.settings(daily_budget=2 * cost(V2_LIST))
    ok = [client.get(V2_LIST, headers=auth(emu)).status_code for _ in range(2)]
    refused = client.get(V2_LIST, headers=auth(emu))
    assert ok == [200, 200]
    assert refused.status_code == 429
    assert refused.json()["error"] == "Daily token budget exceeded"
    assert refused.headers["x-daily-ratelimit-token-remaining"] == "0"
    assert int(refused.headers["x-ratelimit-remaining"]) > 0  # not a burst refusal
    now = emu.company.now()
    midnight = datetime.combine(now.date() + timedelta(days=1), datetime.min.time(), now.tzinfo)
    assert int(refused.headers["retry-after"]) == int((midnight - now).total_seconds())
    assert emu.control.stats()["rate_limited"] == {"burst": 0, "daily": 1, "injected": 0}


def test_daily_budget_resets_each_period_and_at_emulator_midnight() -> None:
    ticks = iter([0.0, 1.0, 11.0, 11.5])
    limiter = RateLimiter(daily_budget=10, budget_period_s=10, clock=lambda: next(ticks))
    day = datetime(2026, 11, 1, 12, tzinfo=UTC)
    assert limiter.admit("t", 10, "c", day).allowed  # clock 1.0 (0.0 was the epoch)
    assert limiter.admit("t", 10, "c", day).allowed  # clock 11.0: the next period
    assert limiter.admit("t", 10, "c", day).kind == "daily"  # clock 11.5: same period, spent
    by_day = RateLimiter(daily_budget=10)
    assert by_day.admit("t", 10, "c", day).allowed
    assert by_day.admit("t", 10, "c", day).kind == "daily"
    assert by_day.admit("t", 10, "c", day + timedelta(days=1)).allowed


def test_token_accounting_matches_spec_costs(client: httpx.Client, emu: EmulatorHandle) -> None:
    paths = [V2_LIST, V2_LIST, "/api/v2/persons", "/api/v2/pipelines", V1_LIST, "/v1/users"]
    for path in paths:
        assert client.get(path, headers=auth(emu)).status_code == 200, path
    stats = emu.control.stats()
    assert stats["tokens_spent"] == sum(cost(p) for p in paths)
    assert stats["requests"][V2_LIST] == 2
    assert stats["tokens"][V2_LIST] == 2 * cost(V2_LIST)
    assert stats["statuses"] == {"200": len(paths)}


# ---- faults ----------------------------------------------------------------------------------------------


def test_error_faults_are_5xx(client: httpx.Client, emu: EmulatorHandle) -> None:
    emu.control.settings(error_rate=1.0)
    statuses = {client.get(V2_LIST, headers=auth(emu)).status_code for _ in range(12)}
    assert statuses <= {500, 502, 503} and len(statuses) >= 2
    assert emu.control.stats()["faults"]["error"] == 12


def test_throttle_faults_are_burst_like_429s(client: httpx.Client, emu: EmulatorHandle) -> None:
    emu.control.settings(throttle_rate=1.0)
    response = client.get(V2_LIST, headers=auth(emu))
    assert response.status_code == 429 and response.json()["error"] == "Request over limit"
    assert response.headers["x-ratelimit-remaining"] == "0" and "retry-after" in response.headers
    assert emu.control.stats()["rate_limited"]["injected"] == 1


def test_drop_faults_break_the_connection_mid_body(client: httpx.Client, emu: EmulatorHandle) -> None:
    emu.control.settings(drop_rate=1.0)
    with pytest.raises(httpx.RemoteProtocolError):
        client.get(V2_LIST, headers=auth(emu))
    emu.control.settings(drop_rate=0.0)
    assert client.get(V2_LIST, headers=auth(emu)).status_code == 200  # client reconnects


def test_malformed_faults_are_200_with_broken_json(client: httpx.Client, emu: EmulatorHandle) -> None:
    emu.control.settings(malformed_rate=1.0)
    response = client.get(V2_LIST, headers=auth(emu))
    assert response.status_code == 200
    with pytest.raises(json.JSONDecodeError):
        response.json()


def test_an_empty_path_answers_its_lists_without_items_or_a_next_page(
    client: httpx.Client, emu: EmulatorHandle
) -> None:
    """`empty_path`: a list that lost its content (a field list without a field), v2 and v1 alike; the other
    paths answer as usual."""
    for path, params in ((V2_LIST, {"limit": 2}), (V1_LIST, {"limit": 2})):
        emu.control.settings(empty_path=path)
        body = client.get(path, headers=auth(emu), params=params).json()
        extra = body["additional_data"]
        more = (extra.get("pagination") or extra).get("more_items_in_collection")  # v1
        assert body["success"] is True and body["data"] == []
        assert not extra.get("next_cursor") and not more
        assert client.get("/api/v2/persons", headers=auth(emu), params=params).json()["data"]
    emu.control.settings(empty_path="")
    assert client.get(V2_LIST, headers=auth(emu), params={"limit": 2}).json()["data"]


def test_a_marked_value_is_served_as_a_bare_json_literal(client: httpx.Client, emu: EmulatorHandle) -> None:
    """orjson renders every body and writes no `1e999` or `NaN`: a value marked `RAW_JSON` stands for one, in
    the lists (v2 and v1, a custom field's too); the snapshot keeps the marker."""
    deal = emu.control.snapshot("deals")[0]
    fields = emu.control.snapshot("deal_fields")
    code = next(f["field_code"] for f in fields if f["is_custom_field"] and f["field_type"] == "double")
    changes = {"value": RAW_JSON + "1e999", "custom_fields": {code: RAW_JSON + "NaN"}}
    emu.control.mutate(ops=[{"op": "update", "table": "deals", "id": deal["id"], "changes": changes}])
    try:
        body = client.get(V2_LIST, headers=auth(emu)).content
        assert b'"value":1e999' in body and f'"{code}":NaN'.encode() in body
        served = json.loads(body)["data"][0]
        assert (
            served["value"] == float("inf") and served["custom_fields"][code] != served["custom_fields"][code]
        )
        assert emu.control.snapshot("deals")[0]["value"] == RAW_JSON + "1e999"
    finally:
        restore = {"value": deal["value"], "custom_fields": {code: deal["custom_fields"][code]}}
        emu.control.mutate(ops=[{"op": "update", "table": "deals", "id": deal["id"], "changes": restore}])


@pytest.mark.parametrize(
    ("table", "path", "column"), [("persons", "/api/v2/persons", "name"), ("notes", "/v1/notes", "content")]
)
def test_a_marked_string_is_served_with_its_escapes_as_written(
    client: httpx.Client, emu: EmulatorHandle, table: str, path: str, column: str
) -> None:
    """A lone surrogate escape (`\\ud800`), which orjson neither reads nor writes, reaches the wire as a
    string literal with it, in v2 and v1 answers alike."""
    record = emu.control.snapshot(table)[0]
    literal = '"a\\ud800 \\"q\\" \\\\ud800 \\ud83d\\ude00"'
    changes = {column: RAW_JSON + literal}
    emu.control.mutate(ops=[{"op": "update", "table": table, "id": record["id"], "changes": changes}])
    try:
        body = client.get(path, params={"limit": 500}, headers=auth(emu)).content
        assert f'"{column}":{literal}'.encode() in body
        served = {r["id"]: r[column] for r in json.loads(body)["data"]}
        assert served[record["id"]] == 'a\ud800 "q" \\ud800 \U0001f600'
    finally:
        restore = {column: record[column]}
        emu.control.mutate(ops=[{"op": "update", "table": table, "id": record["id"], "changes": restore}])


def test_a_share_of_answers_starts_with_a_byte_order_mark(client: httpx.Client, emu: EmulatorHandle) -> None:
    """As some proxies and gateways add; drawn without a draw of its own: the faults stay as seeded."""
    bom = b"\xef\xbb\xbf"
    emu.control.settings(bom_rate=1.0)
    for path in (V2_LIST, V1_LIST, "/v1/leadLabels"):
        body = client.get(path, headers=auth(emu)).content
        assert body.startswith(bom) and json.loads(body[3:])["success"] is True
    runs = []
    for rate in (0.0, 0.5):
        emu.control.settings(fault_seed=1234, error_rate=0.3, bom_rate=rate)
        answers = [client.get(V2_LIST, headers=auth(emu)) for _ in range(30)]
        runs.append([(a.status_code, a.content.startswith(bom)) for a in answers])
    assert [status for status, _ in runs[0]] == [status for status, _ in runs[1]]
    assert not any(has for _, has in runs[0])
    assert {has for status, has in runs[1] if status == 200} == {True, False}
    assert not any(has for status, has in runs[1] if status >= 500)


def outcome(client: httpx.Client, emu: EmulatorHandle) -> str:
    try:
        response = client.get(V2_LIST, headers=auth(emu))
    except httpx.RemoteProtocolError:
        return "drop"
    try:
        response.json()
    except json.JSONDecodeError:
        return f"{response.status_code}-broken"
    return str(response.status_code)


def test_fault_sequence_is_deterministic_under_a_seed(client: httpx.Client, emu: EmulatorHandle) -> None:
    rates = {"error_rate": 0.2, "throttle_rate": 0.2, "drop_rate": 0.1, "malformed_rate": 0.2}
    runs = []
    for _ in range(2):
        emu.control.settings(fault_seed=1234, **rates)
        runs.append([outcome(client, emu) for _ in range(40)])
    assert runs[0] == runs[1]
    assert {"200", "429", "drop", "200-broken"} <= set(runs[0])
    emu.control.settings(fault_seed=99)
    assert [outcome(client, emu) for _ in range(40)] != runs[0]


def test_faults_in_a_row_are_capped_per_request(client: httpx.Client, emu: EmulatorHandle) -> None:
    emu.control.settings(error_rate=1.0, max_in_a_row=2)
    other = f"{V2_LIST}?limit=7"
    seen = []
    for path in (V2_LIST, other, V2_LIST, other, V2_LIST, other, V2_LIST):
        seen.append(client.get(path, headers=auth(emu)).status_code >= 500)
    # each request on its own: two faults, then a normal answer, then faults again
    assert seen == [True, True, True, True, False, False, True]
    emu.control.settings(max_in_a_row=0)  # no cap: a fault that persists
    assert all(client.get(V2_LIST, headers=auth(emu)).status_code >= 500 for _ in range(4))


def test_latency_is_applied(client: httpx.Client, emu: EmulatorHandle) -> None:
    emu.control.settings(latency_ms=250, jitter_ms=50)
    started = time.perf_counter()
    assert client.get(V2_LIST, headers=auth(emu)).status_code == 200
    assert 0.25 <= time.perf_counter() - started < 5
    emu.control.settings(burst_limit=1)  # a 429 takes the way there and the way back too
    started = time.perf_counter()
    assert client.get(V2_LIST, headers=auth(emu)).status_code == 429
    assert 0.25 <= time.perf_counter() - started < 5


# ---- control API -----------------------------------------------------------------------------------------


def test_control_endpoints(emu: EmulatorHandle) -> None:
    control = emu.control
    counts = control.counts()
    assert counts["deals"] > 0
    assert len(control.snapshot("deals")) >= counts["deals"]
    with pytest.raises(EmulatorControlError, match="404"):
        control.snapshot("no_such_table")
    with pytest.raises(EmulatorControlError, match="400"):
        control.settings(no_such_setting=1)
    assert control.snapshot("persons") == emu.company.snapshot("persons")
    before = emu.company.now()
    control.mutate(seed=1, creates=3, updates=3, deletes=1)
    assert emu.company.now() > before
    assert control.settings(burst_limit=7)["burst_limit"] == 7
    assert "api_token" not in control.settings()


# ---- plan and permissions: 402 / 403 ---------------------------------------------------------------------


def plan_bound_lists() -> list[spec.Operation]:
    """GET lists the spec says are "Only available in <plan> and above plans" (derive_spec reads it)."""
    ops = [o for o in spec.operations() if o.method == "GET" and o.plan and "{" not in o.path]
    assert "/api/v2/deals/installments" in {o.path for o in ops}, "the seed spec restricts installments"
    return ops


def test_a_plan_below_the_one_the_spec_names_gets_402(client: httpx.Client, emu: EmulatorHandle) -> None:
    deal_id = client.get(V2_LIST, headers=auth(emu)).json()["data"][0]["id"]
    for op in plan_bound_lists():
        emu.control.settings(plan="lite")
        refused = client.get(op.path, params={"deal_ids": deal_id}, headers=auth(emu))
        assert refused.status_code == 402, (op.path, refused.text)
        body = refused.json()
        assert body == {
            "success": False,
            "error": f"Only available in {op.plan.capitalize()} and above plans",
            "error_info": ERROR_INFO,
            "data": None,
            "additional_data": None,
        }
        emu.control.settings(plan=op.plan)
        assert client.get(op.path, params={"deal_ids": deal_id}, headers=auth(emu)).status_code == 200
    with pytest.raises(EmulatorControlError, match="400"):
        emu.control.settings(plan="gold")


def test_a_lapsed_subscription_gets_402_everywhere(client: httpx.Client, emu: EmulatorHandle) -> None:
    emu.control.settings(lapsed=True)
    try:
        for path in ("/v1/users/me", V2_LIST, "/v1/leads"):
            refused = client.get(path, headers=auth(emu))
            assert refused.status_code == 402, (path, refused.text)
            assert refused.json()["success"] is False and "subscription" in refused.json()["error"]
    finally:
        emu.control.settings(lapsed=False)
    assert client.get("/v1/users/me", headers=auth(emu)).status_code == 200


def test_forbidden_paths_get_the_specs_403(client: httpx.Client, emu: EmulatorHandle) -> None:
    """The v1 spec's 403 body (callLogResponse403): success false, error, error_info, null data."""
    emu.control.settings(forbidden="/v1/users/me, /api/v2/deals/{id}")
    me = client.get("/v1/users/me", headers=auth(emu))
    assert me.status_code == 403
    assert me.json() == {
        "success": False,
        "error": "You don't have permission to access the resource.",
        "error_info": ERROR_INFO,
        "data": None,
        "additional_data": None,
    }
    assert client.get("/api/v2/deals/1", headers=auth(emu)).status_code == 403
    assert client.get(V2_LIST, headers=auth(emu)).status_code == 200  # other paths unaffected


# ---- server / CLI ----------------------------------------------------------------------------------------


def test_process_mode_runs_the_cli_on_a_free_port() -> None:
    with run_emulator(scale="tiny", api_token="cli-token", mode="process", burst_limit=7) as emu:
        assert emu.base_url.startswith("http://127.0.0.1:") and not emu.base_url.endswith(":0")
        assert emu.control.settings()["burst_limit"] == 7
        response = httpx.get(f"{emu.base_url}{V2_LIST}", headers={"x-api-token": "cli-token"})
        assert response.status_code == 200 and response.headers["x-ratelimit-limit"] == "7"
    assert emu.process is not None and emu.process.returncode == 0  # SIGTERM stops it cleanly


def test_cli_prints_its_url() -> None:
    cmd = [sys.executable, "-m", "pipedrive_source.emulator", "--port", "0", "--scale", "tiny"]
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True, env=env)
    try:
        line = proc.stdout.readline()
        assert "http://127.0.0.1:" in line
        url = line.split()[-1]
        assert httpx.get(f"{url}/_emulator/health").json()["ok"] is True
    finally:
        proc.terminate()
        assert proc.wait(timeout=30) == 0
        proc.stdout.close()


def test_cli_boolean_flags_parse_false() -> None:
    from pipedrive_source.emulator.__main__ import parse_args

    assert parse_args(["--prerender", "false"])[1].prerender is False
    assert parse_args([])[1].prerender is True
    with pytest.raises(SystemExit):
        parse_args(["--prerender", "maybe"])


def test_thread_mode_leaves_the_host_gc_alone_and_duckdb_exits_quietly() -> None:
    """Thread mode shares the process with the connector and duckdb: it must not gc.freeze() their objects
    (duckdb's nanobind then reports leaked instances at exit)."""
    script = (
        "import gc, duckdb\n"
        "from pipedrive_source.emulator import run_emulator\n"
        "con = duckdb.connect()\n"
        "con.execute('create table t as select 1 as a')\n"
        "with run_emulator(scale='tiny') as emu:\n"
        "    assert emu.company.t['deals'].cached('v2', 1) is not None  # prerendered\n"
        "assert gc.get_freeze_count() == 0, gc.get_freeze_count()\n"
        "print(con.execute('select a from t').fetchone()[0])\n"
    )
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "1"
    assert "leak" not in proc.stderr.lower(), proc.stderr


def test_a_process_emulator_stops_when_the_process_that_started_it_is_killed() -> None:
    """A killed parent never runs its `finally`: the emulator served on for ever (a --demo stopped by SIGTERM
    left one of 190 MB). It notices its parent is gone and stops."""
    script = (
        "import sys\n"
        "from pipedrive_source.emulator import run_emulator\n"
        "with run_emulator(scale='tiny', mode='process') as emu:\n"
        "    print(emu.process.pid, flush=True)\n"
        "    sys.stdin.read()\n"
    )
    parent = subprocess.Popen(
        [sys.executable, "-c", script], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    assert parent.stdout is not None
    child = int(parent.stdout.readline())
    exited = os.pidfd_open(child)  # readable once the emulator process has exited
    try:
        parent.kill()
        parent.wait(timeout=30)
        readable, _, _ = select.select([exited], [], [], 30)
        assert readable, f"the emulator (pid {child}) still serves 30 s after its parent was killed"
    finally:
        os.close(exited)
        if parent.stdin:
            parent.stdin.close()
