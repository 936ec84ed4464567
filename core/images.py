"""The product's one image decoder: bytes in, an RGB PIL image and notes out.

Training (user datasets) and the TTA page (uploads, camera, sample photos) both decode through
`decode_image`, so an image looks the same to the model wherever it comes from:

- the format is recognised from the content (Pillow's header sniffing), never the file name;
- EXIF orientation is applied;
- transparency is composited onto `BACKGROUND_RGB` (white);
- palette, 1-bit, grayscale (L, LA, I;16), CMYK, 32-bit integer and float images become RGB;
  16-bit samples are rescaled (v·255/65535), never clipped at 255;
- an animated or multi-page file gives its first frame, and a note records it;
- empty, truncated, corrupt and non-image files raise LabError naming the file;
- Pillow's decompression-bomb guard stays on, checked before any pixel is decoded.
"""

from __future__ import annotations

import io
import logging
import struct
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageCms, ImageOps, UnidentifiedImageError

from core.errors import LabError

logger = logging.getLogger(__name__)

BACKGROUND_RGB = (255, 255, 255)  # transparent pixels become white

# Formats the decoder accepts. Anything else Pillow could open (EPS, PDF, PSD, FITS, ...) is
# rejected: EPS would start Ghostscript, and none of them are photo formats users upload.
# Multi-picture JPEGs (format "MPO", from some cameras) open through the JPEG entry.
ALLOWED_FORMATS = ("PNG", "JPEG", "WEBP", "BMP", "DIB", "GIF", "TIFF", "PPM", "ICO", "AVIF")

# Leading bytes of the accepted formats (WebP and AVIF are recognised at offset 8 instead).
IMAGE_SIGNATURES = (b"\x89PNG", b"\xff\xd8\xff", b"GIF87a", b"GIF89a", b"BM", b"II*\x00", b"MM\x00*",
                    b"\x00\x00\x01\x00", b"P1", b"P2", b"P3", b"P4", b"P5", b"P6")

# Pillow's own default limit (Image.MAX_IMAGE_PIXELS in Pillow 13, about 89.5 megapixels, a
# 9459×9459 image). Larger images are rejected before their pixels are decoded.
MAX_IMAGE_PIXELS = 89_478_485

@dataclass(frozen=True)
class ImageNote:
    """Something the decoder did that the user should know; `key` is a catalog key."""

    key: str
    params: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class DecodedImage:
    """A decoded image: always mode RGB, 8 bits per channel, orientation applied."""

    image: Image.Image
    name: str
    format: str  # as Pillow sniffed it: "PNG", "JPEG", "GIF", ...
    original_mode: str  # Pillow mode before conversion: "P", "I;16", "CMYK", ...
    original_size: tuple[int, int]  # (width, height) as stored, before EXIF rotation
    frames: int
    notes: tuple[ImageNote, ...] = ()

    @property
    def size(self) -> tuple[int, int]:
        return self.image.size


def read_bytes(source: Any) -> bytes:
    """Return the whole content of bytes, a path, or a file-like (e.g. a Streamlit upload).

    A file-like is read from its start whatever its current position (`getvalue()` when it has
    one, else `seek(0)` and `read()`), so a widget that has already been read still works.
    """
    if isinstance(source, bytes):
        return source
    if isinstance(source, (bytearray, memoryview)):
        return bytes(source)
    if isinstance(source, (str, Path)):
        return Path(source).read_bytes()
    if hasattr(source, "getvalue"):
        return bytes(source.getvalue())
    if hasattr(source, "read"):
        if hasattr(source, "seek"):
            source.seek(0)
        return bytes(source.read())
    raise TypeError(f"cannot read image bytes from {type(source).__name__}")


def decode_image(data: Any, name: str | None = None) -> DecodedImage:
    """Decode `data` (bytes or anything `read_bytes` accepts) into an RGB image with notes.

    `name` is only used in messages and notes; it defaults to the upload's or path's name.
    Raises LabError with a "data.err_image_*" key that names the file.
    """
    if name is None:
        name = str(getattr(data, "name", "") or "image")
    content = read_bytes(data)
    if not content:
        raise LabError("data.err_image_empty", name=name)

    image = _open(content, name)
    notes: list[ImageNote] = []
    format_name, original_mode, original_size = str(image.format), image.mode, image.size

    frames = int(getattr(image, "n_frames", 1) or 1)
    if frames > 1:
        image.seek(0)
        notes.append(ImageNote("data.note_first_frame", {"frames": frames}))

    _load_pixels(image, name)
    image = _apply_orientation(image, notes)
    rgb = _to_rgb(image, name, notes)
    logger.debug("decoded %s: %s %s %s -> RGB %s", name, format_name, original_mode, original_size, rgb.size)
    return DecodedImage(
        image=rgb,
        name=name,
        format=format_name,
        original_mode=original_mode,
        original_size=original_size,
        frames=frames,
        notes=tuple(notes),
    )


