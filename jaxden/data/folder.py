"""A user's folder of images (BSD68, Set12, Kodak24, ...)."""

from pathlib import Path

import numpy as np

from jaxden.data.errors import DataError
from jaxden.data.images import IMAGE_EXTENSIONS, decode_images


def load_folder(path: str, max_images: int | None = None) -> list[tuple[str, np.ndarray]]:
    """(file name, native array) of the images directly in ``path``, sorted by name.

    Files are images by extension (``IMAGE_EXTENSIONS``, any case); other files are ignored
    and subfolders are not searched. Only the first ``max_images`` files are decoded.
    """
    root = Path(path).expanduser()
    if not root.is_dir():
        what = "is a file, not a folder" if root.exists() else "does not exist"
        raise DataError(f"image folder {root} {what} (working directory {Path.cwd()}): fix the "
                        f"path in the dataset spec 'folder:/path/to/images'")
    files = sorted((p for p in root.iterdir()
                    if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS), key=lambda p: p.name)
    if not files:
        raise DataError(f"no images in folder {root}: put {'/'.join(IMAGE_EXTENSIONS)} files "
                        f"directly in it (subfolders are not searched)")
    files = files[:max_images]
    return list(zip((p.name for p in files), decode_images(files)))
