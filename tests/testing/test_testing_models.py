"""phi3_aipc.testing: the offline test models behave like the real thing (they load, template, export and agree
across engines), the synthetic models have the real architectures, and the cache builds each model once."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from phi3_aipc import GenerationParams, get_engine
from phi3_aipc.errors import BackendNotInstalledError, InvalidParameterError
from phi3_aipc.export.openvino import OV_DETOKENIZER, OV_TOKENIZER, ensure_openvino_tokenizer
from phi3_aipc.testing import (
    PHI3_STOP_TOKENS,
    SMOLLM2_GGUF_NAME,
    build_smollm2_hf,
    build_tiny_phi3,
    cached_model_dir,
    synthetic_model,
)
from phi3_aipc.testing.precision import LLM_F32
from phi3_aipc.testing.synthetic import SPECS, _rope

ONE_USER_TURN = [{"role": "user", "content": "Hi"}]
RAW_PROMPT = "def main(argv):\n    parser ="
SMOLLM2_CHAT = [
    {"role": "system", "content": "You are terse."},
    {"role": "user", "content": "What is 12345 + 678? Héllo wörld 😀, don't   stop!\n\tTabs  and spaces  "},
]


def _load_weights(folder: Path) -> dict:
    from safetensors.torch import load_file

    return load_file(folder / "model.safetensors")


def _same_weights(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(a[k].equal(b[k]) for k in a)


# --------------------------------------------------------------------------------------------- tiny Phi-3


def test_import_is_light() -> None:
    code = (
        "import sys, phi3_aipc.testing, phi3_aipc.testing.synthetic, phi3_aipc.export.openvino\n"
        "heavy = {'torch', 'transformers', 'openvino', 'tokenizers', 'optimum'} & set(sys.modules)\n"
        "assert not heavy, heavy"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_tiny_phi3_loads_in_transformers(tiny_phi3_hf: Path) -> None:
    transformers = pytest.importorskip("transformers")
    torch = pytest.importorskip("torch")
    model = transformers.AutoModelForCausalLM.from_pretrained(tiny_phi3_hf)
    tok = transformers.AutoTokenizer.from_pretrained(tiny_phi3_hf)
    cfg = model.config
    assert (cfg.model_type, cfg.hidden_size, cfg.num_hidden_layers, cfg.num_attention_heads) == (
        "phi3",
        128,
        2,
        4,
    )
    assert model.dtype == torch.float32
    assert cfg.vocab_size % 64 == 0 and len(tok) <= cfg.vocab_size < len(tok) + 64
    assert model.generation_config.eos_token_id == tok.convert_tokens_to_ids(list(PHI3_STOP_TOKENS))
    assert tok.bos_token is None and tok.eos_token == "<|endoftext|>"
    assert tok.model_input_names == ["input_ids", "attention_mask"]


def test_tiny_phi3_chat_template(tiny_phi3_hf: Path) -> None:
    transformers = pytest.importorskip("transformers")
    tok = transformers.AutoTokenizer.from_pretrained(tiny_phi3_hf)
    text = tok.apply_chat_template(ONE_USER_TURN, add_generation_prompt=True, tokenize=False)
    assert text == "<|user|>\nHi<|end|>\n<|assistant|>\n"
    # Each special token is one id, so engines see the same turn boundaries.
    ids = tok(text).input_ids
    user, end, assistant = tok.convert_tokens_to_ids(["<|user|>", "<|end|>", "<|assistant|>"])
    assert (ids[0], ids[-2], ids.count(end)) == (user, assistant, 1)


def test_tiny_phi3_is_deterministic(tiny_phi3_hf: Path, tmp_path: Path) -> None:
    pytest.importorskip("torch")
    again = build_tiny_phi3(tmp_path / "s0", seed=0)
    other = build_tiny_phi3(tmp_path / "s1", seed=1)
    reference = _load_weights(tiny_phi3_hf)
    assert _same_weights(_load_weights(again), reference)
    assert not _same_weights(_load_weights(other), reference)
    assert (again / "tokenizer.json").read_bytes() == (tiny_phi3_hf / "tokenizer.json").read_bytes()


def test_unknown_tokenizer_kind_is_explained(tmp_path: Path) -> None:
    with pytest.raises(InvalidParameterError, match="'bytelevel' or 'phi3'"):
        build_tiny_phi3(tmp_path / "x", tokenizer="sentencepiece")  # type: ignore[arg-type]


def test_tiny_phi3_with_real_phi3_tokenizer(tmp_path: Path) -> None:
    transformers = pytest.importorskip("transformers")
    folder = build_tiny_phi3(tmp_path / "real", tokenizer="phi3")
    tok = transformers.AutoTokenizer.from_pretrained(folder)
    config = transformers.AutoConfig.from_pretrained(folder)
    assert config.vocab_size == 32064
    text = tok.apply_chat_template(
        [{"role": "user", "content": "Hi there"}], add_generation_prompt=True, tokenize=False
    )
    ids = tok(text, add_special_tokens=False).input_ids
    # Value measured on the shipped conversion (see the data README): the specials swallow the "\n" after them.
    assert list(ids) == [32010, 6324, 727, 32007, 32001]
    gen = transformers.GenerationConfig.from_pretrained(folder)
    assert gen.eos_token_id == [32000, 32001, 32007]


# --------------------------------------------------------------------------------------------- OpenVINO


def _transformers_greedy(hf_dir: Path, prompt: str, max_new_tokens: int) -> tuple[list[int], str]:
    transformers = pytest.importorskip("transformers")
    torch = pytest.importorskip("torch")
    tok = transformers.AutoTokenizer.from_pretrained(hf_dir)
    model = transformers.AutoModelForCausalLM.from_pretrained(hf_dir).eval()
    enc = tok(prompt, return_tensors="pt")
    with torch.no_grad():
        out = model.generate(**enc, max_new_tokens=max_new_tokens, do_sample=False)
    new = out[0, enc["input_ids"].shape[1] :].tolist()
    return new, tok.decode(new, skip_special_tokens=True)


def test_ov_export_has_tokenizer_and_template(tiny_phi3_ov: Path) -> None:
    ov_genai = pytest.importorskip("openvino_genai")
    assert (tiny_phi3_ov / OV_TOKENIZER).is_file() and (tiny_phi3_ov / OV_DETOKENIZER).is_file()
    tok = ov_genai.LLMPipeline(str(tiny_phi3_ov), "CPU").get_tokenizer()
    assert (
        tok.apply_chat_template(ONE_USER_TURN, add_generation_prompt=True)
        == "<|user|>\nHi<|end|>\n<|assistant|>\n"
    )


def test_ov_greedy_matches_transformers(tiny_phi3_hf: Path, tiny_phi3_ov: Path) -> None:
    ov_genai = pytest.importorskip("openvino_genai")
    hf_ids, hf_text = _transformers_greedy(tiny_phi3_hf, RAW_PROMPT, 16)
    # CPUs with bf16 support default OpenVINO to bf16 compute; token-exact parity needs f32.
    pipe = ov_genai.LLMPipeline(str(tiny_phi3_ov), "CPU", **LLM_F32)
    config = {"max_new_tokens": 16, "do_sample": False, "apply_chat_template": False}
    ov_text = pipe.generate(RAW_PROMPT, **config)
    ov_ids = pipe.generate(pipe.get_tokenizer().encode(RAW_PROMPT, add_special_tokens=True), **config).tokens[
        0
    ]
    assert list(ov_ids) == hf_ids
    assert str(ov_text) == hf_text
    assert len(hf_ids) > 0


def test_ensure_openvino_tokenizer_regenerates(tiny_phi3_ov: Path, tmp_path: Path) -> None:
    ov_genai = pytest.importorskip("openvino_genai")
    folder = Path(shutil.copytree(tiny_phi3_ov, tmp_path / "ov"))
    for name in (OV_TOKENIZER, OV_DETOKENIZER):
        (folder / name).unlink()
        (folder / name).with_suffix(".bin").unlink()
    ensure_openvino_tokenizer(folder)
    assert (folder / OV_TOKENIZER).is_file() and (folder / OV_DETOKENIZER).is_file()
    stamp = (folder / OV_TOKENIZER).stat().st_mtime_ns
    ensure_openvino_tokenizer(folder)  # idempotent: present files are left alone
    assert (folder / OV_TOKENIZER).stat().st_mtime_ns == stamp
    regenerated = ov_genai.Tokenizer(str(folder)).encode(RAW_PROMPT).input_ids.data.tolist()
    original = ov_genai.Tokenizer(str(tiny_phi3_ov)).encode(RAW_PROMPT).input_ids.data.tolist()
    assert regenerated == original


def test_missing_openvino_tokenizers_is_reported(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # A None entry in sys.modules makes `import openvino_tokenizers` fail as if it were not installed.
    monkeypatch.setitem(sys.modules, "openvino_tokenizers", None)
    with pytest.raises(BackendNotInstalledError, match="openvino-tokenizers") as info:
        ensure_openvino_tokenizer(tmp_path)
    assert info.value.extra == "openvino"


# --------------------------------------------------------------------------------------------- caching


def test_cached_model_dir_builds_once(tmp_path: Path) -> None:
    calls: list[Path] = []

    def builder(out: Path) -> Path:
        calls.append(out)
        (out / "marker").write_text("built")
        return out

    first = cached_model_dir(tmp_path, "m", builder)
    second = cached_model_dir(tmp_path, "m", builder)
    assert first == second == tmp_path / "m"
    assert len(calls) == 1 and (first / "marker").read_text() == "built"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m"]  # no staging dir left behind


def test_cached_model_dir_leaves_nothing_on_failure(tmp_path: Path) -> None:
    def broken(out: Path) -> Path:
        (out / "half").write_text("x")
        raise RuntimeError("boom")

    with pytest.raises(RuntimeError, match="boom"):
        cached_model_dir(tmp_path, "m", broken)
    assert list(tmp_path.iterdir()) == []


# --------------------------------------------------------------------------------------------- SmolLM2


@pytest.mark.smollm2
def test_smollm2_gguf_path(smollm2_gguf: Path) -> None:
    assert smollm2_gguf.name == SMOLLM2_GGUF_NAME
    assert smollm2_gguf.stat().st_size > 50_000_000


@pytest.mark.smollm2
@pytest.mark.slow
def test_smollm2_hf_tokenizer_matches_gguf(smollm2_gguf: Path, model_cache: Path) -> None:
    transformers = pytest.importorskip("transformers")
    ov_genai = pytest.importorskip("openvino_genai")
    pytest.importorskip("gguf")
    folder = cached_model_dir(model_cache, "smollm2-135m-instruct-hf-v1", build_smollm2_hf)
    hf_tok = transformers.AutoTokenizer.from_pretrained(folder)
    gguf_tok = ov_genai.LLMPipeline(str(smollm2_gguf), "CPU").get_tokenizer()
    prompt = hf_tok.apply_chat_template(SMOLLM2_CHAT, add_generation_prompt=True, tokenize=False)
    assert prompt == gguf_tok.apply_chat_template(SMOLLM2_CHAT, add_generation_prompt=True)
    assert hf_tok(prompt).input_ids == gguf_tok.encode(prompt).input_ids.data.tolist()[0]
    assert (hf_tok.eos_token, hf_tok.bos_token) == ("<|im_end|>", "<|im_start|>")
    gen = transformers.GenerationConfig.from_pretrained(folder)
    assert gen.eos_token_id[0] == hf_tok.convert_tokens_to_ids("<|im_end|>")


@pytest.mark.smollm2
@pytest.mark.slow
def test_smollm2_hf_tokenizer_converts_to_openvino(smollm2_gguf: Path, model_cache: Path) -> None:
    transformers = pytest.importorskip("transformers")
    ov_tokenizers = pytest.importorskip("openvino_tokenizers")
    import openvino as ov

    folder = cached_model_dir(model_cache, "smollm2-135m-instruct-hf-v1", build_smollm2_hf)
    hf_tok = transformers.AutoTokenizer.from_pretrained(folder)
    ov_tok, _ = ov_tokenizers.convert_tokenizer(hf_tok, with_detokenizer=True)
    prompt = hf_tok.apply_chat_template(SMOLLM2_CHAT, add_generation_prompt=True, tokenize=False)
    ids = ov.compile_model(ov_tok)([prompt])["input_ids"].tolist()[0]
    assert ids == hf_tok(prompt).input_ids


# --------------------------------------------------------------------------------------------- synthetic


# Parameter counts of the real models (Phi-3-mini from its model card; Phi-4-mini ties its embeddings).
@pytest.mark.parametrize(
    ("name", "params"),
    [("phi-3-mini", 3_821_079_552), ("phi-3.5-mini", 3_821_079_552), ("phi-4-mini", 3_836_021_760)],
)
def test_synthetic_architectures_have_the_real_sizes(name: str, params: int) -> None:
    torch = pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    values = {**SPECS[name], "rope_parameters": _rope(SPECS[name])}
    with torch.device("meta"):
        model = transformers.Phi3ForCausalLM(transformers.Phi3Config(**values))
    assert sum(p.numel() for p in model.parameters()) == params


@pytest.mark.slow
def test_synthetic_model_builds_exports_and_generates(tmp_path: Path) -> None:
    """The real-size build takes minutes and 16 GB: this builds the same pipeline with shrunken shapes."""
    pytest.importorskip("optimum.intel")
    small = {
        "hidden_size": 128,
        "intermediate_size": 256,
        "num_hidden_layers": 2,
        "num_attention_heads": 4,
        "num_key_value_heads": 4,
    }
    path = synthetic_model("phi-3-mini", "int4", cache=tmp_path, overrides=small)
    assert (path / "openvino_model.xml").is_file() and (path / "openvino_tokenizer.xml").is_file()
    assert synthetic_model("phi-3-mini", "int4", cache=tmp_path, overrides=small) == path  # cached
    config = json.loads((path / "config.json").read_text())
    assert config["vocab_size"] == 32064 and config["hidden_size"] == 128
    engine = get_engine(str(path), "cpu")
    assert engine.count_tokens("<|user|>") == 1 + (
        engine.count_tokens("") or 0
    )  # the real Phi-3 special token
    result = engine.generate("Hello", GenerationParams(max_new_tokens=20, ignore_eos=True))
    assert result.completion_tokens == 20


def test_unknown_synthetic_name_and_format_are_explained(tmp_path: Path) -> None:
    with pytest.raises(InvalidParameterError, match="phi-3-mini, phi-3.5-mini, phi-4-mini"):
        synthetic_model("phi-2", cache=tmp_path)
    with pytest.raises(InvalidParameterError, match="'int4' or 'hf'"):
        synthetic_model("phi-3-mini", "gguf", cache=tmp_path)  # type: ignore[arg-type]
    assert list(tmp_path.iterdir()) == []  # nothing was built
