"""The README and `--help` agree with the code, so that they cannot drift apart again.

They had: the README's list of flags left out `--full-read-interval-hours`, `--burst-limit` and others,
`--help` said `--entities` defaulted to "all" (the opt-in tables are left out) and left projects out of the
full-read interval.
"""

from __future__ import annotations

import contextlib
import io
import re
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from reliability_support import script_module

from pipedrive_source.emulator.__main__ import parse_args as emulator_args
from pipedrive_source.entities import ENTITIES

ROOT = Path(__file__).resolve().parent.parent
README = (ROOT / "README.md").read_text(encoding="utf-8")
FLAG = re.compile(r"(?<![\w-])--[a-z][a-z0-9-]*")
EMULATOR_SECTION = "## The Pipedrive emulator"
# commands of other programs (their flags are theirs); the emulator's are checked against its --help
OTHER_PROGRAM = re.compile(r"^\s*(pip |uv sync|uv run (pytest|dagster)|bench/)")
EMULATOR_COMMAND = re.compile(r"-m pipedrive_source\.emulator\b")


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


def test_every_flag_the_readme_names_exists() -> None:
    script = set(help_texts(script_module().parse_args))
    emulator = set(help_texts(emulator_args))
    emulator_text = section(README, EMULATOR_SECTION)
    unknown = set(FLAG.findall(emulator_text)) - emulator
    for command in commands(README.replace(emulator_text, "")):
        if EMULATOR_COMMAND.search(command):
            unknown |= set(FLAG.findall(command)) - emulator
        elif not OTHER_PROGRAM.match(command):
            unknown |= set(FLAG.findall(command)) - script
    assert not unknown


def test_every_opt_in_table_is_in_the_readmes_table_of_costs() -> None:
    opt_in = {entity.name for entity in ENTITIES if entity.opt_in}
    rows = re.findall(r"^\| `(\w+)` \| v[12] `", section(README, "## Opt-in entities"), re.M)
    assert set(rows) == opt_in
