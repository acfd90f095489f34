"""What the schedulers (cron, Airflow, Dagster) share: companies, their pipelines and sources, the after-load.

One deployment can sync several Pipedrive companies. Each company is configured by a name and gets its own dlt
pipeline (its own incremental state) and its own dataset, in the same destination:

    # .dlt/config.toml
    [pipedrive]
    companies = ["acme", "globex"]
    history = ["deals"]          # optional SCD2 history tables (see history.py)

    # .dlt/secrets.toml: dlt looks up settings under the pipeline's name first
    [pipedrive_acme.sources.pipedrive]
    api_token = "..."            # or env PIPEDRIVE_ACME__SOURCES__PIPEDRIVE__API_TOKEN
    company_domain = "acme"

Company `acme` -> pipeline `pipedrive_acme`, dataset `pipedrive_acme`. Without `companies`, the one company
is called `pipedrive` (pipeline and dataset `pipedrive`, settings in `[sources.pipedrive]`), like the CLI's.
"""

from __future__ import annotations

import difflib
import inspect
import json
import os
import re
import tomllib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

import dlt
from dlt.common.configuration.container import Container
from dlt.common.configuration.providers.toml import SettingsTomlProvider
from dlt.common.configuration.resolve import inject_section
from dlt.common.configuration.specs import ConfigSectionContext
from dlt.common.configuration.specs.pluggable_run_context import PluggableRunContext
from dlt.common.destination.utils import resolve_merge_strategy
from dlt.common.pipeline import PipelineContext
from dlt.extract.source import DltSource

from .custom_fields_hook import CustomFieldResolution
from .deletions import flag_vanished
from .destinations import duckdb as duckdb_destination
from .entities import BY_NAME
from .errors import ConfigError, SettingError, config_place, env_setting
from .history import add_history, check_history
from .postgres_load import exact_destination
from .recovery import recover
from .run import SyncMonitor
from .settings import CREDENTIAL_KEYS
from .source import pipedrive_source
from .views import ViewsReport, refresh_views

DEFAULT_COMPANY = "pipedrive"
DUCKDB_FILE = "pipedrive_crm.duckdb"  # not pipedrive.duckdb: a catalog named like the dataset is ambiguous
COMPANY_NAME = re.compile(r"^[a-z][a-z0-9_]{0,40}$")
DESTINATION_KEY = "pipedrive.destination"
# what the connector reads under [pipedrive] (`configured_companies`, `configured_history`,
# `recovery.configured_keep`, `configured_destination`)
DEPLOYMENT_SETTINGS = frozenset({"companies", "history", "keep_loaded_packages", "destination"})
DESTINATION_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_.]*$")  # postgres, dlt.destinations.postgres
DESTINATION_ACCEPTED = (
    "a dlt destination, as the pipeline script's --destination takes it: a name such as postgres, a named "
    "destination whose destination_type is set, or dlt.destinations.postgres"
)


@dataclass(frozen=True)
class Company:
    """A Pipedrive company in this deployment, by name."""

    name: str = DEFAULT_COMPANY

    def __post_init__(self) -> None:
        if not COMPANY_NAME.match(self.name):
            raise ConfigError(
                f"Company name {self.name!r} must be lower-case letters, digits and _ (it names a pipeline "
                "and a dataset)."
            )

    @property
    def pipeline_name(self) -> str:
        return self.name if self.name == DEFAULT_COMPANY else f"{DEFAULT_COMPANY}_{self.name}"

    @property
    def dataset_name(self) -> str:
        return self.pipeline_name


def read_settings_of_checkout(root: Path) -> None:
    """Run from a folder without a .dlt/ (cron without `cd`, `dagster dev -f` from elsewhere), read the .dlt/
    of the checkout at `root`: dlt reads settings from the current folder only, so the checkout's token went
    unseen (the script synced the demo, exit 0). A .dlt/ in the current folder, or DLT_PROJECT_DIR, wins."""
    if "DLT_PROJECT_DIR" not in os.environ and not Path(".dlt").is_dir() and (root / ".dlt").is_dir():
        os.environ["DLT_PROJECT_DIR"] = str(root)


