"""The one preprocessing: formats, polarity, framing and clear errors for bad input."""

from __future__ import annotations

import io

import cv2
import numpy as np
import pytest
from PIL import Image

from handwriting.imaging import ImageError, decode, preprocess


def glyph(size: int = 120, *, dark_ink: bool = True, offset: tuple[int, int] = (0, 0),
          scale: float = 1.0) -> np.ndarray:
    """A letter-like 'L' with a bar, drawn off-centre, as uint8 grayscale."""
    background, ink = (255, 0) if dark_ink else (0, 255)
    image = np.full((size, size), background, dtype=np.uint8)
    dx, dy = offset
    s = scale
    cv2.line(image, (int(30 * s) + dx, int(20 * s) + dy), (int(30 * s) + dx, int(90 * s) + dy),
             ink, round(6 * s))
    cv2.line(image, (int(30 * s) + dx, int(90 * s) + dy), (int(70 * s) + dx, int(90 * s) + dy),
             ink, round(6 * s))
    cv2.line(image, (int(30 * s) + dx, int(50 * s) + dy), (int(55 * s) + dx, int(50 * s) + dy),
             ink, round(4 * s))
    return image


def encode(image: Image.Image, fmt: str, **options) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **options)
    return buffer.getvalue()


def close(a: np.ndarray, b: np.ndarray, tolerance: float = 0.02) -> bool:
    return float(np.abs(a - b).mean()) < tolerance


def test_output_shape_range_and_polarity():
    out = preprocess(glyph(), 32)
    assert out.shape == (32, 32) and out.dtype == np.float32
    assert out.min() == 0.0 and out.max() == 1.0
    # ink is bright and sparse; the border (margin) is background
    assert out.mean() < 0.5
    assert out[0].max() == 0.0 and out[-1].max() == 0.0


def test_both_polarities_give_the_same_result():
    dark_on_light = preprocess(glyph(dark_ink=True), 32)
    light_on_dark = preprocess(glyph(dark_ink=False), 32)
    np.testing.assert_array_equal(dark_on_light, light_on_dark)


def test_position_and_size_in_the_canvas_do_not_matter():
    centred = preprocess(glyph(200, scale=1.0), 32)
    moved_and_bigger = preprocess(glyph(300, offset=(120, 90), scale=2.0), 32)
    assert close(centred, moved_and_bigger, 0.05)


def test_aspect_ratio_is_kept():
    tall_bar = np.full((100, 100), 255, np.uint8)
    tall_bar[10:90, 45:55] = 0
    out = preprocess(tall_bar, 32)
    columns = np.flatnonzero(out.max(axis=0) > 0.5)
    rows = np.flatnonzero(out.max(axis=1) > 0.5)
    assert len(rows) > 3 * len(columns)  # still a thin upright bar, not stretched to a square


@pytest.mark.parametrize("fmt, mode, options", [
    ("PNG", "L", {}),
    ("JPEG", "L", {"quality": 90}),
    ("BMP", "L", {}),
    ("TIFF", "L", {}),
    ("WEBP", "L", {"lossless": True}),
    ("PNG", "RGB", {}),
    ("JPEG", "RGB", {"quality": 95}),
])
def test_formats_decode_to_the_same_input(fmt, mode, options):
    reference = preprocess(glyph(), 32)
    data = encode(Image.fromarray(glyph()).convert(mode), fmt, **options)
    assert close(preprocess(data, 32), reference, 0.03)


def test_rgba_with_transparent_background_is_composited_on_white():
    ink = glyph() < 128
    rgba = np.zeros((*ink.shape, 4), np.uint8)  # fully transparent black...
    rgba[ink] = (20, 20, 200, 255)  # ...with opaque blue ink
    out = preprocess(encode(Image.fromarray(rgba, "RGBA"), "PNG"), 32)
    assert close(out, preprocess(glyph(), 32), 0.03)


def test_rgba_canvas_array_is_composited_on_white():
    ink = glyph() < 128
    rgba = np.zeros((*ink.shape, 4), np.uint8)
    rgba[ink] = (0, 0, 0, 255)
    assert close(preprocess(rgba, 32), preprocess(glyph(), 32), 0.03)


def test_palette_image():
    palette_image = Image.fromarray(glyph()).convert("RGB").convert("P", palette=Image.ADAPTIVE)
    assert palette_image.mode == "P"
    out = preprocess(encode(palette_image, "PNG"), 32)
    assert close(out, preprocess(glyph(), 32), 0.03)


