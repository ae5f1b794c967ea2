"""Images in messages: decoded with Pillow and checked (type, size, count) before any model sees them.

phi3-aipc runs offline: an image comes as bytes, base64 or a ``data:`` URL. An ``http(s)://`` URL is refused with
a clear error and never fetched. Every refusal is an :class:`~phi3_aipc.errors.InvalidImageError` saying what was
wrong and what to do. Pillow is imported only when an image is decoded.
"""

from __future__ import annotations

import base64
import binascii
import io
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from phi3_aipc.errors import BackendNotInstalledError, InvalidImageError, UnsupportedFeatureError

#: Image file formats taken (Pillow's names), and the MIME types that name them.
FORMATS = {
    "PNG": "image/png",
    "JPEG": "image/jpeg",
    "WEBP": "image/webp",
    "GIF": "image/gif",
    "BMP": "image/bmp",
}
#: Encoded size and pixel limits: a screenshot or a scanned page fits; a decompression bomb does not.
MAX_IMAGE_BYTES = 20 * 1024 * 1024
MAX_IMAGE_PIXELS = 40_000_000
MIN_IMAGE_SIDE = 1
#: Images in one request, unless the backend says fewer.
MAX_IMAGES = 8


@dataclass(frozen=True)
class DecodedImage:
    """An image as RGB pixels, with where it came from for error messages."""

    image: Any  # a PIL.Image.Image in RGB mode
    format: str

    @property
    def size(self) -> tuple[int, int]:
        """(width, height) in pixels."""
        return self.image.size


