"""The LangChain and LlamaIndex adapters over the shared encoder engines (MiniLM and the tiny cross-encoder)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("openvino_genai")
pytest.importorskip("langchain_core")
pytest.importorskip("llama_index.core")

from langchain_core.documents import Document  # noqa: E402
from langchain_core.vectorstores import InMemoryVectorStore  # noqa: E402
from langchain_tests.integration_tests import EmbeddingsIntegrationTests  # noqa: E402
from langchain_tests.unit_tests import EmbeddingsUnitTests  # noqa: E402

from langchain_phi3_aipc import Phi3AIPCEmbeddings, Phi3AIPCReranker  # noqa: E402
from llama_index_phi3_aipc import Phi3AIPCEmbedding, Phi3AIPCRerank  # noqa: E402
from phi3_aipc.testing.precision import ENCODER_F32  # noqa: E402

PARAMS = {"model": "minilm", "device": "cpu"}


# -- LangChain's standard suites ----------------------------------------------------------------------------------
@pytest.mark.usefixtures("minilm_cpu")
class TestPhi3AIPCEmbeddingsStandard(EmbeddingsIntegrationTests):
    @property
    def embeddings_class(self) -> type[Phi3AIPCEmbeddings]:
        return Phi3AIPCEmbeddings

    @property
    def embedding_model_params(self) -> dict:
        return PARAMS


class TestPhi3AIPCEmbeddingsUnit(EmbeddingsUnitTests):
    @property
    def embeddings_class(self) -> type[Phi3AIPCEmbeddings]:
        return Phi3AIPCEmbeddings

    @property
    def embedding_model_params(self) -> dict:
        return PARAMS


# -- LangChain ------------------------------------------------------------------------------------------------------
def test_langchain_embeddings_share_the_engine_and_match_it(minilm_cpu, qa_pairs) -> None:
    embeddings = Phi3AIPCEmbeddings(**PARAMS, batch_size=7)
    assert embeddings.engine is minilm_cpu
    passages = [p["passage"] for p in qa_pairs[:10]]
    np.testing.assert_allclose(
        embeddings.embed_documents(passages), minilm_cpu.embed_documents(passages), atol=1e-5
    )


async def test_langchain_async_twins_match(minilm_cpu, qa_pairs) -> None:
    embeddings = Phi3AIPCEmbeddings(**PARAMS)
    question = qa_pairs[0]["question"]
    np.testing.assert_allclose(
        await embeddings.aembed_query(question), minilm_cpu.embed_query(question), atol=1e-5
    )
    docs = await embeddings.aembed_documents([question, "x"])
    assert len(docs) == 2


def test_langchain_vector_store_finds_the_passage(minilm_cpu, qa_pairs) -> None:
    store = InMemoryVectorStore.from_texts([p["passage"] for p in qa_pairs], Phi3AIPCEmbeddings(**PARAMS))
    for pair in qa_pairs[:5]:
        assert store.similarity_search(pair["question"], k=1)[0].page_content == pair["passage"]


def test_misspelt_field_is_an_error() -> None:
    with pytest.raises(ValueError, match="devcie"):
        Phi3AIPCEmbeddings(devcie="npu")


def test_langchain_reranker_keeps_top_n_with_scores(tiny_reranker, tiny_cross_encoder_hf: Path) -> None:
    docs = [Document(f"passage {i} about boats", metadata={"n": i}, id=str(i)) for i in range(5)]
    reranker = Phi3AIPCReranker(model=str(tiny_cross_encoder_hf), device="cpu", top_n=2, options=ENCODER_F32)
    assert reranker.engine is tiny_reranker
    kept = reranker.compress_documents(docs, "boats")
    expected = tiny_reranker.rerank("boats", [d.page_content for d in docs], top_n=2)
    assert [d.metadata["n"] for d in kept] == [r.index for r in expected]
    assert [d.metadata["relevance_score"] for d in kept] == [r.score for r in expected]
    assert [d.id for d in kept] == [str(r.index) for r in expected]
    assert "relevance_score" not in docs[0].metadata  # the inputs are not modified


def test_reranker_in_contextual_compression_retriever(
    minilm_cpu, tiny_reranker, tiny_cross_encoder_hf, qa_pairs
):
    retrievers = pytest.importorskip("langchain_classic.retrievers")
    store = InMemoryVectorStore.from_texts([p["passage"] for p in qa_pairs], Phi3AIPCEmbeddings(**PARAMS))
    reranker = Phi3AIPCReranker(model=str(tiny_cross_encoder_hf), device="cpu", top_n=2, options=ENCODER_F32)
    retriever = retrievers.ContextualCompressionRetriever(
        base_compressor=reranker, base_retriever=store.as_retriever(search_kwargs={"k": 4})
    )
    question = qa_pairs[3]["question"]
    docs = retriever.invoke(question)
    candidates = [d.page_content for d in store.similarity_search(question, k=4)]
    assert len(docs) == 2 and all(d.page_content in candidates for d in docs)
    assert docs[0].metadata["relevance_score"] >= docs[1].metadata["relevance_score"]


# -- LlamaIndex -----------------------------------------------------------------------------------------------------
def test_llamaindex_embedding_sync_and_async(minilm_cpu, qa_pairs) -> None:
    import asyncio

    embed = Phi3AIPCEmbedding(model_name="minilm", device="cpu", embed_batch_size=4)
    assert embed.engine is minilm_cpu
    passages = [p["passage"] for p in qa_pairs[:6]]
    np.testing.assert_allclose(
        embed.get_text_embedding_batch(passages), minilm_cpu.embed_documents(passages), atol=1e-5
    )
    question = qa_pairs[0]["question"]
    np.testing.assert_allclose(
        embed.get_query_embedding(question), minilm_cpu.embed_query(question), atol=1e-5
    )
    got = asyncio.run(embed.aget_text_embedding_batch(passages[:2]))
    np.testing.assert_allclose(got, minilm_cpu.embed_documents(passages[:2]), atol=1e-5)
    np.testing.assert_allclose(
        asyncio.run(embed.aget_query_embedding(question)), minilm_cpu.embed_query(question), atol=1e-5
    )


def test_llamaindex_index_retrieves_and_reranks(minilm_cpu, tiny_reranker, tiny_cross_encoder_hf, qa_pairs):
    from llama_index.core import Document as LlamaDocument
    from llama_index.core import VectorStoreIndex

    index = VectorStoreIndex.from_documents(
        [LlamaDocument(text=p["passage"]) for p in qa_pairs[:10]],
        embed_model=Phi3AIPCEmbedding(model_name="minilm", device="cpu"),
    )
    question = qa_pairs[2]["question"]
    nodes = index.as_retriever(similarity_top_k=4).retrieve(question)
    assert nodes[0].node.get_content() == qa_pairs[2]["passage"]
    rerank = Phi3AIPCRerank(model=str(tiny_cross_encoder_hf), device="cpu", top_n=2, options=ENCODER_F32)
    kept = rerank.postprocess_nodes(nodes, query_str=question)
    expected = tiny_reranker.rerank(question, [n.node.get_content() for n in nodes], top_n=2)
    assert [n.node.node_id for n in kept] == [nodes[r.index].node.node_id for r in expected]
    assert [n.score for n in kept] == [r.score for r in expected]
