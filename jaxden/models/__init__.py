"""NNX models, and ``build_model`` to make one from a config's ``model`` section."""

import ml_collections
from flax import nnx

from jaxden.models.addunet import AddUNet, AddUNetTiny
from jaxden.models.dlwnet import DLWNet, DLWNet3D, DLWNet3DTiny, DLWNetTiny
from jaxden.models.energy import GradResNet, GradResNetTiny
from jaxden.models.multitask import ClassifierHead, MultiTaskAddUNet

MODELS = {"addunet": AddUNet, "addunet_tiny": AddUNetTiny, "addunet_mtl": MultiTaskAddUNet,
          "gradresnet": GradResNet, "gradresnet_tiny": GradResNetTiny,
          "dlwnet": DLWNet, "dlwnet_tiny": DLWNetTiny, "dlwnet3d": DLWNet3D,
          "dlwnet3d_tiny": DLWNet3DTiny}
_TUPLE_KEYS = ("kernel_sizes", "head_hidden", "tasks", "widths")  # lists after JSON

__all__ = ["AddUNet", "AddUNetTiny", "ClassifierHead", "DLWNet", "DLWNet3D", "DLWNet3DTiny",
           "DLWNetTiny", "GradResNet", "GradResNetTiny", "MODELS", "MultiTaskAddUNet",
           "build_model"]


def build_model(model_config: ml_collections.ConfigDict, *, in_channels: int, rngs: nnx.Rngs):
    """``MODELS[model_config.name](in_channels, rngs=rngs, **other keys)``."""
    kwargs = dict(model_config)
    name = kwargs.pop("name")
    if name not in MODELS:
        raise ValueError(f"config.model.name={name!r}; choose one of {sorted(MODELS)}")
    for key in _TUPLE_KEYS:
        if kwargs.get(key) is not None:
            kwargs[key] = tuple(kwargs[key])
    return MODELS[name](in_channels, rngs=rngs, **kwargs)
