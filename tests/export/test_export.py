"""`phi3-aipc export` and auto-export: the tiny Phi-3 exported per device preset, each loaded by its backend."""

from __future__ import annotations

import json
import os
import re
from collections import Counter
from pathlib import Path

import pytest

from phi3_aipc.cli import main as cli_main
from phi3_aipc.engine import Engine, clear_engines
from phi3_aipc.errors import InvalidParameterError, ModelNotFoundError
from phi3_aipc.export import (
    MANIFEST_NAME,
    export_cache_path,
    export_model,
    exports_dir,
    plan_export,
    read_manifest,
)
from phi3_aipc.params import GenerationParams

pytest.importorskip("optimum.intel")
pytest.importorskip("openvino_genai")

pytestmark = pytest.mark.slow

FORCED = GenerationParams(max_new_tokens=6, ignore_eos=True)
MESSAGES = [{"role": "user", "content": "Say hello."}]
NPU_ON_CPU = {"NPUW_DEVICES": "CPU", "MAX_PROMPT_LEN": 64, "MIN_RESPONSE_LEN": 16}


@pytest.fixture(scope="module")
def user_cache(tmp_path_factory: pytest.TempPathFactory):
    """A private PHI3_AIPC_CACHE, so auto-exports and compile caches never touch the user's real cache."""
    with pytest.MonkeyPatch.context() as mp:
        path = tmp_path_factory.mktemp("user-cache")
        mp.setenv("PHI3_AIPC_CACHE", str(path))
        yield path
    clear_engines()


@pytest.fixture(scope="module")
def exported(
    tiny_phi3_hf: Path, tmp_path_factory: pytest.TempPathFactory, user_cache: Path
) -> dict[str, Path]:
    """One export per preset (int8 for the CPU comes from auto_exported). fp16 goes through the CLI."""
    root = tmp_path_factory.mktemp("exports")
    out = {"fp16-cpu": root / "fp16-cpu"}
    rc = cli_main(["export", str(tiny_phi3_hf), str(out["fp16-cpu"]), "--precision", "fp16", "--quiet"])
    assert rc == 0
    for name, device, precision in (
        ("int4-gpu", "gpu", None),
        ("int4-npu", "npu", None),
    ):
        out[name] = export_model(
            tiny_phi3_hf, root / name, device=device, precision=precision, progress=False
        )
    return out


def _weight_types(folder: Path) -> Counter[str]:
    """Element types of the IR's constants: what the weights were actually stored as."""
    xml = (folder / "openvino_model.xml").read_text()
    return Counter(re.findall(r'type="Const"[^>]*>\s*<data element_type="(\w+)"', xml))


def _load(folder: Path, backend: str, device: str = "cpu", options: dict | None = None) -> Engine:
    from phi3_aipc.backends import load_backend

    return Engine(load_backend(backend, str(folder), device, dict(options or {})))


# -- each precision, loaded by the matching backend ---------------------------------------------------------------
def test_fp16_cpu_export_via_cli_runs_on_openvino(exported: dict[str, Path]) -> None:
    folder = exported["fp16-cpu"]
    types = _weight_types(folder)
    assert types["f16"] > 0 and types["i4"] == 0 and types["u8"] == 0
    result = _load(folder, "openvino").generate(MESSAGES, FORCED)
    assert result.completion_tokens == 6 and result.text


def test_int8_cpu_export_is_int8_and_runs_on_openvino(auto_exported: dict) -> None:
    """The CPU preset is int8; the auto-export made it (one export fewer for the suite)."""
    folder = auto_exported["folder"]
    assert read_manifest(folder)["options"]["precision"] == "int8"
    types = _weight_types(folder)
    assert types["u8"] + types["i8"] > 0 and types["i4"] + types["u4"] == 0
    result = _load(folder, "openvino").generate(MESSAGES, FORCED)
    assert result.completion_tokens == 6 and result.text


