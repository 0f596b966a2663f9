"""The layers of the package (docs/contributing.md): the core stays free of Qt/napari, torch is not imported by the
napari-facing modules at start-up, and nothing but the training side imports the simulator, datasets or training.
Checked on every module of the package, each imported alone in a fresh interpreter."""

from __future__ import annotations

import ast
import json
import pkgutil
import shutil
import subprocess
import sys
from functools import cache
from pathlib import Path

import pytest

import napari_sem_focus

GUI = {"napari", "qtpy", "PyQt5", "PyQt6", "PySide2", "PySide6", "magicgui", "vispy"}
#: What may import the simulator, the datasets and the training loop when it is imported.
TRAINING_SIDE = (
    "napari_sem_focus.simulate",
    "napari_sem_focus.training.data",
    "napari_sem_focus.training.train",
    "napari_sem_focus.training.evaluate",
    "napari_sem_focus.focusing.microscopes.fibsem_demo",  # fibsem's demo microscope draws virtual-SEM frames
)
#: What napari loads at start-up (napari.yaml): no torch there.
NAPARI_FACING = ("napari_sem_focus._reader", "napari_sem_focus._sample_data", "napari_sem_focus._widgets")


def _all_modules() -> list[str]:
    walk = pkgutil.walk_packages(napari_sem_focus.__path__, "napari_sem_focus.")
    return ["napari_sem_focus", *sorted(m.name for m in walk if not m.name.endswith("__main__"))]


def _within(module: str, packages: tuple[str, ...]) -> bool:
    return any(module == p or module.startswith(p + ".") for p in packages)


@cache
def _imported_by(module: str) -> tuple[set[str], set[str]]:
    """(top-level packages, napari_sem_focus modules) in sys.modules after importing ``module`` alone."""
    code = f"import sys, json, {module}\nprint(json.dumps(sorted(sys.modules)))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    names = json.loads(out.strip().splitlines()[-1])
    return {n.split(".")[0] for n in names}, {n for n in names if n.startswith("napari_sem_focus")}


@pytest.mark.parametrize("module", _all_modules())
def test_every_module_keeps_to_its_layer(module):
    packages, own = _imported_by(module)
    if not _within(module, ("napari_sem_focus._widgets",)):
        assert not packages & GUI, f"{module} imports {sorted(packages & GUI)} (core and reader stay GUI-free)"
    if _within(module, NAPARI_FACING) and not _within(module, ("napari_sem_focus._widgets",)):
        assert "torch" not in packages, f"{module} imports torch at napari start-up"
    if _within(module, ("napari_sem_focus._widgets",)):
        assert "torch" not in packages, f"{module} imports torch when napari builds the widget"
    if not _within(module, TRAINING_SIDE):
        wrong = sorted(m for m in own if _within(m, TRAINING_SIDE))
        assert not wrong, f"{module} imports {wrong} (only the training side may)"


CORE = [
    "io.series",
    "io.metadata",
    "io.databar",
    "scoring.metrics",
    "scoring.structure",
    "scoring.focus_curve",
    "scoring.analysis",
    "scoring.report",
    "cli",
]


