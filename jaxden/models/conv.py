"""Convolution layers in forms that XLA:CPU runs on its fast paths; the same functions and
parameters as XLA's and flax's (``tests/test_conv.py`` checks values and derivatives).

- ``conv_strided_as_matmul``: strided and 1x1 convolutions as im2col matrix products, for
  networks trained by double backpropagation (below), other unit-stride ones by
  ``conv2d_unit_stride``.
- ``ConvTranspose``: the U-Net's non-overlapping transposed convolution as one matmul.
- ``max_pool``: max-pooling as elementwise maxima of strided slices, its gradient a masked
  broadcast.
- ``conv3d_as_2d``: unit-stride 3-D convolutions as 2-D ones (DLWNet3D), through
  ``conv2d_unit_stride``, whose gradients of every order are forward convolutions, which run
  fast inside loops (the trainer's microbatches).

Each is chosen by an ``impl`` of "auto" (the rewrite on CPU only; XLA's own operation on
GPU/TPU, whose convolution libraries have none of these slow paths), "matmul" or "xla".
``benchmarks/profile_ops.py`` shows the slow paths; BENCHMARKS.md has the before/after times.

``conv_strided_as_matmul`` is a drop-in for ``lax.conv_general_dilated`` (pass it to
``nnx.Conv(conv_general_dilated=...)``). Unit-stride NHWC convolutions larger than 1x1 go
to ``conv2d_unit_stride``, other layouts to XLA unchanged. A strided or 1x1 one (e.g. a
stride-2 3x3 or 1x1 downsampling conv) is computed as im2col: the k*k strided slices of the
padded input are concatenated on the channel axis and multiplied by the (k*k*C_in, C_out)
kernel matrix.
This is the same linear map, so values and derivatives of every order agree with XLA's
convolution to rounding (float64 tests).

Why: the denoising-score-matching loss of a classification-denoising network (Thiry & Guth,
arXiv 2410.03505; ``jaxden.methods.cdn``) differentiates in the parameters through the input
gradient of the network. For a strided convolution the input gradient is an input-dilated
convolution, and the weight gradient of that (second order) is a reversed, dilated
convolution that XLA:CPU runs about 10x slower than the step's other weight gradients: on the
quick GradResNet, batch 32x28x28, two such ops took 58 of the 196 ms of a training step
(profiled on one core). As slices and a matmul, every derivative is again slices, pads and
matmuls. ``benchmarks/cdn_cost.py`` prints the step time with and without it.
"""

import functools

