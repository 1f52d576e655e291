"""jaxden.data: dataset specs, mvtb scene split, test images, folders, TFDS, PatchSampler."""

import fnmatch
import io
from pathlib import PurePosixPath

import numpy as np
import pytest
import tensorflow_datasets as tfds
from PIL import Image
from skimage import data as skdata
from skimage.color import rgb2gray

from jaxden.data import DataError, PatchSampler, dihedral, load_images, mvtb, scene_key
from jaxden.data.testimages import NAMES as TEST_IMAGE_NAMES


# ---------------------------------------------------------------------------------- mvtb

@pytest.fixture(scope="module")
def mvtb_gray():
    return {split: load_images(f"mvtb:{split}", grayscale=True) for split in mvtb.SPLITS}


def test_mvtb_keeps_the_84_photos(mvtb_gray):
    # CONVENTIONS.md says "85 photos, ~79 Mpx"; its exclusion list applied exactly leaves 84
    # photos of 78.5 Mpx (85 would keep church.jpg, a JPEG copy of church.png).
    names = [n for n, _ in mvtb_gray["all"]]
    assert len(names) == 84
    assert 78e6 < sum(x.size for _, x in mvtb_gray["all"]) < 79e6
    assert "church.png" in names and "church.jpg" not in names
    for name in names:
        path = PurePosixPath(name)
        assert path.suffix in (".png", ".jpg") and path.parts[0] != "calibration"
        assert not any(fnmatch.fnmatchcase(path.stem, p) for p in mvtb.EXCLUDED_STEMS), name


@pytest.mark.parametrize("name, scene", [
    ("building2-3.png", "building2"), ("castle.png", "castle"), ("castle2.png", "castle"),
    ("eiffel-1.png", "eiffel"), ("flowers9.png", "flowers"), ("tomato_124.png", "tomato"),
    ("rocks2-l.png", "rocks2"), ("walls-r.png", "walls"), ("image3.jpg", "image"),
    ("58060.png", "58060"), ("lab-scene.png", "lab-scene"), ("seq/im.004.png", "seq/im"),
    ("campus/P1070491.png", "campus/P"), ("campus/holdout/P1070492.png", "campus/P"),
    ("mosaic/aerial-08.png", "mosaic/aerial"), ("mosaic/aerial2-007.png", "mosaic/aerial2"),
    ("mosaic/aerialphoto.png", "mosaic/aerialphoto"),
])
def test_scene_key(name, scene):
    assert scene_key(name) == scene


def test_mvtb_split_by_scene(mvtb_gray):
    split_names = {s: [n for n, _ in mvtb_gray[s]] for s in mvtb.SPLITS}
    assert sorted(split_names["train"] + split_names["val"]) == split_names["all"]
    scenes = {s: {scene_key(n) for n in split_names[s]} for s in ("train", "val")}
    assert scenes["train"] and scenes["val"] and not scenes["train"] & scenes["val"]
    assert scenes["val"] == set(mvtb.VAL_SCENES)
    assert 0.15 <= len(scenes["val"]) / (len(scenes["train"]) + len(scenes["val"])) <= 0.25
    assert 4 <= len(split_names["val"]) <= 0.2 * len(split_names["all"])
    for name in split_names["all"]:  # every file of a scene is in its scene's split
        assert (name in split_names["val"]) == (scene_key(name) in mvtb.VAL_SCENES)


def test_mvtb_arrays_and_order(mvtb_gray):
    names = [n for n, _ in mvtb_gray["val"]]
    assert names == sorted(names)
    again = load_images("mvtb:val", grayscale=True)
    assert [n for n, _ in again] == names
    for (_, x), (_, y) in zip(mvtb_gray["val"], again):
        np.testing.assert_array_equal(x, y)
        assert x is not y  # callers get their own arrays; the cache stays intact
    rgb = load_images("mvtb:val", grayscale=False, max_images=3)
    assert [n for n, _ in rgb] == names[:3]
    for (_, g), (_, c) in zip(mvtb_gray["val"], rgb):
        assert g.dtype == c.dtype == np.float32
        assert g.shape[-1] == 1 and c.shape == g.shape[:2] + (3,)
        for x in (g, c):
            assert 0.0 <= x.min() and x.max() <= 1.0


# ---------------------------------------------------------------------------- test images

def test_testimages():
    gray = dict(load_images("testimages", grayscale=True))
    rgb = dict(load_images("testimages", grayscale=False))
    assert list(gray) == sorted(TEST_IMAGE_NAMES) == [
        "astronaut", "barbara", "camera", "chelsea", "coffee", "kodim23", "monarch", "rocket",
        "sail", "tulips"]
    np.testing.assert_array_equal(gray["astronaut"][..., 0],
                                  rgb2gray(skdata.astronaut()).astype(np.float32))
    np.testing.assert_allclose(rgb["astronaut"], skdata.astronaut() / 255.0, atol=1e-7)
    np.testing.assert_allclose(rgb["camera"], np.repeat(skdata.camera()[..., None] / 255.0, 3, -1),
                               atol=1e-7)
    assert all(x.dtype == np.float32 and x.shape[-1] == 1 for x in gray.values())
    assert rgb["barbara"].shape == (574, 702, 3)


