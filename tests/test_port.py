"""PyTorch parity: ``jaxden.port`` weights give the PyTorch twins (``benchmarks/torch_twins``)
the same outputs and input gradients as jaxden, in float32.

Errors are max |a - b| / max |b| over the whole array (or per parameter for gradients).
"""

import inspect
import pathlib
import re

import numpy as np
import pytest

torch = pytest.importorskip(
    "torch", reason="the parity tests need PyTorch: `make test` installs it, or "
    "pip install torch==2.13.0 --index-url https://download.pytorch.org/whl/cpu")

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import ml_collections  # noqa: E402
from flax import nnx, traverse_util  # noqa: E402

from benchmarks.torch_twins import addunet as t_addunet  # noqa: E402
from benchmarks.torch_twins import cdn as t_cdn  # noqa: E402
from benchmarks.torch_twins import dlwnet as t_dlwnet  # noqa: E402
from benchmarks.torch_twins import energy as t_energy  # noqa: E402
from benchmarks.torch_twins import tv as t_tv  # noqa: E402
from benchmarks.torch_twins import tweedie as t_tweedie  # noqa: E402
from jaxden import implicit, port, solvers, tweedie  # noqa: E402
from jaxden.methods import cdn  # noqa: E402
from jaxden.models import AddUNet, DLWNet, GradResNet  # noqa: E402

TOL = 1e-5


def rel(a, b) -> float:
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return float(np.max(np.abs(a - b)) / np.max(np.abs(b)))


def nchw(x) -> torch.Tensor:
    return torch.tensor(np.transpose(np.asarray(x), (0, 3, 1, 2)))


def nhwc(t: torch.Tensor) -> np.ndarray:
    return t.detach().numpy().transpose(0, 2, 3, 1)


def randomize(model: nnx.Module, seed: int, scale: float = 0.3) -> None:
    """Every parameter random (zero biases and equal gates would hide layout mistakes); NumPy's
    generator, which costs no compilation."""
    state = nnx.state(model, nnx.Param)
    leaves, treedef = jax.tree.flatten(state)
    rng = np.random.default_rng(seed)
    nnx.update(model, jax.tree.unflatten(treedef, [
        jnp.asarray(scale * rng.standard_normal(leaf.shape), leaf.dtype) for leaf in leaves]))


def twin_of(model: nnx.Module, twin: torch.nn.Module) -> torch.nn.Module:
    twin.load_state_dict({k: torch.from_numpy(v) for k, v in port.to_state_dict(model).items()})
    return twin


def jax_value_and_input_grad(fn, model, *args):
    """fn(model, *args) and the gradient of sum(fn * r) in args[0], r fixed random."""
    graphdef, state = nnx.split(model)

    @jax.jit
    def run(state, y, r, *rest):
        out, vjp = jax.vjp(lambda y: fn(nnx.merge(graphdef, state), y, *rest), y)
        return out, vjp(r)[0]

    out_shape = jax.eval_shape(lambda *a: fn(nnx.merge(graphdef, state), *a), *args)
    r = np.random.default_rng(7).standard_normal(out_shape.shape).astype(out_shape.dtype)
    out, grad = run(state, args[0], r, *args[1:])
    return np.asarray(out), np.asarray(grad), np.asarray(r)


def torch_value_and_input_grad(fn, y, r):
    y = y.clone().requires_grad_(True)
    out = fn(y)
    (out * r).sum().backward()
    return out.detach(), y.grad


def images(shape, seed=0):
    return np.random.default_rng(seed).uniform(0, 1, shape).astype(np.float32)


ADDUNET_CASES = {
    "gated_scalar": dict(skip="gated", gate="scalar", gate_init=0.7),
    "gated_channel_group_gelu": dict(skip="gated", gate="channel", norm="group",
                                     activation="gelu", width=8),
    "add": dict(skip="add", kernel_sizes=(3, 5)),
    "concat": dict(skip="concat"),
    "none_direct": dict(skip="none", residual=False, out_channels=2),
    "gated_fixed_resolution": dict(skip="gated", fixed_resolution=True, levels=3),
}


