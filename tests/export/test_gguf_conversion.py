"""A GGUF OpenVINO GenAI cannot read (K-quants) is converted once through transformers into the export cache.

The model is a tiny random qwen2 (tests/export/tiny_gguf.py) with Q5_K matrices and a Q6_K embedding: Q5_K is one
of the types OpenVINO GenAI 2026.4.1 refuses ("gguf_tensor_to_f16 failed"). Plumbing only: no answer quality.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from tiny_gguf import Q, write_tiny_gguf

from phi3_aipc import GenerationParams, ModelNotFoundError, get_engine
from phi3_aipc.export import MANIFEST_NAME
from phi3_aipc.export.gguf_hf import OPENVINO_GGUF_TYPES, loads_directly
from phi3_aipc.models import files, resolve

pytestmark = [pytest.mark.smollm2]

# A ChatML template that renders tools, as Qwen2.5's does: the IR must carry exactly this one.
TEMPLATE = (
    "{%- if tools %}<|im_start|>system\n# Tools\n{{ tools | tojson }}<|im_end|>\n{%- endif %}"
    "{%- for m in messages %}<|im_start|>{{ m.role }}\n{{ m.content }}<|im_end|>\n{%- endfor %}"
    "{%- if add_generation_prompt %}<|im_start|>assistant\n{%- endif %}"
)


@pytest.fixture(scope="module")
def kquant_gguf(tmp_path_factory: pytest.TempPathFactory, smollm2_gguf: Path) -> Path:
    folder = tmp_path_factory.mktemp("kquant")
    return write_tiny_gguf(
        folder / "tiny-qwen2-q5_k.gguf",
        smollm2_gguf,
        weights=Q.Q5_K,
        embedding=Q.Q6_K,
        chat_template=TEMPLATE,
    )


@pytest.fixture(scope="module")
def module_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One fresh phi3-aipc cache for this module: the first resolve converts, the later ones reuse."""
    return tmp_path_factory.mktemp("phi3-aipc-cache")


