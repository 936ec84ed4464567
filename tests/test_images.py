"""The single image decoder on generated odd images: exact pixels where the conversion is exact."""

import io
import struct
import zlib

import numpy as np
import pytest
from PIL import Image, ImageCms

from core.errors import LabError
from core.images import BACKGROUND_RGB, MAX_IMAGE_PIXELS, decode_image, encode_png, read_bytes


def encode(image: Image.Image, fmt: str, **options) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **options)
    return buffer.getvalue()


def pixels(decoded) -> np.ndarray:
    return np.asarray(decoded.image)


def note_keys(decoded) -> list[str]:
    return [note.key for note in decoded.notes]


def random_rgb(size=(16, 12), seed=0) -> Image.Image:
    array = np.random.default_rng(seed).integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)
    return Image.fromarray(array, mode="RGB")


def png_chunk(kind: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body) & 0xFFFFFFFF)


def png_with_declared_size(width: int, height: int) -> bytes:
    """A tiny PNG whose header declares width×height; only the header is ever read."""
    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)  # 8-bit grayscale
    return (b"\x89PNG\r\n\x1a\n" + png_chunk(b"IHDR", header)
            + png_chunk(b"IDAT", zlib.compress(b"\x00" * 16)) + png_chunk(b"IEND", b""))


class TestPlainFormats:
    @pytest.mark.parametrize("fmt", ["PNG", "BMP", "TIFF", "WEBP", "PPM"])
    def test_lossless_rgb_round_trips_exactly(self, fmt):
        image = random_rgb()
        options = {"lossless": True} if fmt == "WEBP" else {}
        decoded = decode_image(encode(image, fmt, **options), f"x.{fmt.lower()}")
        assert decoded.image.mode == "RGB"
        assert decoded.format == fmt
        np.testing.assert_array_equal(pixels(decoded), np.asarray(image))
        assert decoded.notes == ()

    def test_jpeg_decodes_close_to_source(self):
        image = Image.new("RGB", (16, 16), (200, 40, 90))
        decoded = decode_image(encode(image, "JPEG", quality=95), "x.jpg")
        assert decoded.format == "JPEG"
        assert np.abs(pixels(decoded).astype(int) - [200, 40, 90]).max() <= 3

    def test_format_comes_from_content_not_extension(self):
        decoded = decode_image(encode(random_rgb(), "PNG"), "photo.jpg")
        assert decoded.format == "PNG"

    def test_original_mode_and_size_are_reported(self):
        decoded = decode_image(encode(Image.new("L", (5, 3), 7), "PNG"), "g.png")
        assert (decoded.original_mode, decoded.original_size, decoded.size) == ("L", (5, 3), (5, 3))