# -------------------------------------------------------------------------------- folders

def _save(path, array, **kwargs):
    Image.fromarray(array).save(path, **kwargs)


def test_folder_images(tmp_path):
    rng = np.random.default_rng(0)
    rgb = rng.integers(0, 256, (12, 10, 3), dtype=np.uint8)
    rgba = rng.integers(0, 256, (9, 11, 4), dtype=np.uint8)
    gray = rng.integers(0, 256, (8, 13), dtype=np.uint8)
    deep = rng.integers(0, 65536, (7, 6), dtype=np.uint16)
    _save(tmp_path / "b_rgb.png", rgb)
    _save(tmp_path / "a_rgba.png", rgba)
    _save(tmp_path / "c_gray.PNG", gray)
    _save(tmp_path / "d_photo.jpg", rgb, quality=95)
    _save(tmp_path / "e_deep.png", deep)
    (tmp_path / "notes.txt").write_text("not an image")
    (tmp_path / "sub").mkdir()
    _save(tmp_path / "sub" / "ignored.png", rgb)

    images = dict(load_images(f"folder:{tmp_path}", grayscale=False))
    assert list(images) == ["a_rgba.png", "b_rgb.png", "c_gray.PNG", "d_photo.jpg", "e_deep.png"]
    np.testing.assert_allclose(images["b_rgb.png"], rgb / 255.0, atol=1e-7)
    np.testing.assert_allclose(images["a_rgba.png"], rgba[..., :3] / 255.0, atol=1e-7)
    np.testing.assert_allclose(images["c_gray.PNG"], np.repeat(gray[..., None], 3, -1) / 255.0,
                               atol=1e-7)
    np.testing.assert_allclose(images["e_deep.png"][..., 0], deep / 65535.0, atol=1e-7)
    assert images["d_photo.jpg"].shape == (12, 10, 3)
    assert all(x.dtype == np.float32 for x in images.values())

    gray_images = dict(load_images(f"folder:{tmp_path}", grayscale=True, max_images=2))
    assert list(gray_images) == ["a_rgba.png", "b_rgb.png"]
    np.testing.assert_array_equal(gray_images["b_rgb.png"][..., 0],
                                  rgb2gray(rgb).astype(np.float32))


def test_folder_errors(tmp_path):
    with pytest.raises(DataError, match="does not exist.*folder:"):
        load_images(f"folder:{tmp_path / 'missing'}", grayscale=True)
    (tmp_path / "readme.txt").write_text("no images here")
    with pytest.raises(DataError, match="no images in folder"):
        load_images(f"folder:{tmp_path}", grayscale=True)
    (tmp_path / "broken.png").write_bytes(b"these are not PNG bytes")
    with pytest.raises(DataError, match=r"broken\.png.*corrupt.*replace it"):
        load_images(f"folder:{tmp_path}", grayscale=True)
    (tmp_path / "broken.png").unlink()
    _save(tmp_path / "tiny.png", np.zeros((5, 6), np.uint8))
    images = load_images(f"folder:{tmp_path}", grayscale=True)
    with pytest.raises(DataError, match=r"tiny\.png is 5x6.*patch_size=8.*lower patch_size"):
        PatchSampler(images, patch_size=8, patches_per_image=2, seed=0)


def test_unknown_spec():
    for spec in ("mvtb:test", "bsd68", "folder:", "tfds:"):
        with pytest.raises(DataError, match="unknown dataset spec.*mvtb:train.*folder:.*tfds:NAME"):
            load_images(spec, grayscale=True)


# ----------------------------------------------------------------------------------- TFDS

def test_tfds_mocked_data_source():
    # mock_data patches DatasetBuilder.as_data_source, so it needs no TensorFlow.
    with tfds.testing.mock_data(num_examples=5, policy=tfds.testing.MockPolicy.USE_CODE):
        cifar = load_images("tfds:cifar10:test", grayscale=False, max_images=3)
        mnist = load_images("tfds:mnist", grayscale=True)
    assert [n for n, _ in cifar] == ["cifar10/test/0", "cifar10/test/1", "cifar10/test/2"]
    assert all(x.shape == (32, 32, 3) and x.dtype == np.float32 for _, x in cifar)
    assert len(mnist) == 5 and all(x.shape == (28, 28, 1) for _, x in mnist)
    assert all(0.0 <= x.min() and x.max() <= 1.0 for _, x in cifar + mnist)


def _png(array):
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="PNG")
    buffer.seek(0)
    return buffer


