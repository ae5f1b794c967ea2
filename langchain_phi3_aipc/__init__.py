"""LangChain integration for phi3-aipc: ChatPhi3AIPC (chat model), Phi3AIPC (completion LLM),
Phi3AIPCEmbeddings and Phi3AIPCReranker (document compressor).

Importing this package loads no model and no backend; the engine loads on first use.
"""

from phi3_aipc.errors import FrameworkNotInstalledError

try:
    from langchain_phi3_aipc.chat_models import ChatPhi3AIPC
    from langchain_phi3_aipc.embeddings import Phi3AIPCEmbeddings
    from langchain_phi3_aipc.llms import Phi3AIPC
    from langchain_phi3_aipc.rerankers import Phi3AIPCReranker
except ModuleNotFoundError as exc:
    # Only the framework itself becomes the extra's hint; any other missing module is a real bug to see as it is.
    if (exc.name or "").split(".")[0] != "langchain_core":
        raise
    raise FrameworkNotInstalledError("langchain_phi3_aipc", "langchain-core", "langchain", exc) from exc

__all__ = ["ChatPhi3AIPC", "Phi3AIPC", "Phi3AIPCEmbeddings", "Phi3AIPCReranker"]