def test_sixteen_bit_grayscale():
    deep = glyph().astype(np.uint16) * 257
    image = Image.fromarray(deep)
    assert image.mode.startswith("I")
    data = encode(image, "PNG")
    assert decode(data).max() == pytest.approx(1.0)
    assert close(preprocess(data, 32), preprocess(glyph(), 32), 0.03)


def test_exif_rotation_is_applied():
    upright = Image.fromarray(glyph())
    stored_sideways = upright.transpose(Image.Transpose.ROTATE_90)
    exif = Image.Exif()
    exif[0x0112] = 6  # orientation: the viewer rotates it 90 degrees clockwise
    data = encode(stored_sideways.convert("RGB"), "JPEG", quality=95, exif=exif.tobytes())
    assert close(preprocess(data, 32), preprocess(glyph(), 32), 0.04)


def test_image_size_is_respected():
    assert preprocess(glyph(), 64).shape == (64, 64)
    assert preprocess(np.pad(glyph(20 * 1, scale=0.2), 2, constant_values=255), 48).shape == \
        (48, 48)


def test_output_is_lossless_as_uint8():
    out = preprocess(glyph(), 32)
    np.testing.assert_array_equal(np.round(out * 255) / 255, out)


def test_a_speck_of_noise_does_not_change_the_framing():
    clean = glyph(200)
    specked = clean.copy()
    specked[195, 195] = 0  # one stray pixel far from the letter
    np.testing.assert_array_equal(preprocess(clean, 32), preprocess(specked, 32))


def test_a_light_gradient_background_is_not_ink():
    background = np.linspace(200, 255, 160, dtype=np.float32)[None, :].repeat(160, 0)
    image = background.copy()
    image[glyph(160) < 128] = 10
    out = preprocess(image.astype(np.uint8), 32)
    assert close(out, preprocess(glyph(160), 32), 0.04)


# --- bad input: a clear error naming the file -------------------------------------------------

def test_blank_image_is_an_error(tmp_path):
    path = tmp_path / "blank.png"
    Image.new("L", (64, 64), 255).save(path)
    with pytest.raises(ImageError, match=r"blank\.png: no ink found"):
        preprocess(path, 32)


def test_nearly_blank_image_is_an_error():
    faint = np.full((64, 64), 250, np.uint8)
    faint[30, 30] = 245  # far below the contrast a pen makes
    with pytest.raises(ImageError, match="no ink"):
        preprocess(faint, 32, name="faint.png")


def test_zero_byte_file_is_an_error(tmp_path):
    path = tmp_path / "empty.png"
    path.write_bytes(b"")
    with pytest.raises(ImageError, match=r"empty\.png: the file is empty"):
        preprocess(path, 32)


def test_non_image_file_is_an_error(tmp_path):
    path = tmp_path / "notes.png"
    path.write_text("this is not an image")
    with pytest.raises(ImageError, match=r"notes\.png: cannot be decoded as an image"):
        preprocess(path, 32)


def test_truncated_file_is_an_error(tmp_path):
    data = encode(Image.fromarray(glyph()), "PNG")
    path = tmp_path / "cut.png"
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(ImageError, match=r"cut\.png: cannot be decoded"):
        preprocess(path, 32)


def test_missing_file_is_an_error(tmp_path):
    with pytest.raises(ImageError, match="nowhere.png: file not found"):
        preprocess(tmp_path / "nowhere.png", 32)


def test_over_the_pixel_limit_is_an_error_before_decoding(tmp_path):
    path = tmp_path / "huge.png"
    Image.new("L", (3000, 3000), 255).save(path)
    with pytest.raises(ImageError, match=r"huge\.png: 3000x3000 = 9,000,000 pixels is over "
                                         r"the limit of 1,000,000"):
        preprocess(path, 32, max_pixels=1_000_000)


def test_pillow_decompression_bomb_is_reported_as_over_the_limit(monkeypatch):
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)  # Pillow refuses beyond 2x this
    data = encode(Image.new("RGB", (100, 100), "white"), "PNG")  # Pillow decodes RGB files
    with pytest.raises(ImageError, match="decompression bomb"):
        preprocess(data, 32, name="bomb.png")


