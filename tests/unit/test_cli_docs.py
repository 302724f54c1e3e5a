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


def _block_after(marker: str) -> list[str]:
    """The lines of the first ```bash block after ``marker`` in the README."""
    text = (REPO / "README.md").read_text()
    block = text.split(marker, 1)[1].split("```bash\n", 1)[1].split("```", 1)[0]
    return [line for line in block.splitlines() if line.strip()]


def test_the_serving_snippet_sets_token_before_using_it():
    text = (REPO / "README.md").read_text()
    assert text.index("export TOKEN=") < text.index("$TOKEN")


def test_the_readme_redistillation_commands_work_on_the_quickstart_as_written(tmp_path):
    """Export → sed → validate, run through bash as a user pastes them (the final `stillhouse run` left out: it is
    the quick-start itself)."""
    import json
    import os
    import shutil
    import subprocess
    import sys

    from stillhouse.serve.feedback import FeedbackStore

    (tmp_path / "examples").mkdir()
    shutil.copy(REPO / "examples" / "quickstart.yaml", tmp_path / "examples" / "quickstart.yaml")
    (tmp_path / "stillhouse-serve").mkdir()
    store = FeedbackStore(tmp_path / "stillhouse-serve" / "feedback.sqlite")
    store.add("negative", ["negative", "neutral", "positive"], text="meh, the update broke my phone")
    store.close()
    lines = _block_after("**Feedback → re-distillation.**")
    assert lines[-1].startswith("stillhouse validate ") and "&& stillhouse run " in lines[-1]
    script = "\n".join([*lines[:-1], lines[-1].split(" && ")[0]])
    env = {**os.environ, "PATH": f"{os.path.dirname(sys.executable)}:{os.environ['PATH']}"}
    done = subprocess.run(["bash", "-euo", "pipefail", "-c", script], cwd=tmp_path, capture_output=True, text=True,
                          timeout=300, env=env)
    assert done.returncode == 0, done.stderr
    exported = [json.loads(line) for line in (tmp_path / "examples" / "feedback.jsonl").read_text().splitlines()]
    assert exported[0]["sentiment"] == "negative" and exported[0]["text"].startswith("meh")
    from stillhouse.spec import load_spec

    spec = load_spec(tmp_path / "examples" / "quickstart-redistill.yaml")
    assert spec.data.feedback.path == str(tmp_path / "examples" / "feedback.jsonl")
