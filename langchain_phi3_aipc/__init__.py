"""LangChain integration for phi3-aipc: ChatPhi3AIPC (chat model), Phi3AIPC (completion LLM),
Phi3AIPCEmbeddings and Phi3AIPCReranker (document compressor).

Importing this package loads no model and no backend; the engine loads on first use.
"""

from langchain_phi3_aipc.chat_models import ChatPhi3AIPC
from langchain_phi3_aipc.embeddings import Phi3AIPCEmbeddings
from langchain_phi3_aipc.llms import Phi3AIPC
from langchain_phi3_aipc.rerankers import Phi3AIPCReranker

__all__ = ["ChatPhi3AIPC", "Phi3AIPC", "Phi3AIPCEmbeddings", "Phi3AIPCReranker"]
