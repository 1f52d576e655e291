"""NNX models, and ``build_model`` to make one from a config's ``model`` section."""

import ml_collections
from flax import nnx

from jaxden.models.addunet import AddUNet, AddUNetTiny

MODELS = {"addunet": AddUNet, "addunet_tiny": AddUNetTiny}

__all__ = ["AddUNet", "AddUNetTiny", "MODELS", "build_model"]


def build_model(model_config: ml_collections.ConfigDict, *, in_channels: int, rngs: nnx.Rngs):
    """``MODELS[model_config.name](in_channels, rngs=rngs, **other keys)``."""
    kwargs = dict(model_config)
    name = kwargs.pop("name")
    if name not in MODELS:
        raise ValueError(f"config.model.name={name!r}; choose one of {sorted(MODELS)}")
    if kwargs.get("kernel_sizes") is not None:
        kwargs["kernel_sizes"] = tuple(kwargs["kernel_sizes"])
    return MODELS[name](in_channels, rngs=rngs, **kwargs)