import jax
import jax.numpy as jnp
from flax import nnx
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
    (no dilation, one feature group) and 1x1 ones are computed as im2col matrix products
    (module docstring; a 1x1 convolution is one product, whose kernel gradient needs no
    transposed copy of the input: AddUNet's 1x1 head so took its step from 145.2 to
    142.3 ms, medians of 30 alternating steps, one-off script), other unit-stride ones by
    ``conv2d_unit_stride``, everything else by ``lax.conv_general_dilated`` itself."""
    strides = tuple(window_strides)
    if not _is_plain_nhwc(lhs, rhs, lhs_dilation, rhs_dilation, dimension_numbers,
                          feature_group_count):
        return lax.conv_general_dilated(
            lhs, rhs, window_strides, padding, lhs_dilation=lhs_dilation,
            rhs_dilation=rhs_dilation, dimension_numbers=dimension_numbers,
            feature_group_count=feature_group_count, precision=precision, **kwargs)
    kh, kw, c_in, c_out = rhs.shape
    if isinstance(padding, str):
        padding = lax.padtype_to_pads(lhs.shape[1:3], (kh, kw), strides, padding)
    if strides == (1, 1) and not (kh == kw == 1):
        return conv2d_unit_stride(lhs, rhs, tuple(tuple(p) for p in padding), precision,
                                  kwargs.get("preferred_element_type"))
    x = jnp.pad(lhs, ((0, 0), tuple(padding[0]), tuple(padding[1]), (0, 0)))
    sh, sw = strides
    ho, wo = (x.shape[1] - kh) // sh + 1, (x.shape[2] - kw) // sw + 1
    taps = [x[:, i:i + sh * (ho - 1) + 1:sh, j:j + sw * (wo - 1) + 1:sw]
            for i in range(kh) for j in range(kw)]  # (i, j, c) order = HWIO's flattening
    patches = taps[0] if len(taps) == 1 else jnp.concatenate(taps, axis=-1)
    return _dot_rows(patches, rhs.reshape(kh * kw * c_in, c_out), precision=precision,
                     preferred_element_type=kwargs.get("preferred_element_type"))


def _dot_rows(x, matrix, **kwargs):
    """``jnp.dot(x, matrix)`` for an NHWC ``x``, as the product of the (N * H * W, C) matrix.

    The same value; the difference is the kernel gradient, which autodiff then forms as a
    product of two matrices rather than a contraction over x's three leading axes, which
    XLA:CPU ran with a transposed copy of the output gradient: the U-Net's 32 -> 64
    upsampling (16 x 32 x 32 x 32 input) took 5.1-6.5 ms forward + backward against
    2.9 ms this way, the AddUNet step 147.5 against 142.9 ms (medians of 30 alternating
    steps in one process; 2 threads, one-off scripts).
    """
    n, h, w, c = x.shape
    rows = jnp.reshape(x, (n * h * w, c), out_sharding=_batch_sharding(x, 2))
    out = jnp.dot(rows, matrix, **kwargs)
    return jnp.reshape(out, (n, h, w, matrix.shape[1]), out_sharding=_batch_sharding(x, 4))


def _batch_sharding(x, ndim):
    """A sharding of rank ``ndim`` with x's leading (batch) axis sharding on the first axis
    (the rows of x's (N * H * W, C) reshape, or the batch of its reshape back): under an
    explicit mesh JAX does not infer it. None without one."""
    sharding = jax.typeof(x).sharding
    mesh = getattr(sharding, "mesh", None)
    if mesh is None or mesh.empty or not any(sharding.spec):
        return None
    return jax.sharding.NamedSharding(mesh, jax.P(sharding.spec[0], *(None,) * (ndim - 1)))


def _resolve(impl: str) -> str:
    """"matmul" or "xla" for ``impl`` ("auto": "matmul" on CPU); a clear error otherwise."""
    if impl not in IMPLS:
        raise ValueError(f"conv_impl={impl!r}; choose one of {IMPLS}")
    if impl == "auto":
        return "matmul" if jax.default_backend() == "cpu" else "xla"
    return impl


def conv_function(impl: str = "auto"):
    """The ``conv_general_dilated`` for 2-D convolutions and ``impl``: "xla" (XLA's
    convolutions), "matmul" (``conv_strided_as_matmul``: strided ones as matmuls, unit-stride
    ones by ``conv2d_unit_stride``) or "auto" (matmul on CPU, where it pays; XLA on GPU/TPU,
    whose convolution libraries have no such slow path)."""
    return conv_strided_as_matmul if _resolve(impl) == "matmul" else lax.conv_general_dilated


def conv3d_function(impl: str = "auto"):
    """The ``conv_general_dilated`` for 3-D convolutions: "matmul" (``conv3d_as_2d``),
    "xla", or "auto" (``conv3d_as_2d`` on CPU only, as for ``conv_function``)."""
    return conv3d_as_2d if _resolve(impl) == "matmul" else lax.conv_general_dilated


class ConvTranspose(nnx.ConvTranspose):
    """``nnx.ConvTranspose`` (same parameters, same function) whose non-overlapping case,
    kernel size = strides with "VALID" padding (the U-Net's 2x2, stride-2 upsampling), runs
    as one matrix product and a depth-to-space reshape on CPU.

    Each output pixel then comes from one input pixel: out[s*i + a, s*j + b] =
    x[i, j] @ K[s-1-a, s-1-b] + bias (``lax.conv_transpose`` without ``transpose_kernel``
    flips the window). XLA:CPU runs the weight gradient of ``lax.conv_transpose`` as an
    input-dilated convolution outside its fast convolution library: 100 of the 441 ms of an
    AddUNet training step (16 x 64 x 64, width 32; ``benchmarks/profile_ops.py``). As a matmul,
    every derivative is a matmul. ``impl`` is as in ``conv_function``: "auto" uses the matmul on
    CPU only; other cases (overlapping windows, dilation, masks, ``transpose_kernel``) always
    go to ``nnx.ConvTranspose``.
    """

    def __init__(self, *args, impl: str = "auto", **kwargs):
        super().__init__(*args, **kwargs)
        _resolve(impl)
        self.impl = impl

    def _as_matmul(self, x) -> bool:
        impl = _resolve(self.impl)
        kernel = tuple(self.kernel_size)
        return (impl == "matmul" and x.ndim == 4 and len(kernel) == 2
                and tuple(self.strides or (1, 1)) == kernel and self.padding == "VALID"
                and self.kernel_dilation in (None, 1, (1, 1)) and self.mask is None
                and not self.transpose_kernel)

    def __call__(self, inputs):
        if not self._as_matmul(inputs):
            return super().__call__(inputs)
        inputs, kernel, bias = self.promote_dtype(
            (inputs, self.kernel[...], self.bias[...] if self.bias is not None else None),
            dtype=self.dtype)
        (kh, kw), (b, h, w, _) = self.kernel_size, inputs.shape
        flipped = kernel[::-1, ::-1]  # (kh, kw, in, out) -> columns ordered (a, b, out)
        matrix = jnp.transpose(flipped, (2, 0, 1, 3)).reshape(kernel.shape[2], -1)
        y = _dot_rows(inputs, matrix, precision=self.precision,
                      preferred_element_type=self.preferred_element_type)
        # under an explicit batch sharding (``jax.make_mesh``) the reshapes keep the input's
        sharding = jax.typeof(inputs).sharding  # batch axis; JAX does not infer it
        y = jnp.reshape(y, (b, h, w, kh, kw, -1), out_sharding=sharding)
        y = jnp.reshape(y.transpose(0, 1, 3, 2, 4, 5), (b, h * kh, w * kw, -1),
                        out_sharding=sharding)
        return y if bias is None else y + bias


def max_pool(x, window: int = 2):
    """``nnx.max_pool(x, (window, window), strides=(window, window))`` for an NHWC ``x`` whose
    height and width are multiples of ``window``: the value as elementwise maxima of the
    window*window strided slices, the derivative by ``_max_pool_jvp``.

    The value is the same; the gradient differs only at ties (split equally between tied
    inputs here, given to one by ``reduce_window``). ``nnx.max_pool``'s gradient is XLA's
    select-and-scatter, which XLA:CPU runs through full-size index arrays (``iota``): 28 of
    441 ms of the AddUNet step in BENCHMARKS.md. Autodiff of the maxima chain was the next
    form: its gradient is four padded, interleaved copies with XLA's tie-splitting divisions,
    fused with the ReLU gradient into one 5.3 ms op per 16x64x64x32 step. (A reshape and
    ``jnp.max`` was the first try: with XLA's optimisations off, as in the tests, its gradient
    came out NaN.)
    """
    h, w = x.shape[1:3]
    if h % window or w % window:
        return nnx.max_pool(x, (window, window), strides=(window, window))
    return _max_pool(x, window)


def _windows(x, window):
    """(N, H, W, C) -> (N, H/window, window, W/window, window, C), a free reshape (under an
    explicit batch sharding the batch axis keeps it, as in ``ConvTranspose``)."""
    n, h, w, c = x.shape
    return jnp.reshape(x, (n, h // window, window, w // window, window, c),
                       out_sharding=jax.typeof(x).sharding)


@functools.partial(jax.custom_jvp, nondiff_argnums=(1,))
def _max_pool(x, window):
    slices = [x[:, i::window, j::window] for i in range(window) for j in range(window)]
    return functools.reduce(jnp.maximum, slices)


@_max_pool.defjvp
def _max_pool_jvp(window, primals, tangents):
    """Tangent: the mean of x's tangent over each window's maxima (one entry unless tied).
    It is linear in the tangent, so its transpose (the gradient) is one broadcast of the
    output cotangent, masked and divided, with no pads; a jvp (as in a double backprop)
    stays a product with a fixed mask."""
    (x,), (t,) = primals, tangents
    y = _max_pool(x, window)
    ties = sum((x[:, i::window, j::window] == y).astype(x.dtype)
               for i in range(window) for j in range(window))
    at_max = _windows(x, window) == y[:, :, None, :, None]
    y_dot = jnp.sum(jnp.where(at_max, _windows(t, window), 0), axis=(2, 4)) / ties
    return y, y_dot


def _conv_out_sharding(x, w):
    """The output sharding of an NHWC/HWIO convolution of x by w under an explicit mesh
    (``jax.make_mesh`` with explicit axes, as the trainer's): batch as x's, features as w's
    outputs, and replicated where the contracted axis (x's features, w's inputs) is sharded,
    e.g. the kernel gradient's sum over a sharded batch; None without a mesh."""
    x_sharding, w_sharding = jax.typeof(x).sharding, jax.typeof(w).sharding
    mesh = getattr(x_sharding, "mesh", None)
    if mesh is None or mesh.empty or not (any(x_sharding.spec) or any(w_sharding.spec)):
        return None
    x_spec = tuple(x_sharding.spec) + (None,) * (4 - len(x_sharding.spec))
    w_spec = tuple(w_sharding.spec) + (None,) * (4 - len(w_sharding.spec))
    return jax.sharding.NamedSharding(mesh, jax.P(x_spec[0], None, None, w_spec[3]))


@functools.partial(jax.custom_vjp, nondiff_argnums=(2, 3, 4))
def conv2d_unit_stride(x, w, padding, precision=None, preferred_element_type=None):
    """``lax.conv_general_dilated(x, w, (1, 1), padding)`` in NHWC/HWIO (``padding`` a pair of
    (low, high) pairs) whose input and kernel gradients are written as forward convolutions,
    by this function again, so that derivatives of every order (a double backprop) keep the
    form.

    The kernel gradient dW[a, b, i, o] = sum_{n, h, w} xpad[n, h + a, w + b, i] g[n, h, w, o]
    is the convolution of xpad, read as a batch of C_in one-channel images with N features,
    by g read as an (H_out, W_out) kernel from N to C_out features: the layout of a forward
    convolution. Why: in a while-loop body (``lax.scan``, e.g. the trainer's microbatches)
    XLA:CPU (jaxlib 0.10.2) left autodiff's kernel gradient in its transposed layout
    (dim_labels f01b_i01o->01bf) on a slow generic path: a 64 -> 64 3x3 convolution's
    gradient on 62 x 64 x 64 took 57.5 s in a 2-step scan, 0.66 s written this way; the input
    gradient (kernel dims "01oi") was slow in a loop too (one core: four of AddUNet's took
    0.5 s each in a 2-part loop, where its whole step takes 0.33 s). The input gradient is
    the full correlation of the output gradient with the flipped kernel, its in/out axes
    swapped. Both are computed by this function, so a double backprop (score matching)
    differentiates forward convolutions again: with autodiff's second-order forms instead,
    GradResNet's DSM step was 20% slower; this way its CE step in 2 microbatches takes
    25.7 ms against 268.9 ms with XLA's own convolutions, its DSM step 70.3 against 540 ms,
    and the whole-batch steps are unchanged (DSM: 83.6 against 85.2 ms, mean of the medians of
    three alternating runs; 2 threads). Values and derivatives agree with XLA's
    (``tests/test_conv.py``); reverse mode only.
    """
    return lax.conv_general_dilated(x, w, (1, 1), padding, dimension_numbers=_NHWC,
                                    precision=precision,
                                    preferred_element_type=preferred_element_type,
                                    out_sharding=_conv_out_sharding(x, w))


def _conv2d_fwd(x, w, padding, precision, preferred_element_type):
    return conv2d_unit_stride(x, w, padding, precision, preferred_element_type), (x, w)


def _conv2d_bwd(padding, precision, preferred_element_type, residuals, g):
    x, w = residuals
    (kh, kw), ((h0, h1), (w0, w1)) = w.shape[:2], padding
    g = g.astype(x.dtype)
    dx = conv2d_unit_stride(g, jnp.transpose(w[::-1, ::-1], (0, 1, 3, 2)),
                            ((kh - 1 - h0, kh - 1 - h1), (kw - 1 - w0, kw - 1 - w1)), precision)
    dw = conv2d_unit_stride(jnp.transpose(x, (3, 1, 2, 0)), jnp.transpose(g, (1, 2, 0, 3)),
                            padding, precision)
    return dx, jnp.transpose(dw, (1, 2, 0, 3)).astype(w.dtype)


conv2d_unit_stride.defvjp(_conv2d_fwd, _conv2d_bwd)


def _is_plain_ndhwc(lhs, rhs, strides, lhs_dilation, rhs_dilation, dimension_numbers,
                    feature_group_count) -> bool:
    dims = ("NDHWC", "DHWIO", "NDHWC")
    return (lhs.ndim == 5 and feature_group_count == 1 and tuple(strides) == (1, 1, 1)
            and lax.conv_dimension_numbers(lhs.shape, rhs.shape, dimension_numbers or dims)
            == lax.conv_dimension_numbers(lhs.shape, rhs.shape, dims)
            and all(d == 1 for d in (lhs_dilation or (1, 1, 1)))
            and all(d == 1 for d in (rhs_dilation or (1, 1, 1))))


def conv3d_as_2d(lhs, rhs, window_strides, padding, lhs_dilation=None, rhs_dilation=None,
                 dimension_numbers=None, feature_group_count=1, precision=None, **kwargs):
    """``lax.conv_general_dilated`` with the same arguments; unit-stride NDHWC/DHWIO 3-D
    convolutions (no dilation, one feature group) are computed as 2-D convolutions by
    ``conv2d_unit_stride``, 2-D ones as ``conv_strided_as_matmul`` computes them, everything
    else by ``lax.conv_general_dilated`` itself.

    A (1, kh, kw) kernel is a 2-D convolution of the B * D slices; a (kd, 1, 1) kernel a
    (kd, 1) 2-D convolution of the (D, H * W) planes; a general (kd, kh, kw) kernel the sum of
    kd 2-D convolutions of depth-shifted slices (with no more outputs than inputs: of all
    slices, the outputs shifted, which keeps one input for the backward pass). The same
    linear map (values and derivatives agree with XLA's 3-D convolution to rounding,
    ``tests/test_conv.py``). Why: XLA:CPU runs 2-D convolutions, and their gradients, through
    its fast convolution libraries and 3-D ones through a generic path; this is the band-aware
    weight network of DLW (``jaxden.models.DLWNet3D``, separable (1, 3, 3) and (3, 1, 1)
    kernels over band x H x W): its forward pass ran 3.7x, forward + backward 1.9x faster on
    2 x 31 x 64 x 64 (one core).
    """
    if lhs.ndim == 4:  # a 2-D one (DLWNet)
        return conv_strided_as_matmul(lhs, rhs, window_strides, padding, lhs_dilation,
                                      rhs_dilation, dimension_numbers, feature_group_count,
                                      precision, **kwargs)
    if not _is_plain_ndhwc(lhs, rhs, window_strides, lhs_dilation, rhs_dilation,
                           dimension_numbers, feature_group_count):
        return lax.conv_general_dilated(
            lhs, rhs, window_strides, padding, lhs_dilation=lhs_dilation,
            rhs_dilation=rhs_dilation, dimension_numbers=dimension_numbers,
            feature_group_count=feature_group_count, precision=precision, **kwargs)
    kd, kh, kw, c_in, c_out = rhs.shape
    b, d, h, w, _ = lhs.shape
    if isinstance(padding, str):
        padding = lax.padtype_to_pads(lhs.shape[1:4], (kd, kh, kw), (1, 1, 1), padding)
    (d0, d1), pad_h, pad_w = (tuple(p) for p in padding)
    def conv2d(x, w, padding):
        return conv2d_unit_stride(x, w, tuple(tuple(p) for p in padding), precision,
                                  kwargs.get("preferred_element_type"))

    if kh == kw == 1 and pad_h == pad_w == (0, 0):  # along the depth only
        out = conv2d(lhs.reshape(b, d, h * w, c_in), rhs.reshape(kd, 1, c_in, c_out),
                     padding=((d0, d1), (0, 0)))
        return out.reshape(b, out.shape[1], h, w, c_out)
    x = jnp.pad(lhs, ((0, 0), (d0, d1), (0, 0), (0, 0), (0, 0)))
    d_pad = x.shape[1]
    d_out = d_pad - kd + 1
    if c_out <= c_in:
        # convolve every padded slice with each depth tap and shift the (smaller) outputs:
        # the backward pass keeps one input, not kd shifted copies of it (DLWNet3D's last
        # conv, 64 -> 1 features: 0.57 GB less XLA temporary memory in the DLW step at
        # batch 10 x 31 x 64 x 64)
        planes = x.reshape(b * d_pad, h, w, c_in)
        out = None
        for a in range(kd):
            part = conv2d(planes, rhs[a], padding=(pad_h, pad_w))
            part = part.reshape(b, d_pad, *part.shape[1:])[:, a:a + d_out]
            out = part if out is None else out + part
        return out
    out = None
    for a in range(kd):
        part = conv2d(x[:, a:a + d_out].reshape(b * d_out, h, w, c_in), rhs[a],
                      padding=(pad_h, pad_w))
        out = part if out is None else out + part
    return out.reshape(b, d_out, *out.shape[1:])
