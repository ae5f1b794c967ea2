"""The dependency rules of the three packages, checked by reading every import statement (ast), plus one import.

- ``phi3_aipc`` is the framework-free engine: it imports no framework, no adapter and not its own CLI
  (the CLI imports the engine, never the reverse).
- Backends only run an already resolved model: they import no export or conversion code and no adapter.
- The adapters are independent of each other and reach the engine only through its public API, never a backend.
- Importing the packages loads no heavy library: a backend loads only when an engine chooses it.
"""

from __future__ import annotations

import ast
import fnmatch
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
FRAMEWORKS = ("langchain*", "llama_index*")  # the frameworks and, with them, the adapter packages
CLI = ("phi3_aipc.cli", "phi3_aipc.cli.*")
EXPORT = ("phi3_aipc.export*", "phi3_aipc.convert*")
ADAPTERS = ("langchain_phi3_aipc*", "llama_index_phi3_aipc*")
BACKENDS = ("phi3_aipc.backends*",)
HEAVY = ("torch", "openvino", "openvino_genai", "openvino_tokenizers", "onnxruntime", "onnxruntime_genai")
HEAVY += ("transformers", "optimum")
# `python -m phi3_aipc` runs the CLI: the entry point exists to import it, and nothing imports the entry point.
ENTRY_POINTS = {ROOT / "phi3_aipc" / "__main__.py"}
DYNAMIC_IMPORTERS = {"import_module", "__import__"}


def imported_modules(source: str, module: str, is_package: bool = False) -> set[str]:
    """Every module an import in ``source`` may load: ``import a.b``, ``from a import b`` (a, and a.b in case b is
    a submodule), relative imports resolved against ``module``, and literal ``importlib.import_module("a")``.
    Imports under ``if TYPE_CHECKING`` count too: the rules are about the design, not only about run time."""
    package = module if is_package else module.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = _absolute(node.module, node.level, package)
            found.add(base)
            found.update(f"{base}.{alias.name}" for alias in node.names if alias.name != "*")
        elif isinstance(node, ast.Call) and _called_name(node.func) in DYNAMIC_IMPORTERS and node.args:
            first = node.args[0]
            if isinstance(first, ast.Constant) and isinstance(first.value, str):
                found.add(first.value)
    return found


def _absolute(name: str | None, level: int, package: str) -> str:
    if level == 0:
        return name or ""
    parts = package.split(".")
    base = ".".join(parts[: len(parts) - level + 1])
    return f"{base}.{name}" if name else base


def _called_name(func: ast.expr) -> str | None:
    if isinstance(func, ast.Name):
        return func.id
    if isinstance(func, ast.Attribute):
        return func.attr
    return None


def modules_of(package: str, *, exclude: tuple[str, ...] = ()) -> dict[str, Path]:
    """Dotted name -> file, for every .py file of ``package`` outside the ``exclude`` subfolders."""
    root = ROOT / package
    skipped = [root / sub for sub in exclude]
    files = {}
    for path in sorted(root.rglob("*.py")):
        if path in ENTRY_POINTS or any(path.is_relative_to(s) for s in skipped):
            continue
        dotted = ".".join(path.relative_to(ROOT).with_suffix("").parts)
        files[dotted] = path
    assert files, f"no Python files found under {root}"
    return files


def violations(package: str, forbidden: tuple[str, ...], *, exclude: tuple[str, ...] = ()) -> list[str]:
    out = []
    for dotted, path in modules_of(package, exclude=exclude).items():
        is_package = path.name == "__init__.py"
        name = dotted.removesuffix(".__init__")
        imported = imported_modules(path.read_text(encoding="utf-8"), name, is_package)
        bad = {m for m in imported if any(fnmatch.fnmatchcase(m, pattern) for pattern in forbidden)}
        # `from a import b` yields a and a.b: name a alone when it is already forbidden.
        out += [
            f"{path.relative_to(ROOT)} imports {m}" for m in sorted(bad) if m.rpartition(".")[0] not in bad
        ]
    return out


# -- the analysis itself finds what it must find ------------------------------------------------------------------
def test_the_import_reader_sees_every_form_of_import() -> None:
    source = textwrap.dedent(
        """
        import langchain_core.messages as lc
        from phi3_aipc import cli
        from .. import export
        from ..convert import thing
        from typing import TYPE_CHECKING
        if TYPE_CHECKING:
            from llama_index.core.llms import ChatMessage
        def later():
            import importlib
            return importlib.import_module("phi3_aipc.backends.openvino_genai")
        """
    )
    found = imported_modules(source, "phi3_aipc.backends.openvino_genai")
    assert {
        "langchain_core.messages",
        "phi3_aipc.cli",
        "phi3_aipc.export",
        "phi3_aipc.convert",
        "phi3_aipc.convert.thing",
        "llama_index.core.llms",
        "phi3_aipc.backends.openvino_genai",
    } <= found
    assert imported_modules("from . import base", "phi3_aipc.backends", is_package=True) >= {
        "phi3_aipc.backends.base"
    }


# -- the rules --------------------------------------------------------------------------------------------------
def test_engine_imports_no_framework_adapter_or_cli() -> None:
    found = violations("phi3_aipc", FRAMEWORKS + CLI, exclude=("cli",))
    assert not found, "\n".join(found)


def test_backends_import_no_export_code_and_no_adapter() -> None:
    found = violations("phi3_aipc/backends", EXPORT + ADAPTERS)
    assert not found, "\n".join(found)


def test_langchain_adapter_imports_neither_the_other_adapter_nor_a_backend() -> None:
    found = violations("langchain_phi3_aipc", ("llama_index_phi3_aipc*", *BACKENDS))
    assert not found, "\n".join(found)


def test_llamaindex_adapter_imports_neither_the_other_adapter_nor_a_backend() -> None:
    found = violations("llama_index_phi3_aipc", ("langchain_phi3_aipc*", *BACKENDS))
    assert not found, "\n".join(found)


def test_importing_the_packages_loads_no_heavy_library() -> None:
    pytest.importorskip("langchain_core")
    pytest.importorskip("llama_index.core")
    code = textwrap.dedent(
        f"""
        import sys
        import phi3_aipc, langchain_phi3_aipc, llama_index_phi3_aipc
        heavy = {HEAVY!r}
        loaded = sorted(m for m in sys.modules if m.split(".")[0] in heavy or m.startswith(("openvino", "onnxruntime")))
        print(loaded)
        """
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, check=True)
    assert proc.stdout.strip() == "[]", proc.stdout + proc.stderr
