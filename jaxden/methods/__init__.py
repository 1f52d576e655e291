"""Methods: each builds its model, loss, data and metrics from the config for the trainer."""

import difflib

from jaxden.methods.cdn import ClassificationDenoising
from jaxden.methods.denoise import Denoise
from jaxden.methods.dlw import DLW
from jaxden.methods.multitask import MultiTask

METHODS = {"denoise": Denoise, "multitask": MultiTask, "cdn": ClassificationDenoising,
           "dlw": DLW}


def get(name: str):
    """The method registered under ``config.method``."""
    if name not in METHODS:
        near = difflib.get_close_matches(str(name), METHODS, n=1)
        hint = f"did you mean --config.method={near[0]}? " if near else ""
        raise ValueError(f"config.method={name!r} is not a method: {hint}choose one of "
                         f"{sorted(METHODS)}")
    return METHODS[name]()
