"""The connector's HTTP behaviour against the emulator: OAuth refresh mid-run on `api_domain`, retries on
5xx / dropped connections / malformed bodies, 429 waits, another destination, and no token in the logs."""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import dlt
import duckdb
import pytest
from connector_fixtures import assert_equal_to_truth, make_pipeline, sync, synced_rows

from pipedrive_source import FIELDS_TABLES, ApiError, AuthError, PipedriveOAuthCredentials, pipedrive_source
from pipedrive_source.client import PipedriveClient, abort_requests
from pipedrive_source.concurrency import DEFAULT_WORKERS
from pipedrive_source.entities import BY_NAME
from pipedrive_source.errors import AccessDenied, Interrupted, PipedriveError, causes
from pipedrive_source.limiter import NoLimiter, PlanLimiter
from pipedrive_source.oauth import ApiTokenAuth
from pipedrive_source.run import SyncContext, SyncMonitor

TABLES = ["deals", "persons", "organizations", "users", "notes", "leads", "deal_products"]


def oauth_credentials(emulator, **overrides: str) -> PipedriveOAuthCredentials:
    credentials = PipedriveOAuthCredentials()
    credentials.client_id = emulator.settings.oauth_client_id
    credentials.client_secret = emulator.settings.oauth_client_secret
    credentials.refresh_token = emulator.settings.oauth_refresh_token
    credentials.token_url = f"{emulator.base_url}/oauth/token"
    for name, value in overrides.items():
        setattr(credentials, name, value)
    return credentials


@pytest.mark.parametrize("bom_rate", [0.0, 1.0], ids=["plain", "byte order mark"])
def test_oauth_refreshes_when_the_access_token_expires_mid_run(
    clean_emulator, tmp_path: Path, bom_rate: float
) -> None:
    """A proxy's byte order mark before the token endpoint's answer (and every other) failed the run at its
    first refresh: "Pipedrive refused to refresh the OAuth access token (HTTP 200)"."""
    clean_emulator.control.settings(bom_rate=bom_rate)
    pages = []

    once = threading.Lock()  # hooks run in the fetch threads

    def expire_after_first_page(entity, rows, ctx):
        with once:
            pages.append(entity.name)
            if len(pages) == 2:
                assert clean_emulator.control.expire_oauth() == 1  # the token the run is using
        return rows

    # base_url points nowhere: the run must continue on the api_domain the token endpoint returns
    result = sync(
        clean_emulator,
        tmp_path,
        api_token=None,
        base_url="http://127.0.0.1:9",
        oauth=oauth_credentials(clean_emulator),
        entities=TABLES,
        record_hooks=[expire_after_first_page],
    )
    statuses = result.emulator_stats["statuses"]
    # the requests in flight when it expired saw the expired token; each was retried after a refresh
    assert 1 <= statuses.get("401", 0) <= DEFAULT_WORKERS
    assert_equal_to_truth(clean_emulator, tmp_path, TABLES)


def test_oauth_from_dlt_config_and_a_bad_refresh_token(clean_emulator, tmp_path: Path, monkeypatch) -> None:
    prefix = "SOURCES__PIPEDRIVE__OAUTH__"
    monkeypatch.setenv(prefix + "CLIENT_ID", clean_emulator.settings.oauth_client_id)
    monkeypatch.setenv(prefix + "CLIENT_SECRET", clean_emulator.settings.oauth_client_secret)
    monkeypatch.setenv(prefix + "REFRESH_TOKEN", clean_emulator.settings.oauth_refresh_token)
    monkeypatch.setenv(prefix + "TOKEN_URL", f"{clean_emulator.base_url}/oauth/token")
    result = sync(clean_emulator, tmp_path, api_token=None, base_url="http://127.0.0.1:9", entities=["users"])
    assert result.loaded["users"] > 0

    monkeypatch.setenv(prefix + "REFRESH_TOKEN", "not-the-refresh-token")
    with pytest.raises(Exception) as failure:
        sync(
            clean_emulator, tmp_path / "2", api_token=None, base_url="http://127.0.0.1:9", entities=["users"]
        )
    assert _root(failure.value, AuthError)
    assert "invalid_grant" in str(_root(failure.value, AuthError))


