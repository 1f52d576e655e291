"""Twin of ``jaxden.tweedie``: classification and Tweedie denoising from log-joint scores,
by ``torch.autograd.grad`` (NCHW)."""

import torch


def classify(log_joint, y):
    """log p(c | y) = log_softmax_c f_c(y), shape (B, K)."""
    return torch.log_softmax(log_joint(y), dim=-1)


def score(log_joint, y, label=None, *, create_graph=True):
    """(grad_y log p(y) or grad_y log p(y, c), f(y)). ``create_graph`` keeps the graph of the
    gradient (needed to differentiate the denoiser again: DSM training, input gradients);
    False is plain inference."""
    x = y if y.requires_grad else y.detach().requires_grad_(True)
    with torch.enable_grad():
        f = log_joint(x)
        if label is None:
            per_sample = torch.logsumexp(f, dim=-1)
        else:
            per_sample = torch.gather(f, -1, label[:, None])[:, 0]
        (grad,) = torch.autograd.grad(per_sample.sum(), x, create_graph=create_graph)
    return grad, f


def denoise_and_classify(log_joint, y, sigma, label=None, *, create_graph=True):
    """(D(y) = y + sigma^2 grad_y logsumexp f (or D(y, c) given ``label``), log p(c | y));
    ``sigma`` a scalar or (B,)."""
    sigma = torch.as_tensor(sigma, dtype=y.dtype)
    if sigma.ndim:
        sigma = sigma[:, None, None, None]
    grad, f = score(log_joint, y, label, create_graph=create_graph)
    return y + sigma**2 * grad, torch.log_softmax(f, dim=-1)


def denoise(log_joint, y, sigma, label=None, *, create_graph=True):
    """D(y), or D(y, c) given ``label``."""
    return denoise_and_classify(log_joint, y, sigma, label, create_graph=create_graph)[0]
