"""The one preprocessing: any image of a letter -> the model's input.

Every image, wherever it comes from (the generator, a user's folder, EMNIST, an upload, the
drawing canvas, a REST request), passes through :func:`preprocess`, so training and serving can
never disagree about what a model sees:

1. decode (PNG, JPEG, BMP, TIFF, WebP; RGBA composited on white, palette, 16-bit, EXIF rotation)
   into grayscale in [0, 1];
2. normalise polarity: the background is whatever the border is, the ink is whatever departs
   most from it, so dark-on-light and light-on-dark give the same result;
3. stretch contrast so the background is 0 and the ink 1, and drop tiny specks;
4. crop to the ink's bounding box plus a margin, pad to a square keeping the aspect ratio;
5. resize to ``image_size`` x ``image_size`` and scale to [0, 1] with ink = 1, quantised to
   multiples of 1/255 so that storing it as uint8 loses nothing.
"""

from __future__ import annotations

import io
import os
import struct
import warnings
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
# PNG chunks that send a file down Pillow's path (a false match in compressed data only costs
# time): transparency, animation, EXIF and the text chunks that may carry EXIF or XMP.
_NOT_PLAIN_CHUNKS = (b"tRNS", b"acTL", b"eXIf", b"tEXt", b"zTXt", b"iTXt")
SUPPORTED_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp")
DEFAULT_IMAGE_SIZE = 32
DEFAULT_MARGIN = 0.08
# 50 megapixels is beyond any phone photo of a letter; more suggests a decompression bomb.
DEFAULT_MAX_PIXELS = 50_000_000

# Ink must differ from the background by at least this much (on a 0-1 scale) to count as ink.
_MIN_CONTRAST = 0.15
# After contrast stretching, values below this are background texture or noise, not ink.
_NOISE_FLOOR = 0.15
# Connected ink blobs smaller than this share of the largest blob are specks, not strokes
# (an i-dot is still kept: it is a few percent of the stem at any pen width).
_SPECK_FRACTION = 0.02

Source = str | os.PathLike | bytes | np.ndarray


class ImageError(ValueError):
    """An input that cannot become a model input; the message names the file and the fix."""

    def __init__(self, name: str, problem: str, fix: str):
        self.name, self.problem, self.fix = name, problem, fix
        super().__init__(f"{name}: {problem}; {fix}")

    def __reduce__(self):
        # Raised in worker processes: it must cross back to the parent intact.
        return (type(self), (self.name, self.problem, self.fix))


@dataclass(frozen=True)
class PreprocessSettings:
    """Settings of the shared preprocessing (``base.image_size`` and the ``preprocess`` params)."""

    image_size: int = DEFAULT_IMAGE_SIZE
    margin: float = DEFAULT_MARGIN
    max_pixels: int = DEFAULT_MAX_PIXELS


def _name_of(source: Source, name: str | None) -> str:
    if name:
        return name
    if isinstance(source, (str, os.PathLike)):
        return str(source)
    return "<image bytes>" if isinstance(source, bytes) else "<image array>"


def decode(source: str | os.PathLike | bytes, *, name: str | None = None,
           max_pixels: int = DEFAULT_MAX_PIXELS) -> np.ndarray:
    """Decode an image file or its bytes into float32 grayscale in [0, 1] (1 = white).

    Transparent images are composited on white, 16-bit images scaled to the full range, the EXIF
    orientation applied and only the first frame of a multi-frame file used.

    Raises:
        ImageError: the file is missing, empty, not a decodable image, or over ``max_pixels``.
    """
    name = _name_of(source, name)
    if isinstance(source, bytes):
        data = source
    else:
        try:
            data = Path(source).read_bytes()
        except FileNotFoundError:
            raise ImageError(name, "file not found", "check the path") from None
        except IsADirectoryError:
            raise ImageError(name, "is a directory, not an image file",
                             "pass an image file") from None
        except OSError as error:  # a symlink loop, no permission, an I/O error
            raise ImageError(name, f"cannot be read ({error.strerror or error})",
                             "check the file, its permissions and any symbolic links") from None
    if not data:
        raise ImageError(name, "the file is empty (0 bytes)",
                         "re-save or re-export the image and try again")
    plain = _plain_gray_png(data, name, max_pixels)
    if plain is not None:
        return plain
    with warnings.catch_warnings():
        # Our own pixel limit below replaces Pillow's warning.
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        try:
            with Image.open(io.BytesIO(data)) as image:
                _check_size(image.size, name, max_pixels)
                return _to_gray(image)
        except Image.DecompressionBombError:
            raise ImageError(
                name,
                f"the image has more than {max_pixels:,} pixels (a possible decompression bomb)",
                "downscale it, or raise preprocess.max_pixels if it is genuine") from None
        except ImageError:
            raise
        except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as error:
            raise ImageError(
                name, f"cannot be decoded as an image ({type(error).__name__}: {error})",
                "supply a complete PNG, JPEG, BMP, TIFF or WebP file") from None


