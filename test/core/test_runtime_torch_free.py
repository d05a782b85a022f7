"""runtime/ is the robot's side: none of its modules imports torch or transformers when it is imported.

Read from the source (ast): every import a module runs on import (top level, class bodies, if / try / with blocks;
not function bodies, not ``if TYPE_CHECKING:``), followed through the bgprompt_core modules it imports (and their
packages' __init__), must stay clear of the heavy packages. Then checked once for real in a fresh interpreter.
"""
from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
CORE = ROOT / "bgprompt_core"
HEAVY = ("torch", "transformers", "torchvision")
RUNTIME = sorted(p for p in (CORE / "runtime").glob("*.py"))


def module_file(name: str) -> Path | None:
    """The source file of a bgprompt_core module or package, or None (not ours, or not there)."""
    if name != "bgprompt_core" and not name.startswith("bgprompt_core."):
        return None
    path = ROOT.joinpath(*name.split("."))
    if (path / "__init__.py").is_file():
        return path / "__init__.py"
    return path.with_suffix(".py") if path.with_suffix(".py").is_file() else None


def _type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or \
        (isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def import_time_imports(tree: ast.Module, package: str) -> list[str]:
    """Absolute names of the modules a module imports when it is itself imported."""
    found: list[str] = []

    def visit(body: list[ast.stmt]) -> None:
        for node in body:
            if isinstance(node, ast.Import):
                found.extend(a.name for a in node.names)
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    parts = package.split(".")[:len(package.split(".")) - node.level + 1]
                    base = ".".join(parts + ([base] if base else []))
                found.append(base)
                found.extend(f"{base}.{a.name}" for a in node.names if module_file(f"{base}.{a.name}"))
            elif isinstance(node, ast.If):
                if not _type_checking(node.test):
                    visit(node.body)
                visit(node.orelse)
            elif isinstance(node, (ast.Try, ast.With, ast.ClassDef)):
                visit(node.body)
                for h in getattr(node, "handlers", []):
                    visit(h.body)
                visit(getattr(node, "orelse", []))
                visit(getattr(node, "finalbody", []))
    visit(tree.body)
    return found


def heavy_imports(start: str) -> list[str]:
    """'a -> b -> torch' for every chain by which importing module ``start`` would import a heavy package."""
    chains, seen, todo = [], set(), [(start, [start])]
    while todo:
        name, chain = todo.pop()
        parts = name.split(".")
        for k in range(1, len(parts) + 1):  # importing a.b.c runs a/__init__, a/b/__init__ and a/b/c
            mod = ".".join(parts[:k])
            path = module_file(mod)
            if path is None or mod in seen:
                continue
            seen.add(mod)
            package = mod if path.name == "__init__.py" else mod.rpartition(".")[0]
            for imp in import_time_imports(ast.parse(path.read_text()), package):
                if imp.split(".")[0] in HEAVY:
                    chains.append(" -> ".join(chain + ([mod] if mod != chain[-1] else []) + [imp]))
                else:
                    todo.append((imp, chain + [imp]))
    return chains


def dotted(path: Path) -> str:
    rel = path.relative_to(ROOT).with_suffix("")
    return ".".join(rel.parts[:-1] if rel.name == "__init__" else rel.parts)


@pytest.mark.parametrize("path", RUNTIME, ids=lambda p: p.name)
def test_no_runtime_module_imports_torch_or_transformers_when_imported(path):
    assert heavy_imports(dotted(path)) == []


def test_the_walk_sees_a_module_level_torch_import_and_one_made_through_another_module(tmp_path):
    tree = ast.parse("import numpy\nif TYPE_CHECKING:\n    import torch\ndef f():\n    import transformers\n")
    assert import_time_imports(tree, "bgprompt_core.runtime") == ["numpy"]
    tree = ast.parse("try:\n    from torch import nn\nexcept ImportError:\n    pass\n"
                     "class A:\n    import transformers\n")
    assert import_time_imports(tree, "bgprompt_core.runtime") == ["torch", "transformers"]
    assert heavy_imports("bgprompt_core.method.model")  # the torch side: found through its own imports


def test_importing_every_runtime_module_loads_neither_torch_nor_transformers():
    names = [dotted(p) for p in RUNTIME]
    code = (f"import sys\nfor n in {names!r}:\n    __import__(n)\n"
            f"print([m for m in {list(HEAVY)!r} if m in sys.modules])")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, check=True)
    assert out.stdout.strip() == "[]", out.stderr
