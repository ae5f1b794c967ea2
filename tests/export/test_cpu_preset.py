"""The CPU export presets as measured in issue 16 (docs/cpu-decode.md): int8 stays the default (every int4 form
raised SmolLM2's perplexity), int4 is symmetric group 128, and ``--precision int4 --group-size -1`` is the speed
opt-in: channel-wise symmetric int4, the fastest OpenVINO decode measured at Phi-3-mini size. A real export of the
tiny Phi-3 with the opt-in is checked weight by weight, then loaded and run by OpenVINO GenAI on the CPU (the int8
default's export is tested in test_export.py)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from phi3_aipc.engine import Engine
from phi3_aipc.export import export_model, plan_export, read_manifest
from phi3_aipc.params import GenerationParams

pytest.importorskip("optimum.intel")
pytest.importorskip("openvino_genai")

pytestmark = pytest.mark.slow

SPEED_OPT_IN = {
    "to": "openvino",
    "device": "cpu",
    "precision": "int4",
    "sym": True,
    "group_size": -1,
    "ratio": 1.0,
    "group_size_fallback": None,
    "provider": None,
}
# A weight constant in the IR: its name, then its element type and shape.
_CONST = re.compile(r'name="([^"]+)" type="Const"[^>]*>\s*<data element_type="(\w+)" shape="([^"]*)"')


def test_cpu_presets_are_the_measured_choice() -> None:
    default = plan_export(device="cpu")
    assert (default.precision, default.group_size) == ("int8", -1)
    grouped = plan_export(device="cpu", precision="int4")
    assert (grouped.sym, grouped.group_size, grouped.ratio, grouped.group_size_fallback) == (
        True,
        128,
        1.0,
        "adjust",
    )
    assert plan_export(device="cpu", precision="int4", group_size=-1).as_dict() == SPEED_OPT_IN


@pytest.fixture(scope="module")
def cpu_export(tiny_phi3_hf: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("cpu-preset") / "ir"
    return export_model(tiny_phi3_hf, out, device="cpu", precision="int4", group_size=-1, progress=False)


def _weights(folder: Path) -> dict[str, tuple[str, tuple[int, ...]]]:
    xml = (folder / "openvino_model.xml").read_text()
    return {
        name: (kind, tuple(int(d) for d in shape.split(",") if d.strip()))
        for name, kind, shape in _CONST.findall(xml)
        if name.endswith("weight")  # the weights themselves, not their scales or zero points
    }


def test_speed_opt_in_stores_channel_wise_symmetric_int4(cpu_export: Path) -> None:
    assert read_manifest(cpu_export)["options"] == SPEED_OPT_IN
    weights = _weights(cpu_export)
    int4 = {name: shape for name, (kind, shape) in weights.items() if kind == "i4"}
    # Every projection of both layers is int4; channel-wise means one scale per output row, so the weight stays
    # 2-D (a grouped one is [rows, groups, group size]). No u4: symmetric.
    assert len(int4) == 2 * 4 and all(len(shape) == 2 for shape in int4.values())
    assert not [name for name, (kind, _) in weights.items() if kind == "u4"]
    edges = {name: kind for name, (kind, _) in weights.items() if "embed_tokens" in name or "lm_head" in name}
    assert sorted(edges.values()) == ["u8", "u8"]


def test_speed_opt_in_loads_and_generates_on_openvino(cpu_export: Path) -> None:
    from phi3_aipc.backends import load_backend

    engine = Engine(load_backend("openvino", str(cpu_export), "cpu", {}))
    result = engine.generate(
        [{"role": "user", "content": "Say hello."}], GenerationParams(max_new_tokens=6, ignore_eos=True)
    )
    assert result.completion_tokens == 6 and result.text
