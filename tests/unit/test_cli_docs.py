"""Every `stillhouse` sub-command and flag is in the README's CLI table (a user reads the table, not --help)."""

import argparse

from stillhouse.cli import build_parser
from tests.conftest import REPO


def _commands(parser: argparse.ArgumentParser, path: tuple[str, ...] = ()):
    """(command path, its parser) for every leaf sub-command."""
    subs = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    if not subs:
        yield path, parser
        return
    for name, sub in subs[0].choices.items():
        yield from _commands(sub, (*path, name))


def _table_rows() -> list[str]:
    text = (REPO / "README.md").read_text()
    section = text.split("## CLI", 1)[1].split("\n## ", 1)[0]
    return [line for line in section.splitlines() if line.startswith("| `stillhouse ")]


def test_every_command_and_flag_is_in_the_readme_cli_table():
    rows = _table_rows()
    missing = []
    for path, parser in _commands(build_parser()):
        command = "stillhouse " + " ".join(path)
        row = next((r for r in rows if r.startswith(f"| `{command} ") or r.startswith(f"| `{command}`")), None)
        if row is None:
            missing.append(command)
            continue
        for action in parser._actions:
            if not action.option_strings or "--help" in action.option_strings:
                continue
            if not any(option in row for option in action.option_strings):
                missing.append(f"{command} {max(action.option_strings, key=len)}")
    assert missing == []
