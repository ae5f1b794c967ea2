"""An adapter imported without its framework names the extra to install (the README's first command installs
``.[openvino]`` only). Each case runs in a fresh interpreter whose import system hides the framework, as an
environment without it would: the framework is installed here, so a meta-path finder refuses it."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest

HIDE_AND_IMPORT = textwrap.dedent(
    """
    import importlib.abc, sys

    class Hide(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path, target=None):
            if name == {hidden!r} or name.startswith({hidden!r} + "."):
                raise ModuleNotFoundError(f"No module named {{name!r}}", name=name)
            return None

    sys.meta_path.insert(0, Hide())
    try:
        import {adapter}
    except ModuleNotFoundError as exc:
        print(type(exc).__mro__[1:3], exc.name)
        print(exc)
    else:
        print("imported")
    """
)


@pytest.mark.parametrize(
    ("adapter", "hidden", "extra", "package"),
    [
        ("langchain_phi3_aipc", "langchain_core", "langchain", "langchain-core"),
        ("llama_index_phi3_aipc", "llama_index", "llama-index", "llama-index-core"),
    ],
)
def test_a_missing_framework_names_its_extra(adapter: str, hidden: str, extra: str, package: str) -> None:
    script = HIDE_AND_IMPORT.format(hidden=hidden, adapter=adapter)
    run = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True)
    kinds, message = run.stdout.strip().split("\n", 1)
    assert "ModuleNotFoundError" in run.stdout, run.stdout  # still what `except ImportError` catches
    assert kinds.endswith(f" {hidden}"), kinds  # exc.name is the missing module, as Python's own error
    assert f'".[{extra}]"' in message and f"pip install {package}" in message, message


def test_a_missing_module_other_than_the_framework_is_not_relabelled() -> None:
    """Hiding a module the adapter does not import through its framework gives Python's own error, unchanged."""
    script = HIDE_AND_IMPORT.format(hidden="phi3_aipc", adapter="langchain_phi3_aipc")
    run = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True)
    assert "No module named 'phi3_aipc" in run.stdout and "pip install" not in run.stdout, run.stdout
