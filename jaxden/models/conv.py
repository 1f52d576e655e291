"""Strided convolutions as matrix products, for networks trained by double backpropagation.

A drop-in for ``lax.conv_general_dilated`` (pass it to ``nnx.Conv(conv_general_dilated=...)``).
Unit-stride convolutions go to XLA unchanged. A strided one (e.g. a stride-2 3x3 or 1x1
downsampling conv) is computed as im2col: the k*k strided slices of the padded input are
concatenated on the channel axis and multiplied by the (k*k*C_in, C_out) kernel matrix.
This is the same linear map, so values and derivatives of every order agree with XLA's
convolution to rounding (tests/test_conv.py checks it in float64).

Why: the denoising-score-matching loss of a classification-denoising network (Thiry & Guth,
arXiv 2410.03505; ``jaxden.methods.cdn``) differentiates in the parameters through the input
gradient of the network. For a strided convolution the input gradient is an input-dilated
convolution, and the weight gradient of that (second order) is a reversed, dilated
convolution that XLA:CPU runs about 10x slower than the step's other weight gradients: on the quick GradResNet,
batch 32x28x28, two such ops took 58 of the 196 ms of a training step (profiled on one core).
As slices and a matmul, every derivative is again slices, pads and matmuls.
``benchmarks/cdn_cost.py`` prints the step time with and without it.
"""

import jax
import jax.numpy as jnp
from jax import lax

IMPLS = ("auto", "xla", "matmul")
_NHWC = ("NHWC", "HWIO", "NHWC")


def _is_plain_nhwc(lhs, rhs, lhs_dilation, rhs_dilation, dimension_numbers,
                   feature_group_count) -> bool:
    expected = lax.conv_dimension_numbers(lhs.shape, rhs.shape, _NHWC)
    given = lax.conv_dimension_numbers(lhs.shape, rhs.shape, dimension_numbers or _NHWC)
    return (lhs.ndim == 4 and given == expected and feature_group_count == 1
            and all(d == 1 for d in (lhs_dilation or (1, 1)))
            and all(d == 1 for d in (rhs_dilation or (1, 1))))


def conv_strided_as_matmul(lhs, rhs, window_strides, padding, lhs_dilation=None,
                           rhs_dilation=None, dimension_numbers=None, feature_group_count=1,
                           precision=None, **kwargs):
    """``lax.conv_general_dilated`` with the same arguments; strided NHWC/HWIO convolutions
    (no dilation, one feature group) are computed as im2col matrix products (module
    docstring), everything else by ``lax.conv_general_dilated`` itself."""
    strides = tuple(window_strides)
    if strides == (1, 1) or not _is_plain_nhwc(lhs, rhs, lhs_dilation, rhs_dilation,
                                               dimension_numbers, feature_group_count):
        return lax.conv_general_dilated(
            lhs, rhs, window_strides, padding, lhs_dilation=lhs_dilation,
            rhs_dilation=rhs_dilation, dimension_numbers=dimension_numbers,
            feature_group_count=feature_group_count, precision=precision, **kwargs)
    kh, kw, c_in, c_out = rhs.shape
    if isinstance(padding, str):
        padding = lax.padtype_to_pads(lhs.shape[1:3], (kh, kw), strides, padding)
    x = jnp.pad(lhs, ((0, 0), tuple(padding[0]), tuple(padding[1]), (0, 0)))
    sh, sw = strides
    ho, wo = (x.shape[1] - kh) // sh + 1, (x.shape[2] - kw) // sw + 1
    taps = [x[:, i:i + sh * (ho - 1) + 1:sh, j:j + sw * (wo - 1) + 1:sw]
            for i in range(kh) for j in range(kw)]  # (i, j, c) order = HWIO's flattening
    patches = taps[0] if len(taps) == 1 else jnp.concatenate(taps, axis=-1)
    return jnp.dot(patches, rhs.reshape(kh * kw * c_in, c_out), precision=precision,
                   preferred_element_type=kwargs.get("preferred_element_type"))


def conv_function(impl: str):
    """The ``conv_general_dilated`` for ``impl``: "xla" (XLA's convolutions), "matmul"
    (strided ones as matmuls) or "auto" (matmul on CPU, where it pays; XLA on GPU/TPU,
    whose convolution libraries have no such slow path)."""
    if impl not in IMPLS:
        raise ValueError(f"conv_impl={impl!r}; choose one of {IMPLS}")
    if impl == "auto":
        impl = "matmul" if jax.default_backend() == "cpu" else "xla"
    return conv_strided_as_matmul if impl == "matmul" else lax.conv_general_dilated
