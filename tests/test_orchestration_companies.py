"""Several Pipedrive companies in one deployment (`pipelines/companies.py`): configured by name, each synced
with its own credentials into its own pipeline and dataset; a misconfigured one fails alone."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import duckdb
import pytest

from pipedrive_source import destinations
from pipedrive_source.deployment import Company, company_pipeline, configured_companies
from pipedrive_source.emulator import EmulatorHandle, run_emulator
from pipedrive_source.errors import ConfigError
from pipedrive_source.failures import failure_of
from pipedrive_source.postgres_load import is_exact_postgres

ROOT = Path(__file__).resolve().parent.parent
SCRIPT = ROOT / "pipelines" / "companies.py"
ENTITIES = "deals,pipelines,stages,users"
NAMES = ("pipedrive", "acme", "globex", "initech", "hooli")


@pytest.fixture(scope="module")
def companies() -> Iterator[dict[str, EmulatorHandle]]:
    with (
        run_emulator(seed=7, scale="tiny", api_token="token-of-acme") as acme,
        run_emulator(seed=8, scale="tiny", api_token="token-of-globex") as globex,
    ):
        yield {"acme": acme, "globex": globex}


def run(
    workdir: Path, companies: dict[str, EmulatorHandle], *args: str, **env: str
) -> subprocess.CompletedProcess:
    settings = {k: v for k, v in os.environ.items() if not k.startswith(("SOURCES__", "PIPEDRIVE"))}
    for name, emulator in companies.items():  # settings under the pipeline's name: pipedrive_<company>
        settings[f"PIPEDRIVE_{name.upper()}__SOURCES__PIPEDRIVE__API_TOKEN"] = emulator.api_token
        settings[f"PIPEDRIVE_{name.upper()}__SOURCES__PIPEDRIVE__BASE_URL"] = emulator.base_url
    settings.update(
        DESTINATION__DUCKDB__CREDENTIALS=str(workdir / "crm.duckdb"), RUNTIME__DLTHUB_TELEMETRY="false", **env
    )
    command = [
        sys.executable,
        str(SCRIPT),
        *args,
        "--entities",
        ENTITIES,
        "--quiet",
        "--pipelines-dir",
        str(workdir / "pipelines"),
    ]
    return subprocess.run(command, env=settings, cwd=workdir, capture_output=True, text=True, timeout=600)


def deal_titles(path: Path, dataset: str) -> set[str]:
    with duckdb.connect(str(path), read_only=True) as con:
        return {row[0] for row in con.execute(f"SELECT title FROM {dataset}.deals").fetchall()}


def truth_titles(emulator: EmulatorHandle) -> set[str]:
    return {deal["title"] for deal in emulator.control.snapshot("deals")}


def test_each_company_loads_into_its_own_dataset(
    companies: dict[str, EmulatorHandle], tmp_path: Path
) -> None:
    result = run(tmp_path, companies, "acme", "globex")
    assert result.returncode == 0, result.stderr[-2000:]
    assert "== company acme: ok" in result.stdout and "== company globex: ok" in result.stdout
    acme, globex = (deal_titles(tmp_path / "crm.duckdb", f"pipedrive_{n}") for n in ("acme", "globex"))
    assert acme == truth_titles(companies["acme"])
    assert globex == truth_titles(companies["globex"])
    assert acme != globex  # two different companies, not one loaded twice
    assert {p.name for p in (tmp_path / "pipelines").iterdir()} >= {"pipedrive_acme", "pipedrive_globex"}


def test_companies_come_from_the_config_and_a_misconfigured_one_fails_alone(
    companies: dict[str, EmulatorHandle], tmp_path: Path
) -> None:
    result = run(tmp_path, companies, PIPEDRIVE__COMPANIES='["acme", "initech", "globex"]')
    assert result.returncode == 2, result.stdout[-2000:]  # initech has no credentials
    assert "== company initech: failed (exit 2)" in result.stdout
    assert "error: No Pipedrive credentials for the company 'initech': set " in result.stderr
    assert "PIPEDRIVE_INITECH__SOURCES__PIPEDRIVE__API_TOKEN" in result.stderr  # one line naming what to set
    assert deal_titles(tmp_path / "crm.duckdb", "pipedrive_globex") == truth_titles(companies["globex"])


def test_a_company_without_its_own_token_does_not_sync_with_the_default_credentials(
    companies: dict[str, EmulatorHandle], tmp_path: Path
) -> None:
    """A single-company setup left in place ([sources.pipedrive], here its env variables) while `initech`'s
    section is missing: dlt would fall back to those credentials and load acme's data into
    pipedrive_initech, with exit 0."""
    acme = companies["acme"]
    result = run(
        tmp_path,
        companies,
        "globex",
        "initech",
        SOURCES__PIPEDRIVE__API_TOKEN=acme.api_token,
        SOURCES__PIPEDRIVE__BASE_URL=acme.base_url,
    )
    assert result.returncode == 2, result.stdout[-2000:]
    assert "== company initech: failed (exit 2)" in result.stdout
    assert "PIPEDRIVE_INITECH__SOURCES__PIPEDRIVE__API_TOKEN" in result.stderr
    assert "[sources.pipedrive] (SOURCES__PIPEDRIVE__*) are not used for a named company" in result.stderr
    assert acme.api_token not in result.stdout + result.stderr
    with duckdb.connect(str(tmp_path / "crm.duckdb"), read_only=True) as con:
        schemata = con.execute("SELECT schema_name FROM information_schema.schemata").fetchall()
    schemas = {row[0] for row in schemata}
    assert "pipedrive_initech" not in schemas
    assert deal_titles(tmp_path / "crm.duckdb", "pipedrive_globex") == truth_titles(companies["globex"])


def test_a_rejected_token_of_a_company_names_its_own_setting(
    companies: dict[str, EmulatorHandle], tmp_path: Path
) -> None:
    """The 401 line said SOURCES__PIPEDRIVE__API_TOKEN, which a named company does not read."""
    result = run(tmp_path, companies, "acme", PIPEDRIVE_ACME__SOURCES__PIPEDRIVE__API_TOKEN="pd-wrong")
    assert result.returncode == 2, result.stdout[-2000:]
    assert "rejected the API token (HTTP 401 unauthorized). Set a valid token in " in result.stderr
    needle = "token in PIPEDRIVE_ACME__SOURCES__PIPEDRIVE__API_TOKEN (or api_token under [pipedrive_acme."
    assert needle in result.stderr


def test_a_revoked_oauth_refresh_token_of_a_company_names_its_own_setting(
    companies: dict[str, EmulatorHandle], tmp_path: Path
) -> None:
    """The line said [sources.pipedrive.oauth] (SOURCES__PIPEDRIVE__OAUTH__REFRESH_TOKEN), which a named
    company does not read: fixing it there left the company failing."""
    acme = companies["acme"]
    prefix = "PIPEDRIVE_ACME__SOURCES__PIPEDRIVE__OAUTH__"
    oauth = {
        prefix + "CLIENT_ID": acme.settings.oauth_client_id,
        prefix + "CLIENT_SECRET": acme.settings.oauth_client_secret,
        prefix + "REFRESH_TOKEN": "revoked-refresh-token",
        prefix + "TOKEN_URL": f"{acme.base_url}/oauth/token",
    }
    result = run(tmp_path, companies, "acme", **oauth)
    assert result.returncode == 2, result.stdout[-2000:]
    assert "refused to refresh the OAuth access token (invalid_grant)" in result.stderr
    needle = "in [pipedrive_acme.sources.pipedrive.oauth] in .dlt/secrets.toml (PIPEDRIVE_ACME__SOURCES__"
    assert needle + "PIPEDRIVE__OAUTH__REFRESH_TOKEN, ...)" in result.stderr
    assert "[sources.pipedrive.oauth]" not in result.stderr


def test_a_company_without_its_domain_names_its_own_setting(
    companies: dict[str, EmulatorHandle], tmp_path: Path
) -> None:
    """The line said SOURCES__PIPEDRIVE__COMPANY_DOMAIN, which a named company does not read."""
    result = run(tmp_path, companies, "acme", PIPEDRIVE_ACME__SOURCES__PIPEDRIVE__BASE_URL="")
    assert result.returncode == 2, result.stdout[-2000:]
    assert "No Pipedrive company configured. Set company_domain (PIPEDRIVE_ACME__SOURCES__PIPEDRIVE__" in (
        result.stderr
    )


@pytest.mark.parametrize(
    ("env", "code", "needle"),
    [
        (  # another company's domain: refused by its answer to /v1/users/me
            {"COMPANY_DOMAIN": "not-acme"},
            2,
            "fix company_domain (PIPEDRIVE_ACME__SOURCES__PIPEDRIVE__COMPANY_DOMAIN, or company_domain under "
            "[pipedrive_acme.sources.pipedrive]).",
        ),
        (
            {"BASE_URL": "http://127.0.0.1:9", "MAX_ATTEMPTS": "1"},
            1,
            "Could not connect to http://127.0.0.1:9 (",
        ),
    ],
    ids=["other-domain", "unreachable"],
)
def test_a_company_s_domain_and_connection_refusals_name_its_own_settings(
    companies: dict[str, EmulatorHandle], tmp_path: Path, env: dict[str, str], code: int, needle: str
) -> None:
    """Both lines said SOURCES__PIPEDRIVE__COMPANY_DOMAIN (and __BASE_URL), which a named company's run reads
    only where its own section lacks the setting: fixed there, the company kept failing."""
    own = "PIPEDRIVE_ACME__SOURCES__PIPEDRIVE__"
    result = run(tmp_path, companies, "acme", **{own + key: value for key, value in env.items()})
    assert result.returncode == code, result.stdout[-2000:]
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and needle in errors[0], result.stderr[-2000:]
    assert own + "COMPANY_DOMAIN" in errors[0]
    assert "SOURCES__PIPEDRIVE__" not in errors[0].replace(own, ""), errors[0]


def test_a_bad_company_name_is_refused(companies: dict[str, EmulatorHandle], tmp_path: Path) -> None:
    result = run(tmp_path, companies, "Acme Corp")
    assert result.returncode == 2
    assert "Company name 'Acme Corp'" in result.stderr


@pytest.mark.parametrize(
    ("value", "accepted"),
    [("5", "a list of names"), ("true", "a list of names"), ("[]", "one or more company names")],
)
def test_a_companies_setting_that_is_no_list_of_companies_is_one_line(
    companies: dict[str, EmulatorHandle], tmp_path: Path, value: str, accepted: str
) -> None:
    """`companies = []` synced the single company of [sources.pipedrive] instead, exit 0."""
    (tmp_path / ".dlt").mkdir()
    (tmp_path / ".dlt" / "config.toml").write_text(f"[pipedrive]\ncompanies = {value}\n")
    result = run(tmp_path, companies)
    assert result.returncode == 2, result.stderr[-2000:]
    assert result.stderr.startswith(f"error: companies must be {accepted}")
    assert "(PIPEDRIVE__COMPANIES, or companies under [pipedrive])" in result.stderr
    assert "Traceback" not in result.stderr and len(result.stderr.splitlines()) == 1


def test_a_company_named_twice_is_one_company(monkeypatch: pytest.MonkeyPatch) -> None:
    """Twice synced by companies.py, and Dagster's definitions failed on a duplicate asset key."""
    monkeypatch.setenv("PIPEDRIVE__COMPANIES", '["acme", "globex", "acme"]')
    assert configured_companies() == [Company("acme"), Company("globex")]
    monkeypatch.setenv("PIPEDRIVE__COMPANIES", "[acme, globex]")  # not JSON: was a traceback
    with pytest.raises(ConfigError, match="companies must be a list of names"):
        configured_companies()