def test_bad_arrays_are_errors():
    with pytest.raises(ImageError, match="shape"):
        preprocess(np.zeros((4, 4, 7), np.uint8), 32, name="odd")
    with pytest.raises(ImageError, match="outside"):
        preprocess(np.full((8, 8), 3.0), 32, name="floats")
    with pytest.raises(ImageError, match="empty"):
        preprocess(np.zeros((0, 5), np.uint8), 32, name="nothing")


def test_image_error_survives_pickling_across_processes():
    import pickle

    from handwriting.imaging import ImageError

    error = pickle.loads(pickle.dumps(ImageError("a.png", "blank", "draw a letter")))
    assert isinstance(error, ImageError) and str(error) == "a.png: blank; draw a letter"


# --- the fast paths give the same bits as the general ones ---------------------------------


def pillow_gray(data: bytes) -> np.ndarray:
    """Pillow's decoding path, the reference for every format."""
    from handwriting.imaging import _to_gray

    with Image.open(io.BytesIO(data)) as image:
        return _to_gray(image)


def test_plain_grayscale_pngs_decode_to_pillows_pixels():
    from handwriting.imaging import _plain_gray_png

    rng = np.random.default_rng(0)
    files = [encode(Image.fromarray(glyph()), "PNG"),
             encode(Image.fromarray(rng.integers(0, 256, (37, 91), dtype=np.uint8)), "PNG"),
             encode(Image.fromarray(glyph(64)), "PNG", optimize=True),
             cv2.imencode(".png", glyph(50))[1].tobytes()]
    for data in files:
        fast = _plain_gray_png(data, "x.png", 10**6)
        assert fast is not None and fast.dtype == np.float32
        np.testing.assert_array_equal(fast, pillow_gray(data))
        np.testing.assert_array_equal(decode(data), pillow_gray(data))


def test_other_pngs_take_pillows_path():
    from PIL.PngImagePlugin import PngInfo

    from handwriting.imaging import _plain_gray_png

    gray = Image.fromarray(glyph(40))
    rotated = PngInfo()
    rotated.add_itxt("XML:com.adobe.xmp", '<x:xmpmeta xmlns:x="adobe:ns:meta/"><rdf:RDF '
                     'xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#"><rdf:Description '
                     'xmlns:tiff="http://ns.adobe.com/tiff/1.0/" tiff:Orientation="6"/>'
                     '</rdf:RDF></x:xmpmeta>')
    exif = Image.Exif()
    exif[0x0112] = 6  # orientation: rotate 90
    others = {"transparent": encode(gray, "PNG", transparency=255),
              "xmp orientation": encode(gray, "PNG", pnginfo=rotated),
              "exif orientation": encode(gray, "PNG", exif=exif),
              "rgb": encode(gray.convert("RGB"), "PNG"),
              "16-bit": encode(Image.fromarray(glyph(40).astype(np.uint16) * 257), "PNG"),
              "1-bit": encode(gray.convert("1"), "PNG"),
              "jpeg": encode(gray, "JPEG")}
    for kind, data in others.items():
        assert _plain_gray_png(data, "x", 10**6) is None, kind
        np.testing.assert_array_equal(decode(data), pillow_gray(data))
    for kind in ("xmp orientation", "exif orientation"):  # Pillow turned them upright
        assert decode(others[kind]).shape == (40, 40)
        assert not np.array_equal(decode(others[kind]), glyph(40) / np.float32(255)), kind


def test_the_fast_path_keeps_the_pixel_limit_and_the_errors():
    data = encode(Image.fromarray(glyph(120)), "PNG")
    with pytest.raises(ImageError, match="over the limit of 1,000"):
        decode(data, name="big.png", max_pixels=1000)
    with pytest.raises(ImageError, match=r"cut\.png: cannot be decoded"):
        decode(data[: len(data) // 2], name="cut.png")


def test_percentiles_are_numpys_to_the_last_bit():
    from handwriting.imaging import _percentiles

    rng = np.random.default_rng(1)
    for index in range(300):
        values = rng.random(tuple(rng.integers(1, 120, 2)), dtype=np.float32)
        if index % 2:
            values = (np.round(values * 255) / 255).astype(np.float32)
        percents = (0.1, 99.9) if index % 3 else (0.0, 37.3, 50.0, 100.0)
        assert _percentiles(values, percents) == [float(v) for v in
                                                  np.percentile(values, list(percents))]