class TestGrayscaleAndBitDepth:
    def test_l_is_replicated_to_three_channels(self):
        gray = np.array([[0, 77, 255]], dtype=np.uint8)
        decoded = decode_image(encode(Image.fromarray(gray, mode="L"), "PNG"), "g.png")
        np.testing.assert_array_equal(pixels(decoded), np.repeat(gray[..., None], 3, axis=2))

    def test_one_bit_becomes_black_and_white(self):
        image = Image.new("1", (2, 1))
        image.putpixel((1, 0), 1)
        decoded = decode_image(encode(image, "BMP"), "b.bmp")
        np.testing.assert_array_equal(pixels(decoded)[0], [[0, 0, 0], [255, 255, 255]])

    @pytest.mark.parametrize("fmt", ["PNG", "TIFF"])
    def test_16bit_is_rescaled_not_clipped(self, fmt):
        values = np.array([[0, 257, 32768, 65535, 1000]], dtype=np.uint16)
        decoded = decode_image(encode(Image.fromarray(values), fmt), f"deep.{fmt.lower()}")
        assert decoded.original_mode.startswith("I;16")
        # round(v * 255 / 65535): 1000 -> 3.89 -> 4; clipping would have given 255 for all but 0.
        np.testing.assert_array_equal(pixels(decoded)[0, :, 0], [0, 1, 128, 255, 4])
        assert "data.note_rescaled_16bit" in note_keys(decoded)

    def test_16bit_pgm_opened_as_int_keeps_16bit_meaning(self):
        header = b"P5\n3 1\n65535\n"
        body = np.array([0, 32768, 65535], dtype=">u2").tobytes()
        decoded = decode_image(header + body, "deep.pgm")
        np.testing.assert_array_equal(pixels(decoded)[0, :, 0], [0, 128, 255])

    def test_float_in_unit_range_scales_to_255(self):
        values = np.array([[0.0, 0.5, 1.0, 0.25]], dtype=np.float32)
        decoded = decode_image(encode(Image.fromarray(values, mode="F"), "TIFF"), "f.tif")
        assert decoded.original_mode == "F"
        np.testing.assert_array_equal(pixels(decoded)[0, :, 0], [0, 128, 255, 64])
        assert "data.note_float_unit_range" in note_keys(decoded)

    def test_float_outside_unit_range_is_stretched(self):
        values = np.array([[-2.0, 0.0, 2.0]], dtype=np.float32)
        decoded = decode_image(encode(Image.fromarray(values, mode="F"), "TIFF"), "f.tif")
        np.testing.assert_array_equal(pixels(decoded)[0, :, 0], [0, 128, 255])
        assert "data.note_stretched" in note_keys(decoded)

    def test_float_nan_becomes_zero_and_is_noted(self):
        values = np.array([[np.nan, 0.0, 1.0]], dtype=np.float32)
        decoded = decode_image(encode(Image.fromarray(values, mode="F"), "TIFF"), "f.tif")
        np.testing.assert_array_equal(pixels(decoded)[0, :, 0], [0, 0, 255])
        assert "data.note_nonfinite_pixels" in note_keys(decoded)


class TestTransparency:
    def test_rgba_is_composited_on_white_exactly(self):
        rgba = np.array([[[255, 0, 0, 255], [255, 0, 0, 0], [0, 0, 255, 128], [10, 20, 30, 51]]], dtype=np.uint8)
        decoded = decode_image(encode(Image.fromarray(rgba, mode="RGBA"), "PNG"), "a.png")
        # round((c·a + 255·(255 − a)) / 255): blue at a=128 -> (127, 127, 255); a=51 -> (206, 208, 210)
        expected = [[255, 0, 0], list(BACKGROUND_RGB), [127, 127, 255], [206, 208, 210]]
        np.testing.assert_array_equal(pixels(decoded)[0], expected)
        assert "data.note_alpha_composited" in note_keys(decoded)

    def test_opaque_rgba_gives_no_note(self):
        rgba = Image.new("RGBA", (2, 2), (1, 2, 3, 255))
        decoded = decode_image(encode(rgba, "PNG"), "a.png")
        np.testing.assert_array_equal(pixels(decoded)[0, 0], [1, 2, 3])
        assert decoded.notes == ()

    def test_la_is_composited(self):
        la = np.array([[[100, 128], [50, 0]]], dtype=np.uint8)
        decoded = decode_image(encode(Image.fromarray(la, mode="LA"), "PNG"), "la.png")
        # (100·128 + 255·127 + 127) // 255 = 177; fully transparent -> white
        np.testing.assert_array_equal(pixels(decoded)[0], [[177, 177, 177], [255, 255, 255]])

    @pytest.mark.parametrize("fmt", ["PNG", "GIF"])
    def test_palette_with_transparent_index(self, fmt):
        image = Image.new("P", (2, 1))
        image.putpalette([255, 0, 0, 0, 0, 255])
        image.putpixel((1, 0), 1)
        decoded = decode_image(encode(image, fmt, transparency=1), f"p.{fmt.lower()}")
        np.testing.assert_array_equal(pixels(decoded)[0], [[255, 0, 0], [255, 255, 255]])

    def test_palette_without_transparency(self):
        image = Image.new("P", (2, 1))
        image.putpalette([0, 128, 0, 9, 8, 7])
        image.putpixel((1, 0), 1)
        decoded = decode_image(encode(image, "PNG"), "p.png")
        np.testing.assert_array_equal(pixels(decoded)[0], [[0, 128, 0], [9, 8, 7]])
        assert decoded.notes == ()


