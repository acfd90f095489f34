"""The README, `--help` and `.dlt/` agree with the code, so that they cannot drift apart again.

They had: the README's list of flags left out `--full-read-interval-hours`, `--burst-limit` and others,
`--help` said `--entities` defaulted to "all" (the opt-in tables are left out) and left projects out of the
full-read interval. The settings in `.dlt/config.toml` and `secrets.toml.example` (commented-out examples
included) must be ones the code reads and the README documents, and every `[pipedrive]` one is listed.
"""

from __future__ import annotations

import contextlib
import inspect
import io
import json
import re
import tomllib
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from dlt.common.configuration.specs import RuntimeConfiguration
from dlt.destinations.impl.duckdb.configuration import DuckDbCredentials
from reliability_support import script_module

from pipedrive_source import pipedrive_source
from pipedrive_source.deployment import (
    DEFAULT_COMPANY,
    DEPLOYMENT_SETTINGS,
    configured_companies,
    configured_destination,
    configured_history,
)
from pipedrive_source.emulator.__main__ import parse_args as emulator_args
from pipedrive_source.entities import ENTITIES
from pipedrive_source.errors import ConfigError
from pipedrive_source.oauth import PipedriveOAuthCredentials
from pipedrive_source.recovery import configured_keep

ROOT = Path(__file__).resolve().parent.parent
README = (ROOT / "README.md").read_text(encoding="utf-8")
FLAG = re.compile(r"(?<![\w-])--[a-z][a-z0-9-]*")
EMULATOR_SECTION = "## The Pipedrive emulator"
# commands of other programs (their flags are theirs); the emulator's are checked against its --help
OTHER_PROGRAM = re.compile(
    r"^\s*(pip |uv sync|(uv run )?airflow |uv run (pytest|dagster|python tools/)|bench/|systemctl )"
)
EMULATOR_COMMAND = re.compile(r"-m pipedrive_source\.emulator\b")

SOURCE_ARGUMENTS = set(inspect.signature(pipedrive_source).parameters)  # dlt injects [sources.pipedrive]
# `[pipedrive]` settings and the function that reads each (it refuses the bad value given)
PIPEDRIVE_SETTINGS: dict[str, tuple[Callable[[], Any], str]] = {
    "companies": (configured_companies, '["Not A Name!"]'),
    "history": (configured_history, '["no_such_entity"]'),
    "keep_loaded_packages": (configured_keep, "-1"),
    "destination": (lambda: configured_destination(DEFAULT_COMPANY), "postgresql://user:secret@host/db"),
}
assert set(PIPEDRIVE_SETTINGS) == DEPLOYMENT_SETTINGS  # what the script's check of setting names knows


def help_texts(parse: Callable[[list[str]], Any]) -> dict[str, str]:
    """What `--help` shows (what a user reads): each flag's text, on one line."""
    out = io.StringIO()
    with contextlib.redirect_stdout(out), pytest.raises(SystemExit):
        parse(["--help"])
    options = out.getvalue().split("options:", 1)[1]
    entries = re.split(r"\n(?=  -)", options)
    return {m.group(): " ".join(entry.split()) for entry in entries if (m := FLAG.search(entry))}


def readme_flag_rows() -> dict[str, str]:
    rows = re.findall(r"^\| `(--[a-z][a-z0-9-]*)[^|]*\| (.*) \|$", section(README, "## Run it"), re.M)
    return dict(rows)


def section(text: str, title: str) -> str:
    start = text.index(title)
    end = text.find("\n## ", start + len(title))
    return text[start : end if end >= 0 else len(text)]


def commands(text: str) -> Iterator[str]:
    """Each command of a fenced block's line or an inline code span (split at `&&`), and the prose."""
    parts = text.split("```")
    for block in parts[1::2]:
        for line in block.splitlines():
            yield from line.split("&&")
    prose = "".join(parts[0::2])
    for span in re.findall(r"`([^`]*)`", prose):
        yield from span.split("&&")
    yield re.sub(r"`[^`]*`", "", prose)


def documented_settings(path: Path) -> dict[str, Any]:
    """A settings file with its commented-out examples (`# key = value`, `# [section]`) read as settings."""
    example = re.compile(r"^#\s?(\[[\w.]+\]\s*$|\w+\s*=.*)")
    lines = [m.group(1) if (m := example.match(line)) else line for line in path.read_text().splitlines()]
    return tomllib.loads("\n".join(lines))


def in_readme(name: str) -> bool:
    return re.search(rf"`{re.escape(name)}[`\s=]", README) is not None


def test_every_flag_of_the_help_is_in_the_readmes_table_and_no_other() -> None:
    assert set(readme_flag_rows()) == set(help_texts(script_module().parse_args)) - {"--help"}


def test_the_help_and_the_readme_say_what_a_default_leaves_out() -> None:
    """`--entities` "default: all" (the opt-in tables are not), and a full-read interval of three lists of
    four (projects were left out)."""
    texts, rows = help_texts(script_module().parse_args), readme_flag_rows()
    assert "opt-in" in texts["--entities"] and "opt-in" in rows["--entities"]
    for entity in (entity for entity in ENTITIES if entity.full_read_hours is not None):
        assert entity.name in texts["--full-read-interval-hours"]
        assert entity.name.replace("_", " ") in rows["--full-read-interval-hours"]


