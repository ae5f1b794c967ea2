"""LlamaIndex integration for phi3-aipc: ``Phi3AIPC``, a FunctionCallingLLM over the shared engine;
``Phi3AIPCEmbedding`` (embeddings) and ``Phi3AIPCRerank`` (a reranking node postprocessor).

Importing this package loads no backend and no torch; the model loads on the first call.
"""

from llama_index_phi3_aipc.base import NoToolCallError, Phi3AIPC, StructuredOutputError
from llama_index_phi3_aipc.embeddings import Phi3AIPCEmbedding
from llama_index_phi3_aipc.postprocessor import Phi3AIPCRerank

__all__ = ["NoToolCallError", "Phi3AIPC", "Phi3AIPCEmbedding", "Phi3AIPCRerank", "StructuredOutputError"]