def test_a_failing_oauth_token_endpoint_is_retried_not_blamed_on_the_refresh_token(
    clean_emulator, tmp_path: Path
) -> None:
    """A 5xx of the token endpoint ended the run at once with exit 2 and 'Pipedrive refused to refresh the
    OAuth access token (HTTP 503). Check refresh_token ...', mid-run too: nothing was wrong with it."""
    # every request fails twice, then is answered: the token grant (at the start and after the expiry) too
    clean_emulator.control.settings(error_rate=1.0, max_in_a_row=2)
    expired: list[int] = []
    once = threading.Lock()  # hooks run in the fetch threads: two first pages at once expired twice

    def expire_once(entity, rows, ctx):
        with once:
            if not expired:
                expired.append(clean_emulator.control.expire_oauth())
        return rows

    oauth = oauth_credentials(clean_emulator)
    result = sync(
        clean_emulator, tmp_path, api_token=None, oauth=oauth, entities=TABLES, record_hooks=[expire_once]
    )
    assert expired[0] >= 1 and result.emulator_stats["statuses"].get("401", 0) >= 1  # refreshed mid-run
    assert_equal_to_truth(clean_emulator, tmp_path, TABLES)

    clean_emulator.control.settings(max_in_a_row=0)  # down for good: a failure that says so
    with pytest.raises(Exception) as failure:
        sync(clean_emulator, tmp_path / "2", api_token=None, oauth=oauth, entities=["users"], max_attempts=3)
    message = str(_root(failure.value, ApiError))
    assert "OAuth token endpoint kept failing after 3 attempts (last: HTTP 5" in message
    assert not any(isinstance(cause, AuthError) for cause in causes(failure.value))


def test_transient_faults_are_retried_and_the_result_is_still_exact(clean_emulator, tmp_path: Path) -> None:
    clean_emulator.control.settings(error_rate=0.15, drop_rate=0.05, malformed_rate=0.05, throttle_rate=0.05)
    result = sync(clean_emulator, tmp_path, entities=TABLES)
    faults = result.emulator_stats["faults"]
    assert sum(faults.values()) > 0, faults
    assert result.monitor.client_stats.retries > 0
    clean_emulator.control.settings(error_rate=0, drop_rate=0, malformed_rate=0, throttle_rate=0)
    assert_equal_to_truth(clean_emulator, tmp_path, TABLES)


def test_a_persistent_failure_ends_the_run_without_advancing_state(clean_emulator, tmp_path: Path) -> None:
    first = sync(clean_emulator, tmp_path, entities=["deals"])
    state_before = first.pipeline.state["sources"]
    clean_emulator.control.mutate(seed=21, updates=10)
    clean_emulator.control.settings(error_rate=1.0)
    with pytest.raises(Exception) as failure:
        sync(clean_emulator, tmp_path, entities=["deals"], max_attempts=3)
    assert "kept failing" in str(_root(failure.value, ApiError))
    clean_emulator.control.settings(error_rate=0)
    assert make_pipeline(tmp_path).state["sources"] == state_before
    sync(clean_emulator, tmp_path, entities=["deals"])
    assert_equal_to_truth(clean_emulator, tmp_path, ["deals"])


def test_429_waits_for_the_reset_and_completes(clean_emulator, tmp_path: Path) -> None:
    clean_emulator.control.settings(burst_limit=8)
    lists = ["deals", "persons", "users", "filters", "roles", "currencies", "activity_types", "lead_labels"]
    # without pacing (the default limiter never meets a 429 here): the client's own wait is tested
    result = sync(clean_emulator, tmp_path, entities=lists + list(FIELDS_TABLES), limiter=NoLimiter())
    assert result.monitor.client_stats.rate_limit_waits > 0
    assert result.emulator_stats["rate_limited"]["burst"] > 0
    assert_equal_to_truth(clean_emulator, tmp_path, ["deals", "persons", "users"])