def _plain_gray_png(data: bytes, name: str, max_pixels: int) -> np.ndarray | None:
    """An 8-bit grayscale PNG with no transparency, animation or metadata that could rotate it
    (eXIf, or any text chunk: Pillow reads EXIF and XMP orientation from those), decoded by
    OpenCV: the same pixels as Pillow's path in half the time. None for anything else, and for
    a file OpenCV cannot decode: Pillow then decodes it or names the problem. (libpng only
    warns about a damaged ancillary chunk, so such a file is read where Pillow refused it.)"""
    if (len(data) < 33 or not data.startswith(_PNG_SIGNATURE) or data[12:16] != b"IHDR"
            or data[24] != 8 or data[25] != 0  # bit depth, colour type 0: grayscale
            or any(chunk in data for chunk in _NOT_PLAIN_CHUNKS)):
        return None
    width, height = struct.unpack(">II", data[16:24])
    _check_size((width, height), name, max_pixels)
    try:
        pixels = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED)
    except cv2.error:  # OpenCV's own limits; Pillow decides
        return None
    if pixels is None or pixels.shape != (height, width) or pixels.dtype != np.uint8:
        return None
    return pixels.astype(np.float32) / 255.0


def _check_size(size: tuple[int, int], name: str, max_pixels: int) -> None:
    width, height = size
    if width * height > max_pixels:
        raise ImageError(
            name,
            f"{width}x{height} = {width * height:,} pixels is over the limit of {max_pixels:,} "
            "(a possible decompression bomb)",
            "downscale the image, or raise preprocess.max_pixels if it is genuine")
    if width == 0 or height == 0:
        raise ImageError(name, f"the image is {width}x{height} pixels", "supply a non-empty image")


def _to_gray(image: Image.Image) -> np.ndarray:
    image.seek(0)
    image = ImageOps.exif_transpose(image)
    mode = image.mode
    if mode.startswith("I"):  # 16-bit (I;16, I;16B) or 32-bit integer grayscale
        gray = np.asarray(image, dtype=np.float32) / 65535.0
    elif mode == "F":
        gray = np.asarray(image, dtype=np.float32)
        peak = float(gray.max()) if gray.size else 1.0
        gray = gray / peak if peak > 1.0 else gray
    elif mode in ("RGBA", "LA", "PA", "RGBa", "La") or "transparency" in image.info:
        on_white = Image.new("RGBA", image.size, (255, 255, 255, 255))
        on_white.alpha_composite(image.convert("RGBA"))
        gray = np.asarray(on_white.convert("L"), dtype=np.float32) / 255.0
    else:
        gray = np.asarray(image.convert("L"), dtype=np.float32) / 255.0
    return np.clip(gray, 0.0, 1.0)


