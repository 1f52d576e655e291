"""``load_labelled(spec, split=...)``: labelled images for classification, as numpy arrays.

Spec forms:
  ``fashion_mnist``  Debian ``dataset-fashion-mnist`` (IDX gzip files in
                     ``/usr/share/datasets/fashion-mnist/``): 60000 train / 10000 test, 28x28x1
  ``digits``         scikit-learn ``load_digits`` (1797 8x8x1, zero-install): the first 1500
                     examples (in the file's order) are ``train``, the other 297 ``test``
  ``tfds:NAME``      a prepared TFDS dataset with ``image`` and ``label`` features, e.g.
                     ``tfds:cifar10``, ``tfds:fashion_mnist`` (read with ``tfds.data_source``)
"""

import dataclasses
from pathlib import Path

import numpy as np

from jaxden.data import idx
from jaxden.data.errors import DataError
from jaxden.data.images import to_float
from jaxden.data.tfds_source import first_line, not_available_error

LABELLED_SPEC_FORMS = ("fashion_mnist", "digits", "tfds:NAME")
SPLITS = ("train", "test")

FASHION_MNIST_DIR = "/usr/share/datasets/fashion-mnist"
FASHION_MNIST_FILES = {"train": ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz"),
                       "test": ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz")}
FASHION_MNIST_CLASSES = ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal",
                         "Shirt", "Sneaker", "Bag", "Ankle boot")
DIGITS_TRAIN = 1500  # digits: examples [0, 1500) are train, [1500, 1797) test

_LABELLED_ALTERNATIVES = ("labelled alternatives: 'fashion_mnist' (`apt-get install "
                          "dataset-fashion-mnist`), 'digits' (scikit-learn, no install)")


@dataclasses.dataclass(frozen=True, eq=False)
class LabelledImages:
    """A split of a labelled image dataset.

    ``images`` is float32 (N, H, W, C) in [0, 1]; ``labels`` int32 (N,) in
    [0, ``num_classes``); ``class_names[k]`` names label k; ``name`` is ``DATASET/SPLIT``.
    """

    images: np.ndarray
    labels: np.ndarray
    num_classes: int
    class_names: tuple[str, ...]
    name: str

    def __len__(self) -> int:
        return len(self.labels)


def _fashion_mnist(split: str, max_examples: int | None,
                   data_dir: str | None) -> tuple[np.ndarray, np.ndarray, tuple[str, ...]]:
    folder = Path(data_dir or FASHION_MNIST_DIR)
    paths = [folder / name for name in FASHION_MNIST_FILES[split]]
    missing = [p.name for p in paths if not p.is_file()]
    if missing:
        raise DataError(
            f"Fashion-MNIST files {missing} are missing from {folder}. Fix: `apt-get install "
            f"dataset-fashion-mnist` (installs them in {FASHION_MNIST_DIR}), or pass data_dir= "
            f"a folder holding the 4 IDX files; alternatives: 'tfds:fashion_mnist' (a prepared "
            f"TFDS dataset), or 'digits' (scikit-learn, no install)")
    images, labels = (idx.read_idx(p, max_items=max_examples) for p in paths)
    if images.ndim != 3 or labels.ndim != 1 or len(images) != len(labels):
        raise DataError(f"Fashion-MNIST files in {folder} do not match: images {images.shape} "
                        f"({paths[0].name}), labels {labels.shape} ({paths[1].name}); expected "
                        f"(N, H, W) and (N,): reinstall dataset-fashion-mnist")
    if labels.size and (labels.min() < 0 or labels.max() >= len(FASHION_MNIST_CLASSES)):
        raise DataError(f"{paths[1]} has labels outside 0..9: reinstall dataset-fashion-mnist")
    return images[..., None], labels, FASHION_MNIST_CLASSES


def _digits(split: str,
            max_examples: int | None) -> tuple[np.ndarray, np.ndarray, tuple[str, ...]]:
    from sklearn.datasets import load_digits  # deferred: importing sklearn takes a while

    digits = load_digits()
    part = slice(0, DIGITS_TRAIN) if split == "train" else slice(DIGITS_TRAIN, None)
    images = (digits.images[part][:max_examples] / 16.0).astype(np.float32)
    return images[..., None], digits.target[part][:max_examples], tuple(map(str, range(10)))


