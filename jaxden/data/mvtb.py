"""Natural photos from PyPI ``mvtb-data``, split into train and val by scene.

``mvtbdata/images`` holds 107 images besides the camera-calibration folder. Left out, as
synthetic, calibration or duplicate images (jaxden CONVENTIONS.md): ``calibration/``,
adelson, apriltag*, arucoboard, Image18, fisheye_target, tags, yellowtargets, multiblobs*,
shark*, sharks, segmentation, eg-morph*, scale-space, 5points, wally, wheres-wally, monalisa,
lena, and church.jpg (a JPEG copy of church.png); and every non-image file (.mat, .mp4, .dat,
``__init__.py``). That leaves 84 photos (78.5 Mpx).

Sequences and stereo pairs are near-duplicates, so the split is by scene (``scene_key``): a
scene lies wholly in train or wholly in val, and val is the fixed list ``VAL_SCENES``.
"""

import fnmatch
import functools
import re
from pathlib import PurePosixPath

import numpy as np

from jaxden.data.images import decode_images
from jaxden.data.packages import package_folder

SPLITS = ("train", "val", "all")

EXCLUDED_FOLDERS = ("calibration",)
EXCLUDED_STEMS = (
    "adelson", "apriltag*", "arucoboard", "Image18", "fisheye_target", "tags", "yellowtargets",
    "multiblobs*", "shark*", "sharks", "segmentation", "eg-morph*", "scale-space", "5points",
    "wally", "wheres-wally", "monalisa", "lena",
)
EXCLUDED_FILES = ("church.jpg",)  # the same photo as church.png, recompressed
PHOTO_EXTENSIONS = (".png", ".jpg")

# 5 of the 24 scenes (10 photos, 6.9 Mpx), chosen to mix gray and colour, small and large,
# single photos, a stereo pair and a sequence. 58060 is, by its name and 481x321 size, a
# Berkeley Segmentation Dataset photo: out of training, it cannot leak into a BSD68 evaluation.
VAL_SCENES = ("58060", "eiffel", "rocks2", "street", "tomato")

# One trailing frame number ("-1", "_124", ".001", "2") or stereo side ("-l", "-r").
_SEQUENCE_SUFFIX = re.compile(r"(?:[-_.]?\d+|[-_][lr])$")


def scene_key(name: str) -> str:
    """The scene of a photo, from its path relative to ``mvtbdata/images``.

    The file stem loses one trailing frame number or stereo side (unless nothing would be
    left); a photo inside a folder gets the folder's top level as a prefix, so subfolders
    (``campus/holdout/``) join their parent's scene. Examples: ``building2-3.png`` ->
    ``building2``; ``castle2.png`` -> ``castle``; ``rocks2-l.png`` -> ``rocks2``;
    ``tomato_124.png`` -> ``tomato``; ``58060.png`` -> ``58060``; ``seq/im.004.png`` ->
    ``seq/im``; ``campus/holdout/P1070492.png`` -> ``campus/P``; ``mosaic/aerial2-007.png``
    -> ``mosaic/aerial2``; ``mosaic/aerial-08.png`` -> ``mosaic/aerial``.
    """
    path = PurePosixPath(name)
    base = _SEQUENCE_SUFFIX.sub("", path.stem, count=1) or path.stem
    return f"{path.parts[0]}/{base}" if len(path.parts) > 1 else base


def split_of(name: str) -> str:
    """``"val"`` if the photo's scene is in ``VAL_SCENES``, else ``"train"``."""
    return "val" if scene_key(name) in VAL_SCENES else "train"


def is_photo(name: str) -> bool:
    """Whether a path relative to ``mvtbdata/images`` is one of the kept natural photos."""
    path = PurePosixPath(name)
    return (path.suffix in PHOTO_EXTENSIONS
            and path.parts[0] not in EXCLUDED_FOLDERS
            and name not in EXCLUDED_FILES
            and not any(fnmatch.fnmatchcase(path.stem, p) for p in EXCLUDED_STEMS))


def photo_names() -> list[str]:
    """Sorted relative paths of the kept photos in the installed ``mvtb-data``."""
    root = package_folder("mvtbdata", "mvtb-data", "images")
    names = (p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file())
    return sorted(n for n in names if is_photo(n))


@functools.lru_cache(maxsize=1)
def _decoded() -> tuple[tuple[str, np.ndarray], ...]:
    """All kept photos, decoded once per process (read-only native arrays, about 0.2 GB)."""
    root = package_folder("mvtbdata", "mvtb-data", "images")
    names = photo_names()
    arrays = decode_images([root / n for n in names])
    for a in arrays:
        a.setflags(write=False)
    return tuple(zip(names, arrays))


def load_mvtb(split: str) -> list[tuple[str, np.ndarray]]:
    """(name, native array) of the photos in ``split`` (train, val or all), sorted by name."""
    return [(n, a) for n, a in _decoded() if split == "all" or split_of(n) == split]
