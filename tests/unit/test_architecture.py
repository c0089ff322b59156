"""The layout of `federation/` keeps its promises (docs/architecture.md).

Which package may import which is `lint-imports` (pyproject.toml, run by `make lint`) and the
hail/boto3/paramiko rule is ruff's banned-api; these tests check what an import graph cannot
see: that the statistics do no I/O, and that every module says where it sits.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from federation.files import REPO_ROOT

PACKAGE = REPO_ROOT / "federation"
MODULES = sorted(PACKAGE.rglob("*.py"))
# Modules through which a function could touch files, the network or the environment.
IO_MODULES = {
    "os",
    "io",
    "pathlib",
    "shutil",
    "tempfile",
    "gzip",
    "sqlite3",
    "subprocess",
    "socket",
}
IO_CALLS = {"open", "print", "input"}


def _imported_modules(tree: ast.Module) -> set[str]:
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module.split(".")[0])
    return names


@pytest.mark.parametrize("path", sorted((PACKAGE / "stats").glob("*.py")), ids=lambda p: p.name)
def test_statistics_do_no_io(path: Path):
    tree = ast.parse(path.read_text())
    assert not _imported_modules(tree) & (IO_MODULES | {"pandas"}), path.name
    calls = {
        node.func.id
        for node in ast.walk(tree)
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Name)
    }
    assert not calls & IO_CALLS, path.name


@pytest.mark.parametrize("path", MODULES, ids=lambda p: str(p.relative_to(PACKAGE)))
def test_every_module_says_where_it_sits(path: Path):
    if path.name == "__main__.py":
        return
    docstring = ast.get_docstring(ast.parse(path.read_text()))
    assert docstring and len(docstring) > 40, f"{path.relative_to(REPO_ROOT)}: no module docstring"


def test_the_readme_layout_map_names_every_package():
    readme = (REPO_ROOT / "README.md").read_text()
    packages = sorted(path.parent.name for path in PACKAGE.glob("*/__init__.py"))
    missing = [name for name in packages if f"{name}/" not in readme]
    assert not missing, f"README layout map lacks {missing}"