def decode_image(data: bytes | str, mime_type: str | None = None) -> DecodedImage:
    """Decode raw bytes, base64 text or a ``data:`` URL into RGB pixels, refusing anything that is not a sane image."""
    raw = image_bytes(data)
    if len(raw) > MAX_IMAGE_BYTES:
        raise InvalidImageError(
            f"The image is {len(raw) / 2**20:.1f} MiB, over the {MAX_IMAGE_BYTES // 2**20} MiB limit. "
            "Resize or recompress it (a JPEG of the screen is far smaller) and send it again."
        )
    if mime_type is not None and mime_type.lower() not in FORMATS.values():
        raise InvalidImageError(f"Image type {mime_type!r} is not taken. {_formats_hint()}")
    pil = _pillow()
    try:
        with pil.Image.open(io.BytesIO(raw)) as opened:
            fmt = opened.format or ""
            _check_format(fmt)
            _check_size(*opened.size)
            opened.load()
            rgb = opened.convert("RGB")
    except InvalidImageError:
        raise
    except (pil.UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
        raise InvalidImageError(
            f"The image could not be decoded ({type(exc).__name__}: {str(exc)[:200]}). Send the file's own bytes, "
            f"base64-encoded, not a path or a preview. {_formats_hint()}"
        ) from exc
    except pil.Image.DecompressionBombError as exc:
        raise InvalidImageError(
            f"The image is too large to decode safely ({exc}). Resize it to at most {MAX_IMAGE_PIXELS:,} pixels."
        ) from exc
    return DecodedImage(rgb, fmt)


def image_bytes(data: bytes | str) -> bytes:
    """Bytes as given; text as a ``data:`` URL or plain base64. A web URL is refused, never fetched."""
    if isinstance(data, (bytes, bytearray, memoryview)):
        return bytes(data)
    if not isinstance(data, str):
        raise InvalidImageError(
            f"An image must be bytes, base64 text or a data: URL, got {type(data).__name__}. "
            "Read the file and pass its bytes (or base64)."
        )
    text = data.strip()
    lowered = text[:16].lower()
    if lowered.startswith(("http://", "https://", "ftp://", "file:")):
        raise InvalidImageError(
            f"Image URLs are not fetched: phi3-aipc runs offline and never downloads what a message points to "
            f"({text[:80]!r}). Download the image yourself and send it as base64 or a data: URL "
            f"('data:image/png;base64,...')."
        )
    if lowered.startswith("data:"):
        text = _data_url_payload(text)
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise InvalidImageError(
            "The image text is neither a data: URL nor valid base64. Send base64 of the file's bytes, or "
            "'data:image/png;base64,<base64>'."
        ) from exc


def check_count(images: Sequence[Any], limit: int = MAX_IMAGES) -> None:
    """Refuse more images in one request than the model takes."""
    if len(images) > limit:
        raise InvalidImageError(
            f"The request holds {len(images)} images; this model takes at most {limit} per request. Send fewer "
            f"images (or ask about them in separate requests)."
        )


def _data_url_payload(url: str) -> str:
    header, sep, payload = url.partition(",")
    if not sep or ";base64" not in header.lower():
        raise InvalidImageError(
            "A data: URL must be base64-encoded: 'data:image/png;base64,<base64>' (got "
            f"{header[:60]!r}). Encode the file's bytes as base64."
        )
    mime = header[5:].split(";", 1)[0].strip().lower()
    if mime and mime not in FORMATS.values():
        raise InvalidImageError(
            f"The data: URL is of type {mime!r}, not an image type taken. {_formats_hint()}"
        )
    return payload


def _check_format(fmt: str) -> None:
    if fmt not in FORMATS:
        raise InvalidImageError(f"The image is {fmt or 'of an unknown format'}. {_formats_hint()}")


def _check_size(width: int, height: int) -> None:
    if min(width, height) < MIN_IMAGE_SIDE:
        raise InvalidImageError(f"The image is {width}x{height} pixels: it has no pixels to look at.")
    if width * height > MAX_IMAGE_PIXELS:
        raise InvalidImageError(
            f"The image is {width}x{height} pixels, over the {MAX_IMAGE_PIXELS:,}-pixel limit. Resize it first "
            "(the model scales every image down to a few hundred pixels a side anyway)."
        )


def _formats_hint() -> str:
    return f"Send a {', '.join(FORMATS)} image ({', '.join(FORMATS.values())})."


def _pillow() -> Any:
    try:
        import PIL.Image
    except ImportError as exc:
        raise BackendNotInstalledError("images", "Pillow", "openvino", exc) from exc
    return PIL


# -- images in messages ----------------------------------------------------------------------------------------------
class ImagePrompt(str):
    """A formatted prompt whose ``<ov_genai_image_N>`` tags stand for ``images`` (decoded, checked), in order.

    A ``str`` so that it travels through the engine as any prompt does; only a backend that takes images reads
    ``images``, and the engine refuses it for one that does not (``Engine.takes_images``).
    """

    images: tuple[DecodedImage, ...]

    def __new__(cls, text: str, images: Sequence[DecodedImage]) -> ImagePrompt:
        made = super().__new__(cls, text)
        made.images = tuple(images)
        return made


IMAGE_TAG = "<ov_genai_image_{}>"
_TAG_PREFIX = "<ov_genai_image_"
_TAG = re.compile(r"<ov_genai_image_(\d+)>")
#: Content block types that carry an image: LangChain's standard "image" block, OpenAI's (and LangChain's)
#: "image_url" part, LlamaIndex's ImageBlock (mapped by its adapter).
IMAGE_BLOCK_TYPES = ("image", "image_url", "input_image")


def image_from_block(block: Mapping[str, Any]) -> DecodedImage:
    """The image of a content block, decoded and checked: LangChain ``{"type": "image", "base64" | "data" | "url"
    ..., "mime_type": ...}``, OpenAI ``{"type": "image_url", "image_url": {"url": "data:..."}}``."""
    kind = block.get("type")
    mime = block.get("mime_type") or block.get("media_type")
    if kind == "image":
        if block.get("base64") is not None or block.get("data") is not None:
            return decode_image(block.get("base64") or block.get("data"), mime)
        if block.get("url") is not None:
            return decode_image(str(block["url"]), mime)
        if block.get("id") or block.get("file_id"):
            raise InvalidImageError(
                "An image given by a provider's file id cannot be read offline: send its bytes as base64."
            )
    elif kind in ("image_url", "input_image"):
        url = block.get("image_url")
        url = url.get("url") if isinstance(url, Mapping) else url
        if isinstance(url, str):
            return decode_image(url, mime)
    raise InvalidImageError(
        f"The {kind!r} content block holds no image data: send {{'type': 'image', 'base64': ..., 'mime_type': "
        f"'image/png'}} or {{'type': 'image_url', 'image_url': {{'url': 'data:image/png;base64,...'}}}}."
    )


def check_message_images(index: int, role: str, value: Any) -> list[DecodedImage]:
    """A neutral message's ``images`` (bytes, base64, data: URLs or decoded images), each decoded and checked."""
    if isinstance(value, (str, bytes)) or not isinstance(value, Sequence):
        raise InvalidImageError(
            f"Message {index} ({role}): 'images' must be a list of images (bytes, base64 or data: URLs), got "
            f"{type(value).__name__}."
        )
    if value and role not in ("user", "tool"):
        raise InvalidImageError(
            f"Message {index} is a {role} message with images; images go in user messages (or tool results)."
        )
    return [item if isinstance(item, DecodedImage) else decode_image(item) for item in value]


def place_images(messages: list[dict[str, Any]]) -> tuple[list[dict[str, Any]], list[DecodedImage]]:
    """Messages with each image as a tag before its message's text (numbered through the conversation), and the
    images in tag order. Tag text already in content is broken (a zero-width space), so text cannot claim an image."""
    placed: list[dict[str, Any]] = []
    found: list[DecodedImage] = []
    for message in messages:
        text = str(message.get("content") or "").replace(_TAG_PREFIX, "<\u200bov_genai_image_")
        attached = list(message.get("images") or ())
        tags = "".join(IMAGE_TAG.format(len(found) + i) for i in range(len(attached)))
        found.extend(attached)
        entry = {k: v for k, v in message.items() if k != "images"}
        if attached or "content" in message:
            entry["content"] = tags + text
        placed.append(entry)
    return placed, found


def has_images(messages: Sequence[Mapping[str, Any]]) -> bool:
    return any(message.get("images") for message in messages)


def prompt_with_images(prompt: str, images: Sequence[DecodedImage]) -> str:
    """``prompt`` carrying the images its tags still name (trimming may have dropped some), renumbered 0..n-1."""
    if not images:
        return prompt
    kept: list[int] = []

    def renumber(match: re.Match[str]) -> str:
        number = int(match.group(1))
        if number >= len(images):  # tag text from elsewhere (a tool's description): plain text, no image
            return match.group(0).replace(_TAG_PREFIX, "<\u200bov_genai_image_")
        kept.append(number)
        return IMAGE_TAG.format(len(kept) - 1)

    text = _TAG.sub(renumber, prompt)
    return ImagePrompt(text, [images[i] for i in kept])


def refuse_images_unless_taken(engine: Any) -> None:
    """A text-only model given an image refuses it, saying which model does take images."""
    if getattr(engine, "takes_images", False):
        return
    raise UnsupportedFeatureError(
        f"The model '{getattr(engine, 'model_name', '?')}' (backend '{getattr(engine, 'backend_name', '?')}') "
        f"takes text only, and the messages hold images. Use a vision model, e.g. model='phi-3.5-vision' with "
        f"backend='openvino-vlm', or send the text alone."
    )