@pytest.mark.parametrize("case", list(ADDUNET_CASES))
def test_addunet_parity(case):
    kwargs = dict(width=4, levels=2, convs_per_block=1) | ADDUNET_CASES[case]
    model = AddUNet(1, rngs=nnx.Rngs(0), **kwargs)
    twin = t_addunet.AddUNet(1, **kwargs)
    if kwargs["skip"] == "gated":  # the same initial gates, before randomising
        np.testing.assert_allclose(twin.beta.detach().numpy(), np.asarray(model.beta[...]),
                                   rtol=1e-7)
    randomize(model, seed=1)
    twin = twin_of(model, twin)
    y = images((2, 10, 13, 1))  # reflect-padded to 12 x 16 in the standard variant
    out, grad, r = jax_value_and_input_grad(lambda m, y: m(y), model, jnp.asarray(y))
    t_out, t_grad = torch_value_and_input_grad(twin, nchw(y), nchw(r))
    assert out.shape == nhwc(t_out).shape
    assert rel(nhwc(t_out), out) <= TOL
    assert rel(nhwc(t_grad), grad) <= TOL


def _energy_pair(conv_impl="matmul", num_classes=4, widths=(4, 8)):
    kwargs = dict(num_classes=num_classes, widths=widths, blocks_per_stage=1, groups=2,
                  sigma_conditioning=True)
    model = GradResNet(1, conv_impl=conv_impl, rngs=nnx.Rngs(0), **kwargs)
    randomize(model, seed=2)
    return model, twin_of(model, t_energy.GradResNet(1, **kwargs))


# H = 9 pads (1, 1) and W = 10 pads (0, 1) for the stride-2 3x3 "SAME" convs
Y_SHAPE = (3, 9, 10, 1)
SIGMA = np.array([0.1, 0.3, 0.6], np.float32)
LABELS = np.array([0, 2, 1])


@pytest.mark.parametrize("conv_impl", ["matmul", "xla"])
def test_energy_logits_parity(conv_impl):
    model, twin = _energy_pair(conv_impl)
    y, sigma = images(Y_SHAPE), jnp.asarray(SIGMA)
    out, grad, r = jax_value_and_input_grad(lambda m, y: m(y, sigma), model, jnp.asarray(y))
    t_out, t_grad = torch_value_and_input_grad(lambda y: twin(y, torch.from_numpy(SIGMA)),
                                               nchw(y), torch.tensor(r))
    assert rel(t_out.numpy(), out) <= TOL
    assert rel(nhwc(t_grad), grad) <= TOL


@pytest.mark.parametrize("label", [None, LABELS], ids=["marginal", "conditional"])
def test_tweedie_denoiser_parity(label):
    model, twin = _energy_pair()
    y, floor = images(Y_SHAPE, seed=3), 1 / 255

    def jax_denoise(m, y):
        log_joint = cdn.make_log_joint(m, jnp.asarray(SIGMA), scale="eps", sigma_floor=floor)
        return tweedie.denoise(log_joint, y, jnp.asarray(SIGMA),
                               None if label is None else jnp.asarray(label))

    out, grad, r = jax_value_and_input_grad(jax_denoise, model, jnp.asarray(y))
    t_sigma = torch.from_numpy(SIGMA)
    log_joint = t_cdn.make_log_joint(twin, t_sigma, scale="eps", sigma_floor=floor)
    t_label = None if label is None else torch.from_numpy(label)
    t_out, t_grad = torch_value_and_input_grad(
        lambda y: t_tweedie.denoise(log_joint, y, t_sigma, t_label), nchw(y), nchw(r))
    assert rel(nhwc(t_out), out) <= TOL
    assert rel(nhwc(t_grad), grad) <= TOL


