"""LlamaIndex integration for phi3-aipc: ``Phi3AIPC``, a FunctionCallingLLM over the shared engine.

Importing this package loads no backend and no torch; the model loads on the first call.
"""

from llama_index_phi3_aipc.base import NoToolCallError, Phi3AIPC, StructuredOutputError

__all__ = ["NoToolCallError", "Phi3AIPC", "StructuredOutputError"]
