"""PyTorch weights in and out: a ``state_dict`` <-> jaxden's NNX parameters.

jaxden does not import PyTorch. A state_dict here is a flat ``{name: array}`` mapping whose
values are NumPy arrays or anything with ``.detach().cpu().numpy()`` (a ``torch.Tensor``);
``to_state_dict`` returns NumPy arrays, which ``torch_module.load_state_dict(
{k: torch.from_numpy(v) for k, v in sd.items()})`` accepts.

Names. A PyTorch module whose attributes are named like the NNX module's (the twins in
``benchmarks/torch_twins`` are) has, for every NNX parameter at path ``(a, 0, b, "kernel")``,
the PyTorch entry ``"a.0.b.weight"``: the path joined by dots, the leaf renamed as below
(``nnx.List`` indices are ``nn.ModuleList`` indices). Parameters owned directly by a model
(AddUNet's skip gates ``beta``) keep their name, shape and values: beta is the raw gate, the
effective gate being softplus(beta) in both frameworks. A model with other names can be
ported by renaming keys first.

Layouts (NNX -> PyTorch; the reverse is the inverse):

- Conv ``kernel`` (*window, I, O) (HWIO) -> ``weight`` (O, I, *window) (OIHW); any number
  of window axes (1-D, 2-D, 3-D convs).
- ConvTranspose ``kernel`` (*window, I, O) -> ``weight`` (I, O, *window) with the window
  flipped: flax (``transpose_kernel=False``) correlates the dilated input with the kernel,
  PyTorch applies the adjoint of a correlation, which flips it. With
  ``transpose_kernel=True`` (NNX shape (*window, O, I)) as a Conv kernel, no flip.
- Linear ``kernel`` (I, O) -> ``weight`` (O, I).
- GroupNorm, LayerNorm ``scale``, ``bias`` -> ``weight``, ``bias``.
- BatchNorm ``scale``, ``bias`` and the batch statistics ``mean``, ``var`` -> ``weight``,
  ``bias``, ``running_mean``, ``running_var`` (``num_batches_tracked`` is written as 0 and
  ignored on import).
- Embed ``embedding`` -> ``weight``.
- biases and a model's own parameters (gates): unchanged.

Norm statistics: jaxden's models use GroupNorm (AddUNet with ``norm="group"``, GradResNet),
which has no running statistics, so only its affine ``scale``/``bias`` move. BatchNorm
running statistics are converted when present (note flax's ``momentum`` is PyTorch's
``1 - momentum``). Epsilons are constructor arguments, not weights: NNX GroupNorm's default
is 1e-6 (AddUNet), PyTorch's 1e-5 (GradResNet sets 1e-5 itself); a PyTorch twin must pass
jaxden's. The GELU of jaxden (``jax.nn.gelu``) is the tanh approximation:
``F.gelu(x, approximate="tanh")`` in PyTorch.

Padding conventions (not in the weights, but they decide whether outputs match):

- images are NHWC in jaxden, NCHW in PyTorch: transpose inputs with (0, 3, 1, 2);
- ``padding="SAME"`` with stride 1 and an odd window k is PyTorch's ``padding=k // 2``;
- ``"SAME"`` with stride 2 (GradResNet's downsampling convs) pads
  total = max((ceil(n / 2) - 1) * 2 + k - n, 0) as total // 2 before and the rest after, i.e.
  (0, 1) for a 3x3 window on an even size: PyTorch's symmetric ``padding=1`` shifts the output
  by one pixel. Pad explicitly with ``F.pad`` (the twins do), or weights trained in PyTorch
  with ``padding=1`` will not reproduce their outputs here on even sizes;
- AddUNet reflect-pads the bottom and right edges to a multiple of 2^levels
  (``F.pad(y, (0, pw, 0, ph), mode="reflect")``) and crops the output back;
- 2x2 max pooling and the 2x2 stride-2 transposed convs are "VALID" (no padding).

Checked (``tests/test_port.py``, against ``benchmarks/torch_twins``): AddUNet in every skip
mode (gated scalar/channel, add, concat, none; fixed-resolution; GroupNorm, GELU), GradResNet
(either ``conv_impl``: the same weights) with its Tweedie denoiser and DSM loss, DLWNet:
outputs and input gradients within 1e-5 relative in float32, and round trips exact. The rules
are per layer type, so other NNX models built from these layers (DLWNet3D, the multitask
model) convert the same way given a PyTorch module with matching names.

Example::

    sd = jaxden.port.to_state_dict(model)               # NNX -> {name: np.ndarray}
    torch_model.load_state_dict({k: torch.from_numpy(v) for k, v in sd.items()})
    jaxden.port.load_state_dict(model, torch_model.state_dict())   # in place (nnx.update)
"""

