"""Labelled images (``load_labelled``) and the IDX reader, on files written here or installed."""

import gzip
import io
from pathlib import Path

import numpy as np
import pytest
import tensorflow_datasets as tfds
from PIL import Image

from jaxden.data import DataError, LabelledImages, load_labelled, read_idx, write_idx
from jaxden.data.labelled import FASHION_MNIST_CLASSES, FASHION_MNIST_DIR, FASHION_MNIST_FILES

# ------------------------------------------------------------------------------------ IDX


@pytest.mark.parametrize("name", ["images-idx3-ubyte.gz", "images-idx3-ubyte"])
def test_idx_round_trip(tmp_path, name):
    array = np.random.default_rng(0).integers(0, 256, (7, 5, 3), dtype=np.uint8)
    write_idx(tmp_path / name, array)
    with (gzip.open if name.endswith(".gz") else open)(tmp_path / name, "rb") as f:
        raw = f.read()
    assert raw[:4] == bytes([0, 0, 0x08, 3]) and raw[4:16] == bytes([0, 0, 0, 7, 0, 0, 0, 5,
                                                                      0, 0, 0, 3])
    assert len(raw) == 16 + array.size  # header then the bytes in C order, nothing else
    back = read_idx(tmp_path / name)
    assert back.dtype == np.uint8 and np.array_equal(back, array)
    assert np.array_equal(read_idx(tmp_path / name, max_items=2), array[:2])


def test_idx_big_endian_dtypes(tmp_path):
    for array in (np.arange(-3, 3, dtype=np.int16), np.linspace(0, 1, 6, dtype=np.float32),
                  np.arange(12, dtype=np.int32).reshape(3, 4), np.array([-1, 2], np.int8)):
        write_idx(tmp_path / "x.idx", array)
        back = read_idx(tmp_path / "x.idx")
        assert back.dtype == array.dtype and np.array_equal(back, array)
    raw = (tmp_path / "x.idx").read_bytes()
    assert raw[:8] == bytes([0, 0, 0x09, 1, 0, 0, 0, 2])
    write_idx(tmp_path / "y.idx", np.array([1], np.int32))
    assert (tmp_path / "y.idx").read_bytes()[-4:] == bytes([0, 0, 0, 1])  # big-endian values
    with pytest.raises(DataError, match="cannot store dtype uint16"):
        write_idx(tmp_path / "z.idx", np.zeros(2, np.uint16))


def test_idx_corrupt_files_name_the_file(tmp_path):
    good = tmp_path / "good-idx1-ubyte"
    write_idx(good, np.arange(10, dtype=np.uint8))
    raw = good.read_bytes()
    cases = {"truncated-data": raw[:-3], "truncated-header": raw[:6], "empty": b"",
             "bad-magic": b"\1\2" + raw[2:], "bad-dtype": raw[:2] + b"\x07" + raw[3:],
             "trailing": raw + b"\0"}
    for name, content in cases.items():
        (tmp_path / name).write_bytes(content)
        with pytest.raises(DataError, match=f"IDX file .*{name} is corrupt or truncated"):
            read_idx(tmp_path / name)
    (tmp_path / "cut.gz").write_bytes(gzip.compress(raw)[:-12])  # gzip stream cut short
    with pytest.raises(DataError, match="IDX file .*cut.gz is corrupt or truncated"):
        read_idx(tmp_path / "cut.gz")
    (tmp_path / "notgzip.gz").write_bytes(raw)
    with pytest.raises(DataError, match="IDX file .*notgzip.gz is corrupt or truncated"):
        read_idx(tmp_path / "notgzip.gz")
    with pytest.raises(DataError, match="IDX file .*missing.gz does not exist"):
        read_idx(tmp_path / "missing.gz")


# -------------------------------------------------------------------------- Fashion-MNIST

def _fashion_mnist_installed() -> bool:
    return all((Path(FASHION_MNIST_DIR) / f).is_file()
               for files in FASHION_MNIST_FILES.values() for f in files)


