"""The docs stay true: docs/cli.md is the commands' current help, and every command the README and the docs show
is one the current CLI and scripts accept."""

from __future__ import annotations

import importlib.util
from pathlib import Path

DOCS = Path(__file__).resolve().parents[1] / "docs"


def _make_cli_doc():
    spec = importlib.util.spec_from_file_location("make_cli_doc", DOCS / "make_cli_doc.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_cli_reference_is_current(monkeypatch):
    monkeypatch.setenv("COLUMNS", "100")
    page = (DOCS / "cli.md").read_text(encoding="utf-8")
    assert page == _make_cli_doc().cli_reference(), "docs/cli.md is stale: run python docs/make_cli_doc.py"
    for command in ("info", "metrics", "score", "simulate series", "simulate dataset", "train", "eval", "export"):
        assert f"## `sem-focus {command}`" in page
    assert "--regime {auto,adapt,full}" in page


ROOT = DOCS.parent
#: Pages that show commands (docs/cli.md is the CLI's own help, checked above).
PAGES = [
    ROOT / "README.md",
    *sorted(p for p in DOCS.glob("*.md") if p.name != "cli.md"),
    ROOT / "src/napari_sem_focus/weights/MODEL_CARD.md",
]
#: The programs whose command lines the checks read.
PROGRAMS = ("sem-focus", "python", "torchrun", "bash")


def _shown_commands(text: str, inline: bool = False) -> list[str]:
    """Shell commands a page shows: lines of its code blocks (backslash continuations joined, split at && and ;),
    or with ``inline`` its inline code spans that start with a command name (often a mention of one option)."""
    import re

    if inline:
        prose = re.sub(r"```.*?```", "", text, flags=re.S)
        return re.findall(r"`((?:sem-focus|python|torchrun) [^`]+)`", prose)
    commands = []
    for block in re.findall(r"```[a-z]*\n(.*?)```", text, flags=re.S):
        for line in block.replace("\\\n", " ").splitlines():
            parts = [part.strip() for part in re.split(r"&&|;", line.split(" #")[0])]
            commands += [part for part in parts if part.split(" ")[0] in PROGRAMS]
    return commands


def _cli_argv(command: str) -> list[str] | None:
    """The arguments after the program name when ``command`` runs the sem-focus CLI (directly, as a module or
    under torchrun), else None. Shell variables become a placeholder path."""
    import re
    import shlex

    words = shlex.split(re.sub(r"\$\{?\w+\}?", "X", command))
    if words and words[0] == "sem-focus":
        return words[1:]
    if "-m" in words and words[words.index("-m") + 1 : words.index("-m") + 2] == ["napari_sem_focus"]:
        return words[words.index("-m") + 2 :]
    return None


def test_every_sem_focus_command_shown_in_the_readme_and_docs_parses():
    """Every `sem-focus ...` (or `python -m napari_sem_focus ...`, `torchrun ... -m napari_sem_focus ...`) command
    on the pages is accepted by the current CLI: no renamed option or subcommand left behind in the docs."""
    from napari_sem_focus.cli import build_parser

    parser = build_parser()
    checked = 0
    for page in PAGES:
        text = page.read_text(encoding="utf-8")
        for command in _shown_commands(text):
            argv = _cli_argv(command)
            if argv is None or "..." in command or not argv or "-h" in argv or "--help" in argv:
                continue
            try:
                parser.parse_args(argv)
            except SystemExit as err:
                raise AssertionError(f"{page.name}: the CLI refuses `{command}`") from err
            checked += 1
        for mention in _shown_commands(text, inline=True):  # `sem-focus train --ema`: the option must exist
            argv = _cli_argv(mention) or []
            sub = parser
            for word in argv:
                choices = _subcommands(sub)
                if word not in choices:
                    break
                sub = choices[word]
            known = {o for action in sub._actions for o in action.option_strings}
            unknown = [w.split("=")[0] for w in argv if w.startswith("--") and w.split("=")[0] not in known]
            assert not unknown, f"{page.name}: `{mention}`: no option {unknown}"
    assert checked >= 15, checked


def _subcommands(parser):
    import argparse

    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return action.choices
    return {}


def test_every_script_shown_in_the_readme_and_docs_exists_and_takes_its_options():
    """`python benchmarks/x.py --opt ...` and `python docs/x.py` lines name scripts that exist, and each option they
    pass is one the script's --help lists."""
    import re
    import shlex
    import subprocess
    import sys

    helps: dict[str, str] = {}
    checked = 0
    for page in PAGES:
        text = page.read_text(encoding="utf-8")
        for command in _shown_commands(text) + _shown_commands(text, inline=True):
            words = shlex.split(re.sub(r"\$\{?\w+\}?", "X", command))
            scripts = [w for w in words if re.fullmatch(r"(benchmarks|docs|tools)/[\w/]+\.(py|sh)", w)]
            if not scripts or not words[0].startswith(("python", "bash")):
                continue
            script = scripts[0]
            assert (ROOT / script).is_file(), f"{page.name}: `{command}` names a missing script"
            checked += 1
            options = [w.split("=")[0] for w in words if w.startswith("--")]
            if not options or not script.endswith(".py"):
                continue
            if script not in helps:
                run = subprocess.run([sys.executable, script, "--help"], cwd=ROOT, capture_output=True, text=True)
                assert run.returncode == 0, f"{script} --help failed: {run.stderr[-500:]}"
                helps[script] = run.stdout
            for option in options:
                listed = re.search(re.escape(option) + r"(?![\w-])", helps[script])
                assert listed, f"{page.name}: {script} has no option {option} (`{command}`)"
    assert checked >= 20, checked


def test_every_test_named_in_the_reliability_matrix_exists():
    """docs/reliability.md names a test for each case; each named test is a function of that test file (a
    `::name` after `file.py::first` is in the same file)."""
    import re

    text = (DOCS / "reliability.md").read_text(encoding="utf-8")
    named = 0
    for cell in re.findall(r"`(test_\w+\.py)::(\w+)`((?:, `::\w+`)*)", text):
        source = (ROOT / "tests" / cell[0]).read_text(encoding="utf-8")
        for name in [cell[1], *re.findall(r"::(\w+)", cell[2])]:
            assert re.search(rf"^def {name}\(", source, flags=re.M), f"{cell[0]} has no {name}"
            named += 1
    assert named >= 40, named
