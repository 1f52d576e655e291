"""Twin of ``jaxden.solvers.tv``: weighted TV denoising by the same Chambolle-Pock
iteration (``jaxden.solvers._pdhg``, ratio 0.1, replicate or periodic forward differences),
on NCHW tensors.

    x* = argmin_x 0.5 * sum(weights * (x - y)^2) + lam * TV(x), TV per channel.

With ``tol`` the loop stops as ``jaxden.implicit.fixed_point``'s forward pass: each image at
relative fixed-point residual <= tol or after ``max_iter`` steps, the residual being that of
the last step of every ``check_every`` (pass jaxden's value), finished images left unchanged
(as ``jax.vmap`` of a ``lax.while_loop``). With ``tol=None`` it runs exactly
``max_iter`` steps, like ``mode="unrolled"``, without syncing on a residual. Gradients are
autograd through every step: the unrolled hypergradient (Rui et al., arXiv 2301.06081).
"""

import math

import torch

RATIO = 0.1  # jaxden.solvers.tv's tau / sigma balance
NORM_SQ = 8.0  # ||D||^2 <= 4 per differenced axis, two axes


def step_sizes(ratio=RATIO):
    size = (0.99 / NORM_SQ) ** 0.5
    return size * ratio, size / ratio


def diff(x, dim, boundary):
    """Forward difference along ``dim`` (replicate: last difference 0; or periodic)."""
    if boundary == "periodic":
        return torch.roll(x, -1, dim) - x
    d = torch.diff(x, dim=dim)
    return torch.cat([d, torch.zeros_like(x.narrow(dim, 0, 1))], dim=dim)


def diff_adjoint(p, dim, boundary):
    """(D^T p)_j = p_{j-1} - p_j (replicate: p_{n-1} unused)."""
    if boundary == "periodic":
        return torch.roll(p, 1, dim) - p
    inner = p.narrow(dim, 0, p.shape[dim] - 1)
    zero = torch.zeros_like(p.narrow(dim, 0, 1))
    return torch.cat([zero, inner], dim=dim) - torch.cat([inner, zero], dim=dim)


def gradient(x, boundary):
    """(2, *x.shape): differences along H then W (jaxden's axes 0, 1 of an HWC image)."""
    return torch.stack([diff(x, -2, boundary), diff(x, -1, boundary)])


def gradient_adjoint(p, boundary):
    return diff_adjoint(p[0], -2, boundary) + diff_adjoint(p[1], -1, boundary)


def project_l2_ball(p, radius):
    """Each vector (p[0][i], p[1][i]) onto the radius ball, as jaxden: the norm floored at the
    smallest normal number, times radius / max(radius, norm)."""
    sq = (p * p).sum(dim=0, keepdim=True)
    norm = torch.sqrt(torch.clamp(sq, min=torch.finfo(sq.dtype).tiny))
    return p * (radius / torch.maximum(radius, norm))


def project_linf_ball(p, radius):
    return torch.maximum(torch.minimum(p, radius), -radius)


def make_step(y, weights, lam, *, iso=True, boundary="replicate", ratio=RATIO):
    """One Chambolle-Pock step (x, p) -> (x+, p+) for y, weights (B, C, H, W), lam (B,)."""
    tau, sigma = step_sizes(ratio)
    project = project_l2_ball if iso else project_linf_ball
    radius = lam[None, :, None, None, None]

    def step(x, p):
        v = x - tau * gradient_adjoint(p, boundary)
        x_next = (v + tau * weights * y) / (1 + tau * weights)
        x_bar = 2 * x_next - x
        return x_next, project(p + sigma * gradient(x_bar, boundary), radius)

    return step


def _relative_change(x_next, p_next, x, p):
    diff_sq = ((x_next - x) ** 2).sum(dim=(1, 2, 3)) + ((p_next - p) ** 2).sum(dim=(0, 2, 3, 4))
    scale_sq = (x_next**2).sum(dim=(1, 2, 3)) + (p_next**2).sum(dim=(0, 2, 3, 4))
    tiny = torch.finfo(x.dtype).tiny
    return torch.sqrt(diff_sq) / torch.clamp(torch.sqrt(scale_sq), min=tiny)


def tv(y, lam, weights=None, *, iso=True, boundary="replicate", tol=1e-5, max_iter=5000,
       check_every=1, step_fn=None):
    """(x, residual (B,), iterations (B,)) for y (B, C, H, W) or (C, H, W), lam a scalar or
    (B,). ``step_fn`` optionally wraps the step (e.g. ``torch.compile``)."""
    single = y.ndim == 3
    if single:
        y = y[None]
        weights = None if weights is None else weights[None]
    batch = y.shape[0]
    weights = torch.ones_like(y) if weights is None else weights
    lam = torch.as_tensor(lam, dtype=y.dtype).expand(batch)
    step = make_step(y, weights, lam, iso=iso, boundary=boundary)
    step = step if step_fn is None else step_fn(step)
    x, p = y, torch.zeros((2, *y.shape), dtype=y.dtype)
    if tol is None:
        for _ in range(max_iter):
            x_prev, p_prev = x, p
            x, p = step(x, p)
        residual = _relative_change(x, p, x_prev, p_prev).detach()
        iterations = torch.full((batch,), max_iter)
    else:
        residual = torch.full((batch,), math.inf, dtype=y.dtype)
        iterations = torch.zeros(batch, dtype=torch.int64)
        while True:
            active = (residual > tol) & (iterations < max_iter)
            if not bool(active.any()):
                break
            # the active images have all made the same number of steps
            n = min(check_every, max_iter - int(iterations[active][0]))
            x_last, p_last = x, p
            for _ in range(n - 1):
                x_last, p_last = step(x_last, p_last)
            x_next, p_next = step(x_last, p_last)
            change = _relative_change(x_next, p_next, x_last, p_last)
            x = torch.where(active[:, None, None, None], x_next, x)
            p = torch.where(active[None, :, None, None, None], p_next, p)
            residual = torch.where(active, change.detach(), residual)
            iterations = iterations + n * active
    if single:
        return x[0], residual[0], iterations[0]
    return x, residual, iterations