def _open(content: bytes, name: str) -> Image.Image:
    """Open the header, sniffing the format from the bytes, and enforce the pixel limit."""
    try:
        image = Image.open(io.BytesIO(content), formats=ALLOWED_FORMATS)
    except Image.DecompressionBombError as error:
        raise LabError("data.err_image_too_large", name=name, limit=MAX_IMAGE_PIXELS) from error
    except UnidentifiedImageError as error:
        if content.startswith(IMAGE_SIGNATURES) or content[8:12] in (b"WEBP", b"avif"):
            # An image header cut short (or damaged) is a broken image, not "some other file".
            raise LabError("data.err_image_corrupt", name=name, detail="incomplete header") from error
        raise LabError("data.err_image_unknown", name=name, formats=", ".join(ALLOWED_FORMATS)) from error
    except (OSError, SyntaxError, ValueError, EOFError) as error:
        raise LabError("data.err_image_corrupt", name=name, detail=str(error)[:200]) from error

    width, height = image.size
    if width < 1 or height < 1:
        raise LabError("data.err_image_corrupt", name=name, detail=f"size {width}×{height}")
    if width * height > MAX_IMAGE_PIXELS:
        # Pillow only raises above twice its limit and warns in between; the lab rejects both.
        raise LabError("data.err_image_too_large", name=name, limit=MAX_IMAGE_PIXELS)
    return image


def _load_pixels(image: Image.Image, name: str) -> None:
    try:
        image.load()
    except Image.DecompressionBombError as error:
        raise LabError("data.err_image_too_large", name=name, limit=MAX_IMAGE_PIXELS) from error
    except OSError as error:
        # Pillow's message for cut-off files is "image file is truncated" or "broken data stream".
        text = str(error)
        if "truncated" in text or "broken data stream" in text:
            raise LabError("data.err_image_truncated", name=name) from error
        raise LabError("data.err_image_corrupt", name=name, detail=text[:200]) from error
    except (SyntaxError, ValueError, EOFError, IndexError, MemoryError) as error:
        raise LabError("data.err_image_corrupt", name=name, detail=str(error)[:200]) from error


def _apply_orientation(image: Image.Image, notes: list[ImageNote]) -> Image.Image:
    try:
        orientation = image.getexif().get(0x0112, 1)  # EXIF tag 274, "Orientation"
    except (OSError, SyntaxError, ValueError, struct.error) as error:
        logger.info("unreadable EXIF block ignored: %s", error)
        return image
    if orientation not in (2, 3, 4, 5, 6, 7, 8):
        return image
    notes.append(ImageNote("data.note_exif_orientation", {"orientation": int(orientation)}))
    return ImageOps.exif_transpose(image)


def _to_rgb(image: Image.Image, name: str, notes: list[ImageNote]) -> Image.Image:
    """Convert any decoded mode to 8-bit RGB, compositing transparency onto the background."""
    mode = image.mode

    if mode == "RGB":
        return image.copy()
    if mode in ("1", "L"):
        return image.convert("L").convert("RGB")
    if mode in ("I;16", "I;16L", "I;16B", "I;16N"):
        notes.append(ImageNote("data.note_rescaled_16bit"))
        return _gray_from_array(_rescale_16bit(np.asarray(image)))
    if mode == "I":
        return _gray_from_array(_rescale_int32(np.asarray(image), notes))
    if mode == "F":
        return _gray_from_array(_rescale_float(np.asarray(image), notes))
    if mode == "CMYK":
        return _cmyk_to_rgb(image, notes)
    if mode == "P":
        has_alpha = "transparency" in image.info or image.palette.mode == "RGBA"
        return _composite(image.convert("RGBA"), notes) if has_alpha else image.convert("RGB")
    if mode in ("LA", "La", "PA", "RGBA", "RGBa"):
        return _composite(image.convert("RGBA"), notes)
    if mode in ("RGBX", "YCbCr", "HSV"):
        return image.convert("RGB")
    if mode == "LAB":
        lab_to_srgb = ImageCms.buildTransform(ImageCms.createProfile("LAB"), ImageCms.createProfile("sRGB"),
                                              "LAB", "RGB")
        return ImageCms.applyTransform(image, lab_to_srgb)
    raise LabError("data.err_image_mode", name=name, mode=mode)