def test_gpu_preset_is_the_recipe_and_runs_on_optimum_intel(exported: dict[str, Path]) -> None:
    """GPU recipe: int4 sym group 128 ratio 0.6 -> symmetric int4 layers plus int8 ones. Run on the CPU here."""
    folder = exported["int4-gpu"]
    options = read_manifest(folder)["options"]
    assert options == {
        "to": "openvino",
        "device": "gpu",
        "precision": "int4",
        "sym": True,
        "group_size": 128,
        "ratio": 0.6,
        "group_size_fallback": "adjust",
        "provider": None,
    }
    types = _weight_types(folder)
    assert types["i4"] > 0 and types["u4"] == 0 and types["u8"] + types["i8"] > 0
    result = _load(folder, "optimum-intel").generate(MESSAGES, FORCED)
    assert result.completion_tokens == 6 and result.text


@pytest.mark.npu_on_cpu
def test_npu_preset_is_symmetric_int4_and_runs_on_the_npu_pipeline(exported: dict[str, Path]) -> None:
    folder = exported["int4-npu"]
    manifest = read_manifest(folder)
    assert manifest["options"]["group_size"] == -1
    assert manifest["weight_types"].get("i4") and not manifest["weight_types"].get("u4")
    types = _weight_types(folder)
    assert types["i4"] > 0 and types["u4"] == 0
    engine = _load(folder, "openvino", "npu", NPU_ON_CPU)
    assert engine.max_prompt_tokens == 64
    result = engine.generate(MESSAGES, FORCED)
    assert result.completion_tokens == 6 and result.text


def test_every_export_has_tokenizer_ir_and_manifest(
    exported: dict[str, Path], auto_exported: dict, tiny_phi3_hf: Path
) -> None:
    for name, folder in {**exported, "int8-cpu": auto_exported["folder"]}.items():
        assert (folder / "openvino_tokenizer.xml").is_file() and (
            folder / "openvino_detokenizer.xml"
        ).is_file()
        manifest = json.loads((folder / MANIFEST_NAME).read_text())
        assert manifest["source"]["path"] == str(tiny_phi3_hf)
        assert manifest["options"]["precision"] == name.split("-")[0]
        assert manifest["options"]["device"] == name.split("-")[1]
        assert {"openvino", "optimum-intel", "transformers"} <= set(manifest["versions"])
        assert manifest["created"].startswith("20")
        assert manifest["size_bytes"] == sum(manifest["files"].values())
        assert not [p for p in folder.parent.iterdir() if ".partial-" in p.name]


def test_int4_is_smaller_than_int8_than_fp16(exported: dict[str, Path], auto_exported: dict) -> None:
    def weights(folder: Path) -> int:
        return (folder / "openvino_model.bin").stat().st_size

    fp16, int8, int4 = exported["fp16-cpu"], auto_exported["folder"], exported["int4-npu"]
    assert weights(int4) < weights(int8) < weights(fp16)


def test_existing_export_needs_force(exported: dict[str, Path], tiny_phi3_hf: Path) -> None:
    with pytest.raises(InvalidParameterError, match="--force"):
        export_model(tiny_phi3_hf, exported["fp16-cpu"], precision="fp16", progress=False)


# -- ONNX -------------------------------------------------------------------------------------------------------
def test_onnx_int4_cpu_export_generates(tiny_phi3_hf: Path, tmp_path: Path) -> None:
    og = pytest.importorskip("onnxruntime_genai")
    out = export_model(tiny_phi3_hf, tmp_path / "onnx", to="onnx", precision="int4", progress=False)
    assert read_manifest(out)["options"] == {
        "to": "onnx",
        "device": "cpu",
        "precision": "int4",
        "sym": None,
        "group_size": None,
        "ratio": None,
        "group_size_fallback": None,
        "provider": "cpu",
    }
    model = og.Model(str(out))
    tokenizer = og.Tokenizer(model)
    params = og.GeneratorParams(model)
    params.set_search_options(max_length=24, do_sample=False)
    generator = og.Generator(model, params)
    prompt = tokenizer.encode("<|user|>\nSay hello.<|end|>\n<|assistant|>\n")
    generator.append_tokens(prompt)
    steps = 0
    while not generator.is_done() and steps < 4:
        generator.generate_next_token()
        steps += 1
    assert steps == 4