def test_the_help_and_the_readme_give_the_defaults_argparse_has() -> None:
    script = script_module()
    texts, rows = help_texts(script.parse_args), readme_flag_rows()
    for name, default in vars(script.parse_args([])).items():
        flag = f"--{name.replace('_', '-')}"
        if flag in rows and default not in (None, False):
            assert f"default {default}" in texts[flag] and f"default `{default}`" in rows[flag]


@pytest.mark.parametrize("doc", ["README.md", "docs/analysts.md", "docs/orchestration.md"])
def test_every_flag_the_docs_name_exists(doc: str) -> None:
    text = (ROOT / doc).read_text(encoding="utf-8")
    script = set(help_texts(script_module().parse_args))
    emulator = set(help_texts(emulator_args))
    emulator_text = section(text, EMULATOR_SECTION) if EMULATOR_SECTION in text else ""
    unknown = set(FLAG.findall(emulator_text)) - emulator
    for command in commands(text.replace(emulator_text, "")):
        if EMULATOR_COMMAND.search(command):
            unknown |= set(FLAG.findall(command)) - emulator
        elif not OTHER_PROGRAM.match(command):
            unknown |= set(FLAG.findall(command)) - script
    assert not unknown


def test_every_opt_in_table_is_in_the_readmes_table_of_costs_as_the_entity_table_says() -> None:
    rows = re.findall(
        r"^\| `(\w+)` \| (v[12]) `([^`?]+)[^`]*` \| (\d+) \|", section(README, "## Opt-in entities"), re.M
    )
    documented = {name: (api, path, int(tokens)) for name, api, path, tokens in rows}
    assert documented == {
        entity.name: (entity.api, re.sub(r"^/(api/)?v[12]", "", entity.listings[0].path), entity.cost)
        for entity in ENTITIES
        if entity.opt_in
    }


def test_every_setting_of_config_toml_is_read_and_documented(monkeypatch: pytest.MonkeyPatch) -> None:
    config = documented_settings(ROOT / ".dlt" / "config.toml")
    source = config.pop("sources")["pipedrive"]
    assert set(source) <= SOURCE_ARGUMENTS
    assert set(config.pop("runtime")) <= set(RuntimeConfiguration.get_resolvable_fields())
    assert set(config.pop("destination")["duckdb"]["credentials"]) <= set(
        DuckDbCredentials.get_resolvable_fields()
    )
    pipedrive = config.pop("pipedrive")
    assert not config  # a section nothing above reads
    assert set(pipedrive) == set(PIPEDRIVE_SETTINGS)
    for name in pipedrive:
        reader, bad = PIPEDRIVE_SETTINGS[name]
        monkeypatch.setenv(f"PIPEDRIVE__{name.upper()}", bad)
        with pytest.raises(ConfigError):
            reader()
        monkeypatch.delenv(f"PIPEDRIVE__{name.upper()}")
    undocumented = [name for name in [*source, *pipedrive] if not in_readme(name)]
    assert not undocumented


def test_every_setting_of_the_secrets_example_is_read_and_documented() -> None:
    secrets = documented_settings(ROOT / ".dlt" / "secrets.toml.example")["sources"]["pipedrive"]
    oauth = secrets.pop("oauth")
    assert set(secrets) <= SOURCE_ARGUMENTS
    assert set(oauth) <= set(PipedriveOAuthCredentials.get_resolvable_fields())
    assert [name for name in [*secrets, *oauth] if not in_readme(name)] == []


def figure_rows() -> Iterator[tuple[dict[str, Any], list[str]]]:
    """The rows of the README's table of figures that name a stop, each with that stop's results."""
    for line in section(README, "## Speed, tokens and memory").splitlines():
        cells = [cell.strip() for cell in line.strip("|").split("|")]
        if line.startswith("| ") and (stop := re.search(r"\bstop (\d+)\b", cells[0])):
            yield json.loads((ROOT / "bench" / "results" / f"stop{stop[1]}.json").read_text()), cells


def test_the_figures_of_a_stop_are_those_of_its_results_file() -> None:
    """The README's table of figures against `bench/results/stop<N>.json`: its rows are copied by hand."""
    checked = 0
    for results, (label, scale, requests, tokens, seconds, _, _, peak) in figure_rows():
        name = scale.split()[0]
        if "bench/memory.py" in label:
            run = results["memory"][name]
            assert tokens.startswith(f"{run['tokens']:,} (+{run['tokens_over_minimum']:.1%})")
        else:
            kind = "no_change" if label.startswith("no change") else "incremental"
            run = results[f"incremental_{name}"][kind]
            assert tokens == f"{run['tokens']:,}"
        assert requests.split()[0] == f"{run['requests']:,}"
        assert seconds.split()[0] == f"{run['seconds']:.1f}"
        assert peak.startswith(f"{round(run['peak_rss_mb'])} MB")
        checked += 1
    assert checked >= 4