@pytest.mark.parametrize("bom_rate", [0.0, 1.0], ids=["plain", "byte order mark"])
def test_plan_and_permission_refusals_skip_their_table_and_say_what_to_do(
    clean_emulator, tmp_path: Path, bom_rate: float
) -> None:
    """Installments below the Growth plan (402) and a list the user may not read (403) are skipped, each with
    a message naming the cause and the remedy; the rest of the run loads as usual. Pipedrive's own words
    are kept when a gateway puts a byte order mark before every body (the message had "HTTP 402" only)."""
    clean_emulator.control.settings(plan="lite", forbidden="/api/v2/persons", bom_rate=bom_rate)
    result = sync(clean_emulator, tmp_path, entities=["deals", "deal_installments", "persons"])
    skipped = {name: p.skipped for name, p in result.monitor.entities.items() if p.skipped}
    assert set(skipped) == {"deal_installments", "persons"}, skipped
    plan, permission = skipped["deal_installments"], skipped["persons"]
    assert "HTTP 402" in plan and "Only available in Growth and above plans" in plan, plan
    assert "Upgrade the plan" in plan and "out of `entities`" in plan, plan
    assert "HTTP 403" in permission and "lacks the permission" in permission, permission
    assert "API token of a user who has it" in permission and "out of `entities`" in permission, permission
    clean_emulator.control.settings(plan="ultimate", forbidden="")
    assert_equal_to_truth(clean_emulator, tmp_path, ["deals"])


def test_refused_field_definitions_skip_their_entity_as_a_refused_table(
    clean_emulator, tmp_path: Path
) -> None:
    """The deal fields refused failed the whole run with the refusal's text (exit 1 in the script):
    `custom_fields` could not describe deals. The entities whose custom fields go unnamed (deals, and
    leads, which inherit them) are skipped with the refusal and what it is needed for; no column named by
    a hash is loaded, the other tables load, the list is asked for once, and the next run with it loads
    the skipped tables."""
    tables = ["deals", "leads", "persons"]
    refused = "/api/v2/dealFields"
    clean_emulator.control.settings(forbidden=refused)
    try:
        result = sync(clean_emulator, tmp_path, entities=tables)
    finally:
        clean_emulator.control.settings(forbidden="")
    skipped = {name: p.skipped for name, p in result.monitor.entities.items() if p.skipped}
    assert set(skipped) == {"deals", "leads"}, skipped
    for message in skipped.values():
        assert f"are refused: {refused}: the user of these credentials lacks the permission" in message
    assert result.emulator_stats["requests"][refused] == 1
    assert not set(skipped) & set(result.loaded)
    described = {row["entity"] for row in synced_rows(result.pipeline, "custom_fields")}
    assert described == set(tables) - set(skipped)
    assert_equal_to_truth(clean_emulator, tmp_path, sorted(set(tables) - set(skipped)))
    sync(clean_emulator, tmp_path, entities=tables)
    assert_equal_to_truth(clean_emulator, tmp_path, tables)


def test_refused_lead_fields_read_the_leads_with_the_deal_fields_as_a_failure_does(
    clean_emulator, tmp_path: Path, caplog
) -> None:
    """`/v1/leadFields` (not in the v1 spec) refused skipped the leads, though any other failure of it read
    them with the deal fields, which name every custom field leads have. Refused, the leads load too, with
    one warning line; the lead_fields table alone is skipped, and the list is asked for once. The leads'
    own option field (visible_to) goes unlabelled then: the next run that reads the lead fields reads every
    lead again, so that no lead keeps its label empty."""
    tables = ["deals", "leads", "lead_fields"]
    sync(clean_emulator, tmp_path, entities=tables)
    edited = [lead["id"] for lead in clean_emulator.control.snapshot("leads")[:2]]
    edits = [{"op": "update", "table": "leads", "id": i, "changes": {"title": "Edited"}} for i in edited]
    # a minute on: the next run's cursor moves past them, they are not read again by the run after it
    clean_emulator.control.mutate(ops=[*edits, {"op": "advance_clock", "seconds": 120}])
    clean_emulator.control.settings(forbidden="/v1/leadFields")  # no plan lacks it: 403 only
    try:
        with caplog.at_level(logging.WARNING, logger="pipedrive_source"):
            result = sync(clean_emulator, tmp_path, entities=tables)
    finally:
        clean_emulator.control.settings(forbidden="")
    skipped = {name for name, p in result.monitor.entities.items() if p.skipped}
    assert skipped == {"lead_fields"}
    assert result.loaded["leads"] == len(edited)
    assert result.emulator_stats["requests"]["/v1/leadFields"] == 1
    lines = [r.getMessage() for r in caplog.records if r.getMessage().startswith("leads:")]
    assert len(lines) == 1 and "(HTTP 403: " in lines[0] and "named by deal_fields" in lines[0], lines
    described = {row["entity"] for row in synced_rows(result.pipeline, "custom_fields")}
    assert described == {"deals", "leads"}
    assert_equal_to_truth(clean_emulator, tmp_path, ["deals"])

    unlabelled = {r["id"] for r in synced_rows(result.pipeline, "leads") if not r.get("visible_to_label")}
    assert unlabelled == set(edited)
    again = sync(clean_emulator, tmp_path, entities=tables)
    assert again.loaded["leads"] == len(clean_emulator.control.snapshot("leads"))
    assert all(row["visible_to_label"] for row in synced_rows(again.pipeline, "leads"))
    assert_equal_to_truth(clean_emulator, tmp_path, tables)


