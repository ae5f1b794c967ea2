"""LangChain integration for phi3-aipc: ChatPhi3AIPC (chat model) and Phi3AIPC (completion LLM).

Importing this package loads no model and no backend; the engine loads on first use.
"""

from langchain_phi3_aipc.chat_models import ChatPhi3AIPC
from langchain_phi3_aipc.llms import Phi3AIPC

__all__ = ["ChatPhi3AIPC", "Phi3AIPC"]
