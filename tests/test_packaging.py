"""Packaging: the declared version ranges hang together, and the LangChain unit suite runs with no model file at hand.

The second part exists for the lowest-versions job (.ci/lowest): it installs the floors of pyproject.toml's ranges
and has no torch, so the tiny test Phi-3 (built with torch) is not there; construction and binding need no model.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
from packaging.requirements import Requirement

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10
    tomllib = pytest.importorskip("tomli")

PYPROJECT = Path(__file__).resolve().parents[1] / "pyproject.toml"
OPENVINO_TRIO = ("openvino", "openvino-genai", "openvino-tokenizers")


def _requirements() -> list[tuple[str, Requirement]]:
    project = tomllib.loads(PYPROJECT.read_text())["project"]
    extras: dict[str, list[str]] = project["optional-dependencies"]
    groups = {"(base)": project["dependencies"], **extras}
    return [(group, Requirement(line)) for group, lines in groups.items() for line in lines]


def test_the_openvino_trio_shares_one_range_everywhere() -> None:
    """openvino, openvino-genai and openvino-tokenizers only work as a matching set: one range for all three."""
    specs = {(group, r.name): str(r.specifier) for group, r in _requirements() if r.name in OPENVINO_TRIO}
    assert {name for _, name in specs} == set(OPENVINO_TRIO)
    assert len(set(specs.values())) == 1, specs


def test_every_library_has_one_range_across_extras() -> None:
    """Where two extras name the same library, their ranges must not contradict (e.g. two transformers caps)."""
    uppers: dict[str, set[str]] = {}
    for _, requirement in _requirements():
        caps = {str(s) for s in requirement.specifier if s.operator in ("<", "<=", "~=", "==")}
        if caps:
            uppers.setdefault(requirement.name, set()).update(caps)
    assert {name: caps for name, caps in uppers.items() if len(caps) > 1} == {}


def test_langchain_core_is_not_capped_below_the_next_major() -> None:
    """Issue 17: a user with any current langchain-core 1.x can install us beside it without a downgrade."""
    (spec,) = [r.specifier for _, r in _requirements() if r.name == "langchain-core"]
    assert all(v in spec for v in ("1.0.0", "1.8.3", "1.99.0")) and "2.0.0" not in spec


def test_the_license_is_an_spdx_expression_with_its_file() -> None:
    """PEP 639: a plain SPDX string (a table makes pip and setuptools warn), and the file it ships."""
    project = tomllib.loads(PYPROJECT.read_text())["project"]
    assert project["license"] == "MIT"
    assert all((PYPROJECT.parent / name).is_file() for name in project["license-files"])


def _extra_packages(extra: str) -> set[str]:
    """The distributions an extra installs, phi3-aipc's own extras expanded."""
    extras = tomllib.loads(PYPROJECT.read_text())["project"]["optional-dependencies"]
    found: set[str] = set()
    for line in extras[extra]:
        requirement = Requirement(line)
        if requirement.name == "phi3-aipc":
            for nested in requirement.extras:
                found |= _extra_packages(nested)
        else:
            found.add(requirement.name.lower())
    return found


def test_the_examples_extra_installs_what_the_agent_examples_import() -> None:
    """Every third-party module an agent example imports at its top comes with `pip install -e ".[examples]"`."""
    import ast
    from importlib.metadata import packages_distributions

    ours = {"langchain_phi3_aipc", "llama_index_phi3_aipc", "phi3_aipc", "__future__"}
    distributions = packages_distributions()
    installed = _extra_packages("examples")
    for script in ("langchain_agent.py", "llamaindex_agent.py"):
        tree = ast.parse((PYPROJECT.parent / "examples" / script).read_text())
        modules = {
            (node.module if isinstance(node, ast.ImportFrom) else node.names[0].name).split(".")[0]
            for node in tree.body
            if isinstance(node, (ast.Import, ast.ImportFrom))
            and (not isinstance(node, ast.ImportFrom) or node.module)
        }
        third_party = {m for m in modules - ours if m not in sys.stdlib_module_names}
        for module in third_party:
            # Not installed here (.ci/lowest has no examples extra): its distribution is its own name.
            providers = distributions.get(module) or [module.replace("_", "-")]
            assert {d.lower() for d in providers} & installed, (script, module)
        assert 'pip install -e ".[examples]"' in (PYPROJECT.parent / "examples" / script).read_text()