def configured_companies() -> list[Company]:
    """`[pipedrive] companies`; the single default company without it. A list naming no company (`[]`, or
    the variable set empty) is refused: it synced the single company, whose credentials may be another's."""
    key = "pipedrive.companies"
    names = _names(key, '["acme", "globex"]')
    if names == []:
        raise SettingError(
            "companies",
            str(dlt.config.get(key)),
            'one or more company names, such as ["acme", "globex"] (not set: the one company of '
            "[sources.pipedrive])",
            config_place(key),
        )
    return [Company(name) for name in names] if names else [Company()]


def check_credentials(company: Company) -> None:
    """Refuse to sync a named company without credentials of its own, before anything is read.

    dlt looks a setting up under the pipeline's name first and then falls back to `[sources.pipedrive]`: a
    company whose section lacks its token (a typo in the section's name, a forgotten env variable) would
    sync with the single-company credentials and load that other company's data into its dataset, with
    exit 0. Only the credentials must be the company's own; other settings may be shared."""
    if company.name == DEFAULT_COMPANY:
        return
    section = f"{company.pipeline_name}.sources.pipedrive"
    if any(dlt.secrets.get(f"{section}.{key}") for key in CREDENTIAL_KEYS):
        return
    env = env_setting("api_token", company.pipeline_name)
    message = (
        f"No Pipedrive credentials for the company '{company.name}': set {env} (or api_token under "
        f"[{section}] in .dlt/secrets.toml, or OAuth under [{section}.oauth])."
    )
    if any(dlt.secrets.get(f"sources.pipedrive.{key}") for key in CREDENTIAL_KEYS):
        message += (
            " The credentials under [sources.pipedrive] (SOURCES__PIPEDRIVE__*) are not used for a named "
            f"company: they may be another company's, whose data would then load into {company.dataset_name}."
        )
    raise ConfigError(message)


def configured_history() -> list[str]:
    """`[pipedrive] history`: entities to keep SCD2 history of (e.g. `["deals"]`), none by default. A name
    that cannot have one is refused (the orchestrators dropped a typo without a word)."""
    names = _names("pipedrive.history", '["deals"]') or []  # [] as unset: no history
    check_history(names)
    return names


def history_left_out(entities: Sequence[str], reason: str, selection: str) -> str:
    """The line saying that this run keeps no history of `entities`, which `[pipedrive] history` names:
    `reason` why (the run does not sync them), `selection` what chose the run's tables. A standing setting
    meets runs of a few tables, so the run goes on, but a history misses the versions of such runs."""
    return (
        f"history: no history of {', '.join(entities)} kept by this run, {reason} ({selection}; "
        "[pipedrive] history names it)"
    )


def entities_setting(company: Company) -> str:
    """Where the `entities` setting that picks a company's tables is read first."""
    section = "" if company.name == DEFAULT_COMPANY else f"{company.pipeline_name}."
    return f"[{section}sources.pipedrive] entities"


def split_names(text: str) -> list[str]:
    """Comma-separated names (a flag, an environment variable), each once: a name twice made dlt fail on a
    second resource of its name (`--history deals,deals`), Dagster on a duplicate asset key."""
    return list(dict.fromkeys(name.strip() for name in text.split(",") if name.strip()))


def _names(key: str, example: str) -> list[str] | None:
    """A list setting: a TOML list, or from the environment a JSON list or comma-separated names (see
    `split_names`); None when it is not set."""
    value: Any = dlt.config.get(key)
    name = key.rpartition(".")[2]
    wrong = SettingError(name, str(value), f"a list of names, such as {example}", config_place(key))
    if value is None:
        return None
    if isinstance(value, str) and not value.strip().startswith("["):
        return split_names(value)
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except ValueError:  # '[acme, globex]' from the environment: was a traceback
            raise wrong from None
    if not isinstance(value, list | tuple):  # `companies = 5`: was a TypeError
        raise wrong
    return split_names(",".join(str(name) for name in value))


def duckdb_file_destination(dataset: str, default_path: str = DUCKDB_FILE) -> Any:
    """The connector's DuckDB destination (`destinations.duckdb`: its load settings) for the file
    `DESTINATION__DUCKDB__CREDENTIALS` names, else `default_path`; dlt's own for a connection string
    (`md:`, a URL). A file named like `dataset` is refused: DuckDB names the file's catalog after it, every
    table of the dataset would be ambiguous, and the load would fail after the whole extraction (dlt only
    warns)."""
    path = os.environ.get("DESTINATION__DUCKDB__CREDENTIALS") or default_path
    if "://" in path or path.startswith("md:"):
        return "duckdb"
    file = Path(path)
    if file.stem.casefold() == dataset.casefold():
        raise ConfigError(
            f"The DuckDB file {file.name} and the dataset {dataset} have the same name, which DuckDB "
            "cannot tell apart: rename the file (DESTINATION__DUCKDB__CREDENTIALS) or pick another dataset."
        )
    return duckdb_destination(path)