from collections.abc import Callable, Iterator, Mapping
from typing import NamedTuple

import jax.numpy as jnp
import numpy as np
from flax import nnx, traverse_util

Array = np.ndarray
_IGNORED_SUFFIXES = ("num_batches_tracked",)


class _Leaf(NamedTuple):
    """How one NNX variable maps to one PyTorch entry."""

    name: str  # the PyTorch key
    to_torch: Callable[[Array], Array]
    from_torch: Callable[[Array], Array]


def _identity(x: Array) -> Array:
    return x


def _conv_to_torch(k: Array) -> Array:  # (*window, I, O) -> (O, I, *window)
    n = k.ndim - 2
    return np.transpose(k, (n + 1, n, *range(n)))


def _conv_from_torch(w: Array) -> Array:  # (O, I, *window) -> (*window, I, O)
    n = w.ndim - 2
    return np.transpose(w, (*range(2, n + 2), 1, 0))


def _flip_window(k: Array) -> Array:
    return np.flip(k, axis=tuple(range(k.ndim - 2)))


def _conv_transpose_to_torch(k: Array) -> Array:  # (*window, I, O) -> (I, O, *window), flipped
    n = k.ndim - 2
    return np.transpose(_flip_window(k), (n, n + 1, *range(n)))


def _conv_transpose_from_torch(w: Array) -> Array:
    n = w.ndim - 2
    return _flip_window(np.transpose(w, (*range(2, n + 2), 0, 1)))


_RENAMED = {
    nnx.Conv: {"kernel": ("weight", _conv_to_torch, _conv_from_torch), "bias": None},
    nnx.Linear: {"kernel": ("weight", np.transpose, np.transpose), "bias": None},
    nnx.GroupNorm: {"scale": ("weight",), "bias": None},
    nnx.LayerNorm: {"scale": ("weight",), "bias": None},
    nnx.BatchNorm: {"scale": ("weight",), "bias": None, "mean": ("running_mean",),
                    "var": ("running_var",)},
    nnx.Embed: {"embedding": ("weight",)},
}


def _leaf_rule(owner: nnx.Module, leaf: str):
    """(torch leaf name, to_torch, from_torch) for the variable ``leaf`` of ``owner``."""
    if isinstance(owner, nnx.ConvTranspose):
        if leaf == "bias":
            return "bias", _identity, _identity
        if leaf == "kernel":
            if owner.transpose_kernel:  # NNX (*window, O, I), already the adjoint's layout
                return "weight", _conv_to_torch, _conv_from_torch
            return "weight", _conv_transpose_to_torch, _conv_transpose_from_torch
    for layer_type, rules in _RENAMED.items():
        if isinstance(owner, layer_type):
            if leaf not in rules:
                raise ValueError(f"jaxden.port does not know the {type(owner).__name__} "
                                 f"variable {leaf!r}")
            rule = rules[leaf] or (leaf,)
            return (rule[0], *(rule[1:] or (_identity, _identity)))
    return leaf, _identity, _identity  # a parameter of a model itself (e.g. AddUNet's beta)


def _variables(model: nnx.Module) -> nnx.State:
    """The variables that travel: parameters and batch statistics (no RNG state)."""
    return nnx.state(model, nnx.Any(nnx.Param, nnx.BatchStat))


