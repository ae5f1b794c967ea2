"""A tiny random-weight Qwen2-VL around the real Qwen2.5 tokenizer, for plumbing tests of the vision path: an
architecture transformers builds natively (no remote code), optimum-intel exports and OpenVINO GenAI's
``VLMPipeline`` runs. Random weights: no answer quality; tests compare engines on the same weights, never judge
what it says.

Qwen2.5's vocabulary already holds the vision tokens (``<|vision_start|>``, ``<|image_pad|>``, ...); the packaged
conversion only leaves them unmarked, so the builder marks them special. The image processor is Qwen2-VL's own,
limited to 112x112 pixels (at most 16 image tokens per image) so that a test prompt stays short.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from phi3_aipc.testing.checkpoint import generation_config, require, save_tokenizer
from phi3_aipc.testing.tiny_qwen2 import IM_END, QWEN_TOKENIZER_DIR, _qwen_tokenizer

VISION_TOKENS = ("<|vision_start|>", "<|vision_end|>", "<|vision_pad|>", "<|image_pad|>", "<|video_pad|>")
#: Qwen2-VL's own chat template (images become ``<|vision_start|><|image_pad|><|vision_end|>``), without tools.
CHAT_TEMPLATE = (
    "{% for message in messages %}{% if loop.first and message['role'] != 'system' %}<|im_start|>system\n"
    "You are a helpful assistant.<|im_end|>\n{% endif %}<|im_start|>{{ message['role'] }}\n"
    "{% if message['content'] is string %}{{ message['content'] }}<|im_end|>\n{% else %}"
    "{% for content in message['content'] %}{% if content['type'] == 'image' or 'image' in content %}"
    "<|vision_start|><|image_pad|><|vision_end|>{% elif 'text' in content %}{{ content['text'] }}{% endif %}"
    "{% endfor %}<|im_end|>\n{% endif %}{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
#: The image processor's pixel bounds: 56x56 up to 112x112 (Qwen2-VL resizes to multiples of 28 inside them).
MIN_PIXELS, MAX_PIXELS = 56 * 56, 112 * 112


def build_tiny_qwen2_vl(out_dir: Path, *, source: Path = QWEN_TOKENIZER_DIR, seed: int = 0) -> Path:
    """Save a random fp32 ``Qwen2VLForConditionalGeneration`` (text: hidden 64, 2 layers; vision: 2 blocks) with
    its tokenizer and processor to ``out_dir``."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    tok = _qwen_tokenizer(Path(source), out_dir)
    torch = require("torch", "torch")
    transformers = require("transformers", "transformers")
    tok.add_special_tokens({"additional_special_tokens": list(VISION_TOKENS)})
    tok.chat_template = CHAT_TEMPLATE
    vocab = tok.get_vocab()
    config = transformers.Qwen2VLConfig(**_config(vocab))
    torch.manual_seed(seed)
    model = transformers.Qwen2VLForConditionalGeneration(config).to(torch.float32).eval()
    model.generation_config = generation_config(
        [vocab[IM_END], vocab["<|endoftext|>"]], pad=vocab["<|endoftext|>"]
    )
    model.save_pretrained(out_dir, safe_serialization=True)
    sizes = {"min_pixels": MIN_PIXELS, "max_pixels": MAX_PIXELS}
    processor = transformers.Qwen2VLProcessor(
        image_processor=transformers.Qwen2VLImageProcessor(**sizes),
        video_processor=transformers.Qwen2VLVideoProcessor(**sizes),
        tokenizer=tok,
        chat_template=CHAT_TEMPLATE,
    )
    processor.save_pretrained(out_dir)
    save_tokenizer(tok, out_dir)
    _write_flat_preprocessor_config(processor.image_processor, out_dir)
    return out_dir


def _config(vocab: dict[str, int]) -> dict[str, Any]:
    # initializer_range 0.3 (not 0.02): with the small default the tied embeddings make every answer one repeated
    # token whatever the image; at 0.3 the greedy answer changes with the image from its first token.
    init = 0.3
    return {
        "text_config": {
            "vocab_size": 151936,
            "hidden_size": 64,
            "intermediate_size": 128,
            "num_hidden_layers": 2,
            "num_attention_heads": 4,
            "num_key_value_heads": 2,
            "max_position_embeddings": 4096,
            # Multimodal RoPE: the sections (time, height, width) add up to half the head size (64 / 4 / 2 = 8).
            "rope_scaling": {"type": "mrope", "mrope_section": [2, 3, 3]},
            "tie_word_embeddings": True,
            "initializer_range": init,
        },
        "vision_config": {
            "depth": 2,
            "embed_dim": 32,
            "hidden_size": 64,
            "num_heads": 2,
            "mlp_ratio": 2,
            "patch_size": 14,
            "spatial_merge_size": 2,
            "temporal_patch_size": 2,
            "initializer_range": init,
        },
        "image_token_id": vocab["<|image_pad|>"],
        "video_token_id": vocab["<|video_pad|>"],
        "vision_start_token_id": vocab["<|vision_start|>"],
        "vision_end_token_id": vocab["<|vision_end|>"],
        "tie_word_embeddings": True,
        "initializer_range": init,
    }


def _write_flat_preprocessor_config(image_processor: Any, out_dir: Path) -> None:
    """transformers 5 nests the image processor in processor_config.json; OpenVINO GenAI reads the flat
    preprocessor_config.json of transformers 4, with the pixel bounds as min_pixels/max_pixels."""
    flat = image_processor.to_dict()
    flat.update({"min_pixels": MIN_PIXELS, "max_pixels": MAX_PIXELS})
    (out_dir / "preprocessor_config.json").write_text(json.dumps(flat, indent=2) + "\n", encoding="utf-8")


def export_tiny_qwen2_vl(hf_dir: Path, out_dir: Path) -> Path:
    """Export the tiny Qwen2-VL to OpenVINO IR at fp32 (language, text-embeddings, vision and merger models, with
    the tokenizer IR), as ``VLMPipeline`` loads it.

    optimum-intel 2.2 caps its Qwen2-VL export at transformers 5.0 while the project runs 5.5; the export itself
    works on 5.5, and the greedy-parity test against transformers on these weights is what shows it. The cap is
    lifted for this one call only.
    """
    exporters = require("optimum.exporters.openvino", "optimum-intel")
    configs = require("optimum.exporters.openvino.model_configs", "optimum-intel")
    intel = require("optimum.intel", "optimum-intel")
    out_dir = Path(out_dir)
    cap = configs.Qwen2VLOpenVINOConfig.MAX_TRANSFORMERS_VERSION
    configs.Qwen2VLOpenVINOConfig.MAX_TRANSFORMERS_VERSION = None
    try:
        exporters.main_export(
            model_name_or_path=str(hf_dir),
            output=out_dir,
            task="image-text-to-text",
            ov_config=intel.OVConfig(dtype="fp32"),
            convert_tokenizer=True,
            library_name="transformers",
            local_files_only=True,
        )
    finally:
        configs.Qwen2VLOpenVINOConfig.MAX_TRANSFORMERS_VERSION = cap
    # optimum copies the processor files; make sure the flat one OpenVINO GenAI reads is the builder's.
    for name in ("preprocessor_config.json", "chat_template.jinja", "generation_config.json"):
        if (Path(hf_dir) / name).is_file():
            (out_dir / name).write_bytes((Path(hf_dir) / name).read_bytes())
    return out_dir
