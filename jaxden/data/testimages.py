"""The 10 denoising test images: five from ``skimage.data`` and five from PyPI ``sporco``.

Standard images, but not Set12/BSD68: numbers on them are not comparable to published tables.
"""

import functools

import numpy as np
from skimage import data as skdata

from jaxden.data.images import decode_images
from jaxden.data.packages import package_folder

SKIMAGE_NAMES = ("astronaut", "camera", "chelsea", "coffee", "rocket")
SPORCO_NAMES = ("barbara", "kodim23", "monarch", "sail", "tulips")
NAMES = tuple(sorted(SKIMAGE_NAMES + SPORCO_NAMES))


@functools.lru_cache(maxsize=1)
def _decoded() -> tuple[tuple[str, np.ndarray], ...]:
    folder = package_folder("sporco", "sporco", "data")
    images = {n: getattr(skdata, n)() for n in SKIMAGE_NAMES}
    images.update(zip(SPORCO_NAMES, decode_images([folder / f"{n}.png" for n in SPORCO_NAMES])))
    for a in images.values():
        a.setflags(write=False)
    return tuple((n, images[n]) for n in NAMES)


def load_test_images() -> list[tuple[str, np.ndarray]]:
    """(name, native uint8 array) of the 10 test images, sorted by name (decoded once)."""
    return list(_decoded())