class TestCmyk:
    @pytest.mark.parametrize("fmt", ["TIFF", "JPEG"])
    def test_plain_formula_without_profile(self, fmt):
        image = Image.new("CMYK", (8, 8), (0, 255, 0, 0))  # pure magenta ink
        decoded = decode_image(encode(image, fmt, **({"quality": 100} if fmt == "JPEG" else {})), f"c.{fmt}")
        assert decoded.original_mode == "CMYK"
        np.testing.assert_array_equal(pixels(decoded)[0, 0], [255, 0, 255])
        assert "data.note_cmyk_plain" in note_keys(decoded)

    def test_plain_formula_values(self):
        # (255 − C)(255 − K)/255 with C=51, M=0, Y=255, K=102: 204·153/255 = 122.4 -> (122, 153, 0)
        image = Image.new("CMYK", (1, 1), (51, 0, 255, 102))
        decoded = decode_image(encode(image, "TIFF"), "c.tif")
        np.testing.assert_array_equal(pixels(decoded)[0, 0], [122, 153, 0])

    def test_unusable_embedded_profile_falls_back_to_formula(self):
        # An RGB profile inside a CMYK file cannot drive a CMYK -> sRGB transform; the decoder
        # must fall back to the formula instead of failing.
        profile = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()
        image = Image.new("CMYK", (4, 4), (0, 0, 0, 0))
        decoded = decode_image(encode(image, "TIFF", icc_profile=profile), "c.tif")
        np.testing.assert_array_equal(pixels(decoded)[0, 0], [255, 255, 255])
        assert "data.note_cmyk_plain" in note_keys(decoded)


class TestOrientationAndFrames:
    @pytest.mark.parametrize("fmt", ["JPEG", "PNG", "WEBP"])
    def test_exif_orientation_6_rotates_clockwise(self, fmt):
        # 3 wide × 2 high; orientation 6 means "rotate 90° clockwise to display".
        image = Image.new("RGB", (3, 2), (0, 0, 0))
        image.putpixel((0, 0), (255, 255, 255))  # top-left marker
        exif = Image.Exif()
        exif[0x0112] = 6
        options = {}
        if fmt == "JPEG":
            options = {"quality": 100}
        elif fmt == "WEBP":
            options = {"lossless": True}
        decoded = decode_image(encode(image, fmt, exif=exif, **options), f"o.{fmt.lower()}")
        assert decoded.size == (2, 3)
        assert decoded.original_size == (3, 2)
        # After a clockwise turn the old top-left corner is the top-right corner.
        assert pixels(decoded)[0, 1].min() > 200
        assert pixels(decoded)[0, 0].max() < 60
        assert "data.note_exif_orientation" in note_keys(decoded)

    @pytest.mark.parametrize("fmt", ["GIF", "WEBP", "PNG", "TIFF"])
    def test_animated_uses_first_frame(self, fmt):
        frames = [Image.new("RGB", (4, 4), (255, 0, 0)), Image.new("RGB", (4, 4), (0, 0, 255))]
        options = {"lossless": True} if fmt == "WEBP" else {}
        data = encode(frames[0], fmt, save_all=True, append_images=frames[1:], **options)
        decoded = decode_image(data, f"anim.{fmt.lower()}")
        assert decoded.frames == 2
        np.testing.assert_array_equal(pixels(decoded)[0, 0], [255, 0, 0])
        assert decoded.notes[0].key == "data.note_first_frame"
        assert decoded.notes[0].params == {"frames": 2}


