"""The layout of the design card: the library ``genepool/`` never imports Dagster (nor the Dagster folders),
``resources/`` holds only Dagster resources (plus tiny factories), ``assets/`` never reaches up into
``orchestration/``, and the top level holds what the card names."""

from __future__ import annotations

import ast
import importlib
import inspect
import json
import os
import pkgutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DAGSTER_FOLDERS = ("assets", "resources", "orchestration")
MAX_FACTORY_LINES = 25


def _py_files(folder: str) -> list[Path]:
    return sorted(p for p in (ROOT / folder).rglob("*.py") if "__pycache__" not in p.parts)


def _imported_modules(path: Path) -> list[tuple[int, str]]:
    """(line, module) of every import in a file, including imports inside functions."""
    out = []
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            out += [(node.lineno, a.name) for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            out.append((node.lineno, node.module))
    return out


def _violations(folder: str, forbidden) -> list[str]:
    return [
        f"{p.relative_to(ROOT)}:{line}: imports {mod}"
        for p in _py_files(folder)
        for line, mod in _imported_modules(p)
        if forbidden(mod.split(".")[0])
    ]


def test_the_top_level_is_the_design_cards():
    for name in ("orchestration", "assets", "resources", "dbt_metrics", "tests", "genepool"):
        assert (ROOT / name).is_dir(), name
    for name in ("workspace.yaml", "pyproject.toml", "README.md"):
        assert (ROOT / name).is_file(), name
    assert "module_name: orchestration.definitions" in (ROOT / "workspace.yaml").read_text()
    assert not (ROOT / "genepool" / "orchestration").exists() and not (ROOT / "genepool" / "assets").exists()


def test_the_library_source_never_imports_dagster_or_the_dagster_folders():
    bad = _violations("genepool", lambda root: root.startswith("dagster") or root in DAGSTER_FOLDERS)
    hint = "genepool/ is the Dagster-free library; move these into assets/, resources/ or orchestration/"
    assert not bad, hint + ":\n" + "\n".join(bad)


def test_importing_every_library_module_loads_no_dagster():
    """In a fresh interpreter, import each genepool module in turn; name the first that pulls Dagster in."""
    script = """
import importlib, json, pkgutil, sys
import genepool
names = sorted(m.name for m in pkgutil.walk_packages(genepool.__path__, "genepool."))
for name in names:
    importlib.import_module(name)
    loaded = sorted(m for m in sys.modules if m.split(".")[0].startswith("dagster") or m.split(".")[0] in sys.argv[1:])
    if loaded:
        print(json.dumps({"culprit": name, "loaded": loaded[:10]}))
        sys.exit(1)
print(json.dumps({"imported": names}))
"""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.run(
        [sys.executable, "-c", script, *DAGSTER_FOLDERS], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300
    )
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    imported = json.loads(proc.stdout.strip().splitlines()[-1])["imported"]
    expected = {
        "genepool." + p.relative_to(ROOT / "genepool").with_suffix("").as_posix().replace("/", ".")
        for p in _py_files("genepool")
        if p.name != "__init__.py" and (p.parent / "__init__.py").exists()
    }
    assert expected <= set(imported), sorted(expected - set(imported))  # every module was really imported
    assert "genepool.replay" in imported and "genepool.llm" in imported


def test_assets_and_resources_never_reach_up_into_orchestration():
    bad = _violations("assets", lambda root: root == "orchestration")
    bad += _violations("resources", lambda root: root in ("assets", "orchestration"))
    assert not bad, "\n".join(bad)


def _resource_modules() -> list[str]:
    import resources

    return ["resources"] + [m.name for m in pkgutil.iter_modules(resources.__path__, "resources.")]


@pytest.mark.parametrize("module_name", _resource_modules())
def test_resources_hold_only_dagster_resources_and_tiny_factories(module_name):
    import dagster as dg

    module = importlib.import_module(module_name)
    for name, obj in vars(module).items():
        if getattr(obj, "__module__", None) != module_name:
            continue  # imported from elsewhere
        if inspect.isclass(obj):
            assert issubclass(obj, (dg.ConfigurableResource, dg.ConfigurableIOManager)), (
                f"{module_name}.{name} is not a Dagster ConfigurableResource: plain adapters belong in genepool/"
            )
        elif inspect.isfunction(obj):
            lines = len(inspect.getsource(obj).splitlines())
            assert lines <= MAX_FACTORY_LINES, (
                f"{module_name}.{name} has {lines} lines: resources/ holds thin resources and tiny factories; "
                "move the logic into genepool/"
            )
