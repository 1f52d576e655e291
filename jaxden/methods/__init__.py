"""Methods: each builds its model, loss, data and metrics from the config for the trainer."""

from jaxden.methods.cdn import ClassificationDenoising
from jaxden.methods.denoise import Denoise
from jaxden.methods.dlw import DLW
from jaxden.methods.multitask import MultiTask

METHODS = {"denoise": Denoise, "multitask": MultiTask, "cdn": ClassificationDenoising,
           "dlw": DLW}


def get(name: str):
    """The method registered under ``config.method``."""
    if name not in METHODS:
        raise ValueError(f"config.method={name!r}; choose one of {sorted(METHODS)}")
    return METHODS[name]()
