"""The docs stay true: docs/cli.md is the commands' current help."""

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