def test_a_company_pipeline_loads_a_duckdb_file_as_the_pipeline_script_does(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Dagster and Airflow build their pipelines with `company_pipeline`: a DuckDB file named by
    DESTINATION__DUCKDB__CREDENTIALS loads with the connector's destination (its memory settings), a
    connection string with dlt's, and a file named like the company's dataset is refused up front."""
    pipelines = str(tmp_path / "pipelines")
    monkeypatch.setenv("DESTINATION__DUCKDB__CREDENTIALS", str(tmp_path / "crm.duckdb"))
    pipeline = company_pipeline(Company("acme"), pipelines_dir=pipelines)
    assert isinstance(pipeline.destination, destinations._DuckDb)
    monkeypatch.setenv("DESTINATION__DUCKDB__CREDENTIALS", "md:crm")
    pipeline = company_pipeline(Company("acme"), pipelines_dir=pipelines)
    assert pipeline.destination.destination_name == "duckdb"
    assert not isinstance(pipeline.destination, destinations._DuckDb)
    monkeypatch.setenv("DESTINATION__DUCKDB__CREDENTIALS", str(tmp_path / "pipedrive_acme.duckdb"))
    with pytest.raises(ConfigError, match="pipedrive_acme.duckdb and the dataset pipedrive_acme"):
        company_pipeline(Company("acme"), pipelines_dir=pipelines)


def test_the_destination_setting_picks_each_company_s_destination_as_the_script_s_flag_does(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Airflow and Dagster loaded into DuckDB unless one edited the DAG file or the definitions' code: the
    `destination` setting (per company first) names it as the pipeline script's `--destination` does."""
    pipelines = str(tmp_path / "pipelines")
    monkeypatch.setenv("DESTINATION__DUCKDB__CREDENTIALS", str(tmp_path / "crm.duckdb"))
    monkeypatch.setenv("PIPEDRIVE__DESTINATION", "postgres")
    monkeypatch.setenv("PIPEDRIVE_ACME__PIPEDRIVE__DESTINATION", "duckdb")  # the connector's DuckDB file
    monkeypatch.setenv("PIPEDRIVE_INITECH__PIPEDRIVE__DESTINATION", "crm")  # named, of type postgres
    monkeypatch.setenv("DESTINATION__CRM__DESTINATION_TYPE", "postgres")
    monkeypatch.setenv("PIPEDRIVE_HOOLI__PIPEDRIVE__DESTINATION", "dlt.destinations.filesystem")
    chosen = {name: company_pipeline(Company(name), pipelines_dir=pipelines).destination for name in NAMES}
    assert is_exact_postgres(chosen["pipedrive"]) and is_exact_postgres(chosen["globex"])
    assert isinstance(chosen["acme"], destinations._DuckDb)
    assert is_exact_postgres(chosen["initech"]) and chosen["initech"].destination_name == "crm"
    assert chosen["hooli"].destination_type == "dlt.destinations.filesystem"
    monkeypatch.delenv("PIPEDRIVE__DESTINATION")
    assert isinstance(company_pipeline(Company(), pipelines_dir=pipelines).destination, destinations._DuckDb)


@pytest.mark.parametrize(
    ("value", "line"),
    [
        (
            "",
            "destination must be a dlt destination, as the pipeline script's --destination takes it: a name "
            "such as postgres, a named destination whose destination_type is set, or dlt.destinations."
            "postgres, not '' (PIPEDRIVE_ACME__PIPEDRIVE__DESTINATION, or destination under "
            "[pipedrive_acme.pipedrive]).",
        ),
        (
            "postgresql://loader:s3cret-pw@db:5432/crm",
            "destination must be a dlt destination, as the pipeline script's --destination takes it: a name "
            "such as postgres, a named destination whose destination_type is set, or dlt.destinations."
            "postgres, not a value of other characters, which is not shown (PIPEDRIVE_ACME__PIPEDRIVE__"
            "DESTINATION, or destination under [pipedrive_acme.pipedrive]); a connection string goes into "
            "the destination's credentials, DESTINATION__<NAME>__CREDENTIALS.",
        ),
        (
            "postgress",
            "Unknown destination 'postgress': --destination (or the destination setting under "
            "[pipedrive]) takes a dlt destination such as duckdb, postgres, bigquery, snowflake, motherduck "
            "or filesystem.",
        ),
    ],
    ids=["empty", "connection_string", "unknown"],
)
def test_a_destination_setting_that_names_no_destination_is_one_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, value: str, line: str
) -> None:
    """Set empty, the company loaded into DuckDB without a word; a connection string would be shown."""
    monkeypatch.setenv("PIPEDRIVE__DESTINATION", "postgres")
    monkeypatch.setenv("PIPEDRIVE_ACME__PIPEDRIVE__DESTINATION", value)
    with pytest.raises(Exception) as refused:
        company_pipeline(Company("acme"), pipelines_dir=str(tmp_path))
    assert failure_of(refused.value).message == line
