"""The embedding engine on all-MiniLM-L6-v2: parity with sentence-transformers, the NPU pipeline (run on the CPU)
against the CPU, truncation, instructions, batching, sharing, threads and the errors a caller can hit."""

from __future__ import annotations

import warnings
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest

from phi3_aipc.embeddings import (
    DEFAULT_EMBEDDING_MODEL,
    InputTruncatedWarning,
    get_embedding_engine,
    resolve_encoder,
)
from phi3_aipc.embeddings.catalogue import find_encoder, read_settings
from phi3_aipc.errors import DeviceNotFoundError, InvalidParameterError, ModelNotFoundError

pytest.importorskip("openvino_genai")

#: The NPU pipeline run on the CPU (no NPU here): the same static-shape code path, not a real NPU.
NPU_ON_CPU = {"NPUW_DEVICES": "CPU"}

# sentence-transformers truncates at 256 tokens too: 300 repetitions of a one-token word overflow it.
LONG = "harbour " * 300


def _cosines(a: list[list[float]], b: np.ndarray) -> np.ndarray:
    x = np.asarray(a)
    return (x * b).sum(1) / (np.linalg.norm(x, axis=1) * np.linalg.norm(b, axis=1))


# -- parity --------------------------------------------------------------------------------------------------------
def test_vectors_match_sentence_transformers(minilm_cpu, sentence_transformer, parity_sentences) -> None:
    assert len(parity_sentences) == 300
    ours = minilm_cpu.embed_documents(parity_sentences)
    reference = sentence_transformer.encode(parity_sentences, normalize_embeddings=True, batch_size=64)
    cosines = _cosines(ours, reference)
    assert cosines.min() >= 0.999, (cosines.min(), parity_sentences[int(cosines.argmin())])
    # Normalised by default, like the catalogue row says: dot product == cosine.
    np.testing.assert_allclose(np.linalg.norm(ours, axis=1), 1.0, atol=1e-4)


@pytest.mark.npu_on_cpu
def test_npu_pipeline_pads_without_changing_the_vectors(minilm_cpu, minilm_npu, parity_sentences) -> None:
    assert minilm_npu.is_npu and minilm_npu.max_length == 256
    texts = parity_sentences[:18] + ["a", LONG]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", InputTruncatedWarning)
        npu = minilm_npu.embed_documents(texts)
        cpu = np.asarray(minilm_cpu.embed_documents(texts))
    assert _cosines(npu, cpu).min() >= 0.999
    assert _cosines([minilm_npu.embed_query(texts[1])], cpu[1:2]).min() >= 0.999


# -- truncation ----------------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "engine_name", ["minilm_cpu", pytest.param("minilm_npu", marks=pytest.mark.npu_on_cpu)]
)
def test_text_over_max_length_is_truncated_with_a_warning(engine_name: str, request) -> None:
    engine = request.getfixturevalue(engine_name)
    with pytest.warns(InputTruncatedWarning, match=r"1 of 2 texts exceed .*max_length of 256 tokens"):
        long_vec, _ = engine.embed_documents([LONG, "short"])
    # Cut to its first 256 tokens: 300 and 400 repetitions become the same input.
    with pytest.warns(InputTruncatedWarning):
        longer_vec = engine.embed_query("harbour " * 400)
    np.testing.assert_allclose(long_vec, longer_vec, atol=1e-5)
    with warnings.catch_warnings():
        warnings.simplefilter("error", InputTruncatedWarning)
        engine.embed_documents(["harbour " * 200])  # fits: no warning


# -- instructions, batching, sharing, threads ----------------------------------------------------------------------
def test_query_instruction_is_put_before_queries_only(minilm_cpu) -> None:
    instructed = get_embedding_engine("minilm", "cpu", query_instruction="query: ")
    assert instructed is not minilm_cpu
    question = "When is the fish market closed?"
    np.testing.assert_allclose(
        instructed.embed_query(question), minilm_cpu.embed_documents(["query: " + question])[0], atol=1e-5
    )
    np.testing.assert_allclose(
        instructed.embed_documents([question])[0], minilm_cpu.embed_query(question), atol=1e-5
    )


def test_batch_size_does_not_change_the_vectors(minilm_cpu_f32, parity_sentences) -> None:
    texts = parity_sentences[:9]
    np.testing.assert_allclose(
        minilm_cpu_f32.embed_documents(texts, batch_size=1),
        minilm_cpu_f32.embed_documents(texts, batch_size=4),
        atol=1e-5,
    )
    assert minilm_cpu_f32.embed_documents([]) == []


class _RecordingPipeline:
    """The real pipeline, with the texts of each embed_documents call written down."""

    def __init__(self, pipe) -> None:  # noqa: ANN001 - a TextEmbeddingPipeline
        self.pipe = pipe
        self.calls: list[list[str]] = []

    def embed_documents(self, texts: list[str]):  # noqa: ANN201
        self.calls.append(list(texts))
        return self.pipe.embed_documents(texts)