def test_core_imports_neither_qt_nor_napari_nor_torch():
    code = (
        "import sys\n"
        + "".join(f"import napari_sem_focus.{m}\n" for m in CORE)
        + "bad = sorted(m for m in sys.modules if m.split('.')[0] in "
        "{'napari', 'qtpy', 'PyQt5', 'PyQt6', 'PySide2', 'PySide6', 'torch', 'magicgui'})\n"
        "print(','.join(bad))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == ""


SCORE_PATH_NEVER = ("napari_sem_focus.simulate", "napari_sem_focus.training")


def test_scoring_a_file_never_imports_the_simulator_data_or_training(tmp_path):
    """Read a TIFF, score it in every mode with the bundled weights and compute the classic metrics: the score
    path (io, metadata, metrics, infer, structure, analysis, weights, model) loads no simulator, dataset or
    training module, and no microscope library (fibsem)."""
    code = f"""
import sys
import numpy as np
import tifffile
rng = np.random.default_rng(0)
stack = (rng.random((2, 300, 400)) * 255).astype(np.uint8)
tifffile.imwrite({str(tmp_path / "stack.tif")!r}, stack)
from napari_sem_focus.scoring.analysis import score_rows
from napari_sem_focus.io.series import read_series
from napari_sem_focus.scoring.infer import MODES
series = read_series({str(tmp_path / "stack.tif")!r})
for mode in MODES:
    rows = list(score_rows(series, None, 5000.0, mode, "cpu", metrics=["absolute_variance"]))
    assert len(rows) == 2, rows
never = {SCORE_PATH_NEVER!r} + ("fibsem",)  # nor a microscope library
print(",".join(sorted(m for m in sys.modules if m in never or m.startswith(tuple(n + "." for n in never)))))
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == ""


# --- The layers, statically: every import in the source (lazy ones included), no cycle, none climbing ---------------

#: Layers from the bottom up; a module may import its own part (subpackage) and any part of a lower layer.
LAYERS: tuple[tuple[str, ...], ...] = (
    ("__init__", "errors", "atomic", "device", "allocator"),  # shared helpers
    ("io",),
    ("scoring",),
    ("simulate",),
    ("training", "focusing", "batch"),  # side by side: none imports another
    ("cli", "_widgets", "_reader", "_sample_data", "__main__"),  # the front ends, one part
)
HELPERS, FRONT_ENDS = LAYERS[0], LAYERS[-1]  # parts of these layers may import each other
SOURCE = Path(napari_sem_focus.__file__).parent
#: Modules beside the subpackages at the top of the package (docs/contributing.md).
TOP_MODULES = {"__init__", "__main__", "_reader", "_sample_data", "errors", "atomic", "device", "allocator"}
CORE_LIMITS = {"function": 80, "class": 150}  # lines, in the core (all but cli/ and _widgets/)


def _module_name(path: Path, root: Path) -> str:
    parts = list(path.relative_to(root).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" and len(parts) > 1 else parts)


def import_graph(root: Path) -> dict[str, set[str]]:
    """{module: modules of the package it imports}, names relative to the package, read from the source with ast
    (imports inside functions count: they form cycles and climb layers as much as those at the top)."""
    files = {_module_name(p, root): p for p in root.rglob("*.py")}
    graph: dict[str, set[str]] = {}
    for name, path in files.items():
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        edges: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ImportFrom):
                if node.level:
                    base = package.split(".") if package and package != "__init__" else []
                    base = base[: len(base) - node.level + 1]
                    target = ".".join([*base, *([node.module] if node.module else [])])
                elif node.module and node.module.split(".")[0] == root.name:
                    target = node.module.partition(".")[2]
                else:
                    continue
                for alias in node.names:
                    sub = f"{target}.{alias.name}" if target else alias.name
                    edges.add(sub if sub in files else (target or "__init__"))
            elif isinstance(node, ast.Import):
                edges.update(a.name.partition(".")[2] or "__init__" for a in node.names if a.name.startswith(root.name))
        graph[name] = {e for e in edges if e in files and e != name}
    return graph


def _part(module: str) -> str:
    return module.split(".")[0]


def _layer(module: str) -> int:
    return next(i for i, parts in enumerate(LAYERS) if _part(module) in parts)


def upward_imports(graph: dict[str, set[str]]) -> list[str]:
    """Imports that climb the layers or cross between parts of one layer, as 'a -> b' lines."""
    wrong = []
    for module, targets in sorted(graph.items()):
        for target in sorted(targets):
            parts = {_part(module), _part(target)}
            same_part = len(parts) == 1 or parts <= set(HELPERS) or parts <= set(FRONT_ENDS)
            if not same_part and _layer(target) >= _layer(module):
                wrong.append(f"{module} -> {target}")
    return wrong


def import_cycle(graph: dict[str, set[str]]) -> list[str]:
    """One import cycle as a list of modules (first == last), or [] when there is none (depth-first search)."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(module: str) -> list[str]:
        state[module] = 1
        path.append(module)
        for target in sorted(graph.get(module, ())):
            if state.get(target) == 1:
                return [*path[path.index(target) :], target]
            if target not in state and (cycle := visit(target)):
                return cycle
        state[module] = 2
        path.pop()
        return []

    for module in sorted(graph):
        if module not in state and (cycle := visit(module)):
            return cycle
    return []


def test_no_import_climbs_the_layers_and_none_forms_a_cycle():
    graph = import_graph(SOURCE)
    assert len(graph) > 60 and "scoring.infer" in graph["scoring.analysis"]  # the graph is really read
    assert upward_imports(graph) == []
    assert import_cycle(graph) == []


def _planted(tmp_path: Path, module: str, line: str) -> dict[str, set[str]]:
    root = tmp_path / SOURCE.name
    shutil.copytree(SOURCE, root, ignore=shutil.ignore_patterns("*.safetensors", "__pycache__"))
    target = root / (module.replace(".", "/") + ".py")
    target.write_text(target.read_text(encoding="utf-8") + f"\n{line}\n", encoding="utf-8")
    return import_graph(root)


def test_a_planted_upward_import_is_found(tmp_path):
    graph = _planted(tmp_path, "io.metadata", "from ..scoring import infer  # planted")
    assert upward_imports(graph) == ["io.metadata -> scoring.infer"]
    graph = _planted(tmp_path / "b", "focusing.autofocus", "from ..training import train  # planted")
    assert upward_imports(graph) == ["focusing.autofocus -> training.train"]


def test_a_planted_cycle_is_found(tmp_path):
    graph = _planted(tmp_path, "scoring.structure", "from . import infer  # planted")
    cycle = import_cycle(graph)
    assert cycle[0] == cycle[-1] and {"scoring.infer", "scoring.structure"} <= set(cycle)


def test_the_top_of_the_package_holds_subpackages_and_few_modules():
    modules = {p.stem for p in SOURCE.glob("*.py")}
    assert modules == TOP_MODULES
    assert {"io", "scoring", "training", "focusing", "batch", "simulate", "cli", "_widgets"} <= {
        p.name for p in SOURCE.iterdir() if (p / "__init__.py").exists()
    }


def longest_definitions(root: Path = SOURCE) -> list[tuple[int, str, str]]:
    """(lines, 'function'|'class', 'module:line name') of every definition in the core, longest first."""
    rows = []
    for path in root.rglob("*.py"):
        if _part(_module_name(path, root)) in ("cli", "_widgets"):
            continue
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
                kind = "class" if isinstance(node, ast.ClassDef) else "function"
                where = f"{path.relative_to(root)}:{node.lineno} {node.name}"
                rows.append((node.end_lineno - node.lineno + 1, kind, where))
    return sorted(rows, reverse=True)


def test_no_core_function_or_class_is_too_long_to_hold_in_mind():
    rows = longest_definitions()
    for kind, limit in CORE_LIMITS.items():
        longest = [r for r in rows if r[1] == kind][:3]
        print(f"longest {kind}s:", longest)
        assert longest[0][0] <= limit, f"{kind}s over {limit} lines: {[r for r in longest if r[0] > limit]}"