class TestBadFiles:
    def test_empty(self):
        with pytest.raises(LabError) as info:
            decode_image(b"", "empty.png")
        assert (info.value.key, info.value.params["name"]) == ("data.err_image_empty", "empty.png")

    def test_not_an_image(self):
        with pytest.raises(LabError) as info:
            decode_image(b"name,age\nAna,31\n", "table.png")
        assert (info.value.key, info.value.params["name"]) == ("data.err_image_unknown", "table.png")

    @pytest.mark.parametrize("fmt", ["PNG", "JPEG"])
    def test_truncated(self, fmt):
        data = encode(random_rgb((64, 64)), fmt)
        with pytest.raises(LabError) as info:
            decode_image(data[: len(data) // 2], "cut")
        assert (info.value.key, info.value.params["name"]) == ("data.err_image_truncated", "cut")

    def test_corrupt_body(self):
        data = encode(random_rgb((64, 64)), "PNG")
        with pytest.raises(LabError) as info:
            decode_image(data[:60] + b"\x00garbage" * 100, "bad.png")
        assert info.value.key in ("data.err_image_corrupt", "data.err_image_truncated")
        assert info.value.params["name"] == "bad.png"

    def test_eps_is_not_accepted(self):
        # Pillow can open EPS through Ghostscript; the decoder must not even try.
        with pytest.raises(LabError) as info:
            decode_image(b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 10 10\n", "x.eps")
        assert info.value.key == "data.err_image_unknown"

    def test_message_names_the_file(self):
        with pytest.raises(LabError) as info:
            decode_image(b"\x00" * 10, "holiday.jpg")
        assert "holiday.jpg" in str(info.value)


class TestDecompressionBomb:
    def test_above_pillow_hard_limit(self):
        with pytest.raises(LabError) as info:
            decode_image(png_with_declared_size(20_000, 20_000), "bomb.png")
        assert info.value.key == "data.err_image_too_large"
        assert info.value.params == {"name": "bomb.png", "limit": MAX_IMAGE_PIXELS}

    @pytest.mark.filterwarnings("ignore::PIL.Image.DecompressionBombWarning")
    def test_between_limit_and_twice_the_limit_is_also_rejected(self):
        # Pillow only warns between 1× and 2× its limit; the decoder rejects before decoding.
        with pytest.raises(LabError) as info:
            decode_image(png_with_declared_size(10_000, 10_000), "big.png")
        assert info.value.key == "data.err_image_too_large"

    def test_pillow_guard_is_still_on(self):
        assert Image.MAX_IMAGE_PIXELS == MAX_IMAGE_PIXELS


class TestInputs:
    def test_file_like_read_from_start_whatever_its_position(self):
        stream = io.BytesIO(encode(random_rgb(), "PNG"))
        stream.read()  # a widget that has been read already
        decoded = decode_image(stream, "stream.png")
        np.testing.assert_array_equal(pixels(decoded), np.asarray(random_rgb()))

    def test_object_without_getvalue_is_rewound(self):
        class Upload:
            def __init__(self, data):
                self.inner = io.BytesIO(data)
                self.name = "upload.png"

            def read(self, *args):
                return self.inner.read(*args)

            def seek(self, *args):
                return self.inner.seek(*args)

        upload = Upload(encode(random_rgb(), "PNG"))
        upload.read(10)
        decoded = decode_image(upload)
        assert decoded.name == "upload.png"
        assert decoded.size == (16, 12)

    def test_bytes_types(self):
        data = encode(random_rgb(), "PNG")
        assert read_bytes(bytearray(data)) == data
        assert read_bytes(memoryview(data)) == data

    def test_encode_png_round_trip(self):
        image = random_rgb()
        np.testing.assert_array_equal(pixels(decode_image(encode_png(image), "r.png")), np.asarray(image))
