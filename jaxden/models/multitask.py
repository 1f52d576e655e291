"""AddUNet for joint denoising + classification (Lakkavalli & Sinha, arXiv 2602.12649).

One network returns (denoised image, class logits) for a noisy image y. The paper does not say
which features its classification head reads nor how big it is (PAPERS.md, open question 4);
here a head pools the AddUNet's deepest features (``head_tap="deepest"``: the bottleneck, or
x_L in the fixed-resolution variant) by global average pooling, then applies an MLP whose
hidden widths are a config choice: ``head_hidden=()`` is a linear probe, the paper's "limited
classification capacity" setting. ``head_tap="decoder"`` pools the last decoder block instead,
so that the skip gates sit on the classifier's path too (a variant, not the paper's).

``tasks`` selects the rows of the comparison from one class: ("denoise", "classify") is the
multi-task model, ("denoise",) the single-task denoiser (no head), ("classify",) the
classifier-only baseline with the same encoder (no decoder when the head taps the deepest
features). An absent task's output is None.
"""

import jax.numpy as jnp
from flax import nnx

from jaxden.models.addunet import ACTIVATIONS, AddUNet

TASKS = ("denoise", "classify")
HEAD_TAPS = ("deepest", "decoder")


class ClassifierHead(nnx.Module):
    """Global average pooling, then [Dense -> activation] per ``hidden`` width, then a Dense
    layer to ``num_classes`` logits. ``hidden=()`` is a linear probe on the pooled features."""

    def __init__(self, in_features, num_classes, *, hidden=(), activation="relu", rngs):
        widths = (in_features, *hidden)
        self.hidden = nnx.List(nnx.Linear(a, b, rngs=rngs) for a, b in zip(widths, widths[1:]))
        self.out = nnx.Linear(widths[-1], num_classes, rngs=rngs)
        self.activation = activation

    def __call__(self, features):
        x = jnp.mean(features, axis=(1, 2))
        for layer in self.hidden:
            x = ACTIVATIONS[self.activation](layer(x))
        return self.out(x)


class MultiTaskAddUNet(nnx.Module):
    """AddUNet + classification head: ``model(y) -> (denoised, logits)``.

    Args:
      in_channels: image channels.
      num_classes: number of classes of the head.
      tasks: a non-empty subset of ("denoise", "classify"), in any order.
      head_hidden: hidden widths of the head's MLP; () is a linear probe.
      head_tap: "deepest" (the encoder's deepest features) or "decoder" (the last decoder
        block, after all skip fusions).
      rngs: parameter initialisation.
      **unet_kwargs: the AddUNet's arguments (width, levels, skip, gate, ...).
    """

    def __init__(self, in_channels, *, num_classes, tasks=TASKS, head_hidden=(128,),
                 head_tap="deepest", rngs: nnx.Rngs, **unet_kwargs):
        tasks = tuple(tasks)
        if not tasks or any(t not in TASKS for t in tasks) or len(set(tasks)) != len(tasks):
            raise ValueError(f"tasks={tasks!r}: give one or both of {TASKS}, each once")
        if head_tap not in HEAD_TAPS:
            raise ValueError(f"head_tap={head_tap!r}: choose one of {HEAD_TAPS}")
        if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 2:
            raise ValueError(f"num_classes must be an integer >= 2, got {num_classes!r}")
        self.denoises, self.classifies = "denoise" in tasks, "classify" in tasks
        self.head_tap = head_tap
        needs_decoder = self.denoises or (self.classifies and head_tap == "decoder")
        self.unet = AddUNet(in_channels, decoder=needs_decoder, rngs=rngs, **unet_kwargs)
        if self.classifies:
            width = self.unet.stem.out_features
            self.classifier = ClassifierHead(width, num_classes, hidden=tuple(head_hidden),
                                             activation=unet_kwargs.get("activation", "relu"),
                                             rngs=rngs)

    def gates(self):
        """The AddUNet's effective skip gates by level (see ``AddUNet.gates``)."""
        return self.unet.gates()

    def __call__(self, y, gate_scale=None):
        """(denoised (B, H, W, C) or None, logits (B, num_classes) or None) for y (B, H, W, C).

        ``gate_scale`` scales each level's gate at inference, as in ``AddUNet.decode``.
        """
        features, skips = self.unet.encode(y)
        denoised = logits = None
        if self.denoises or self.head_tap == "decoder":
            decoded = self.unet.decode_features(features, skips, y, gate_scale)
            if self.denoises:
                denoised = self.unet.head_output(decoded, y)
            if self.head_tap == "decoder":
                features = decoded
        if self.classifies:
            logits = self.classifier(features)
        return denoised, logits