# -- auto-export --------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def auto_exported(tiny_phi3_hf: Path, user_cache: Path) -> dict:
    """The first load of a checkpoint folder by the OpenVINO backend, which exports it into the user cache."""
    engine = _load(tiny_phi3_hf, "openvino")
    folders = [p for p in (exports_dir() / "openvino").iterdir() if not p.name.startswith(".")]
    assert len(folders) == 1
    folder = folders[0]
    return {
        "folder": folder,
        "manifest": read_manifest(folder),
        "stamp": (folder / "openvino_model.bin").stat().st_mtime_ns,
        "text": engine.generate(MESSAGES, FORCED).text,
    }


def test_auto_export_runs_once_and_is_reused(tiny_phi3_hf: Path, auto_exported: dict) -> None:
    folder, manifest = auto_exported["folder"], auto_exported["manifest"]
    assert manifest["options"]["precision"] == "int8" and manifest["options"]["device"] == "cpu"
    assert manifest["source"]["path"] == str(tiny_phi3_hf)
    # A second load, by the same backend and by optimum-intel, reuses the export: same folder, same files.
    again = _load(tiny_phi3_hf, "openvino")
    via_optimum = _load(tiny_phi3_hf, "optimum-intel")
    assert [p for p in (exports_dir() / "openvino").iterdir() if not p.name.startswith(".")] == [folder]
    assert read_manifest(folder) == manifest
    assert (folder / "openvino_model.bin").stat().st_mtime_ns == auto_exported["stamp"]
    assert again.generate(MESSAGES, FORCED).text == auto_exported["text"]
    assert via_optimum.generate(MESSAGES, FORCED).completion_tokens == 6


def test_auto_export_key_changes_with_source_and_options(tiny_phi3_hf: Path, tmp_path: Path) -> None:
    import shutil

    copy = Path(shutil.copytree(tiny_phi3_hf, tmp_path / "copy"))
    cpu, npu = plan_export(device="cpu"), plan_export(device="npu")
    key = export_cache_path(copy, cpu)
    assert export_cache_path(copy, cpu) == key
    assert export_cache_path(copy, npu) != key
    config = copy / "config.json"
    os.utime(config, ns=(config.stat().st_atime_ns, config.stat().st_mtime_ns + 10**9))
    assert export_cache_path(copy, cpu) != key
    # One key for both formats: the ONNX export of the same folder lives beside it under exports/onnx.
    onnx = export_cache_path(copy, plan_export("onnx", "cpu"))
    assert onnx.parent.name == "onnx" and onnx.parent.parent == export_cache_path(copy, cpu).parent.parent


# -- errors -------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"precision": "int3"}, r"Unknown --precision value 'int3': choose one of int4, int8, fp16, fp32"),
        ({"to": "gguf"}, r"Unknown --to value 'gguf'"),
        ({"device": "tpu"}, r"Unknown --for value 'tpu'"),
        ({"device": "npu", "sym": False}, r"NPU needs symmetric INT4.*asymmetric"),
        ({"device": "npu", "precision": "int8"}, r"NPU pipeline needs symmetric INT4.*--precision int8"),
        ({"device": "npu", "group_size": 64}, r"channel-wise \(--group-size -1\) or group 128, not group 64"),
        ({"precision": "fp16", "sym": True}, r"--sym/--asym only apply to int4/int8"),
        ({"precision": "int8", "ratio": 0.5}, r"int8 weights are always channel-wise"),
        ({"precision": "int4", "ratio": 1.5}, r"--ratio .* \(0, 1\]"),
        ({"precision": "int4", "group_size": 0}, r"--group-size must be a positive integer"),
        ({"to": "onnx", "device": "npu"}, r"no Intel NPU target.*--to openvino --for npu"),
        ({"to": "onnx", "group_size": 32, "precision": "int4"}, r"apply to --to openvino only"),
        (
            {"to": "onnx", "precision": "int8"},
            r"makes no int8 model for the CPU \(cpu\); use --precision fp32 or int4",
        ),
        ({"to": "onnx", "device": "gpu", "precision": "fp32"}, r"makes no fp32 model for the GPU \(dml\)"),
    ],
)
def test_bad_export_options_get_clear_errors(kwargs: dict, message: str) -> None:
    with pytest.raises(InvalidParameterError, match=message):
        plan_export(**kwargs)


