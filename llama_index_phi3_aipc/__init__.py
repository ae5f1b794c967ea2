"""LlamaIndex integration for phi3-aipc: ``Phi3AIPC``, a FunctionCallingLLM over the shared engine;
``Phi3AIPCEmbedding`` (embeddings) and ``Phi3AIPCRerank`` (a reranking node postprocessor).

Importing this package loads no backend and no torch; the model loads on the first call.
"""

from phi3_aipc.errors import FrameworkNotInstalledError

try:
    from llama_index_phi3_aipc.base import NoToolCallError, Phi3AIPC, StructuredOutputError
    from llama_index_phi3_aipc.embeddings import Phi3AIPCEmbedding
    from llama_index_phi3_aipc.postprocessor import Phi3AIPCRerank
except ModuleNotFoundError as exc:
    # llama_index is a namespace package: "llama_index" or "llama_index.core" missing both mean no llama-index-core.
    # Any other missing module is a real bug to see as it is.
    if exc.name not in ("llama_index", "llama_index.core"):
        raise
    raise FrameworkNotInstalledError("llama_index_phi3_aipc", "llama-index-core", "llama-index", exc) from exc

__all__ = ["NoToolCallError", "Phi3AIPC", "Phi3AIPCEmbedding", "Phi3AIPCRerank", "StructuredOutputError"]