@pytest.fixture
def cache(module_cache: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("PHI3_AIPC_CACHE", str(module_cache))
    return module_cache


def test_the_table_says_which_ggufs_load_directly(kquant_gguf: Path, smollm2_gguf: Path) -> None:
    kquant = files.read_facts(kquant_gguf, "gguf")
    assert kquant.matrix_types == {"Q5_K", "Q6_K"}
    assert not loads_directly(kquant)
    # The packaged SmolLM2 (Q4_1, one Q8_0 tensor) is one OpenVINO GenAI reads itself.
    smollm2 = files.read_facts(smollm2_gguf, "gguf")
    assert smollm2.matrix_types <= OPENVINO_GGUF_TYPES and loads_directly(smollm2)


ALL_TYPES = (
    "F32",
    "F16",
    "BF16",
    "Q8_0",
    "Q4_0",
    "Q4_1",
    "Q5_0",
    "Q5_1",
    "Q2_K",
    "Q3_K",
    "Q4_K",
    "Q5_K",
    "Q6_K",
)


@pytest.mark.slow
@pytest.mark.parametrize("qtype", ALL_TYPES)
def test_the_table_is_what_openvino_genai_reads(qtype: str, tmp_path: Path, smollm2_gguf: Path) -> None:
    """OpenVINO GenAI itself, on a GGUF whose matrices are all ``qtype``: it runs exactly where the table says."""
    import openvino_genai as ov_genai

    path = write_tiny_gguf(
        tmp_path / f"tiny-{qtype}.gguf", smollm2_gguf, weights=Q[qtype], embedding=Q[qtype]
    )
    assert loads_directly(files.read_facts(path, "gguf")) == (qtype in OPENVINO_GGUF_TYPES)
    if qtype in OPENVINO_GGUF_TYPES:
        assert ov_genai.LLMPipeline(str(path), "CPU").generate("Hi", max_new_tokens=2)
    else:
        with pytest.raises(RuntimeError, match="gguf_tensor_to_f16 failed|Unsupported quantization type"):
            ov_genai.LLMPipeline(str(path), "CPU")


@pytest.mark.slow
def test_kquant_gguf_is_converted_once_with_one_progress_bar_and_generates(
    cache: Path, kquant_gguf: Path, capfd: pytest.CaptureFixture[str], caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level("WARNING", logger="phi3_aipc"):
        first = resolve(str(kquant_gguf), "CPU", "openvino")
    err = capfd.readouterr().err
    assert first.format == "openvino-ir"
    assert first.path.parent == cache / "exports" / "openvino"
    assert "Converting tiny-qwen2-q5_k.gguf to OpenVINO IR" in err and "3/3" in err
    # The libraries' chatter (their own bars and tables, tracer warnings) is in the log the message names, not on
    # stderr. (pytest records Python warnings itself, so here the log holds the libraries' printed output.)
    log_path = first.path.parent / f"{first.path.name}.log"
    assert str(log_path) in caplog.text
    logged = log_path.read_text()
    # NNCF prints its bit-width table only once per process, its progress bar every time: match either.
    assert "de-quantizing GGUF tensors" in logged and "weight compression" in logged.lower()
    assert (
        "de-quantizing GGUF tensors" not in err and "Weight compression" not in err and "Warning" not in err
    )
    manifest = json.loads((first.path / MANIFEST_NAME).read_text())
    assert manifest["source"]["path"] == str(kquant_gguf.resolve())
    assert manifest["options"]["precision"] == "int8"
    assert manifest["weight_types"].get("u8") or manifest["weight_types"].get("i8")
    assert "gguf" in manifest["versions"] and "transformers" in manifest["versions"]
    assert first.context_window == 2048
    assert "<|im_end|>" in first.special_tokens

    again = resolve(str(kquant_gguf), "CPU", "openvino")
    assert again.path == first.path
    assert "Converting" not in capfd.readouterr().err

    engine = get_engine(str(kquant_gguf), "cpu")
    reply = engine.generate([{"role": "user", "content": "Hi"}], GenerationParams(max_new_tokens=4))
    assert reply.text.strip()


@pytest.mark.slow
def test_converted_ir_keeps_the_ggufs_template_and_stop_token(cache: Path, kquant_gguf: Path) -> None:
    import openvino_genai as ov_genai

    ir = resolve(str(kquant_gguf), "CPU", "openvino").path
    assert ov_genai.Tokenizer(str(ir)).chat_template == TEMPLATE
    # SmolLM2's metadata names <|im_end|> (id 2) as eos: OpenVINO GenAI stops on generation_config's eos.
    assert json.loads((ir / "generation_config.json").read_text())["eos_token_id"] == 2
    assert ov_genai.LLMPipeline(str(ir), "CPU").get_generation_config().eos_token_id == 2


def test_without_the_export_extra_the_error_names_it_and_the_types_that_load(
    tmp_path: Path, kquant_gguf: Path
) -> None:
    # A fresh interpreter in which optimum cannot be imported, as where the `export` extra is not installed.
    script = textwrap.dedent(
        f"""
        import sys
        from importlib.abc import MetaPathFinder

        class HideOptimum(MetaPathFinder):
            def find_spec(self, name, path=None, target=None):
                if name == "optimum" or name.startswith("optimum."):
                    raise ModuleNotFoundError(f"No module named {{name!r}}", name=name)
                return None

        sys.meta_path.insert(0, HideOptimum())
        from phi3_aipc.models import resolve
        try:
            resolve({str(kquant_gguf)!r}, "CPU", "openvino")
        except Exception as exc:
            print(type(exc).__name__, exc)
        """
    )
    env = {**os.environ, "PHI3_AIPC_CACHE": str(tmp_path / "cache")}
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=300
    )
    out = done.stdout
    assert "GGUFConversionNotInstalledError" in out, done.stdout + done.stderr
    assert 'pip install "phi3-aipc[export]"' in out
    assert "optimum-intel" in out and "Q5_K" in out
    assert all(name in out for name in ("Q4_0", "Q8_0", "Q4_K"))
    assert not (tmp_path / "cache" / "exports" / "openvino").exists() or not any(
        (tmp_path / "cache" / "exports" / "openvino").iterdir()
    )


def test_an_architecture_nothing_reads_gets_a_clear_error(
    cache: Path, tmp_path: Path, smollm2_gguf: Path
) -> None:
    odd = write_tiny_gguf(tmp_path / "tiny-gptj.gguf", smollm2_gguf, weights=Q.Q4_K, arch="gptj")
    with pytest.raises(
        ModelNotFoundError, match=r"'gptj' model, an architecture neither OpenVINO GenAI"
    ) as info:
        resolve(str(odd), "CPU", "openvino")
    assert "qwen2" in str(info.value) and "Hugging Face checkpoint" in str(info.value)


@pytest.mark.slow
@pytest.mark.npu_on_cpu
def test_on_the_npu_a_gguf_becomes_a_symmetric_int4_ir(cache: Path, kquant_gguf: Path) -> None:
    npu_on_cpu = {"NPUW_DEVICES": "CPU", "MAX_PROMPT_LEN": 128, "MIN_RESPONSE_LEN": 32}
    artifact = resolve(str(kquant_gguf), "NPU", "openvino")
    assert "-int4-npu-" in artifact.path.name
    options = json.loads((artifact.path / MANIFEST_NAME).read_text())["options"]
    assert options["sym"] is True and options["group_size"] == -1, (
        "the NPU pipeline takes only symmetric int4"
    )
    engine = get_engine(str(kquant_gguf), "npu", options=npu_on_cpu)
    reply = engine.generate([{"role": "user", "content": "Hi"}], GenerationParams(max_new_tokens=4))
    assert reply.completion_tokens > 0
