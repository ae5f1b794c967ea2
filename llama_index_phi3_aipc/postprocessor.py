"""Phi3AIPCRerank: a LlamaIndex node postprocessor that reranks nodes with a local cross-encoder."""

from __future__ import annotations

from typing import Any

from llama_index.core.postprocessor.types import BaseNodePostprocessor
from llama_index.core.schema import MetadataMode, NodeWithScore, QueryBundle
from pydantic import Field, PrivateAttr

from phi3_aipc.embeddings import DEFAULT_RERANK_MODEL, RerankEngine, get_rerank_engine
from phi3_aipc.errors import InvalidParameterError


class Phi3AIPCRerank(BaseNodePostprocessor):
    """Reranks retrieved nodes with a cross-encoder run by OpenVINO GenAI on the NPU, Intel GPU or CPU.

    Keeps the ``top_n`` most relevant nodes, most relevant first; each node's score becomes the cross-encoder's
    (sigmoid, in (0, 1)).

    Example:
        ```python
        from llama_index_phi3_aipc import Phi3AIPCRerank

        query_engine = index.as_query_engine(similarity_top_k=8, node_postprocessors=[Phi3AIPCRerank(top_n=3)])
        ```
    """

    model: str = Field(
        default=DEFAULT_RERANK_MODEL, description="Cross-encoder: a name, a Hub repo id, or a local folder."
    )
    device: str = Field(
        default="auto", description="'auto' (NPU, else GPU, else CPU), 'npu', 'gpu' or 'cpu'."
    )
    top_n: int = Field(default=3, ge=1, description="Nodes to keep, most relevant first.")
    max_length: int | None = Field(
        default=None, description="Tokens a query-node pair is cut to; None: the model's."
    )
    options: dict[str, Any] = Field(
        default_factory=dict, description="OpenVINO properties, or {'revision': ...}."
    )

    _engine: RerankEngine | None = PrivateAttr(default=None)

    @classmethod
    def class_name(cls) -> str:
        return "Phi3AIPCRerank"

    @property
    def engine(self) -> RerankEngine:
        """The shared engine, loaded on first use."""
        if self._engine is None:
            self._engine = get_rerank_engine(
                self.model, self.device, self.options, max_length=self.max_length
            )
        return self._engine

    def _postprocess_nodes(
        self, nodes: list[NodeWithScore], query_bundle: QueryBundle | None = None
    ) -> list[NodeWithScore]:
        if query_bundle is None:
            raise InvalidParameterError("Phi3AIPCRerank needs the query: pass query_bundle or query_str.")
        if not nodes:
            return []
        texts = [n.node.get_content(metadata_mode=MetadataMode.EMBED) for n in nodes]
        ranked = self.engine.rerank(query_bundle.query_str, texts, top_n=self.top_n)
        return [NodeWithScore(node=nodes[r.index].node, score=r.score) for r in ranked]