def array_to_gray(array: np.ndarray, *, name: str = "<image array>") -> np.ndarray:
    """Grayscale float32 in [0, 1] from an array: uint8/uint16/bool/float, 2-D, or (H, W, 1|3|4).

    RGBA arrays (a drawing canvas) are composited on white. Float arrays must lie in [0, 1].
    """
    array = np.asarray(array)
    if array.ndim == 3 and array.shape[2] == 1:
        array = array[..., 0]
    if array.ndim not in (2, 3) or (array.ndim == 3 and array.shape[2] not in (3, 4)):
        raise ImageError(name, f"array of shape {array.shape} is not an image",
                         "pass a 2-D grayscale array or an (H, W, 3|4) colour array")
    if array.size == 0:
        raise ImageError(name, "the array is empty", "pass a non-empty image")
    if array.dtype == np.bool_:
        values = array.astype(np.float32)
    elif array.dtype == np.uint8:
        values = array.astype(np.float32) / 255.0
    elif array.dtype == np.uint16:
        values = array.astype(np.float32) / 65535.0
    elif np.issubdtype(array.dtype, np.floating):
        values = array.astype(np.float32)
        if not np.all(np.isfinite(values)) or values.min() < 0.0 or values.max() > 1.0:
            raise ImageError(name, "float array values are outside [0, 1] or not finite",
                             "scale the array to [0, 1] or pass uint8")
    else:
        raise ImageError(name, f"unsupported array dtype {array.dtype}",
                         "pass uint8, uint16, bool or float in [0, 1]")
    if values.ndim == 2:
        return values
    rgb = values[..., :3] @ np.array([0.299, 0.587, 0.114], dtype=np.float32)
    if values.shape[2] == 4:
        alpha = values[..., 3]
        rgb = rgb * alpha + (1.0 - alpha)
    return np.clip(rgb, 0.0, 1.0)


def ink_map(gray: np.ndarray, *, name: str = "<image>") -> np.ndarray:
    """Ink intensity in [0, 1] (background 0) from grayscale of either polarity.

    The background level is the median of the image border; the ink is whichever extreme
    departs more from it. Raises ImageError when nothing departs enough (a blank image).
    """
    border = np.concatenate([gray[0], gray[-1], gray[1:-1, 0], gray[1:-1, -1]])
    background = float(np.median(border))
    darkest, lightest = _percentiles(gray, (0.1, 99.9))
    if lightest - background > background - darkest:
        ink, contrast = gray - background, lightest - background
    else:
        ink, contrast = background - gray, background - darkest
    if contrast < _MIN_CONTRAST:
        raise _no_ink(name)
    ink = (ink / contrast - _NOISE_FLOOR) / (1.0 - _NOISE_FLOOR)
    return np.clip(ink, 0.0, 1.0).astype(np.float32)


def _percentiles(values: np.ndarray, percents: tuple[float, ...]) -> list[float]:
    """``np.percentile(values, percents)`` (its default linear method) to the last bit, from
    one partial sort: half the time on a 128-pixel upload, where every microsecond of the
    serving path counts."""
    flat = values.ravel()
    if flat.size < 2:
        return [float(flat[0])] * len(percents)
    # NumPy's steps: virtual index (n - 1) * q, the two neighbours, then its _lerp.
    virtuals = [(flat.size - 1) * (percent / 100) for percent in percents]
    spots = [(virtual, min(int(np.floor(virtual)), flat.size - 2)) for virtual in virtuals]
    ranks = sorted({below + step for _, below in spots for step in (0, 1)})
    ranked = np.partition(flat, ranks)
    found = []
    for virtual, below in spots:
        gamma, low, high = virtual - below, ranked[below], ranked[below + 1]
        step = float(high - low)  # in the array's precision, as NumPy does
        found.append(float(high) - step * (1 - gamma) if gamma >= 0.5
                     else float(low) + step * gamma)
    return found


def _no_ink(name: str) -> ImageError:
    return ImageError(name, "no ink found (the image is blank or has too little contrast)",
                      "supply an image of one letter drawn clearly darker or lighter than "
                      "its background")


