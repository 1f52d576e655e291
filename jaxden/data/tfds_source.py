"""Images of a TensorFlow Datasets split, read with ``tfds`` data sources (no TensorFlow).

Random access needs the dataset prepared in the ``array_record`` format, in ``data_dir`` (by
default ``$TFDS_DATA_DIR`` or ``~/tensorflow_datasets``). Nothing is downloaded.
"""

import numpy as np

from jaxden.data.errors import DataError

_OFFLINE_ALTERNATIVES = ("offline alternatives that need no download: 'mvtb:train', "
                         "'testimages', 'folder:/path/to/images'")


def first_line(error: Exception) -> str:
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__


def not_available_error(name: str, split: str | None, data_dir: str | None, reason: str) -> DataError:
    where = data_dir or "the TFDS default data_dir ($TFDS_DATA_DIR or ~/tensorflow_datasets)"
    split_text = f" split {split!r}" if split else ""
    return DataError(
        f"TFDS dataset {name!r}{split_text} is not available offline in {where} ({reason}). Fix: "
        f"on a machine with internet run `tfds build {name} --file_format=array_record "
        f"--data_dir=DIR`, copy DIR here and set data_dir (or TFDS_DATA_DIR) to it; "
        f"{_OFFLINE_ALTERNATIVES}")


def load_tfds(name: str, split: str | None = None, *, max_images: int | None = None,
              data_dir: str | None = None) -> list[tuple[str, np.ndarray]]:
    """(name, native array) of the ``image`` feature of the first ``max_images`` examples.

    Equivalent to ``tfds.data_source(name, split=split, download=False, data_dir=data_dir)``;
    ``split`` defaults to ``test`` if the dataset has one, else ``train``. Names are
    ``NAME/SPLIT/INDEX`` with a zero-padded index, so sorting keeps the dataset's order.
    """
    import tensorflow_datasets as tfds  # deferred: importing it takes about half a second

    try:
        builder = tfds.builder(name, data_dir=data_dir)
    except tfds.core.registered.DatasetNotFoundError as e:
        raise DataError(f"TFDS has no dataset named {name!r}: spell it as in the TFDS catalog "
                        f"(e.g. 'tfds:cifar10:test', 'tfds:mnist'); {_OFFLINE_ALTERNATIVES}") from e
    except Exception as e:  # any failure to open the dataset's metadata offline
        raise not_available_error(name, split, data_dir, first_line(e)) from e
    if split is None:
        known = builder.info.splits
        split = "test" if "test" in known or not known else "train"
    try:
        source = builder.as_data_source(split=split)
    except Exception as e:  # not prepared, prepared without array_record, or a wrong split
        known = list(builder.info.splits)
        if known and {part.split("[")[0] for part in split.split("+")} - set(known):
            raise DataError(f"TFDS dataset {name!r} has no split {split!r}: use one of "
                            f"{known}, as in 'tfds:{name}:{known[0]}'") from e
        reason = (first_line(e) if builder.is_prepared()
                  else f"nothing is prepared at {builder.data_path}")
        raise not_available_error(name, split, data_dir, reason) from e
    if "image" not in builder.info.features:
        raise DataError(f"TFDS dataset {name!r} has no 'image' feature (it has "
                        f"{sorted(builder.info.features)}): choose an image dataset")
    count = len(source) if max_images is None else min(len(source), max_images)
    width = len(str(max(len(source) - 1, 0)))
    return [(f"{name}/{split}/{i:0{width}d}", np.asarray(source[i]["image"]))
            for i in range(count)]