def test_a_batch_is_one_call_of_similar_lengths_with_the_vectors_of_each_text_alone(
    minilm_cpu_f32, parity_sentences, monkeypatch
) -> None:
    # f32 pinned: a text alone and a text padded in a batch are two numeric paths.
    recorder = _RecordingPipeline(minilm_cpu_f32._pipe)
    monkeypatch.setattr(minilm_cpu_f32, "_pipe", recorder)
    texts = parity_sentences[:64] + [LONG[:400]]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", InputTruncatedWarning)
        batched = minilm_cpu_f32.embed_documents(texts, batch_size=32)
        alone = [list(map(float, recorder.pipe.embed_documents([t])[0])) for t in texts]
    assert [len(call) for call in recorder.calls] == [32, 32, 1]
    assert recorder.calls[0][0] == LONG[:400]  # longest first, so a call pads to a similar length
    lengths = [len(t) for call in recorder.calls for t in call]
    assert lengths == sorted(lengths, reverse=True)
    np.testing.assert_allclose(batched, alone, atol=1e-5)
    assert _cosines(batched, np.asarray(alone)).min() >= 0.999


def test_every_spelling_of_the_model_shares_one_engine(minilm_cpu, minilm_hf: Path) -> None:
    assert get_embedding_engine(DEFAULT_EMBEDDING_MODEL, " CPU ") is minilm_cpu
    assert get_embedding_engine("all-minilm-l6-v2", "cpu") is minilm_cpu
    # The packaged folder, named by path, has the same settings (read from its sentence-transformers files) and
    # is exported to the same cached IR: same engine.
    assert get_embedding_engine(minilm_hf, "cpu") is minilm_cpu
    # The exported IR folder is used as it is.
    assert resolve_encoder(minilm_cpu.artifact.path, "embed").path == minilm_cpu.artifact.path


def test_concurrent_callers_get_their_own_vectors(minilm_cpu_f32, parity_sentences) -> None:
    # f32 pinned: one batch and one text at a time are two numeric paths (1.4e-4 apart at bf16, 1.5e-7 at f32).
    texts = parity_sentences[:24]
    expected = minilm_cpu_f32.embed_documents(texts)
    with ThreadPoolExecutor(max_workers=4) as pool:
        got = list(pool.map(lambda t: minilm_cpu_f32.embed_documents([t])[0], texts))
    np.testing.assert_allclose(got, expected, atol=1e-5)


def test_a_hub_repo_in_the_huggingface_cache_is_found_offline(minilm_cpu, tmp_path, monkeypatch) -> None:
    from huggingface_hub import constants

    # The layout huggingface_hub writes: refs/main names the snapshot, whose files link to blobs.
    repo = tmp_path / "models--OpenVINO--all-MiniLM-L6-v2-ov"
    snapshot = repo / "snapshots" / ("0" * 40)
    snapshot.mkdir(parents=True)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text("0" * 40)
    for file in minilm_cpu.artifact.path.iterdir():
        (snapshot / file.name).symlink_to(file)
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path))
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    found = resolve_encoder("OpenVINO/all-MiniLM-L6-v2-ov", "embed")
    assert found.path == snapshot and found.model_id == "OpenVINO/all-MiniLM-L6-v2-ov"
    with pytest.raises(ModelNotFoundError, match="Could not find the encoder 'OpenVINO/not-cached'"):
        resolve_encoder("OpenVINO/not-cached", "embed")


# -- the catalogue row agrees with the model's own files ------------------------------------------------------------
def test_catalogue_row_matches_the_sentence_transformers_config(minilm_hf: Path) -> None:
    own = read_settings(minilm_hf, "embed")
    row = find_encoder("minilm")
    assert row is not None
    assert (own.pooling, own.max_length) == (row.settings.pooling, row.settings.max_length) == ("mean", 256)


# -- errors --------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"device": "gpu"}, DeviceNotFoundError, "not present on this machine"),
        ({"device": "dml"}, DeviceNotFoundError, "openvino backend runs on the NPU, GPU, CPU only"),
        ({"device": "tpu"}, DeviceNotFoundError, "Unknown device"),
        ({"model": "ms-marco-minilm"}, InvalidParameterError, "is a reranker"),
        ({"model": "/nonexistent/encoder"}, ModelNotFoundError, "does not exist"),
        ({"model": "not a model"}, ModelNotFoundError, "neither a local folder"),
        ({"pooling": "max"}, InvalidParameterError, "pooling must be one of"),
        ({"max_length": 1}, InvalidParameterError, "max_length must be"),
        ({"options": ["NPUW_DEVICES"]}, InvalidParameterError, "options must be a mapping"),
    ],
)
def test_bad_requests_are_clear_errors(minilm_cpu, kwargs, error, match) -> None:
    args = {"model": "minilm", "device": "cpu", **kwargs}
    with pytest.raises(error, match=match):
        get_embedding_engine(**args)


@pytest.mark.parametrize(
    ("call", "match"),
    [
        (lambda e: e.embed_documents("one string"), "list of strings"),
        (lambda e: e.embed_documents(["ok", 3]), r"texts\[1\] is a int"),
        (lambda e: e.embed_query(None), "text must be a string"),
        (lambda e: e.embed_documents(["ok"], batch_size=0), "batch_size must be a positive integer"),
    ],
)
def test_bad_inputs_are_clear_errors(minilm_cpu, call, match) -> None:
    with pytest.raises(InvalidParameterError, match=match):
        call(minilm_cpu)