def _gray_from_array(gray: np.ndarray) -> Image.Image:
    return Image.fromarray(gray.astype(np.uint8), mode="L").convert("RGB")


def _rescale_16bit(values: np.ndarray) -> np.ndarray:
    """Map 0..65535 linearly onto 0..255 (65535 -> 255, 32768 -> 128), rounding half up."""
    return (values.astype(np.uint32) * 255 + 32767) // 65535


def _rescale_int32(values: np.ndarray, notes: list[ImageNote]) -> np.ndarray:
    """32-bit integer samples: treated as 16-bit when they fit in 0..65535, else min-max stretched.

    Pillow opens some 16-bit files (PGM with maxval > 255, some TIFFs) as mode "I"; they keep
    the 16-bit meaning of their values.
    """
    values = values.astype(np.int64)
    if values.size and values.min() >= 0 and values.max() <= 65535:
        notes.append(ImageNote("data.note_rescaled_16bit"))
        return _rescale_16bit(values)
    return _stretch(values.astype(np.float64), notes)


def _rescale_float(values: np.ndarray, notes: list[ImageNote]) -> np.ndarray:
    """Float samples: 0..1 maps to 0..255; any other range is min-max stretched (noted)."""
    values = values.astype(np.float64)
    finite = np.isfinite(values)
    if not finite.all():
        notes.append(ImageNote("data.note_nonfinite_pixels", {"count": int((~finite).sum())}))
        values = np.where(finite, values, 0.0)
    if values.size and values.min() >= 0.0 and values.max() <= 1.0:
        notes.append(ImageNote("data.note_float_unit_range"))
        return np.floor(values * 255.0 + 0.5)
    return _stretch(values, notes)


def _stretch(values: np.ndarray, notes: list[ImageNote]) -> np.ndarray:
    low, high = float(values.min()), float(values.max())
    notes.append(ImageNote("data.note_stretched", {"low": f"{low:g}", "high": f"{high:g}"}))
    if high == low:
        return np.zeros_like(values)
    return np.floor((values - low) * (255.0 / (high - low)) + 0.5)


def _composite(rgba: Image.Image, notes: list[ImageNote]) -> Image.Image:
    """Blend onto BACKGROUND_RGB: out = round((c·a + bg·(255 − a)) / 255), exact in integers."""
    pixels = np.asarray(rgba, dtype=np.uint32)  # (H, W, 4)
    alpha = pixels[..., 3:4]
    if alpha.min() == 255:
        return Image.fromarray(pixels[..., :3].astype(np.uint8), mode="RGB")
    background = np.asarray(BACKGROUND_RGB, dtype=np.uint32)
    blended = (pixels[..., :3] * alpha + background * (255 - alpha) + 127) // 255
    notes.append(ImageNote("data.note_alpha_composited", {"background": "#%02x%02x%02x" % BACKGROUND_RGB}))
    return Image.fromarray(blended.astype(np.uint8), mode="RGB")


def _cmyk_to_rgb(image: Image.Image, notes: list[ImageNote]) -> Image.Image:
    """Use the embedded ICC profile when there is one, else Pillow's formula (255−C)(255−K)/255."""
    profile = image.info.get("icc_profile")
    if profile:
        try:
            source = ImageCms.ImageCmsProfile(io.BytesIO(profile))
            converted = ImageCms.profileToProfile(image, source, ImageCms.createProfile("sRGB"), outputMode="RGB")
            notes.append(ImageNote("data.note_cmyk_icc"))
            return converted
        except (ImageCms.PyCMSError, OSError, ValueError) as error:
            logger.info("CMYK ICC conversion failed (%s); using the plain formula", error)
    notes.append(ImageNote("data.note_cmyk_plain"))
    return image.convert("RGB")


def encode_png(image: Image.Image) -> bytes:
    """PNG bytes of `image`, e.g. to send an embedded sample photo through `decode_image`."""
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()