def ink_bounding_box(ink: np.ndarray, *, name: str = "<image>") -> tuple[int, int, int, int]:
    """(top, left, bottom, right) of the ink, exclusive bottom/right, ignoring tiny specks."""
    mask = (ink > 0.5).astype(np.uint8)
    count, _, stats, _ = cv2.connectedComponentsWithStats(mask, connectivity=8)
    if count <= 1:
        raise _no_ink(name)
    blobs = stats[1:].tolist()  # a few rows: plain Python is several times faster here
    largest = max(blob[cv2.CC_STAT_AREA] for blob in blobs)
    keep = [blob for blob in blobs if blob[cv2.CC_STAT_AREA] >= max(2, _SPECK_FRACTION * largest)]
    if not keep:  # only single-pixel dots: take them rather than call the image blank
        keep = blobs
    left = min(blob[cv2.CC_STAT_LEFT] for blob in keep)
    top = min(blob[cv2.CC_STAT_TOP] for blob in keep)
    right = max(blob[cv2.CC_STAT_LEFT] + blob[cv2.CC_STAT_WIDTH] for blob in keep)
    bottom = max(blob[cv2.CC_STAT_TOP] + blob[cv2.CC_STAT_HEIGHT] for blob in keep)
    return top, left, bottom, right


def fit_to_square(ink: np.ndarray, image_size: int, *, margin: float = DEFAULT_MARGIN,
                  name: str = "<image>") -> np.ndarray:
    """Crop an ink map to its ink plus ``margin`` (share of the longer side), pad it to a
    centred square and resize it to ``image_size``; ink = 1, quantised to 1/255 steps."""
    top, left, bottom, right = ink_bounding_box(ink, name=name)
    crop = ink[top:bottom, left:right]
    height, width = crop.shape
    side = max(height, width)
    pad = int(round(margin * side))
    square = np.zeros((side + 2 * pad, side + 2 * pad), dtype=np.float32)
    y0, x0 = pad + (side - height) // 2, pad + (side - width) // 2
    square[y0:y0 + height, x0:x0 + width] = crop
    shrinking = square.shape[0] > image_size
    resized = cv2.resize(square, (image_size, image_size),
                         interpolation=cv2.INTER_AREA if shrinking else cv2.INTER_LINEAR)
    # A thin pen on a big canvas fades when shrunk; restore full-strength ink.
    peak = float(resized.max())
    if peak <= 0.0:
        raise _no_ink(name)
    resized = np.clip(resized / peak, 0.0, 1.0)
    return (np.round(resized * 255.0) / 255.0).astype(np.float32)


def preprocess(source: Source, image_size: int = DEFAULT_IMAGE_SIZE, *,
               margin: float = DEFAULT_MARGIN, max_pixels: int = DEFAULT_MAX_PIXELS,
               name: str | None = None) -> np.ndarray:
    """Turn an image (path, encoded bytes or array) into the model input.

    Returns a float32 array of shape (image_size, image_size) in [0, 1], ink = 1, background 0.

    Raises:
        ImageError: naming the file, for a missing, empty, corrupt, non-image, over-limit or
        blank (no ink) input.
    """
    name = _name_of(source, name)
    if isinstance(source, np.ndarray):
        gray = array_to_gray(source, name=name)
        _check_size((gray.shape[1], gray.shape[0]), name, max_pixels)
    else:
        gray = decode(source, name=name, max_pixels=max_pixels)
    return fit_to_square(ink_map(gray, name=name), image_size, margin=margin, name=name)


def preprocess_with(settings: PreprocessSettings, source: Source, *,
                    name: str | None = None) -> np.ndarray:
    """:func:`preprocess` with the settings from params.yaml."""
    return preprocess(source, settings.image_size, margin=settings.margin,
                      max_pixels=settings.max_pixels, name=name)


def to_uint8(image: np.ndarray) -> np.ndarray:
    """A preprocessed image in [0, 1] as uint8 (lossless for :func:`preprocess` output)."""
    return np.round(np.clip(image, 0.0, 1.0) * 255.0).astype(np.uint8)


def is_image_file(path: Path) -> bool:
    """True when the file name has one of the supported image suffixes."""
    return path.suffix.lower() in SUPPORTED_SUFFIXES