def test_lead_fields_refused_in_a_first_run_are_filled_in_by_the_first_run_that_reads_them(
    clean_emulator, tmp_path: Path
) -> None:
    """The leads' visible_to was marked unlabelled only where an earlier run had labelled it: refused in
    a pipeline's first run, the lead fields' first readable run read no lead again, and every lead kept
    visible_to_label empty until it changed. That run now reads every lead again, and the next none."""
    tables = ["deals", "leads"]
    clean_emulator.control.settings(forbidden="/v1/leadFields")
    try:
        first = sync(clean_emulator, tmp_path, entities=tables)
    finally:
        clean_emulator.control.settings(forbidden="")
    leads = clean_emulator.control.snapshot("leads")
    assert first.loaded["leads"] == len(leads)
    assert not any(row.get("visible_to_label") for row in synced_rows(first.pipeline, "leads"))
    again = sync(clean_emulator, tmp_path, entities=tables)
    assert again.loaded["leads"] == len(leads)
    assert all(row["visible_to_label"] for row in synced_rows(again.pipeline, "leads"))
    assert "leads" not in sync(clean_emulator, tmp_path, entities=tables).loaded


def test_refused_lead_labels_load_the_leads_unlabelled_until_a_run_reads_them(
    clean_emulator, tmp_path: Path, caplog
) -> None:
    """`/v1/leadLabels` refused skipped the whole leads table, though the labels name no column: they only
    label `label_ids`. The leads load now, `label_ids` as always and no `labels`, with one warning line;
    only lead_labels is skipped. In a first run too, the rows are marked unlabelled: the first run that
    reads the labels reads every lead again and labels them, and the run after it reads no lead."""
    tables = ["deals", "leads", "lead_labels"]
    clean_emulator.control.settings(forbidden="/v1/leadLabels")  # a user without the permission
    try:
        with caplog.at_level(logging.WARNING, logger="pipedrive_source"):
            result = sync(clean_emulator, tmp_path, entities=tables)
    finally:
        clean_emulator.control.settings(forbidden="")
    leads = clean_emulator.control.snapshot("leads")
    assert {name for name, p in result.monitor.entities.items() if p.skipped} == {"lead_labels"}
    assert result.loaded["leads"] == len(leads)
    assert result.emulator_stats["requests"]["/v1/leadLabels"] == 1
    lines = [r.getMessage() for r in caplog.records if r.getMessage().startswith("leads:")]
    assert len(lines) == 1 and "(HTTP 403: " in lines[0] and "no labels" in lines[0], lines
    assert not _lead_labels(result.pipeline)
    assert_equal_to_truth(clean_emulator, tmp_path, ["deals", "leads"])

    again = sync(clean_emulator, tmp_path, entities=tables)
    assert again.loaded["leads"] == len(leads)
    names = {label["id"]: label["name"] for label in clean_emulator.control.snapshot("lead_labels")}
    want = {lead["id"]: [names[i] for i in lead["label_ids"]] for lead in leads if lead["label_ids"]}
    assert want and _lead_labels(again.pipeline) == want
    assert_equal_to_truth(clean_emulator, tmp_path, tables)
    assert "leads" not in sync(clean_emulator, tmp_path, entities=tables).loaded


def _lead_labels(pipeline: dlt.Pipeline) -> dict[str, list[str]]:
    """The `labels` of each lead, in order ({} where the child table does not exist yet)."""
    if "leads__labels" not in pipeline.default_schema.data_table_names():
        return {}
    query = (
        "SELECT p.id, c.value FROM leads__labels c JOIN leads p ON c._dlt_parent_id = p._dlt_id "
        "ORDER BY p.id, c._dlt_list_idx"
    )
    labels: dict[str, list[str]] = {}
    with pipeline.sql_client() as client, client.execute_query(query) as cursor:
        for lead, label in cursor.fetchall():
            labels.setdefault(lead, []).append(label)
    return labels