def test_fashion_mnist_debian_files():
    if not _fashion_mnist_installed():
        pytest.skip(f"Debian package dataset-fashion-mnist is not installed (no IDX files in "
                    f"{FASHION_MNIST_DIR}): `apt-get install dataset-fashion-mnist`")
    train = load_labelled("fashion_mnist", split="train")
    test = load_labelled("fashion_mnist", split="test")
    assert isinstance(train, LabelledImages) and train.name == "fashion_mnist/train"
    assert train.images.shape == (60000, 28, 28, 1) and test.images.shape == (10000, 28, 28, 1)
    assert train.images.dtype == np.float32 and train.labels.dtype == np.int32
    assert train.labels.shape == (60000,) and test.labels.shape == (10000,)
    assert train.images.min() == 0.0 and train.images.max() == 1.0
    assert np.array_equal(np.bincount(train.labels, minlength=10), np.full(10, 6000))
    assert np.array_equal(np.bincount(test.labels, minlength=10), np.full(10, 1000))
    assert train.num_classes == 10 and train.class_names == FASHION_MNIST_CLASSES
    assert train.class_names[0] == "T-shirt/top" and train.class_names[9] == "Ankle boot"
    head = load_labelled("fashion_mnist", split="test", grayscale=False, max_examples=4)
    assert head.images.shape == (4, 28, 28, 3)
    assert np.array_equal(head.images[..., 2:], test.images[:4])
    assert np.array_equal(head.labels, test.labels[:4])


def test_fashion_mnist_from_data_dir_and_missing_files(tmp_path):
    with pytest.raises(DataError, match=r"Fashion-MNIST files .*t10k-images-idx3-ubyte.gz.*"
                                        r"missing from .*apt-get install dataset-fashion-mnist"
                                        r".*tfds:fashion_mnist.*digits"):
        load_labelled("fashion_mnist", split="test", data_dir=str(tmp_path))
    images = np.random.default_rng(1).integers(0, 256, (6, 4, 3), dtype=np.uint8)
    write_idx(tmp_path / "t10k-images-idx3-ubyte.gz", images)
    write_idx(tmp_path / "t10k-labels-idx1-ubyte.gz", np.array([0, 9, 3, 3, 1, 2], np.uint8))
    data = load_labelled("fashion_mnist", split="test", data_dir=str(tmp_path))
    assert data.images.shape == (6, 4, 3, 1) and data.labels.tolist() == [0, 9, 3, 3, 1, 2]
    assert np.array_equal(np.round(data.images[..., 0] * 255).astype(np.uint8), images)
    write_idx(tmp_path / "t10k-labels-idx1-ubyte.gz", np.arange(5, dtype=np.uint8))
    with pytest.raises(DataError, match="do not match"):
        load_labelled("fashion_mnist", split="test", data_dir=str(tmp_path))


# --------------------------------------------------------------------------------- digits

def test_digits_split_shapes_and_determinism():
    train = load_labelled("digits", split="train")
    test = load_labelled("digits", split="test")
    assert train.images.shape == (1500, 8, 8, 1) and test.images.shape == (297, 8, 8, 1)
    assert train.images.dtype == np.float32 and test.labels.dtype == np.int32
    assert train.images.min() == 0.0 and train.images.max() == 1.0
    assert train.class_names == tuple("0123456789") and train.num_classes == 10
    assert set(np.unique(train.labels)) == set(range(10)) == set(np.unique(test.labels))
    assert np.array_equal(np.unique(train.images * 16), np.arange(17))  # 0..16 scaled by 1/16
    again = load_labelled("digits", split="train", grayscale=False, max_examples=10)
    assert again.images.shape == (10, 8, 8, 3) and again.name == "digits/train"
    assert np.array_equal(again.images[..., :1], train.images[:10])
    assert np.array_equal(again.labels, train.labels[:10])


# ----------------------------------------------------------------------------------- TFDS

