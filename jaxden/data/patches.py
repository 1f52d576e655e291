"""Training patches as a pure function of (seed, step), for exact resume on any process count.

The sampler draws a fixed pool of patch positions once from the seed. The training stream is
an endless sequence of pool rows: epoch ``e`` is a permutation of the pool drawn from
``(seed, e)``, and global batch ``step`` is rows ``[step * B, (step + 1) * B)`` of the stream.
Each row also carries one of the 8 dihedral transforms (rotations by 90 degrees, with or
without a flip), drawn alongside the permutation, so it is a function of ``(seed, row)``.
Nothing depends on earlier calls: a restarted job asks for ``batch(step)`` and gets what
the first run got, and process ``p`` computes only its contiguous slice of the global batch.
"""

import functools
from collections.abc import Sequence

import numpy as np

from jaxden.data.errors import DataError
from jaxden.data.images import UINT8_TO_FLOAT

NUM_TRANSFORMS = 8


def _compact(image: np.ndarray) -> np.ndarray:
    """``image`` as uint8 levels when that is lossless (8-bit sources), else as float32."""
    image = np.asarray(image, np.float32)
    levels = np.rint(np.clip(image, 0.0, 1.0) * 255.0).astype(np.uint8)
    return levels if np.array_equal(UINT8_TO_FLOAT[levels], image) else image


def dihedral(patches: np.ndarray, transform: int) -> np.ndarray:
    """Transform ``transform`` in [0, 8) of square patches (N, P, P, C): rotate by
    ``transform % 4`` quarter turns, then flip left-right if ``transform >= 4``."""
    out = np.rot90(patches, transform % 4, axes=(1, 2))
    return out[:, :, ::-1] if transform >= 4 else out


@functools.lru_cache(maxsize=8)
def _epoch_order(seed: int, pool_size: int, epoch: int) -> tuple[np.ndarray, np.ndarray]:
    """(permutation of the pool, transform of each slot) of one epoch of the stream."""
    rng = np.random.default_rng([seed, 1, epoch])
    return rng.permutation(pool_size), rng.integers(0, NUM_TRANSFORMS, pool_size)


class PatchSampler:
    """A fixed pool of random patches of some images, served in seeded, resumable batches.

    Args:
      images: (name, float32 (H, W, C) array in [0, 1]) pairs, as from ``load_images``.
      patch_size: side P of the square patches.
      patches_per_image: cap on the patches of one image; an image gets
        ``min(patches_per_image, (H // P) * (W // P))`` patches, so a small image is not
        sampled more densely than a large one.
      seed: non-negative int; the pool and the stream are functions of it alone.
      augment: apply the per-row dihedral transforms.

    The pool holds positions (``positions``: image index, top, left), and the images are
    kept once, as uint8 where that is lossless, so crops are exact and memory stays that of
    the images.
    """

    def __init__(self, images: Sequence[tuple[str, np.ndarray]], *, patch_size: int,
                 patches_per_image: int, seed: int, augment: bool = True):
        if patch_size < 1 or patches_per_image < 1 or seed < 0:
            raise ValueError(f"need patch_size >= 1, patches_per_image >= 1 and seed >= 0; got "
                             f"{patch_size}, {patches_per_image} and {seed}")
        if not images:
            raise DataError("no images to cut patches from: check the dataset spec and max_images")
        self.names = tuple(name for name, _ in images)
        shapes = [np.shape(x) for _, x in images]
        if any(len(s) != 3 for s in shapes) or len({s[-1] for s in shapes}) > 1:
            raise DataError(f"images must all be (H, W, C) with the same C, got "
                            f"{dict(zip(self.names, shapes))}: load them with "
                            f"load_images(spec, grayscale=...)")
        for (name, x), (h, w, _) in zip(images, shapes):
            if not np.isfinite(x).all():
                raise DataError(f"image {name} has NaN/Inf pixels: fix or remove it (training "
                                f"on it would make the loss NaN)")
            if min(h, w) < patch_size:
                raise DataError(
                    f"image {name} is {h}x{w}, smaller than patch_size={patch_size}: lower "
                    f"patch_size to at most {min(h, w)}, or remove {name} from the dataset")
        self.patch_size, self.seed, self.augment = patch_size, seed, augment
        self.channels = shapes[0][-1]
        self._images = [_compact(x) for _, x in images]

        rng = np.random.default_rng([seed, 0])
        rows = []
        for index, (h, w, _) in enumerate(shapes):
            count = min(patches_per_image, (h // patch_size) * (w // patch_size))
            top = rng.integers(0, h - patch_size + 1, count)
            left = rng.integers(0, w - patch_size + 1, count)
            rows.append(np.stack([np.full(count, index), top, left], axis=1))
        self.positions = np.concatenate(rows).astype(np.int32)
        self.positions.setflags(write=False)

    def __len__(self) -> int:
        """Number of patches in the pool (one epoch of the stream)."""
        return len(self.positions)

    def _crop(self, index: int, top: int, left: int) -> np.ndarray:
        patch = self._images[index][top:top + self.patch_size, left:left + self.patch_size]
        return UINT8_TO_FLOAT[patch] if patch.dtype == np.uint8 else patch

    def batch(self, step: int, batch_size: int, *, process_index: int = 0,
              process_count: int = 1) -> np.ndarray:
        """Process ``process_index``'s slice of global batch ``step``: float32 of shape
        (batch_size // process_count, P, P, C), a pure function of the arguments and seed."""
        rows, transforms = stream_rows(self.seed, len(self), step, batch_size, process_index,
                                       process_count)
        out = np.stack([self._crop(*self.positions[r]) for r in rows])
        if self.augment:
            for t in range(1, NUM_TRANSFORMS):
                here = transforms == t
                out[here] = dihedral(out[here], t)
        return out


def stream_rows(seed: int, pool_size: int, step: int, batch_size: int, process_index: int,
                process_count: int) -> tuple[np.ndarray, np.ndarray]:
    """(pool rows, dihedral transforms) of process ``process_index``'s slice of global batch
    ``step`` of the endless seeded stream over a pool of ``pool_size`` items (module
    docstring); each has shape (batch_size // process_count,)."""
    if batch_size < 1 or batch_size % process_count:
        raise DataError(f"batch_size={batch_size} is not a positive multiple of "
                        f"process_count={process_count}: set the global batch size to a "
                        f"multiple of the number of processes")
    if step < 0 or not 0 <= process_index < process_count:
        raise ValueError(f"need step >= 0 and 0 <= process_index < process_count; got "
                         f"step={step}, process_index={process_index}")
    local = batch_size // process_count
    first = step * batch_size + process_index * local
    epochs, slots = np.divmod(np.arange(first, first + local, dtype=np.int64), pool_size)
    rows = np.empty(local, np.int64)
    transforms = np.empty(local, np.int64)
    for epoch in np.unique(epochs):
        permutation, epoch_transforms = _epoch_order(seed, pool_size, int(epoch))
        here = epochs == epoch
        rows[here] = permutation[slots[here]]
        transforms[here] = epoch_transforms[slots[here]]
    return rows, transforms