def duckdb_file(pipeline: dlt.Pipeline, client: Any = None) -> Path | None:
    """The DuckDB file `pipeline` loads into, as dlt resolves it (None for other destinations and for a
    connection or a MotherDuck URL); `client`: the pipeline's destination client, if already made. dlt takes
    a relative path relative to the folder the pipeline first ran in (its `initial_cwd`), not to the current
    one."""
    if pipeline.destination is None or pipeline.destination.destination_name != "duckdb":
        return None
    database = (client or pipeline.destination_client()).config.credentials.database
    if not isinstance(database, str) or database.startswith((":", "md:")) or "://" in database:
        return None
    return Path(database)


def check_destination(pipeline: dlt.Pipeline) -> None:
    """Resolve the destination's settings before anything is read: the source reads field definitions as it
    is built, so a missing destination password cost 9 requests before dlt said so. Refuse a DuckDB file
    whose folder does not exist (DuckDB creates none; its "Cannot open file" came after the reads too),
    mostly a checkout moved or deleted after the pipeline's first run, whose folder dlt keeps."""
    if pipeline.destination is None:
        return
    file = duckdb_file(pipeline, check_destination_settings(pipeline))
    if file is None or file.parent.is_dir():
        return
    if Path(pipeline.get_local_state_val("initial_cwd")).is_dir():
        raise ConfigError(
            f"The folder of the DuckDB file {file}, {file.parent} does not exist: create it, or set "
            "DESTINATION__DUCKDB__CREDENTIALS to a file in a folder that exists."
        )
    raise ConfigError(
        f"The pipeline '{pipeline.pipeline_name}' loads into {file}, but {file.parent} no longer exists (dlt "
        f"keeps a relative DuckDB path relative to the folder the pipeline first ran in). Set "
        "DESTINATION__DUCKDB__CREDENTIALS to the file's absolute path, or delete the pipeline's working "
        f"folder {pipeline.working_dir} to start it where you run it now (it continues from the DuckDB "
        "file it finds there, or loads everything into a new one)."
    )


def check_and_recover(
    pipeline: dlt.Pipeline, drop: bool = False, option: str = "--drop-pending"
) -> list[str]:
    """The start of every run of the script and of Dagster: the destination checked (`check_destination`),
    then what an interrupted run left finished or dropped (`recovery.recover`); its notices. In this order:
    a pending package loaded into a DuckDB file whose folder has gone failed with DuckDB's "Cannot open
    file" instead of the line that says why and what to do."""
    check_destination(pipeline)
    return recover(pipeline, drop, option)


def append_only_notice(pipeline: dlt.Pipeline) -> str | None:
    """What to know when the destination cannot merge (the filesystem destination without a table format):
    dlt then appends each run's new versions of changed records, a warning the connector's log level hides."""
    schema = pipeline.default_schema if pipeline.default_schema_name else None
    if schema is None or pipeline.destination is None:
        return None
    capabilities = pipeline.destination.capabilities()
    merged = [table for table in schema.data_tables() if table.get("write_disposition") == "merge"]
    appended = [t["name"] for t in merged if resolve_merge_strategy(schema.tables, t, capabilities) is None]
    if not appended:
        return None
    return (
        f"note: the {pipeline.destination.destination_name} destination cannot merge, so {len(appended)} "
        "tables get each run's new and changed records appended (dlt's fallback): a record updated between "
        "runs has a row per version; read the newest per id (highest _dlt_load_id)."
    )


def company_pipeline(
    company: Company, destination: Any = None, pipelines_dir: str | None = None
) -> dlt.Pipeline:
    """The company's pipeline into `destination` (see `pipeline_destination`; None: the company's
    `destination` setting, see `configured_destination`)."""
    if destination is None:
        destination = configured_destination(company.pipeline_name)
    return dlt.pipeline(
        pipeline_name=company.pipeline_name,
        destination=pipeline_destination(destination, company.dataset_name),
        dataset_name=company.dataset_name,
        pipelines_dir=pipelines_dir,
    )


