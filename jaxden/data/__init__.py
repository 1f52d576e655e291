"""Image data for jaxden: offline datasets by name, and resumable training patches.

``load_images(spec, grayscale=...)`` reads a dataset named by a spec string (``mvtb:train``,
``mvtb:val``, ``mvtb:all``, ``testimages``, ``folder:/path``, ``tfds:NAME[:SPLIT]``) as float32
(H, W, C) arrays in [0, 1]; ``PatchSampler`` serves training patches as a pure function of
(seed, step); ``load_labelled(spec, split=...)`` reads labelled images for classification
(``fashion_mnist``, ``digits``, ``tfds:NAME``) and ``ExampleSampler`` serves them in
resumable batches. Everything here is numpy; problems with the data
raise ``DataError``.
"""

from jaxden.data.errors import DataError
from jaxden.data.examples import ExampleSampler, SamplerStream
from jaxden.data.idx import read_idx, write_idx
from jaxden.data.labelled import LABELLED_SPEC_FORMS, LabelledImages, load_labelled
from jaxden.data.mvtb import VAL_SCENES, scene_key
from jaxden.data.patches import PatchSampler, dihedral
from jaxden.data.registry import SPEC_FORMS, load_images

__all__ = ["DataError", "ExampleSampler", "SamplerStream", "PatchSampler", "SPEC_FORMS", "VAL_SCENES", "dihedral", "load_images",
           "scene_key", "LABELLED_SPEC_FORMS", "LabelledImages", "load_labelled", "read_idx",
           "write_idx"]
