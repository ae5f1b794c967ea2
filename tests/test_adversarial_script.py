"""benchmarks/adversarial.py: its machinery (a subprocess per case, outcomes classified from what happened) on three
cases that need no model, and its classifier on the outcomes no healthy case produces (crash, hang, raw errors)."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "adversarial.py"


@pytest.fixture(scope="module")
def script() -> ModuleType:
    spec = importlib.util.spec_from_file_location("adversarial", SCRIPT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look modules up by name
    spec.loader.exec_module(module)
    return module


def _case(script: ModuleType, name: str):
    return next(c for c in script.CASES if c.name == name)


@pytest.mark.parametrize(
    ("name", "outcome", "detail"),
    [
        ("param-temperature-nan", "clear error", "temperature must be a finite number"),
        ("turn-unknown-role", "clear error", "role 'wizard'"),
        ("parse-5000-deep-in-a-tagged-call", "correct", "deeper than 64 levels"),
    ],
)
def test_cheap_cases_run_in_a_subprocess_and_are_classified(
    script: ModuleType, tmp_path: Path, name: str, outcome: str, detail: str
) -> None:
    # These cases load no model: the paths only have to exist as settings.
    env = {
        "ADV_TINY_OV": str(tmp_path),
        "ADV_TINY_HF": str(tmp_path),
        "ADV_GGUF": str(tmp_path / "none.gguf"),
    }
    case = _case(script, name)
    run = script.run_case(case, env)
    assert run.returncode == 0 and not run.timed_out, run.stderr_tail
    got, text = script.classify(case, run)
    assert got == outcome and detail in text


def test_the_table_has_at_least_60_cases_covering_every_item(script: ModuleType) -> None:
    assert len(script.CASES) >= 60
    # Issue 11's items 1-12, each covered; later rounds (issue 23) add their own item numbers.
    assert set(range(1, 13)) <= {c.item for c in script.CASES}
    assert all(c.expect for c in script.CASES)


def test_outcomes_no_healthy_case_produces(script: ModuleType) -> None:
    Run = script.ChildRun
    wants_error = _case(script, "param-temperature-nan")
    wants_behaviour = _case(script, "parse-5000-deep-in-a-tagged-call")
    raw = {
        "status": "raised",
        "type": "RuntimeError",
        "mro": ["RuntimeError", "Exception"],
        "message": "Check 'ctx'",
    }
    off_message = {
        "status": "raised",
        "type": "InvalidParameterError",
        "mro": ["InvalidParameterError", "Phi3AIPCError", "ValueError"],
        "message": "something else",
    }
    returned = {"status": "returned", "facts": {"tool_calls": 1, "invalid_tool_calls": 0}}
    assert script.classify(wants_error, Run(-11, False, None, "Segmentation fault"))[0] == "crash"
    assert script.classify(wants_error, Run(-11, False, returned))[0] == "crash"
    assert script.classify(wants_error, Run(None, True, None))[0] == "hang"
    assert script.classify(wants_error, Run(0, False, raw))[0] == "unclear error"
    assert script.classify(wants_error, Run(0, False, off_message))[0] == "unclear error"
    assert script.classify(wants_error, Run(0, False, returned))[0] == "wrong result"
    assert script.classify(wants_behaviour, Run(0, False, returned))[0] == "wrong result"
    assert script.classify(wants_behaviour, Run(0, False, raw))[0] == "unclear error"
