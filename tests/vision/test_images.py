"""Images are decoded with Pillow and checked (type, size, count); every refusal is a typed error saying what to do."""

from __future__ import annotations

import base64
import io

import pytest

from phi3_aipc import images
from phi3_aipc.errors import InvalidImageError, InvalidParameterError

PIL_Image = pytest.importorskip("PIL.Image")


def encoded(fmt: str = "PNG", size: tuple[int, int] = (8, 6), mode: str = "RGB") -> bytes:
    buffer = io.BytesIO()
    PIL_Image.new(mode, size, color=0).save(buffer, format=fmt)
    return buffer.getvalue()


@pytest.mark.parametrize("fmt", ["PNG", "JPEG", "WEBP", "GIF", "BMP"])
def test_each_taken_format_decodes_to_rgb(fmt: str) -> None:
    decoded = images.decode_image(encoded(fmt))
    assert decoded.format == fmt
    assert decoded.size == (8, 6)
    assert decoded.image.mode == "RGB"


def test_bytes_base64_and_data_urls_are_the_same_image() -> None:
    raw = encoded()
    text = base64.b64encode(raw).decode()
    for given in (raw, text, f"data:image/png;base64,{text}"):
        assert images.decode_image(given).image.tobytes() == images.decode_image(raw).image.tobytes()


def test_a_palette_or_alpha_image_becomes_rgb() -> None:
    assert images.decode_image(encoded("PNG", mode="RGBA")).image.mode == "RGB"
    assert images.decode_image(encoded("PNG", mode="P")).image.mode == "RGB"


@pytest.mark.parametrize(
    "url",
    [
        "http://example.com/cat.png",
        "https://example.com/cat.png",
        "HTTPS://EXAMPLE.COM/A.PNG",
        "file:///etc/x",
    ],
)
def test_a_url_is_refused_never_fetched(url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    import socket

    def no_network(*args: object, **kwargs: object) -> None:
        raise AssertionError("an image URL was fetched")

    monkeypatch.setattr(socket, "create_connection", no_network)
    with pytest.raises(InvalidImageError, match="not fetched.*offline.*base64"):
        images.decode_image(url)


@pytest.mark.parametrize(
    ("given", "match"),
    [
        (b"not an image at all", "could not be decoded"),
        ("%%% not base64 %%%", "neither a data: URL nor valid base64"),
        ("data:image/png,rawtext", "must be base64-encoded"),
        (f"data:text/html;base64,{base64.b64encode(b'<b>').decode()}", "text/html"),
        (12345, "must be bytes, base64 text or a data: URL"),
    ],
)
def test_bad_images_get_a_clear_typed_error(given: object, match: str) -> None:
    with pytest.raises(InvalidImageError, match=match) as caught:
        images.decode_image(given)  # type: ignore[arg-type]
    assert isinstance(caught.value, InvalidParameterError)  # callers catching bad parameters catch these too


def test_a_format_outside_the_list_is_refused() -> None:
    with pytest.raises(InvalidImageError, match="TIFF.*Send a PNG, JPEG"):
        images.decode_image(encoded("TIFF"))


def test_a_declared_mime_type_outside_the_list_is_refused() -> None:
    with pytest.raises(InvalidImageError, match="image/svg"):
        images.decode_image(encoded(), mime_type="image/svg+xml")


def test_a_truncated_file_is_refused() -> None:
    raw = encoded("PNG", size=(64, 64))
    with pytest.raises(InvalidImageError, match="could not be decoded"):
        images.decode_image(raw[: len(raw) // 2])


def test_too_many_pixels_is_refused_before_decoding(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(images, "MAX_IMAGE_PIXELS", 100)
    with pytest.raises(InvalidImageError, match="11x10 pixels, over the 100-pixel limit"):
        images.decode_image(encoded(size=(11, 10)))


def test_too_many_bytes_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(images, "MAX_IMAGE_BYTES", 10)
    with pytest.raises(InvalidImageError, match="MiB limit. Resize or recompress"):
        images.decode_image(encoded())


def test_too_many_images_is_refused() -> None:
    images.check_count([object()] * 2, limit=2)
    with pytest.raises(InvalidImageError, match="3 images; this model takes at most 2"):
        images.check_count([object()] * 3, limit=2)
