"""Tiny random-weight GGUFs with any GGML tensor type, written with the ``gguf`` package.

gguf-py quantises only a few types (Q8_0, Q4_0, ...), not the K-quants. Every block here is random bytes whose f16
scale fields are then set to one small value, which is valid data of that type for any GGML reader; the scale is
chosen so that the dequantised weights have a standard deviation of about 0.05. The tokenizer (a byte-level BPE,
49,152 tokens, ChatML markers) and, unless another is given, the chat template come from the packaged SmolLM2 GGUF,
so transformers' GGUF loader and OpenVINO GenAI's reader can both build a tokenizer from the metadata.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from gguf import GGMLQuantizationType, GGUFReader, GGUFValueType, GGUFWriter
from gguf.constants import GGML_QUANT_SIZES
from gguf.quants import dequantize

Q = GGMLQuantizationType
HIDDEN, FFN, HEADS, KV_HEADS, LAYERS = 256, 512, 4, 2, 2
#: Byte offsets of the f16 scale (and min) fields in one block of each block-quantised type.
_F16_FIELDS: dict[GGMLQuantizationType, tuple[int, ...]] = {
    Q.Q4_0: (0,),
    Q.Q4_1: (0, 2),
    Q.Q5_0: (0,),
    Q.Q5_1: (0, 2),
    Q.Q8_0: (0,),
    Q.Q2_K: (80, 82),
    Q.Q3_K: (108,),
    Q.Q4_K: (0, 2),
    Q.Q5_K: (0, 2),
    Q.Q6_K: (208,),
}
_FLOATS = {Q.F32: np.float32, Q.F16: np.float16}
# general.file_type (llama.cpp's LlamaFileType, "mostly <type>") for a model whose matrices are of one type.
_FILE_TYPES = {
    Q.F32: 0,
    Q.F16: 1,
    Q.Q4_0: 2,
    Q.Q4_1: 3,
    Q.Q8_0: 7,
    Q.Q5_0: 8,
    Q.Q5_1: 9,
    Q.Q2_K: 10,
    Q.Q3_K: 12,
    Q.Q4_K: 15,
    Q.Q5_K: 17,
    Q.Q6_K: 18,
    Q.BF16: 32,
}


def random_tensor(
    shape: tuple[int, int], qtype: GGMLQuantizationType, rng: np.random.Generator
) -> np.ndarray:
    """A (rows, cols) weight of type ``qtype``: float values, or the raw bytes of its blocks."""
    if qtype in _FLOATS:
        return (rng.standard_normal(shape) * 0.05).astype(_FLOATS[qtype])
    if qtype == Q.BF16:
        values = (rng.standard_normal(shape) * 0.05).astype(np.float32)
        return (values.view(np.uint32) >> 16).astype(np.uint16).view(np.uint8).reshape(shape[0], -1)
    block, size = GGML_QUANT_SIZES[qtype]
    rows, cols = shape
    blocks = rng.integers(0, 256, size=(rows * cols // block, size), dtype=np.uint8)
    scale = _set_scale(blocks, qtype, 1.0)
    std = float(dequantize(blocks[:64].reshape(-1), qtype).std()) / scale
    _set_scale(blocks, qtype, 0.05 / max(std, 1e-6))
    return blocks.reshape(rows, -1)


def _set_scale(blocks: np.ndarray, qtype: GGMLQuantizationType, value: float) -> float:
    half = np.frombuffer(np.float16(value).tobytes(), dtype=np.uint8)
    for offset in _F16_FIELDS[qtype]:
        blocks[:, offset : offset + 2] = half
    return float(np.float16(value))


def write_tiny_gguf(
    path: Path,
    tokenizer_gguf: Path,
    *,
    weights: GGMLQuantizationType = Q.Q4_K,
    embedding: GGMLQuantizationType = Q.Q6_K,
    arch: str = "qwen2",
    chat_template: str | None = None,
    seed: int = 0,
) -> Path:
    """A 2-layer ``arch`` model (hidden 256, the smallest K-quant row) with ``weights`` for its matrices."""
    rng = np.random.default_rng(seed)
    writer = GGUFWriter(str(path), arch)
    writer.add_name(f"tiny-{arch}-{weights.name}")
    writer.add_context_length(2048)
    writer.add_embedding_length(HIDDEN)
    writer.add_feed_forward_length(FFN)
    writer.add_block_count(LAYERS)
    writer.add_head_count(HEADS)
    writer.add_head_count_kv(KV_HEADS)
    writer.add_rope_freq_base(10000.0)
    writer.add_layer_norm_rms_eps(1e-6)
    writer.add_rope_dimension_count(HIDDEN // HEADS)
    writer.add_file_type(_FILE_TYPES.get(weights, 0))
    vocab = _copy_tokenizer(writer, tokenizer_gguf, chat_template)

    def add(name: str, shape: tuple[int, int], qtype: GGMLQuantizationType) -> None:
        writer.add_tensor(
            name, random_tensor(shape, qtype, rng), raw_dtype=None if qtype in _FLOATS else qtype
        )

    def norm(name: str, size: int) -> None:
        writer.add_tensor(name, np.ones(size, dtype=np.float32))

    kv = HIDDEN // HEADS * KV_HEADS
    add("token_embd.weight", (vocab, HIDDEN), embedding)
    norm("output_norm.weight", HIDDEN)
    for i in range(LAYERS):
        norm(f"blk.{i}.attn_norm.weight", HIDDEN)
        norm(f"blk.{i}.ffn_norm.weight", HIDDEN)
        for name, rows in (("attn_q", HIDDEN), ("attn_k", kv), ("attn_v", kv)):
            add(f"blk.{i}.{name}.weight", (rows, HIDDEN), weights)
            writer.add_tensor(f"blk.{i}.{name}.bias", np.zeros(rows, dtype=np.float32))
        add(f"blk.{i}.attn_output.weight", (HIDDEN, HIDDEN), weights)
        add(f"blk.{i}.ffn_gate.weight", (FFN, HIDDEN), weights)
        add(f"blk.{i}.ffn_up.weight", (FFN, HIDDEN), weights)
        add(f"blk.{i}.ffn_down.weight", (HIDDEN, FFN), weights)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path


def _copy_tokenizer(writer: GGUFWriter, source: Path, chat_template: str | None) -> int:
    """Copy every ``tokenizer.*`` key of ``source``; returns the vocabulary size."""
    reader = GGUFReader(str(source))
    vocab = 0
    for key, field in reader.fields.items():
        if not key.startswith("tokenizer.") or (
            key == "tokenizer.chat_template" and chat_template is not None
        ):
            continue
        value = field.contents()
        kind = field.types[0]
        sub = field.types[1] if kind == GGUFValueType.ARRAY else None
        writer.add_key_value(key, value, kind, sub_type=sub)
        if key == "tokenizer.ggml.tokens":
            vocab = len(value)
    if chat_template is not None:
        writer.add_chat_template(chat_template)
    return vocab