class JaxdenTinyImages(tfds.core.GeneratorBasedBuilder):
    """A 4-image TFDS dataset with only a train split, prepared offline as array_record."""

    VERSION = tfds.core.Version("1.0.0")

    def _info(self):
        return tfds.core.DatasetInfo(builder=self, features=tfds.features.FeaturesDict(
            {"image": tfds.features.Image(shape=(6, 5, 3))}))

    def _split_generators(self, dl_manager):
        return {"train": self._generate_examples()}

    def _generate_examples(self):
        for i in range(4):  # PNG bytes: encoding an array would need TensorFlow
            yield i, {"image": _png(np.full((6, 5, 3), 50 * i, np.uint8))}


def test_tfds_prepared_array_record(tmp_path):
    JaxdenTinyImages(data_dir=tmp_path, file_format="array_record").download_and_prepare()
    images = load_images("tfds:jaxden_tiny_images", grayscale=False, data_dir=str(tmp_path))
    assert [n for n, _ in images] == [f"jaxden_tiny_images/train/{i}" for i in range(4)]
    levels = sorted(round(float(x[0, 0, 0]) * 255) for _, x in images)
    assert levels == [0, 50, 100, 150]  # every example once, in the builder's shuffled order
    with pytest.raises(DataError, match="no split 'test'.*'train'"):
        load_images("tfds:jaxden_tiny_images:test", grayscale=False, data_dir=str(tmp_path))


def test_tfds_not_prepared(tmp_path):
    with pytest.raises(DataError, match=r"'cifar10'.*not available offline.*nothing is prepared"
                                        r".*tfds build cifar10.*TFDS_DATA_DIR.*mvtb.*folder:"):
        load_images("tfds:cifar10:test", grayscale=False, data_dir=str(tmp_path))
    with pytest.raises(DataError, match="no dataset named 'no_such_dataset'"):
        load_images("tfds:no_such_dataset", grayscale=False, data_dir=str(tmp_path))


# --------------------------------------------------------------------------- PatchSampler

PATCH = 4


@pytest.fixture(scope="module")
def small_images():
    """Three small images: two from 8-bit levels (stored as uint8), one float (rgb2gray-like)."""
    rng = np.random.default_rng(1)
    levels = lambda shape: rng.integers(0, 256, shape).astype(np.float32) / 255  # noqa: E731
    return [("a", levels((9, 12, 1))), ("b", rng.random((8, 8, 1), dtype=np.float32)),
            ("c", levels((13, 6, 1)))]


def _sampler(images, **kwargs):
    options = {"patch_size": PATCH, "patches_per_image": 3, "seed": 7, **kwargs}
    return PatchSampler(images, **options)


def test_patch_pool_cap(small_images):
    for cap in (1, 3, 100):
        sampler = _sampler(small_images, patches_per_image=cap)
        counts = np.bincount(sampler.positions[:, 0], minlength=len(small_images))
        tiles = [(x.shape[0] // PATCH) * (x.shape[1] // PATCH) for _, x in small_images]
        np.testing.assert_array_equal(counts, np.minimum(cap, tiles))
        assert len(sampler) == counts.sum()


def test_patch_batches_are_pure_functions_of_seed_and_step(small_images):
    first = _sampler(small_images)
    straight = [first.batch(step, 4) for step in range(8)]  # 32 rows over a pool of 8: 4 epochs
    assert straight[0].shape == (4, PATCH, PATCH, 1) and straight[0].dtype == np.float32
    resumed = _sampler(small_images)  # a restarted job: a fresh sampler, asked from step 5 on
    for step in (5, 6, 7, 0):
        np.testing.assert_array_equal(resumed.batch(step, 4), straight[step])
    assert not np.array_equal(straight[0], straight[1])
    other_seed = _sampler(small_images, seed=8)
    assert not np.array_equal(other_seed.positions, first.positions)


def test_patch_process_slices(small_images):
    sampler = _sampler(small_images)
    for step in range(3):
        whole = sampler.batch(step, 12)
        for count in (2, 4):
            parts = [sampler.batch(step, 12, process_index=p, process_count=count)
                     for p in range(count)]
            assert parts[0].shape == (12 // count, PATCH, PATCH, 1)
            np.testing.assert_array_equal(np.concatenate(parts), whole)
    with pytest.raises(DataError, match="not a positive multiple of process_count=4"):
        sampler.batch(0, 6, process_index=0, process_count=4)


def _crops(images, sampler):
    return [images[i][1][y:y + PATCH, x:x + PATCH] for i, y, x in sampler.positions]


def test_patches_are_exact_crops_and_epochs_permute_the_pool(small_images):
    plain = _sampler(small_images, augment=False)
    crops = _crops(small_images, plain)
    epoch = plain.batch(0, len(plain))
    matches = [[j for j, c in enumerate(crops) if np.array_equal(row, c)] for row in epoch]
    assert sorted(m[0] for m in matches) == list(range(len(plain)))  # each pool patch once

    augmented = _sampler(small_images, augment=True).batch(0, len(plain))
    transforms = set()
    for row, aug in zip(epoch, augmented):  # same patches, each under one dihedral transform
        hits = [t for t in range(8) if np.array_equal(dihedral(row[None], t)[0], aug)]
        assert hits
        transforms.add(hits[0])
    assert len(transforms) > 1