def test_a_list_refused_in_a_run_is_not_asked_for_again_when_read_again(clean_emulator) -> None:
    """A refused list is asked for once a run; read again (`fresh`: the field definitions, for an option a
    record holds that they lack, as the leads' fallback to the deal fields does) it was asked again."""
    client = PipedriveClient(clean_emulator.base_url, ApiTokenAuth(clean_emulator.api_token))
    ctx = SyncContext(client, SyncMonitor(), None, 500, (), None)
    clean_emulator.control.settings(forbidden="/v1/leadFields")
    try:
        for fresh in (False, True, True):
            with pytest.raises(AccessDenied):
                ctx.full_rows(BY_NAME["lead_fields"], fresh=fresh)
    finally:
        clean_emulator.control.settings(forbidden="")
    assert clean_emulator.control.stats()["requests"]["/v1/leadFields"] == 1


def test_a_list_failing_after_every_retry_is_asked_for_once_a_run(clean_emulator, tmp_path: Path) -> None:
    """The prefetch of the field definitions swallowed a failure other than a refusal without remembering
    it: the resolution asked again and paid every retry a second time (a read again, `fresh`, a third).
    Now the run falls back (the leads, on the deal fields) or fails after one round of retries."""
    attempts = 3
    try:
        clean_emulator.control.settings(down_path="/v1/leadFields")
        sync(clean_emulator, tmp_path / "leads", entities=["deals", "leads"], max_attempts=attempts)
        assert clean_emulator.control.stats()["requests"]["/v1/leadFields"] == attempts
        clean_emulator.control.settings(down_path="/api/v2/dealFields")
        with pytest.raises(Exception) as failure:
            sync(clean_emulator, tmp_path / "deals", entities=["deals"], max_attempts=attempts)
        assert "kept failing" in str(_root(failure.value, ApiError))
        assert clean_emulator.control.stats()["requests"]["/api/v2/dealFields"] == attempts
    finally:
        clean_emulator.control.settings(down_path="")


def test_a_field_list_without_a_field_is_retried_then_handled_as_one_that_failed(
    clean_emulator, tmp_path: Path, caplog
) -> None:
    """A field list answered 200 with no field at all (not even the built-in ones every company has) was
    trusted: the deals' custom fields loaded under their 40-character hash names, renamed once the
    definitions came back. It is retried as a 5xx is, then handled as a list that failed: the deals' run
    fails, the leads go on with the deal fields (without their own, as when /v1/leadFields fails)."""
    attempts = 3
    try:
        clean_emulator.control.settings(empty_path="/api/v2/dealFields")
        with pytest.raises(Exception) as failure:
            sync(clean_emulator, tmp_path / "deals", entities=["deals"], max_attempts=attempts)
        message = str(_root(failure.value, ApiError))
        assert "kept failing on /api/v2/dealFields" in message and "without a single field" in message
        assert clean_emulator.control.stats()["requests"]["/api/v2/dealFields"] == attempts
        clean_emulator.control.settings(empty_path="/v1/leadFields")
        with caplog.at_level(logging.WARNING, logger="pipedrive_source"):
            result = sync(
                clean_emulator, tmp_path / "leads", entities=["deals", "leads"], max_attempts=attempts
            )
    finally:
        clean_emulator.control.settings(empty_path="")
    assert result.emulator_stats["requests"]["/v1/leadFields"] == attempts
    assert result.loaded["leads"] == len(clean_emulator.control.snapshot("leads"))
    lines = [r.getMessage() for r in caplog.records if r.getMessage().startswith("leads:")]
    assert len(lines) == 1 and "without a single field" in lines[0] and "named by deal_fields" in lines[0]
    assert_equal_to_truth(clean_emulator, tmp_path / "leads", ["deals", "leads"])


