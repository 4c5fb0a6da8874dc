"""Every first-party `from X import Y`, the lazy ones inside functions too, names a real module and
a name it defines. Benchmarks and CLIs import lazily, so a renamed module breaks them only when a
user runs them; this finds it statically, without importing (no TensorFlow, no gevent patching)."""

from __future__ import annotations

import ast
from functools import cache
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = {p.parent.name for p in ROOT.glob("*/__init__.py")}
SKIP = {".venv", ".venv-k8s", "build", "reports", "model_repository"}


def module_file(module: str) -> Path | None:
    base = ROOT.joinpath(*module.split("."))
    return next((c for c in (base.with_suffix(".py"), base / "__init__.py") if c.exists()), None)


@cache
def defined_names(path: Path) -> frozenset[str]:
    """Names a module binds anywhere at module level (including under if/try)."""
    names: set[str] = set()
    exported: set[str] = set()
    tree = ast.parse(path.read_text())
    stack: list[ast.AST] = list(tree.body)
    while stack:
        node = stack.pop()
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            names.add(node.name)
        elif isinstance(node, (ast.Assign, ast.AnnAssign, ast.AugAssign)):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            bound = {n.id for t in targets for n in ast.walk(t) if isinstance(n, ast.Name)}
            names |= bound
            if "__all__" in bound and node.value is not None:  # lazy names a __getattr__ serves
                exported |= {c.value for c in ast.walk(node.value)
                             if isinstance(c, ast.Constant) and isinstance(c.value, str)}
        elif isinstance(node, (ast.Import, ast.ImportFrom)):
            names.update((a.asname or a.name).split(".")[0] for a in node.names)
        elif isinstance(node, (ast.If, ast.Try, ast.With)):
            stack.extend(ast.iter_child_nodes(node))
        elif isinstance(node, ast.ExceptHandler):
            stack.extend(node.body)
    if "__getattr__" in names:
        names |= exported
    return frozenset(names)


def first_party_imports() -> list[tuple[str, ast.ImportFrom]]:
    found = []
    for path in sorted(ROOT.rglob("*.py")):
        if SKIP & set(path.relative_to(ROOT).parts):
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if (isinstance(node, ast.ImportFrom) and node.level == 0 and node.module
                    and node.module.split(".")[0] in PACKAGES):
                found.append((f"{path.relative_to(ROOT)}:{node.lineno}", node))
    return found


def unresolved(where: str, node: ast.ImportFrom) -> list[str]:
    path = module_file(node.module)
    if path is None:
        return [f"{where}: no module {node.module}"]
    return [f"{where}: {node.module} defines no {a.name}" for a in node.names
            if a.name != "*" and a.name not in defined_names(path)
            and module_file(f"{node.module}.{a.name}") is None]


def test_every_first_party_import_resolves() -> None:
    imports = first_party_imports()
    assert len(imports) > 100  # the scan sees the project
    problems = [p for where, node in imports for p in unresolved(where, node)]
    assert not problems, "\n".join(problems)


def test_the_check_finds_a_missing_module_and_a_missing_name() -> None:
    stale = ast.parse("from loadtest.settings import parse_seconds\n"
                      "from loadtest.options import no_such_name\n"
                      "from loadtest.options import parse_seconds\n").body
    assert [len(unresolved("x", n)) for n in stale] == [1, 1, 0]