def pipeline_destination(destination: Any, dataset: str, default_path: str = DUCKDB_FILE) -> Any:
    """What the pipeline script's `--destination` and the orchestrators' destination load into, resolved
    one way for all of them: None or `"duckdb"`, the DuckDB file of `duckdb_file_destination` (`default_path`
    unless DESTINATION__DUCKDB__CREDENTIALS names one); Postgres however it is named,
    `postgres_load.exact_destination`'s; any other dlt destination (a name, a named destination whose
    `destination_type` is configured, `dlt.destinations.bigquery`, a destination object) as dlt takes it.
    An unknown name raises dlt's `UnknownDestinationModule` here, as `dlt.pipeline` would."""
    if destination is None or destination == "duckdb":
        return duckdb_file_destination(dataset, default_path)
    return exact_destination(destination)


def configured_destination(pipeline_name: str) -> str | None:
    """The `destination` setting of pipeline `pipeline_name` (a company's): under its name first
    (`[pipedrive_acme.pipedrive] destination`, env `PIPEDRIVE_ACME__PIPEDRIVE__DESTINATION`), then
    `[pipedrive] destination` (env `PIPEDRIVE__DESTINATION`), as the pipeline script's `--destination` takes
    it; None (not set): DuckDB.
    A value that names nothing (set empty, not text) is refused: it loaded into DuckDB without a word, where
    the deployment expected a warehouse; so is one that is no name, without showing it (a connection string
    given here by mistake holds a password)."""
    keys = [DESTINATION_KEY]
    if pipeline_name != DEFAULT_COMPANY:
        keys.insert(0, f"{pipeline_name}.{DESTINATION_KEY}")
    for key in keys:
        value = dlt.config.get(key)
        if value is None:
            continue
        if not isinstance(value, str) or not value.strip():
            raise SettingError("destination", value, DESTINATION_ACCEPTED, config_place(key))
        if not DESTINATION_NAME.match(value.strip()):
            raise ConfigError(
                f"destination must be {DESTINATION_ACCEPTED}, not a value of other characters, which is not "
                f"shown ({config_place(key)}); a connection string goes into the destination's credentials, "
                "DESTINATION__<NAME>__CREDENTIALS."
            )
        return value.strip()
    return None


def check_destination_settings(pipeline: dlt.Pipeline) -> Any:
    """The pipeline's destination client (None: no destination), made to resolve its settings: dlt's
    exception for one missing or unreadable (`failures.failure_of` makes it the script's line). Nothing is
    connected."""
    if pipeline.destination is None:
        return None
    return pipeline.destination_client()  # dlt's ConfigFieldMissingException for a missing setting


def table_catalog(
    company: Company, entities: Sequence[str] | None = None, custom_fields: bool = False
) -> DltSource:
    """A source that only describes the tables a sync of `company` loads (names, keys): those of `entities`,
    else of the `entities` setting resolved as the pipeline script's source resolves it, under the company's
    pipeline name first (`[pipedrive_acme.sources.pipedrive] entities`), then `[sources.pipedrive]`, with
    the parents its children are read from; the default entities without it. The orchestrators passed
    explicit entities, which dlt does not fill from the settings: a narrowed or opt-in `entities` loaded
    other tables there than the script does.

    Placeholder credentials: nothing is requested through this source, so it is built where there are no
    secrets (the Dagster webserver, the Airflow scheduler). Built without the custom-field resolution,
    whose source starts fetching the field definitions as it is built (against the placeholder URL: 9
    requests retried for 20 s in the background); `custom_fields` adds the resolution's two tables as they
    are, where an entity of the catalog has custom fields (as a sync does)."""
    chosen = {} if entities is None else {"entities": entities}
    # an active pipeline's name wins over the injected one: with several companies (Airflow's DAGs, built
    # one after another) the previous company's pipeline was active, and its `entities` were read
    with (
        Container().injectable_context(PipelineContext()),
        inject_section(ConfigSectionContext(pipeline_name=company.pipeline_name)),
    ):
        source = pipedrive_source(
            api_token="unused-for-the-catalog",
            base_url="http://127.0.0.1",
            resolve_custom_fields=False,
            **chosen,
        )
    if custom_fields:
        described = [BY_NAME[name] for name in source.resources if name in BY_NAME]
        # never iterated: the resources use the run context only when they run
        source.resources.add(*CustomFieldResolution().resources(cast(Any, None), described))
    return source


