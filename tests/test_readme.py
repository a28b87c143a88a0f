"""Keep the README true: its commands parse, its Python runs, its test command is CI's, its config table is current."""
from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest

from alignclip.cli.main import build_parser
from alignclip.training.config import reference_table

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text()


def _blocks(language: str) -> list[str]:
    return re.findall(rf"```{language}\n(.*?)```", README, flags=re.S)


def _commands() -> list[str]:
    lines = [line.split("  #")[0].strip() for block in _blocks("bash") for line in block.splitlines()]
    return [line for line in lines if line]


def test_ci_runs_the_readme_test_command() -> None:
    ci = (ROOT / ".ci" / "run").read_text()
    test_commands = [c for c in _commands() if "pytest" in c]
    assert len(test_commands) == 1
    assert test_commands[0] in ci.splitlines()


def test_demo_command_is_the_first_one() -> None:
    assert _commands()[0].endswith("&& alignclip demo")


def test_config_reference_is_current() -> None:
    assert reference_table() in README, "README config reference is stale: paste reference_table() output"


def _argv(command: str) -> list[str] | None:
    """The alignclip argument vector of a README line, or None for lines that are not alignclip commands."""
    words = shlex.split(command.split("&&")[-1].strip(), comments=True)
    if words and words[0] == "alignclip":
        return words[1:]
    if "alignclip.cli.train" in words:
        return ["train"] + words[words.index("alignclip.cli.train") + 1:]
    return None


@pytest.mark.parametrize("command", [c for c in _commands() if _argv(c) is not None])
def test_readme_command_parses(command: str) -> None:
    parser = build_parser()
    try:
        args = parser.parse_args(_argv(command))
    except SystemExit as e:  # argparse exits on unknown flags or bad values
        pytest.fail(f"README command does not parse ({e}): {command}")
    assert callable(args.func)


def test_readme_python_example_runs(tmp_path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    (code,) = _blocks("python")[:1]
    namespace: dict = {}
    exec(compile(code, "README.md", "exec"), namespace)
    assert (tmp_path / "my_model" / "model.safetensors").is_file()
    assert set(namespace["terms"]) == {"contrastive_loss", "separation_loss", "loss"}


def test_readme_and_docs_are_reference_not_history() -> None:
    """Written for a reader who never saw the project's history: that lives in the git log."""
    for path in [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]:
        text = path.read_text()
        found = re.findall(r"(?i)\bissues? \d+|previous default|deprecated", text)
        assert not found, f"{path.name}: {found}"


def test_readme_links_every_docs_page() -> None:
    for page in sorted((ROOT / "docs").glob("*.md")):
        assert f"](docs/{page.name})" in README, f"README's Further reading does not link docs/{page.name}"