def test_installments_refused_below_growth_arrive_in_full_once_the_plan_has_them(
    clean_emulator, tmp_path: Path
) -> None:
    """Below Growth, installments are refused run after run at the cost of one request, deals read only as
    far as they changed. After the upgrade the next run loads every deal's installments (not only those
    of deals changed since), and the run after it is incremental again."""
    tables = ["deals", "deal_products", "deal_installments"]
    clean_emulator.control.settings(plan="lite")
    pipeline = make_pipeline(tmp_path)
    first = sync(clean_emulator, tmp_path, pipeline=pipeline, entities=tables)
    assert "HTTP 402" in (first.monitor.entities["deal_installments"].skipped or "")
    deal_id = min(row["id"] for row in clean_emulator.control.snapshot("deals"))
    clean_emulator.control.mutate(ops=[{"op": "update", "table": "deals", "id": deal_id, "changes": {}}])

    still = sync(clean_emulator, tmp_path, pipeline=pipeline, entities=tables)
    assert "HTTP 402" in (still.monitor.entities["deal_installments"].skipped or "")
    assert still.monitor.client_stats.by_label["deal_installments"].requests == 1  # as the refused read's
    assert still.monitor.entities["deals"].rows < first.monitor.entities["deals"].rows / 2  # not re-read

    clean_emulator.control.settings(plan="ultimate")
    upgraded = sync(clean_emulator, tmp_path, pipeline=pipeline, entities=tables)
    assert not upgraded.monitor.progress("deal_installments").skipped
    assert_equal_to_truth(clean_emulator, tmp_path, tables)
    after = sync(clean_emulator, tmp_path, pipeline=pipeline, entities=tables)
    assert after.monitor.entities["deals"].rows < first.monitor.entities["deals"].rows / 2


def test_filesystem_destination_with_parquet(emulator, tmp_path: Path) -> None:
    bucket = tmp_path / "lake"
    pipeline = make_pipeline(tmp_path, destination=dlt.destinations.filesystem(bucket_url=bucket.as_uri()))
    result = sync(emulator, tmp_path, pipeline=pipeline, entities=["deals", "persons", "users", "currencies"])
    assert result.loaded["deals"] > 0
    files = list(bucket.rglob("*.parquet"))
    assert {f.parent.name for f in files} >= {"deals", "persons", "persons__emails", "users", "currencies"}
    deal_ids = duckdb.sql(
        f"SELECT DISTINCT id FROM read_parquet('{bucket}/pipedrive/deals/*.parquet')"
    ).fetchall()
    assert {r[0] for r in deal_ids} == {d["id"] for d in emulator.control.snapshot("deals")}
    again = sync(emulator, tmp_path, pipeline=pipeline, entities=["deals", "persons", "users", "currencies"])
    assert again.loaded == {}


def test_no_token_in_logs_even_at_debug(clean_emulator, tmp_path: Path, caplog) -> None:
    caplog.set_level(logging.DEBUG)
    clean_emulator.control.settings(error_rate=0.2)
    sync(clean_emulator, tmp_path, entities=["deals", "users"])
    clean_emulator.control.settings(error_rate=0)
    with pytest.raises(Exception) as failure:
        sync(clean_emulator, tmp_path / "2", api_token="wrong-token-for-logs", entities=["users"])
    assert _root(failure.value, AuthError)
    text = caplog.text + "".join(str(r.args) for r in caplog.records)
    assert "retrying" in caplog.text  # retries are logged...
    assert clean_emulator.api_token not in text and "wrong-token-for-logs" not in text  # ...without secrets


def test_source_iterates_without_a_pipeline(emulator, tmp_path: Path) -> None:
    """Sanity: the resources are plain dlt resources (e.g. `list(source.with_resources("users"))`)."""
    # iterating outside `run` uses the active pipeline's state: make it a fresh one, not an earlier test's
    dlt.pipeline(pipeline_name="iterate", pipelines_dir=str(tmp_path))
    source = pipedrive_source(api_token=emulator.api_token, base_url=emulator.base_url, entities=["users"])
    rows = list(source.with_resources("users"))
    assert len(rows) == len(emulator.control.snapshot("users"))


def _root(exc: BaseException, kind: type[BaseException]) -> BaseException | None:
    seen = set()
    found = None
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        if isinstance(exc, kind):
            found = exc
        exc = exc.__cause__ or exc.__context__
    return found