def _tfds(name: str, split: str, max_examples: int | None,
          data_dir: str | None) -> tuple[np.ndarray, np.ndarray, tuple[str, ...]]:
    import tensorflow_datasets as tfds  # deferred: importing it takes about half a second

    def unavailable(reason: str) -> DataError:
        return DataError(f"{not_available_error(name, split, data_dir, reason)}; "
                         f"{_LABELLED_ALTERNATIVES}")

    try:
        builder = tfds.builder(name, data_dir=data_dir)
    except tfds.core.registered.DatasetNotFoundError as e:
        raise DataError(f"TFDS has no dataset named {name!r}: spell it as in the TFDS catalog "
                        f"(e.g. 'tfds:cifar10', 'tfds:fashion_mnist'); "
                        f"{_LABELLED_ALTERNATIVES}") from e
    except Exception as e:  # any failure to open the dataset's metadata offline
        raise unavailable(first_line(e)) from e
    features = builder.info.features
    if "image" not in features or "label" not in features:
        raise DataError(f"TFDS dataset {name!r} lacks an 'image' or a 'label' feature (it has "
                        f"{sorted(features)}): choose a labelled image dataset")
    class_names = tuple(getattr(features["label"], "names", None) or ())
    if not class_names:
        raise DataError(f"TFDS dataset {name!r}: its 'label' feature is not a ClassLabel with "
                        f"class names: choose a classification dataset")
    try:
        source = builder.as_data_source(split=split)
    except Exception as e:  # not prepared, prepared without array_record, or a wrong split
        known = list(builder.info.splits)
        if known and split not in known:
            raise DataError(f"TFDS dataset {name!r} has no split {split!r} (it has {known}): "
                            f"load_labelled needs 'train' and 'test' splits") from e
        reason = (first_line(e) if builder.is_prepared()
                  else f"nothing is prepared at {builder.data_path}")
        raise unavailable(reason) from e
    count = len(source) if max_examples is None else min(len(source), max_examples)
    examples = [source[i] for i in range(count)]
    images = np.stack([np.asarray(ex["image"]) for ex in examples]) if examples else None
    if images is None:
        raise DataError(f"TFDS dataset {name!r} split {split!r} is empty")
    if images.ndim == 3:
        images = images[..., None]
    labels = np.asarray([int(ex["label"]) for ex in examples])
    return images, labels, class_names


def _native(spec: str, split: str, max_examples: int | None,
            data_dir: str | None) -> tuple[np.ndarray, np.ndarray, tuple[str, ...]]:
    kind, _, arg = spec.partition(":")
    if spec == "fashion_mnist":
        return _fashion_mnist(split, max_examples, data_dir)
    if spec == "digits":
        return _digits(split, max_examples)
    if kind == "tfds" and arg and ":" not in arg:
        return _tfds(arg, split, max_examples, data_dir)
    raise DataError(f"unknown labelled dataset spec {spec!r}: use one of "
                    f"{', '.join(LABELLED_SPEC_FORMS)} (the split is the split= argument)")


def _batch_to_float(images: np.ndarray, grayscale: bool | None) -> np.ndarray:
    """(N, H, W, C) native pixels as float32 in [0, 1], converted exactly like ``to_float``."""
    n, h, w, c = images.shape
    if grayscale is None:  # native channels: gray (+alpha) stays gray, colour (+alpha) RGB
        grayscale = c in (1, 2)
    flat = to_float(images.reshape(n * h, w, c), grayscale=grayscale)  # to_float is per pixel
    return flat.reshape(n, h, w, flat.shape[-1])


def load_labelled(spec: str, *, split: str, grayscale: bool | None = None,
                  max_examples: int | None = None,
                  data_dir: str | None = None) -> LabelledImages:
    """The ``split`` ("train" or "test") of the labelled dataset ``spec`` (module docstring).

    ``grayscale=None`` keeps the native channels (1 for gray datasets, 3 for colour; alpha is
    dropped); True or False gives 1 or 3 channels, converted as by ``images.to_float``.
    ``max_examples`` keeps the first ones only (in the dataset's order). ``data_dir`` is the
    folder of the Fashion-MNIST IDX files for ``fashion_mnist`` (default
    ``/usr/share/datasets/fashion-mnist``) and the TFDS data directory for ``tfds:NAME``.
    Raises DataError with the fix for any problem with the data.
    """
    if split not in SPLITS:
        raise DataError(f"split={split!r}: use one of {SPLITS}")
    if max_examples is not None and max_examples < 1:
        raise DataError(f"max_examples={max_examples}: use a positive number, or None for all")
    images, labels, class_names = _native(spec, split, max_examples, data_dir)
    return LabelledImages(images=_batch_to_float(images, grayscale),
                          labels=labels.astype(np.int32), num_classes=len(class_names),
                          class_names=class_names,
                          name=f"{spec.removeprefix('tfds:')}/{split}")
