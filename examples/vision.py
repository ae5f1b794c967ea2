"""Ask about an image file on the AI PC, from LangChain, offline.

On an AI PC, with Phi-3.5-vision (Intel's pre-converted OpenVINO INT8 build, downloaded once):

    python examples/vision.py screenshot.png "What does this dialog ask me to do?" --model phi-3.5-vision --device gpu

Offline and anywhere (what CI runs): the tiny random-weight Qwen2-VL test model, built on first use (about a
minute; it needs the export extra). Its answer is random text: it shows the plumbing, not the quality.

    python examples/vision.py picture.png "What is in the picture?" --tiny

The image is read from disk and sent as a standard LangChain image block (base64). phi3-aipc never fetches an
image URL: a web address is refused with an error saying to download the image first.

Install (from a clone of the repository), then run from the repository root:

    pip install -e ".[openvino,langchain]"          # add ",export" for --tiny
"""

from __future__ import annotations

import argparse
import base64
import mimetypes
import os
import tempfile
from pathlib import Path

from langchain_core.messages import HumanMessage

from langchain_phi3_aipc import ChatPhi3AIPC


def tiny_model() -> str:
    """The tiny Qwen2-VL test model as an OpenVINO IR folder, built once into $PHI3_AIPC_TEST_CACHE (or a temp dir)."""
    from phi3_aipc.testing import cached_model_dir
    from phi3_aipc.testing.tiny_qwen2_vl import build_tiny_qwen2_vl, export_tiny_qwen2_vl

    cache = Path(os.environ.get("PHI3_AIPC_TEST_CACHE") or Path(tempfile.gettempdir()) / "phi3-aipc-examples")
    hf = cached_model_dir(cache, "tiny-qwen2-vl-s0-v1", build_tiny_qwen2_vl)
    return str(
        cached_model_dir(cache, "tiny-qwen2-vl-s0-ov-fp32-v1", lambda out: export_tiny_qwen2_vl(hf, out))
    )


def image_block(path: Path) -> dict[str, str]:
    mime = mimetypes.guess_type(path.name)[0] or "image/png"
    return {"type": "image", "base64": base64.b64encode(path.read_bytes()).decode(), "mime_type": mime}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("image", type=Path)
    parser.add_argument("question")
    parser.add_argument("--model", default="phi-3.5-vision")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--tiny", action="store_true", help="the offline tiny test model instead of --model")
    parser.add_argument("--max-tokens", type=int, default=128)
    args = parser.parse_args()

    model = tiny_model() if args.tiny else args.model
    chat = ChatPhi3AIPC(model=model, device=args.device, backend="openvino-vlm", max_tokens=args.max_tokens)
    message = HumanMessage(content=[{"type": "text", "text": args.question}, image_block(args.image)])
    answer = chat.invoke([message])
    print(answer.content)
    usage = answer.usage_metadata or {}
    print(
        f"[{answer.response_metadata.get('device')}: {usage.get('input_tokens')} prompt tokens, image included]"
    )


if __name__ == "__main__":
    main()
