"""Decoding image files and converting pixel arrays to float32 (H, W, C) in [0, 1]."""

import os
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
from PIL import Image
from skimage.color import rgb2gray
from skimage.util import img_as_float

from jaxden.data.errors import DataError

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff")

_NATIVE_MODES = ("1", "L", "LA", "RGB", "RGBA")

# float32 of each 8-bit level, exactly as ``img_as_float(level).astype(float32)``: a table
# look-up converts 8-bit images without a float64 intermediate.
UINT8_TO_FLOAT = img_as_float(np.arange(256, dtype=np.uint8)).astype(np.float32)


def decode_image(path: str | os.PathLike) -> np.ndarray:
    """Decode one image file to its native pixel array (uint8, uint16, float32 or bool).

    The array is (H, W) or (H, W, C) with C in {2, 3, 4} (alpha, if any, kept last); 16-bit
    files stay uint16; 32-bit float files stay float32 and must hold finite values in [0, 1];
    palette and other colour modes become RGB (RGBA if transparent).
    Raises DataError naming the file when it is missing, cannot be decoded, or holds NaN/Inf.
    """
    path = Path(path)
    try:
        with Image.open(path) as image:
            image.load()
            if image.mode in _NATIVE_MODES:
                return np.asarray(image)
            if image.mode.startswith("I"):  # 16-bit grayscale ("I;16*", or "I" holding 0..65535)
                return np.clip(np.asarray(image), 0, 65535).astype(np.uint16)
            if image.mode == "F":  # 32-bit float grayscale (TIFF): kept as is, checked
                return _checked_float(path, np.asarray(image, np.float32))
            transparent = "A" in image.getbands() or "transparency" in image.info
            return np.asarray(image.convert("RGBA" if transparent else "RGB"))
    except FileNotFoundError:
        raise DataError(f"image file {path} does not exist: check the path") from None
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as e:
        raise DataError(
            f"cannot decode image {path} ({type(e).__name__}: {e}): the file is corrupt or not "
            f"an image; replace it, or delete it from the dataset") from e


def _checked_float(path: Path, pixels: np.ndarray) -> np.ndarray:
    """``pixels`` of a float image file, if all are finite and in [0, 1]; else DataError."""
    bad = int(np.size(pixels) - np.count_nonzero(np.isfinite(pixels)))
    if bad:
        raise DataError(f"image {path} has {bad} NaN/Inf pixel(s) of {pixels.size}: fix or "
                        f"delete the file (training on it would make the loss NaN)")
    if pixels.size and (pixels.min() < 0.0 or pixels.max() > 1.0):
        raise DataError(f"float image {path} has values in [{pixels.min():.4g}, "
                        f"{pixels.max():.4g}], not [0, 1]: rescale it to [0, 1], or save it as "
                        f"an 8- or 16-bit image")
    return pixels


def to_float(image: np.ndarray, *, grayscale: bool) -> np.ndarray:
    """A native pixel array as float32 (H, W, C) in [0, 1], C = 1 if ``grayscale`` else 3.

    Integer arrays are scaled by their dtype's maximum (``skimage.util.img_as_float``); alpha
    is dropped; RGB becomes gray with ``skimage.color.rgb2gray``; gray is replicated to RGB.
    """
    x = image if image.ndim == 3 else image[..., None]
    channels = x.shape[-1]
    if channels not in (1, 2, 3, 4):
        raise DataError(f"expected an image with 1 to 4 channels, got shape {image.shape}")
    if channels in (2, 4):
        x = x[..., : channels - 1]
    if grayscale and x.shape[-1] == 3:
        out = rgb2gray(x)[..., None]
    else:
        out = UINT8_TO_FLOAT[x] if x.dtype == np.uint8 else img_as_float(x)
        if not grayscale and out.shape[-1] == 1:
            out = np.repeat(out, 3, axis=-1)
    return out.astype(np.float32)


def parallel_map(fn: Callable, items: Iterable) -> list:
    """``[fn(x) for x in items]`` on a few threads (PIL decoding and numpy release the GIL)."""
    with ThreadPoolExecutor(max_workers=min(8, os.cpu_count() or 1)) as pool:
        return list(pool.map(fn, items))


def decode_images(paths: Sequence[str | os.PathLike]) -> list[np.ndarray]:
    """Decode many files in parallel, keeping their order; see ``decode_image``."""
    return parallel_map(decode_image, paths)
