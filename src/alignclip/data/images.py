"""The one image reader and the one list of image file extensions, for every source, eval set and report.

Images are decoded fully when read, so a truncated file fails here (named) rather than later inside a transform or
a DataLoader worker. PIL's decompression-bomb guard (Image.MAX_IMAGE_PIXELS) stays on: an oversized image is an
unreadable one, like a corrupt one.
"""
from __future__ import annotations

import io
import os
from pathlib import Path

from PIL import Image

# Lower-case, without the dot; in order of preference when a shard sample holds several image members.
IMAGE_EXTENSIONS = ("jpg", "jpeg", "png", "webp", "bmp", "gif", "tif", "tiff")


def is_image_file(name: str | os.PathLike) -> bool:
    return Path(name).suffix.lower().lstrip(".") in IMAGE_EXTENSIONS


def to_rgb(image: Image.Image) -> Image.Image:
    """RGB; transparent images are flattened onto white rather than black."""
    if image.mode in ("RGBA", "LA") or (image.mode == "P" and "transparency" in image.info):
        rgba = image.convert("RGBA")
        flat = Image.new("RGB", rgba.size, (255, 255, 255))
        flat.paste(rgba, mask=rgba.getchannel("A"))
        return flat
    return image.convert("RGB")


class UnreadableImage(ValueError):
    """An image file or member that exists but cannot be decoded; `reason` says why without repeating the name."""

    def __init__(self, name: str, reason: str) -> None:
        super().__init__(f"cannot read image {name}: {reason}")
        self.reason = reason


def load_image(source: str | os.PathLike | bytes) -> Image.Image:
    """A file path or encoded bytes -> RGB PIL image.

    Raises FileNotFoundError for a missing file and UnreadableImage (a ValueError) for anything else
    unreadable: PIL raises many types for bad data (OSError, SyntaxError, struct.error, DecompressionBombError ...).
    """
    name = "<bytes>" if isinstance(source, bytes) else os.fspath(source)
    try:
        with Image.open(io.BytesIO(source) if isinstance(source, bytes) else source) as image:
            image.load()
            return to_rgb(image)
    except FileNotFoundError:
        raise
    except Exception as error:
        raise UnreadableImage(name, f"{type(error).__name__}: {error}") from None