def _loss_and_grads(model, twin, scale, dtype, conditional_dsm_weight=0.05):
    """(jaxden loss, twin loss, jaxden grads, twin grads as an nnx.State) of the CE + DSM
    (+ conditional DSM) loss of ``jaxden.methods.cdn`` and its twin, same weights and batch."""
    clean = images(Y_SHAPE, seed=4).astype(dtype)
    sigma = SIGMA.astype(dtype)
    noisy = (clean + sigma[:, None, None, None]
             * np.random.default_rng(5).standard_normal(Y_SHAPE)).astype(dtype)
    lc = ml_collections.ConfigDict(dict(ce_weight=1.0, dsm_weight=0.1, dsm_weighting="score",
                                        conditional_dsm_weight=conditional_dsm_weight))
    graphdef, params, rest = nnx.split(model, nnx.Param, ...)

    @jax.jit
    def jax_loss(params):
        m = nnx.merge(graphdef, params, rest)
        return cdn.cdn_loss(m, jnp.asarray(clean), jnp.asarray(LABELS), jnp.asarray(noisy),
                            jnp.asarray(sigma), loss_config=lc, scale=scale,
                            sigma_floor=1 / 255)[0]

    loss, grads = jax.value_and_grad(jax_loss)(params)
    t_loss, _ = t_cdn.cdn_loss(twin, nchw(clean), torch.from_numpy(LABELS), nchw(noisy),
                               torch.from_numpy(sigma), loss_config=lc, scale=scale,
                               sigma_floor=1 / 255)
    t_loss.backward()
    t_grads = port.from_state_dict(model, {k: p.grad for k, p in twin.named_parameters()})
    return float(loss), t_loss.item(), grads, t_grads


def _gradient_errors(grads, t_grads):
    flat = traverse_util.flatten_dict(nnx.to_pure_dict(grads))
    t_flat = traverse_util.flatten_dict(nnx.to_pure_dict(t_grads))
    return {path: rel(t_flat[path], g) for path, g in flat.items() if np.any(np.asarray(g))}


def test_dsm_loss_and_parameter_gradients_parity():
    """The DSM training loss (a double backprop) and its gradient in every parameter, float32,
    with the network's outputs read as the log-joint (``log_joint_scale="none"``)."""
    model, twin = _energy_pair(num_classes=3)
    loss, t_loss, grads, t_grads = _loss_and_grads(model, twin, "none", np.float32)
    assert rel(t_loss, loss) <= TOL
    errors = _gradient_errors(grads, t_grads)
    assert max(errors.values()) <= TOL, errors


def test_dsm_eps_readout_parity_float64():
    """The default "eps" read-out, f = h + e H W / sigma, in float64. In float32 both
    frameworks round f (about 1e3 here) to 1e-4 and its parameter gradients differ by about
    1e-4 relative (measured), the conditioning the ``jaxden.methods.cdn`` docstring notes,
    not a mismatch: in float64 they agree to 1e-10. One stage keeps the compile short (the
    strided stages are checked in float32 above)."""
    with jax.enable_x64(True):
        model, twin = _energy_pair(widths=(4,))
        nnx.update(model, jax.tree.map(lambda a: a.astype(jnp.float64), nnx.state(model)))
        loss, t_loss, grads, t_grads = _loss_and_grads(model, twin.double(), "eps",
                                                       np.float64, conditional_dsm_weight=0)
        assert rel(t_loss, loss) <= 1e-12
        errors = _gradient_errors(grads, t_grads)
        assert max(errors.values()) <= 1e-8, errors


def test_dlwnet_parity():
    model = DLWNet(2, depth=3, features=4, rngs=nnx.Rngs(0))
    randomize(model, seed=6)
    twin = twin_of(model, t_dlwnet.DLWNet(2, depth=3, features=4))
    y = images((2, 8, 7, 2))
    out, grad, r = jax_value_and_input_grad(lambda m, y: m(y), model, jnp.asarray(y))
    t_out, t_grad = torch_value_and_input_grad(twin, nchw(y), nchw(r))
    assert rel(nhwc(t_out), out) <= TOL
    assert rel(nhwc(t_grad), grad) <= TOL