def synced_tables(company: Company) -> list[str]:
    """The tables a sync of `company` loads: its entities' (see `table_catalog`), and `custom_fields` and
    `custom_field_options` where one of them has custom fields."""
    return list(table_catalog(company, custom_fields=True).resources)


@dataclass
class Run:
    """One sync of a company: the source to load and what to do once it is loaded."""

    pipeline: dlt.Pipeline
    source: DltSource
    monitor: SyncMonitor
    history: list[str] = field(default_factory=list)  # history tables added to the source

    def flag_vanished(self) -> dict[str, int]:
        """Flag rows whose records this run found gone from Pipedrive (rows flagged per table)."""
        return flag_vanished(self.pipeline, self.monitor)

    def after_load(self) -> AfterLoad:
        """Flag records that vanished from Pipedrive, then refresh the analyst views."""
        return AfterLoad(self.flag_vanished(), refresh_views(self.pipeline))


@dataclass
class AfterLoad:
    flagged: dict[str, int]
    views: ViewsReport


def prepare_run(
    pipeline: dlt.Pipeline,
    tables: Sequence[str] | None = None,
    history: Sequence[str] = (),
    company: Company | None = None,
    refresh: bool | None = None,
    **options: Any,
) -> Run:
    """A fresh source for one run (its own monitor, clock and caches), configured under the pipeline's name.

    `tables`: what to load (None: the tables of the `entities` setting, as for the pipeline script). Entity
    tables pick the entities to read; the other tables the source makes (`custom_fields`,
    `custom_field_options`, `<entity>_history`) are loaded only if named too, and without an entity table
    named they are those of the `entities` setting. `company`: the company the pipeline is for, whose own
    credentials are required (see `check_credentials`). `refresh`: whether the run starts its tables over
    (None: not known), which tells where a history started on a table loaded before begins (a full refresh
    gives it every record: no warning). Build one per run: a source remembers its run's server time and the
    lists it read.
    """
    if company is not None:
        check_credentials(company)
    check_destination(pipeline)  # before the source reads field definitions
    monitor = SyncMonitor()
    pipeline.activate()  # settings resolve under `<pipeline_name>.sources.pipedrive` first
    # an explicit None is not filled from the settings: no entity named, the source reads `entities` itself
    entities = [name for name in tables or () if name in BY_NAME]
    chosen = {"entities": entities} if entities else {}
    source = pipedrive_source(monitor=monitor, **chosen, **options)
    added = add_history(source, history, pipeline, refresh=refresh)  # for the entities `source` loads
    if tables is not None:
        source = source.with_resources(*[name for name in tables if name in source.resources])
    return Run(pipeline, source, monitor, added)


# what the connector reads, by section: under [sources.pipedrive] its source's arguments (but those only code
# passes), under [pipedrive] the deployment's settings (a typo in `destination` loaded into DuckDB unsaid)
SETTINGS = {
    "sources.pipedrive": frozenset(inspect.signature(pipedrive_source).parameters)
    - {"monitor", "limiter", "record_hooks"},
    "pipedrive": DEPLOYMENT_SETTINGS,
}
# top-level sections of dlt's and ours, where a pipeline's own section would be `[<pipeline name>]`
NOT_A_PIPELINE = frozenset({"sources", "pipedrive", "destination", "runtime", "extract", "normalize", "load"})
# how alike a section's name must be to one of ours to be taken for a typo of it (difflib's ratio):
# `source.pipedrive`, `sources.pipedrve`, `pipedrve`, `Pipedrive` are; `sources.hubspot` (0.62) is not
SECTION_LIKENESS = 0.8


def unknown_settings() -> list[str]:
    """One line for each setting dlt would pass over without a word, so a run goes on with the default:
    a key under `[sources.pipedrive]` or `[pipedrive]` (a named company's `[pipedrive_acme.sources.pipedrive]`
    and `[pipedrive_acme.pipedrive]` too) of the settings files, or `SOURCES__PIPEDRIVE__*` / `PIPEDRIVE__*`
    variable, that names no setting of the connector (`page_sise = 100`); and a section of values named
    like one of those but not quite (`[source.pipedrive]`, `[sources.pipedrve]`, `[pipedrve]`,
    `SOURCE__PIPEDRIVE__API_TOKEN`), whose token the run then said was not configured. Sections below ours
    (`oauth`) are dlt's to check. Names only: no value is read into a line. What the pipeline script prints
    before a run, and Dagster and Airflow log in theirs."""
    found: list[str] = []
    for provider in Container()[PluggableRunContext].providers.providers:
        if isinstance(provider, SettingsTomlProvider):
            found += _unknown_in_file(provider)
    for variable, value in os.environ.items():
        parts = tuple(part.lower() for part in variable.split("__"))
        if meant := _meant_section(parts[:-1]):
            found.append(_section_line(f"({variable})", meant))
            continue
        for section in SETTINGS:
            head, sep, key = variable.rpartition(f"{section.upper().replace('.', '__')}__")
            # SOURCES__PIPEDRIVE__X is no [pipedrive] setting
            named = head.endswith("__") and not head.endswith("SOURCES__")
            if sep and (not head or named) and "__" not in key and _unknown(section, key.lower(), value):
                found.append(_key_line(key.lower(), section, f"({variable})"))
    return list(dict.fromkeys(found))


