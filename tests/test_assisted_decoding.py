"""Prompt lookup and speculative decoding (OpenVINO GenAI): the greedy text is the model's own, and they happen.

- Prompt lookup on SmolLM2 (a real model): greedy answers with it are token-identical to answers without it, and the
  result says how many drafted tokens the model accepted (a copy-heavy answer accepts some: it really ran). Both
  engines pin precision through ``LLM_F32_STEPS``: the verifying step computes several tokens at once, and only with
  the CPU plugin's dynamic quantization off does that match one-token steps bit for bit.
- A draft model: SmolLM2 as its own draft (every draft accepted) and, for the rejecting path, the tiny Phi-3 with a
  second tiny Phi-3 of another seed sharing its tokenizer (drafts rejected). Each output equals plain decoding.
- The NPU pipeline, run on the CPU (NPUW_DEVICES=CPU): prompt lookup is off there with a note; a draft model works.
Speed is not asserted here: ``phi3-aipc bench --scenario rag`` measures it (benchmarks/RESULTS.md).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from phi3_aipc import GenerationParams, get_engine
from phi3_aipc.backends.openvino_assist import ASSISTED_MIN_GENAI, NPU_NOTE, genai_version
from phi3_aipc.errors import InvalidParameterError, ModelNotFoundError
from phi3_aipc.models.catalogue import PHI3_MINI_DRAFT, draft_for, find
from phi3_aipc.params import Constraint
from phi3_aipc.testing import build_tiny_phi3, cached_model_dir
from phi3_aipc.testing.precision import LLM_F32_STEPS

GREEDY = GenerationParams(max_new_tokens=40)
COPY = [
    {
        "role": "user",
        "content": "Repeat exactly: the cat sat on the mat and the dog sat on the log and the bird sat on the wire.",
    }
]
CHAT = [{"role": "user", "content": "What is the capital of France?"}]
NPU = {"NPUW_DEVICES": "CPU", "MAX_PROMPT_LEN": 256, "MIN_RESPONSE_LEN": 64}
TINY_PROMPT = [{"role": "user", "content": "Hello, how are you?"}]
#: Assisted decoding is refused below ASSISTED_MIN_GENAI (.ci/lowest runs the floor, 2025.4): those tests run above.
needs_assisted = pytest.mark.skipif(
    genai_version() < ASSISTED_MIN_GENAI, reason="assisted decoding needs a newer openvino-genai"
)


def _engine(model: Path | str, **options: Any) -> Any:
    return get_engine(str(model), "cpu", "openvino", {**LLM_F32_STEPS, **options})


# -- prompt lookup ---------------------------------------------------------------------------------------------------
@needs_assisted
def test_prompt_lookup_keeps_greedy_output_token_identical_on_a_real_model(smollm2_gguf: Path) -> None:
    off = _engine(smollm2_gguf, prompt_lookup=False)
    on = _engine(smollm2_gguf, prompt_lookup=True)
    for messages in (COPY, CHAT):
        plain, assisted = off.generate(messages, GREEDY), on.generate(messages, GREEDY)
        assert assisted.text == plain.text
        assert assisted.completion_tokens == plain.completion_tokens
        assert plain.assisted is None
        assert assisted.assisted is not None and assisted.assisted.method == "prompt_lookup"
    copied = on.generate(COPY, GREEDY).assisted
    assert copied is not None and 0 < copied.accepted_tokens <= copied.draft_tokens
    assert 0 < copied.acceptance_rate <= 1


@needs_assisted
def test_prompt_lookup_streams_the_same_text_and_cuts_stops_at_the_character(smollm2_gguf: Path) -> None:
    on = _engine(smollm2_gguf, prompt_lookup=True)
    whole = on.generate(COPY, GREEDY)
    stream = on.stream(COPY, GREEDY)
    assert "".join(stream) == whole.text
    stop = whole.text[12:20]  # ends inside the answer, wherever a multi-token step lands
    cut = on.generate(COPY, GenerationParams(max_new_tokens=40, stop=(stop,)))
    assert cut.finish_reason == "stop_string"
    assert cut.text == whole.text[: whole.text.index(stop)]


@needs_assisted
def test_prompt_lookup_keeps_constrained_decoding(smollm2_gguf: Path) -> None:
    schema = {
        "type": "object",
        "properties": {"name": {"type": "string"}, "age": {"type": "integer"}},
        "required": ["name", "age"],
    }
    on = _engine(smollm2_gguf, prompt_lookup=True)
    prompt = [{"role": "user", "content": "Give me a JSON object with a name and an age for Alice, 30."}]
    result = on.generate(prompt, GREEDY, constraint=Constraint("json_schema", json.dumps(schema)))
    parsed = json.loads(result.text)
    assert set(parsed) == {"name", "age"} and isinstance(parsed["age"], int)


@needs_assisted
def test_prompt_lookup_is_off_by_default_and_true_drafts_five(smollm2_gguf: Path) -> None:
    # Off by default: at the CPU's default precision it changed greedy text (openvino_assist.PROMPT_LOOKUP_AUTO_KINDS).
    default = _engine(smollm2_gguf)
    assert default.backend.assist.method is None
    assert default.generate(COPY, GREEDY).assisted is None
    assert _engine(smollm2_gguf, prompt_lookup=True).backend.assist.num_assistant_tokens == 5


def test_prompt_lookup_is_off_on_the_npu_pipeline_with_a_note(tiny_phi3_ov: Path) -> None:
    plain = get_engine(str(tiny_phi3_ov), "npu", "openvino", NPU).generate(TINY_PROMPT, GREEDY)
    asked = get_engine(str(tiny_phi3_ov), "npu", "openvino", {**NPU, "prompt_lookup": True})
    result = asked.generate(TINY_PROMPT, GREEDY)
    assert result.assisted is None and NPU_NOTE in result.notes
    assert result.text == plain.text
    assert get_engine(str(tiny_phi3_ov), "npu", "openvino", NPU).backend.assist.method is None  # None: off


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"prompt_lookup": "sometimes"}, "prompt_lookup must be true or false"),
        (
            {"prompt_lookup": True, "num_assistant_tokens": 0},
            "num_assistant_tokens must be a positive integer",
        ),
        ({"max_ngram_size": "three"}, "max_ngram_size must be a positive integer"),
        ({"draft_device": "cpu"}, "draft_device needs a draft_model"),
    ],
)
def test_bad_assisted_decoding_options_are_refused(
    tiny_phi3_ov: Path, options: dict[str, Any], message: str
) -> None:
    with pytest.raises(InvalidParameterError, match=message):
        get_engine(str(tiny_phi3_ov), "cpu", "openvino", options)


# -- draft models ----------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def tiny_phi3_other_seed_ov(model_cache: Path) -> Path:
    """A second tiny Phi-3 (seed 1): the same ByteLevel tokenizer, other weights; a draft the model mostly rejects."""
    pytest.importorskip("optimum.intel")
    from phi3_aipc.export.openvino import export_openvino

    hf = cached_model_dir(model_cache, "tiny-phi3-bytelevel-s1-v1", lambda out: build_tiny_phi3(out, seed=1))
    return cached_model_dir(
        model_cache,
        "tiny-phi3-bytelevel-s1-ov-fp32-v1",
        lambda out: export_openvino(hf, out, weight_format="fp32"),
    )


@needs_assisted
def test_a_draft_model_keeps_greedy_output_token_identical_on_a_real_model(smollm2_gguf: Path) -> None:
    plain = _engine(smollm2_gguf, prompt_lookup=False)
    drafted = _engine(smollm2_gguf, draft_model="smollm2")  # its own draft: the catalogue name resolves
    for messages in (COPY, CHAT):
        expected, result = plain.generate(messages, GREEDY), drafted.generate(messages, GREEDY)
        assert result.text == expected.text
        assert result.assisted is not None and result.assisted.method == "draft_model"
        assert result.assisted.draft_tokens > 0
        assert result.assisted.acceptance_rate == 1.0  # a model agrees with itself


@needs_assisted
def test_a_rejected_draft_still_gives_the_models_own_output(
    tiny_phi3_ov: Path, tiny_phi3_other_seed_ov: Path
) -> None:
    expected = _engine(tiny_phi3_ov, prompt_lookup=False).generate(TINY_PROMPT, GREEDY)
    result = _engine(tiny_phi3_ov, draft_model=str(tiny_phi3_other_seed_ov)).generate(TINY_PROMPT, GREEDY)
    assert result.text == expected.text
    assert result.completion_tokens == expected.completion_tokens
    assert result.assisted is not None and result.assisted.draft_tokens > 0
    assert result.assisted.acceptance_rate is not None and result.assisted.acceptance_rate < 1.0


@needs_assisted
def test_a_draft_model_runs_on_the_npu_pipeline(tiny_phi3_ov: Path) -> None:
    expected = get_engine(str(tiny_phi3_ov), "npu", "openvino", NPU).generate(TINY_PROMPT, GREEDY)
    drafted = get_engine(str(tiny_phi3_ov), "npu", "openvino", {**NPU, "draft_model": str(tiny_phi3_ov)})
    result = drafted.generate(TINY_PROMPT, GREEDY)
    assert result.text == expected.text
    assert result.assisted is not None and result.assisted.acceptance_rate == 1.0


def test_draft_model_and_prompt_lookup_together_are_refused(tiny_phi3_ov: Path) -> None:
    with pytest.raises(InvalidParameterError, match="either prompt_lookup=True or draft_model"):
        get_engine(
            str(tiny_phi3_ov), "cpu", "openvino", {"prompt_lookup": True, "draft_model": str(tiny_phi3_ov)}
        )


def test_a_missing_draft_model_is_a_clear_error(tiny_phi3_ov: Path, tmp_path: Path) -> None:
    with pytest.raises(ModelNotFoundError):
        get_engine(str(tiny_phi3_ov), "cpu", "openvino", {"draft_model": str(tmp_path / "no-such-draft")})


def test_the_catalogue_pairs_phi3_mini_with_its_fastdraft_draft() -> None:
    assert draft_for("phi-3-mini") == PHI3_MINI_DRAFT == "OpenVINO/Phi-3-mini-FastDraft-50M-int8-ov"
    draft = find("phi-3-mini-fastdraft")
    assert draft is not None and draft.id == PHI3_MINI_DRAFT
    assert draft.builds[("openvino-ir", "CPU")] == ("OpenVINO/Phi-3-mini-FastDraft-50M-int8-ov", None)
    assert draft.builds[("openvino-ir", "NPU")] == ("OpenVINO/Phi-3-mini-FastDraft-50M-int8-sym-ov", None)
    with pytest.raises(ModelNotFoundError, match="draft_model='auto' needs a model with a known draft"):
        draft_for("smollm2")


@pytest.mark.skipif(genai_version() >= ASSISTED_MIN_GENAI, reason="runs on an openvino-genai below the floor")
def test_assisted_decoding_on_an_older_openvino_genai_is_refused_naming_the_upgrade(
    smollm2_gguf: Path,
) -> None:
    from phi3_aipc.errors import UnsupportedFeatureError

    with pytest.raises(
        UnsupportedFeatureError, match=r"prompt_lookup needs openvino-genai >= 2026\.4.*pip install"
    ):
        _engine(smollm2_gguf, prompt_lookup=True).generate(CHAT, GREEDY)