def _leaves(model: nnx.Module, state: nnx.State) -> Iterator[tuple[tuple, _Leaf]]:
    modules = {tuple(path): module for path, module in nnx.iter_modules(model)}
    for path in traverse_util.flatten_dict(nnx.to_pure_dict(state)):
        name, to_torch, from_torch = _leaf_rule(modules[path[:-1]], path[-1])
        yield path, _Leaf(".".join(map(str, (*path[:-1], name))), to_torch, from_torch)


def _batch_norm_counters(model: nnx.Module) -> dict[str, Array]:
    return {".".join(map(str, (*path, "num_batches_tracked"))): np.zeros((), np.int64)
            for path, module in nnx.iter_modules(model) if isinstance(module, nnx.BatchNorm)}


def to_state_dict(model: nnx.Module) -> dict[str, Array]:
    """The PyTorch ``state_dict`` of ``model``'s parameters (and batch statistics), as NumPy
    arrays in PyTorch's layouts and names (module docstring): new, writable, C-contiguous
    arrays (``torch.from_numpy`` shares them). Exact: values are transposed and flipped,
    never recomputed."""
    state = _variables(model)
    flat = traverse_util.flatten_dict(nnx.to_pure_dict(state))
    out = {leaf.name: np.array(leaf.to_torch(np.asarray(flat[path])), order="C")
           for path, leaf in _leaves(model, state)}
    return out | _batch_norm_counters(model)


def _as_numpy(value) -> Array:
    if hasattr(value, "detach"):  # a torch.Tensor, without importing torch
        value = value.detach().cpu()
        if str(value.dtype) == "torch.bfloat16":  # NumPy has no bfloat16
            value = value.float()
        value = value.numpy()
    return np.asarray(value)


def from_state_dict(model: nnx.Module, state_dict: Mapping, *, strict: bool = True) -> nnx.State:
    """``model``'s parameter (and batch-statistics) ``nnx.State`` with the values of a PyTorch
    ``state_dict``; ``model`` is only read (``nnx.update(model, state)`` applies it).

    Each array is transposed (and flipped) into NNX's layout and cast to the existing
    variable's dtype. With ``strict`` (the default) every variable of ``model`` must be in
    ``state_dict`` and every entry of ``state_dict`` must be used (``num_batches_tracked``
    aside); otherwise missing variables keep their values and extra entries are ignored.

    Raises:
      KeyError: naming the missing or unexpected keys (strict).
      ValueError: naming an entry whose shape does not match the model's (in PyTorch's
        layout), e.g. a model built with other widths.
    """
    state = _variables(model)
    pure = nnx.to_pure_dict(state)
    flat = traverse_util.flatten_dict(pure)
    leaves = dict(_leaves(model, state))
    wanted = {leaf.name for leaf in leaves.values()}
    given = {k for k in state_dict if not k.endswith(_IGNORED_SUFFIXES)}
    if strict and (wanted - given or given - wanted):
        raise KeyError(f"state_dict does not match {type(model).__name__}: missing "
                       f"{sorted(wanted - given)}, unexpected {sorted(given - wanted)}")
    for path, leaf in leaves.items():
        if leaf.name not in state_dict:
            continue
        current = flat[path]
        expected = leaf.to_torch(np.zeros(current.shape, np.int8)).shape
        value = _as_numpy(state_dict[leaf.name])
        if value.shape != expected:
            raise ValueError(f"{leaf.name}: shape {value.shape} in the state_dict, the model "
                             f"needs {expected} (PyTorch layout)")
        flat[path] = jnp.asarray(np.ascontiguousarray(leaf.from_torch(value)), current.dtype)
    nnx.replace_by_pure_dict(state, traverse_util.unflatten_dict(flat))
    return state


def load_state_dict(model: nnx.Module, state_dict: Mapping, *, strict: bool = True):
    """Load a PyTorch ``state_dict`` into ``model`` in place (``nnx.update``) and return
    ``model``; see ``from_state_dict``."""
    nnx.update(model, from_state_dict(model, state_dict, strict=strict))
    return model