def test_presets() -> None:
    assert plan_export(device="npu").as_dict() == {
        "to": "openvino",
        "device": "npu",
        "precision": "int4",
        "sym": True,
        "group_size": -1,
        "ratio": 1.0,
        "group_size_fallback": None,
        "provider": None,
    }
    assert plan_export(device="npu", group_size=128).group_size == 128
    assert plan_export(device="cpu").precision == "int8"
    assert plan_export(device="cpu", precision="int4").sym is True
    assert plan_export(to="onnx", device="gpu", precision="int4").device == "gpu"


def test_cli_error_for_asymmetric_npu_export(
    tiny_phi3_hf: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert cli_main(["export", str(tiny_phi3_hf), str(tmp_path / "o"), "--for", "npu", "--asym"]) == 2
    err = capsys.readouterr().err
    assert "NPU needs symmetric INT4" in err and "--precision int4 --for npu" in err
    assert not (tmp_path / "o").exists()


def test_source_and_output_errors(tiny_phi3_hf: Path, tmp_path: Path) -> None:
    (tmp_path / "not-a-checkpoint").mkdir()
    with pytest.raises(ModelNotFoundError, match="no config.json"):
        export_model(tmp_path / "not-a-checkpoint", tmp_path / "o", progress=False)
    busy = tmp_path / "busy"
    busy.mkdir()
    (busy / "notes.txt").write_text("mine")
    with pytest.raises(InvalidParameterError, match="choose a new folder"):
        export_model(tiny_phi3_hf, busy, progress=False)
    assert (busy / "notes.txt").read_text() == "mine"


def test_missing_tokenizer_ir_fails_the_export_check(exported: dict[str, Path], tmp_path: Path) -> None:
    import shutil

    from phi3_aipc.export import ExportError
    from phi3_aipc.export.openvino import check_tokenizer as _check_openvino_tokenizer

    broken = Path(shutil.copytree(exported["int4-npu"], tmp_path / "broken"))
    _check_openvino_tokenizer(Path("src"), broken, plan_export(device="npu"))
    (broken / "openvino_detokenizer.xml").unlink()
    with pytest.raises(ExportError, match="no openvino_detokenizer.xml.*could not tokenize"):
        _check_openvino_tokenizer(Path("src"), broken, plan_export(device="npu"))


@pytest.fixture(scope="module")
def odd_sized_hf(tiny_phi3_hf: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny Phi-3's tokenizer on a random Phi-3 of hidden size 96: 128 does not divide its layers."""
    import shutil

    import transformers

    out = tmp_path_factory.mktemp("odd-phi3")
    config = transformers.AutoConfig.from_pretrained(tiny_phi3_hf)
    config.hidden_size, config.intermediate_size = 96, 192
    transformers.Phi3ForCausalLM(config).save_pretrained(out)
    for name in ("tokenizer.json", "tokenizer_config.json", "generation_config.json", "chat_template.jinja"):
        if (tiny_phi3_hf / name).is_file():
            shutil.copy2(tiny_phi3_hf / name, out / name)
    return out


def test_npu_group_128_on_odd_layer_sizes_says_use_channel_wise(odd_sized_hf: Path, tmp_path: Path) -> None:
    with pytest.raises(InvalidParameterError, match=r"not multiples of 128.*--group-size -1"):
        export_model(odd_sized_hf, tmp_path / "npu", device="npu", group_size=128, progress=False)
    assert not (tmp_path / "npu").exists()