def _tv_problem():
    rng = np.random.default_rng(8)
    y = rng.uniform(0, 1, (2, 12, 11, 2)).astype(np.float32)
    weights = np.exp(0.5 * rng.standard_normal(y.shape)).astype(np.float32)
    return y, weights, np.array([0.1, 0.2], np.float32)


@pytest.mark.parametrize("iso,boundary", [(True, "replicate"), (False, "periodic")])
def test_tv_fixed_iterations_parity(iso, boundary):
    """K steps of the same iteration: the same x, and the same unrolled gradient in y and
    the weights (the DLW reference hypergradient)."""
    y, weights, lam = _tv_problem()
    k = 40

    @jax.jit
    def run(y, weights, r):
        def solve(y, weights):
            return solvers.tv(y, jnp.asarray(lam), weights, iso=iso, boundary=boundary,
                              max_iter=k, mode="unrolled")[0]
        x, vjp = jax.vjp(solve, y, weights)
        return x, vjp(r)

    r = images(y.shape, seed=9) - 0.5
    x, (g_y, g_w) = run(jnp.asarray(y), jnp.asarray(weights), jnp.asarray(r))
    t_y, t_w = nchw(y).requires_grad_(True), nchw(weights).requires_grad_(True)
    t_x, _, iterations = t_tv.tv(t_y, torch.from_numpy(lam), t_w, iso=iso, boundary=boundary,
                                 tol=None, max_iter=k)
    (t_x * nchw(r)).sum().backward()
    assert int(iterations[0]) == k
    assert rel(nhwc(t_x), x) <= TOL
    assert rel(nhwc(t_y.grad), g_y) <= TOL
    assert rel(nhwc(t_w.grad), g_w) <= TOL


def _check_every() -> int:
    """How often ``jaxden.implicit.fixed_point`` checks its residual (1 if it has no such
    option)."""
    option = inspect.signature(implicit.fixed_point).parameters.get("check_every")
    return 1 if option is None else option.default


def test_tv_tolerance_stop_parity():
    """Stopping at a residual tolerance: the same iteration counts per image and x."""
    y, weights, lam = _tv_problem()
    x, info = jax.jit(lambda y, w: solvers.tv(y, jnp.asarray(lam), w, tol=1e-3))(
        jnp.asarray(y), jnp.asarray(weights))
    t_x, residual, iterations = t_tv.tv(nchw(y), torch.from_numpy(lam), nchw(weights),
                                        tol=1e-3, max_iter=5000, check_every=_check_every())
    np.testing.assert_array_equal(iterations.numpy(), np.asarray(info.iterations))
    np.testing.assert_allclose(residual.numpy(), np.asarray(info.residual), rtol=1e-3)
    assert rel(nhwc(t_x), x) <= TOL


def _assert_trees_equal(a: nnx.State, b: nnx.State):
    fa = traverse_util.flatten_dict(nnx.to_pure_dict(a))
    fb = traverse_util.flatten_dict(nnx.to_pure_dict(b))
    assert fa.keys() == fb.keys()
    for path in fa:
        assert fa[path].dtype == fb[path].dtype
        np.testing.assert_array_equal(np.asarray(fa[path]), np.asarray(fb[path]), str(path))