def test_an_interrupted_run_ends_requests_still_retrying_at_once() -> None:
    """A fetch thread retrying a server that is gone (the demo's emulator stopped with the interrupted run)
    went on through its backoff, about 12 s of warnings after the run's last line, holding the exit."""
    with socket.socket() as probe:  # a port nothing listens on: every attempt is refused
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    client = PipedriveClient(f"http://127.0.0.1:{port}", ApiTokenAuth("token"))
    retrying, outcome = threading.Event(), []

    class FirstRetry(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            if record.getMessage().startswith("retrying") and "(attempt 4)" in record.getMessage():
                retrying.set()  # its backoff is the longest yet, about 3.4 s

    def get() -> None:
        try:
            client.get("/v1/users", cost=1, label="users")
        except PipedriveError as exc:
            outcome.append(exc)

    handler = FirstRetry()
    logging.getLogger("pipedrive_source").addHandler(handler)
    try:
        fetch = threading.Thread(target=get)
        fetch.start()
        assert retrying.wait(30)
        abort_requests()
        fetch.join(timeout=1)  # not the rest of the backoff: the wait ends with the abort
    finally:
        logging.getLogger("pipedrive_source").removeHandler(handler)
    assert not fetch.is_alive()
    assert [type(exc) for exc in outcome] == [Interrupted]


def test_oauth_set_in_part_names_what_it_lacks(clean_emulator, tmp_path: Path, monkeypatch) -> None:
    """OAuth given without its refresh token (and no API token) read "No Pipedrive credentials configured.
    Set SOURCES__PIPEDRIVE__API_TOKEN, or configure OAuth." to a user who had configured OAuth."""
    prefix = "SOURCES__PIPEDRIVE__OAUTH__"
    monkeypatch.setenv(prefix + "CLIENT_ID", clean_emulator.settings.oauth_client_id)
    monkeypatch.setenv(prefix + "CLIENT_SECRET", clean_emulator.settings.oauth_client_secret)
    with pytest.raises(Exception) as failure:
        sync(clean_emulator, tmp_path, api_token=None, entities=["users"])
    message = str(_root(failure.value, AuthError))
    assert message.startswith("OAuth is configured without refresh_token. Set it in ")
    assert clean_emulator.settings.oauth_client_secret not in message
    assert clean_emulator.control.stats()["total_requests"] == 0


@contextmanager
def _serving_date(date: str) -> Iterator[str]:
    """A 127.0.0.1 server answering every GET with an empty success body and this `Date` header (the
    emulator sends RFC 7231's GMT form only)."""

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 (http.server's name)
            body = b'{"success":true,"data":{}}'
            self.send_response_only(200)
            self.send_header("Date", date)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


@contextmanager
def _local_time_zone(name: str) -> Iterator[None]:
    before = os.environ.get("TZ")
    os.environ["TZ"] = name
    time.tzset()
    try:
        yield
    finally:
        if before is None:
            os.environ.pop("TZ", None)
        else:
            os.environ["TZ"] = before
        time.tzset()


SEVEN_UTC = datetime(2026, 12, 7, 7, 0, tzinfo=UTC)


@pytest.mark.parametrize(
    ("date", "server_now"),
    [
        ("Mon, 07 Dec 2026 07:00:00 GMT", SEVEN_UTC),  # IMF-fixdate
        ("Monday, 07-Dec-26 07:00:00 GMT", SEVEN_UTC),  # obsolete RFC 850 form, UTC too
        ("Mon Dec  7 07:00:00 2026", SEVEN_UTC),  # obsolete asctime form: no zone, UTC by definition
        ("Mon, 07 Dec 2026 07:00:00", None),  # not an HTTP date: no zone to read it in
        ("Mon, 07 Dec 2026 07:00:00 -0000", None),
        ("Mon, 07 Dec 2026 09:00:00 +0200", None),  # RFC 7231 allows GMT only
    ],
)
def test_the_server_clock_is_read_from_an_http_date_only_and_as_utc(
    date: str, server_now: datetime | None
) -> None:
    """`email.utils.parsedate_to_datetime` reads a date without a zone as naive, and `.astimezone(UTC)`
    then took it for the machine's local time: on a machine at UTC+05:45 the run's clock (its
    `updated_until`, the daily budget's reset) was 5:45 early. A date outside RFC 7231's forms is now
    ignored (the next response's is read); the asctime form, zone-less but UTC, is read as UTC."""
    limiter = PlanLimiter()
    with _local_time_zone("Asia/Kathmandu"), _serving_date(date) as base_url:
        client = PipedriveClient(base_url, ApiTokenAuth("date-test-token"), limiter=limiter)
        try:
            client.get("/v1/users/me", cost=2, label="me")
            assert client.server_now == server_now
            # the limiter's view of the server's day (when the daily budget resets) comes from it too
            learned = limiter._server_offset  # noqa: SLF001 (no public view of it)
            assert (learned is None) == (server_now is None)
            if server_now is not None:
                assert abs(learned - (server_now - datetime.now(UTC))).total_seconds() < 60
        finally:
            client.close()
