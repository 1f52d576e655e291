"""``load_images(spec)``: the one way a config names a dataset of images.

Spec forms:
  ``mvtb:train``, ``mvtb:val``, ``mvtb:all``  natural photos from PyPI mvtb-data, split by scene
  ``testimages``                             the 10 denoising test images (skimage + sporco)
  ``folder:/path/to/dir``                    a folder of PNG/JPEG/BMP/TIFF images
  ``tfds:NAME[:SPLIT]``                      a prepared TFDS dataset, e.g. ``tfds:cifar10:test``
"""

import numpy as np

from jaxden.data import folder, mvtb, testimages, tfds_source
from jaxden.data.errors import DataError
from jaxden.data.images import parallel_map, to_float

SPEC_FORMS = ("mvtb:train", "mvtb:val", "mvtb:all", "testimages", "folder:/path/to/dir",
              "tfds:NAME[:SPLIT]")


def _native(spec: str, max_images: int | None,
            data_dir: str | None) -> list[tuple[str, np.ndarray]]:
    kind, _, arg = spec.partition(":")
    if kind == "mvtb" and arg in mvtb.SPLITS:
        return mvtb.load_mvtb(arg)[:max_images]
    if spec == "testimages":
        return testimages.load_test_images()[:max_images]
    if kind == "folder" and arg:
        return folder.load_folder(arg, max_images)
    if kind == "tfds" and arg:
        name, _, split = arg.partition(":")
        return tfds_source.load_tfds(name, split or None, max_images=max_images, data_dir=data_dir)
    raise DataError(f"unknown dataset spec {spec!r}: use one of {', '.join(SPEC_FORMS)}")


def load_images(spec: str, *, grayscale: bool, max_images: int | None = None,
                data_dir: str | None = None) -> list[tuple[str, np.ndarray]]:
    """(name, image) pairs of the dataset ``spec`` (see the module docstring), sorted by name.

    Each image is a new float32 array in [0, 1] of shape (H, W, C), C = 1 if ``grayscale``
    else 3 (alpha dropped, gray replicated to RGB, RGB to gray by ``skimage.color.rgb2gray``).
    ``max_images`` keeps the first ones only; ``data_dir`` is the TFDS data directory (default
    ``$TFDS_DATA_DIR`` or ``~/tensorflow_datasets``). Packaged photos are decoded once per
    process. Raises DataError with the fix for any problem with the data.
    """
    if max_images is not None and max_images < 1:
        raise DataError(f"max_images={max_images}: use a positive number, or None for all images")
    pairs = _native(spec, max_images, data_dir)
    floats = parallel_map(lambda pair: to_float(pair[1], grayscale=grayscale), pairs)
    return [(name, x) for (name, _), x in zip(pairs, floats)]