def test_tfds_mocked_labelled():
    with tfds.testing.mock_data(num_examples=5, policy=tfds.testing.MockPolicy.USE_CODE):
        cifar = load_labelled("tfds:cifar10", split="train", max_examples=3)
        gray = load_labelled("tfds:cifar10", split="test", grayscale=True)
        fashion = load_labelled("tfds:fashion_mnist", split="test")
    assert cifar.images.shape == (3, 32, 32, 3) and cifar.images.dtype == np.float32
    assert gray.images.shape == (5, 32, 32, 1) and gray.name == "cifar10/test"
    assert fashion.images.shape == (5, 28, 28, 1) and fashion.name == "fashion_mnist/test"
    # the mock has no prepared metadata, so cifar10's names (from its label file) are "0".."9"
    assert len(cifar.class_names) == 10 == cifar.num_classes
    assert fashion.class_names == FASHION_MNIST_CLASSES
    for data in (cifar, gray, fashion):
        assert data.labels.dtype == np.int32 and len(data.labels) == len(data.images)
        assert 0 <= data.labels.min() and data.labels.max() < 10
        assert 0.0 <= data.images.min() and data.images.max() <= 1.0


def test_tfds_not_prepared(tmp_path):
    with pytest.raises(DataError, match=r"'cifar10'.*not available offline.*nothing is prepared"
                                        r".*tfds build cifar10.*fashion_mnist.*digits"):
        load_labelled("tfds:cifar10", split="test", data_dir=str(tmp_path))
    with pytest.raises(DataError, match="no dataset named 'no_such_dataset'"):
        load_labelled("tfds:no_such_dataset", split="train", data_dir=str(tmp_path))


# --------------------------------------------------------------------------------- errors

def test_unknown_spec_and_bad_arguments():
    for spec in ("mnist", "tfds:", "tfds:cifar10:test", "digits:train", ""):
        with pytest.raises(DataError, match="unknown labelled dataset spec.*fashion_mnist.*"
                                            "digits.*tfds:NAME"):
            load_labelled(spec, split="train")
    with pytest.raises(DataError, match="split='val'"):
        load_labelled("digits", split="val")
    with pytest.raises(DataError, match="max_examples=0"):
        load_labelled("digits", split="train", max_examples=0)


class JaxdenTinyLabelled(tfds.core.GeneratorBasedBuilder):
    """A 4-example labelled TFDS dataset with only a train split, prepared as array_record."""

    VERSION = tfds.core.Version("1.0.0")

    def _info(self):
        return tfds.core.DatasetInfo(builder=self, features=tfds.features.FeaturesDict({
            "image": tfds.features.Image(shape=(6, 5, 1)),
            "label": tfds.features.ClassLabel(names=["dark", "light"])}))

    def _split_generators(self, dl_manager):
        return {"train": self._generate_examples()}

    def _generate_examples(self):
        for i in range(4):  # PNG bytes: encoding an array would need TensorFlow
            buffer = io.BytesIO()
            Image.fromarray(np.full((6, 5), 80 * i, np.uint8)).save(buffer, format="PNG")
            buffer.seek(0)
            yield i, {"image": buffer, "label": int(i >= 2)}


def test_tfds_prepared_labelled_array_record(tmp_path):
    JaxdenTinyLabelled(data_dir=tmp_path, file_format="array_record").download_and_prepare()
    data = load_labelled("tfds:jaxden_tiny_labelled", split="train", data_dir=str(tmp_path))
    assert data.images.shape == (4, 6, 5, 1) and data.class_names == ("dark", "light")
    levels = np.round(data.images[:, 0, 0, 0] * 255).astype(int)
    assert sorted(levels) == [0, 80, 160, 240]  # every example once, in the shuffled order
    assert np.array_equal(data.labels, (levels >= 160).astype(np.int32))
    with pytest.raises(DataError, match="no split 'test'.*'train'"):
        load_labelled("tfds:jaxden_tiny_labelled", split="test", data_dir=str(tmp_path))
