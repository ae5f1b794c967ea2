"""The server stack stays inside phi3_aipc.server (and the serve command): importing the packages loads none of it."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SERVER_STACK = ("fastapi", "uvicorn", "starlette")
ALLOWED = (ROOT / "phi3_aipc" / "server", ROOT / "phi3_aipc" / "cli" / "serve.py")


def test_only_the_server_imports_the_server_stack() -> None:
    sys.path.insert(0, str(ROOT / "tests"))
    from test_dependency_rules import imported_modules

    offenders = []
    for package in ("phi3_aipc", "langchain_phi3_aipc", "llama_index_phi3_aipc"):
        for path in sorted((ROOT / package).rglob("*.py")):
            if any(path == allowed or path.is_relative_to(allowed) for allowed in ALLOWED):
                continue
            dotted = ".".join(path.relative_to(ROOT).with_suffix("").parts)
            found = imported_modules(path.read_text(encoding="utf-8"), dotted, path.name == "__init__.py")
            offenders += [f"{path.relative_to(ROOT)}: {m}" for m in found if m.split(".")[0] in SERVER_STACK]
    assert offenders == []


def test_importing_the_packages_loads_no_server_stack() -> None:
    pytest.importorskip("langchain_core")
    pytest.importorskip("llama_index.core")
    code = textwrap.dedent(
        f"""
        import sys
        import phi3_aipc, phi3_aipc.remote, langchain_phi3_aipc, llama_index_phi3_aipc
        print(sorted(m for m in sys.modules if m.split(".")[0] in {SERVER_STACK!r}))
        """
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, check=True)
    assert proc.stdout.strip() == "[]", proc.stdout + proc.stderr