def _unknown_in_file(provider: SettingsTomlProvider) -> list[str]:
    where = ", ".join(provider.present_locations) or provider.name
    doc = tomllib.loads(provider.to_toml())  # dlt's own text of the files it read (all of them, merged)
    misspelt = [meant for path in _sections_of_values(doc) if (meant := _meant_section(path))]
    found = [_section_line(f"in {where}", meant) for meant in misspelt]
    named = [(f"{n}.", tree) for n, tree in doc.items() if isinstance(tree, dict) and n not in NOT_A_PIPELINE]
    for prefix, tree in [("", doc), *named]:
        for section in SETTINGS:
            if f"{prefix}{section}" in (given for given, _ in misspelt):  # `[source.pipedrive]`: said so
                continue
            values = _section(tree, section)
            where_key = f"under [{prefix}{section}] in {where}"
            found += [
                _key_line(key, section, where_key) for key in values if _unknown(section, key, values[key])
            ]
    return found


def _sections_of_values(tree: dict[str, Any], path: tuple[str, ...] = ()) -> Iterator[tuple[str, ...]]:
    """The path of every section of `tree` that holds a value (not only sections)."""
    if path and any(not isinstance(value, dict) for value in tree.values()):
        yield path
    for name, value in tree.items():
        if isinstance(value, dict):
            yield from _sections_of_values(value, (*path, name))


def _meant_section(path: tuple[str, ...]) -> tuple[str, str] | None:
    """The part of `path` misspelt and the section of ours it is like (`SECTION_LIKENESS`), or None: one of
    ours, within one of `[sources.pipedrive]` (dlt's sections), or like none of them. Ours under a
    pipeline's name too, where the path starts with one that looks like ours (`pipedrive`,
    `pipedrive_acme`)."""
    root = path[:1] if path and re.fullmatch(rf"{DEFAULT_COMPANY}(_\w+)?", path[0]) else ()
    if path == root:
        return None
    ours = [(*base, *section.split(".")) for base in {(), root} for section in SETTINGS]
    if any(path[: len(section)] == section for section in ours if section[-2:] == ("sources", "pipedrive")):
        return None
    if path in ours:
        return None
    best, meant = SECTION_LIKENESS, None
    for section in ours:
        given = path[: len(section)]
        if len(given) == len(section) and given != section and given[: len(root)] == section[: len(root)]:
            ratio = difflib.SequenceMatcher(None, ".".join(given).lower(), ".".join(section)).ratio()
            if ratio >= best:
                best, meant = ratio, (".".join(given), ".".join(section))
    return meant


def _section_line(where: str, meant: tuple[str, str]) -> str:
    given, section = meant
    return (
        f"settings: [{given}] {where} names no section of the connector, which reads none of it: did you "
        f"mean [{section}]?"
    )


def _key_line(key: str, section: str, where: str) -> str:
    return f"settings: {key} {where} names no setting of the connector, {_meant(section, key)}"


def _section(tree: dict[str, Any], section: str) -> dict[str, Any]:
    for part in section.split("."):
        tree = tree.get(part) if isinstance(tree, dict) else None  # type: ignore[assignment]
    return tree if isinstance(tree, dict) else {}


def _meant(section: str, key: str) -> str:
    close = difflib.get_close_matches(key, SETTINGS[section], n=1)
    if close:
        return f"which reads none of it: did you mean {close[0]}?"
    return f"which reads none of it (the settings under [{section}]: {', '.join(sorted(SETTINGS[section]))})"


def _unknown(section: str, key: str, value: Any) -> bool:
    return not isinstance(value, dict) and key not in SETTINGS[section]
