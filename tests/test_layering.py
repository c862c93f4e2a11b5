"""The import directions of DESIGN.md, checked: a contract, as kopf's import-linter keeps one.

    overlay      <- nodeagent -> controlplane.client
    raftstore    <- controlplane
    chaos        -> controlplane.client, .lab, .auth, .dirlock (it drives a lab from outside)
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("raftstore", "controlplane", "nodeagent", "overlay", "chaos")
#: package -> what of ours it may import (module prefixes).
ALLOWED = {
    "raftstore": (),
    "overlay": (),
    "controlplane": ("raftstore",),
    "nodeagent": ("overlay", "controlplane.client"),
    "chaos": ("controlplane.client", "controlplane.lab", "controlplane.auth",
              "controlplane.dirlock"),
}
#: The composition roots: the ``corral`` command dispatches to every package's entry point, and
#: ``corral up`` runs a controller and an agent in one process, ``corral lab`` starts both as
#: processes in network namespaces.
EXEMPT = {"controlplane/cli.py", "controlplane/up.py", "controlplane/lab.py"}


def _imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(), filename=str(path))
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.add(node.module)
    return found


@pytest.mark.parametrize("package", PACKAGES)
def test_package_imports_only_what_the_design_allows(package: str) -> None:
    wrong = []
    for path in sorted((ROOT / package).rglob("*.py")):
        if path.relative_to(ROOT).as_posix() in EXEMPT:
            continue
        for module in _imports(path):
            top = module.split(".")[0]
            if top not in PACKAGES or top == package:
                continue
            if not any(module == a or module.startswith(a + ".") for a in ALLOWED[package]):
                wrong.append(f"{path.relative_to(ROOT)} imports {module}")
    assert not wrong, "\n".join(wrong)


def test_contract_can_fail(tmp_path: Path) -> None:
    bad = tmp_path / "m.py"
    bad.write_text("from controlplane.api import registry\n")
    assert "controlplane.api" in _imports(bad)
