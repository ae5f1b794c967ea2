"""benchmarks/tool_calls_bfcl.py without a model: the bfcl-eval shims, BFCL's schema conversion on the entries the
benchmark runs, and hand-made answers scored by BFCL's real AST checker, so the script cannot rot silently."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

pytest.importorskip(
    "bfcl_eval",
    reason="needs bfcl-eval: pip install --no-deps bfcl-eval==2026.3.23 (its deps are API clients)",
)

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "tool_calls_bfcl.py"
JSON_SCHEMA_TYPES = {"object", "array", "string", "number", "integer", "boolean", "null"}


@pytest.fixture(scope="module")
def bfcl() -> ModuleType:
    spec = importlib.util.spec_from_file_location("tool_calls_bfcl", SCRIPT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses resolve their module by name
    spec.loader.exec_module(module)
    return module


def _entry(bfcl: ModuleType, category: str, index: int) -> tuple[dict[str, Any], dict[str, Any] | None]:
    return bfcl.load_category(category, index + 1)[index]


def test_the_shims_let_the_real_checker_import_without_api_clients_or_tree_sitter(bfcl: ModuleType) -> None:
    bfcl.install_bfcl_shims()
    from bfcl_eval.eval_checker.ast_eval.ast_checker import ast_checker
    from bfcl_eval.model_handler.utils import convert_to_tool

    assert callable(ast_checker) and callable(convert_to_tool)
    config = sys.modules["bfcl_eval.constants.model_config"]
    assert config.MODEL_CONFIG_MAPPING[bfcl.CHECKER_MODEL_NAME].underscore_to_dot is True
    # In a fresh interpreter: other tests of the session may have imported openai themselves.
    code = (
        "import importlib.util, sys\n"
        f"spec = importlib.util.spec_from_file_location('tool_calls_bfcl', {str(SCRIPT)!r})\n"
        "module = importlib.util.module_from_spec(spec); sys.modules[spec.name] = module\n"
        "spec.loader.exec_module(module); module.install_bfcl_shims()\n"
        "from bfcl_eval.eval_checker.ast_eval.ast_checker import ast_checker\n"
        "from bfcl_eval.model_handler.utils import convert_to_tool\n"
        "print(sorted({n.split('.')[0] for n in sys.modules} & {'openai', 'anthropic', 'tree_sitter'}))\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "[]", done.stdout + done.stderr[-2000:]


def _types(schema: Any) -> list[str]:
    """Every "type" value in a JSON schema, nested ones included."""
    if isinstance(schema, dict):
        found = [schema["type"]] if isinstance(schema.get("type"), str) else []
        return found + [t for value in schema.values() for t in _types(value)]
    if isinstance(schema, list):
        return [t for value in schema for t in _types(value)]
    return []


def test_bfcl_types_become_json_schema_types_on_every_entry_the_benchmark_runs(bfcl: ModuleType) -> None:
    from langchain_phi3_aipc import ChatPhi3AIPC

    llm = ChatPhi3AIPC(model="smollm2", device="cpu")  # bind_tools validates the tools; nothing is loaded
    seen: set[str] = set()
    for category in bfcl.CATEGORIES:
        for entry, _ in bfcl.load_category(category, bfcl.DEFAULT_LIMITS[category]):
            tools = bfcl.to_openai_tools(entry["function"])
            assert [t["type"] for t in tools] == ["function"] * len(entry["function"])
            for tool in tools:
                assert "." not in tool["function"]["name"]
                seen.update(_types(tool["function"]["parameters"]))
            llm.bind_tools(tools, tool_choice="any", parallel_tool_calls=True)
    assert seen <= JSON_SCHEMA_TYPES, seen - JSON_SCHEMA_TYPES
    assert {"object", "number", "array"} <= seen  # from BFCL's "dict", "float", "tuple"/"array"
    # BFCL's "float" is a number, with the note BFCL adds to its description for function-calling models
    weight = bfcl.to_openai_tools(_entry(bfcl, "irrelevance", 0)[0]["function"])[0]["function"]["parameters"]
    weight = weight["properties"]["weight"]
    assert weight["type"] == "number" and weight["description"].endswith("This is a float type value.")


def test_the_real_checker_scores_hand_made_answers(bfcl: ModuleType) -> None:
    entry, answer = _entry(bfcl, "simple_python", 0)  # calculate_triangle_area, base 10, height 5
    right = [{"name": "calculate_triangle_area", "args": {"base": 10, "height": 5}}]
    wrong = [{"name": "calculate_triangle_area", "args": {"base": 10, "height": 6}}]
    assert bfcl.score(entry, answer, "simple_python", right, 0) == (True, "")
    ok, why = bfcl.score(entry, answer, "simple_python", wrong, 0)
    assert not ok and "height" in why
    assert bfcl.score(entry, answer, "simple_python", [], 1)[0] is False

    # a dotted BFCL name, called by its underscored tool name, maps back through underscore_to_dot
    entry, answer = _entry(bfcl, "multiple", 1)  # math.triangle_area_heron, sides 3, 4, 5
    heron = {"name": "math_triangle_area_heron", "args": {"side1": 3, "side2": 4, "side3": 5}}
    assert bfcl.score(entry, answer, "multiple", [heron], 0)[0] is True

    entry, answer = _entry(bfcl, "parallel", 0)  # spotify.play twice, any order
    swift = {"name": "spotify_play", "args": {"artist": "Taylor Swift", "duration": 20}}
    maroon = {"name": "spotify_play", "args": {"artist": "Maroon 5", "duration": 15}}
    assert bfcl.score(entry, answer, "parallel", [maroon, swift], 0)[0] is True
    assert bfcl.score(entry, answer, "parallel", [swift], 0)[0] is False

    entry, answer = _entry(bfcl, "irrelevance", 0)
    assert bfcl.score(entry, answer, "irrelevance", [], 0)[0] is True
    assert bfcl.score(entry, answer, "irrelevance", [], 1)[0] is False


def test_own_template_call_blocks_are_parsed(bfcl: ModuleType) -> None:
    text = (
        '<tool_call>\n{"name": "spotify_play", "arguments": {"artist": "Taylor Swift", "duration": 20}}\n</tool_call>\n'
        '<tool_call>\n{"name": "nope", "arguments": {}}\n</tool_call>\n'
        '<tool_call>\n{"name": "spotify_play", "arguments": {"artist": "Maroon'
    )
    calls, invalid = bfcl.parse_tool_call_blocks(text, {"spotify_play"})
    assert calls == [{"name": "spotify_play", "args": {"artist": "Taylor Swift", "duration": 20}}]
    assert invalid == 2  # an unknown tool, and a block cut off by max_tokens
    assert bfcl.parse_tool_call_blocks("The answer is 5.", {"spotify_play"}) == ([], 0)


def test_results_section_is_replaced_in_place(bfcl: ModuleType, tmp_path: Path) -> None:
    results = tmp_path / "RESULTS.md"
    results.write_text(
        f"# Benchmark results\n\n## Before\nkept\n\n{bfcl.SECTION_TITLE}\n\nold\n\n## After\nkept too\n"
    )
    bfcl.write_section(results, f"{bfcl.SECTION_TITLE}\n\nnew\n")
    text = results.read_text()
    assert text.count(bfcl.SECTION_TITLE) == 1 and "new" in text and "old" not in text
    assert text.index("## Before") < text.index(bfcl.SECTION_TITLE) < text.index("## After\nkept too")
    appended = tmp_path / "other.md"
    appended.write_text("# Benchmark results\n\n## Before\nkept\n")
    bfcl.write_section(appended, f"{bfcl.SECTION_TITLE}\n\nnew\n")
    assert appended.read_text().endswith(f"## Before\nkept\n\n{bfcl.SECTION_TITLE}\n\nnew\n")