@pytest.mark.parametrize("which", ["addunet", "gradresnet"])
def test_round_trips_are_exact(which):
    if which == "addunet":
        kwargs = dict(width=8, levels=2, convs_per_block=1, skip="gated", gate="channel",
                      norm="group")
        model, twin = AddUNet(1, rngs=nnx.Rngs(0), **kwargs), t_addunet.AddUNet(1, **kwargs)
        fresh = AddUNet(1, rngs=nnx.Rngs(1), **kwargs)
    else:
        model, twin = _energy_pair()
        fresh = GradResNet(1, num_classes=4, widths=(4, 8), blocks_per_stage=1, groups=2,
                           sigma_conditioning=True, rngs=nnx.Rngs(1))
    randomize(model, seed=10)
    twin_of(model, twin)  # jaxden -> torch
    port.load_state_dict(fresh, twin.state_dict())  # torch -> jaxden, in place
    _assert_trees_equal(nnx.state(fresh, nnx.Param), nnx.state(model, nnx.Param))
    again = port.to_state_dict(fresh)  # -> torch again
    assert again.keys() == twin.state_dict().keys()
    for name, value in twin.state_dict().items():
        np.testing.assert_array_equal(again[name], value.numpy(), name)


def test_generic_layers_transpose_kernel_batchnorm_linear():
    """Layers jaxden's models do not use yet: ConvTranspose(transpose_kernel=True),
    BatchNorm running statistics (inference mode), Linear."""

    class Net(nnx.Module):
        def __init__(self, rngs):
            self.up = nnx.ConvTranspose(2, 3, (3, 3), strides=(2, 2), padding="VALID",
                                        transpose_kernel=True, rngs=rngs)
            self.bn = nnx.BatchNorm(3, use_running_average=True, rngs=rngs)
            self.fc = nnx.Linear(3, 5, rngs=rngs)

        def __call__(self, x):
            return self.fc(jnp.mean(self.bn(self.up(x)), axis=(1, 2)))

    class TorchNet(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.up = torch.nn.ConvTranspose2d(2, 3, 3, stride=2)
            self.bn = torch.nn.BatchNorm2d(3, eps=1e-5)
            self.fc = torch.nn.Linear(3, 5)

        def forward(self, x):
            return self.fc(self.bn(self.up(x)).mean(dim=(2, 3)))

    model = Net(nnx.Rngs(0))
    randomize(model, seed=11)
    stats = nnx.state(model, nnx.BatchStat)
    nnx.update(model, jax.tree.map(lambda s: s + jnp.asarray([0.1, 0.5, 2.0]), stats))
    twin = twin_of(model, TorchNet()).eval()
    x = images((2, 5, 4, 2))
    out = np.asarray(model(jnp.asarray(x)))
    assert rel(twin(nchw(x)).detach().numpy(), out) <= TOL
    fresh = Net(nnx.Rngs(1))
    port.load_state_dict(fresh, twin.state_dict())
    _assert_trees_equal(nnx.state(fresh), nnx.state(model))


def test_mismatched_state_dicts_are_refused():
    kwargs = dict(width=4, levels=2, convs_per_block=1)
    model = AddUNet(1, rngs=nnx.Rngs(0), **kwargs)
    sd = port.to_state_dict(model)
    with pytest.raises(KeyError, match="missing .'beta'."):
        port.from_state_dict(model, {k: v for k, v in sd.items() if k != "beta"})
    with pytest.raises(KeyError, match="unexpected .'extra.weight'."):
        port.from_state_dict(model, sd | {"extra.weight": np.zeros(1)})
    bad = sd | {"stem.weight": np.zeros((4, 1, 5, 5), np.float32)}
    with pytest.raises(ValueError, match=re.escape("stem.weight: shape (4, 1, 5, 5)")):
        port.from_state_dict(model, bad)
    partial = port.from_state_dict(model, {"beta": np.array([3.0, 4.0])}, strict=False)
    np.testing.assert_array_equal(np.asarray(partial["beta"][...]), [3.0, 4.0])


def test_jaxden_does_not_import_torch():
    root = pathlib.Path(__file__).resolve().parents[1] / "jaxden"
    offenders = [str(p) for p in root.rglob("*.py")
                 if re.search(r"^\s*(import|from)\s+torch\b", p.read_text(), re.M)]
    assert not offenders
