"""Twin of ``jaxden.methods.cdn``'s log-joint read-out and training loss (CE + DSM)."""

import torch

from benchmarks.torch_twins import tweedie

SIGMA_REF = 25.0 / 255.0


def make_log_joint(model, sigma, *, scale, sigma_floor):
    """y -> f(y): the model's K scores ("none"), or K class scores plus the energy e scaled
    by H W / max(sigma, floor) ("eps")."""

    def log_joint(y):
        out = model(y, sigma)
        if scale == "none":
            return out
        energy, classes = out[:, :1], out[:, 1:]
        hw = y.shape[2] * y.shape[3]
        return classes + energy * (hw / torch.clamp(sigma, min=sigma_floor))[:, None]

    return log_joint


def dsm_weights(kind, sigma):
    if kind == "mse":
        return torch.ones_like(sigma)
    return (SIGMA_REF / sigma) ** 2


def cdn_loss(model, clean, labels, noisy, sigma, *, loss_config, scale, sigma_floor):
    """(L, metrics) as ``jaxden.methods.cdn.cdn_loss``; ``loss_config`` has the attributes
    ce_weight, dsm_weight, conditional_dsm_weight and dsm_weighting."""
    lc = loss_config
    log_joint = make_log_joint(model, sigma, scale=scale, sigma_floor=sigma_floor)

    def dsm(denoised):
        per_image = ((denoised - clean) ** 2).sum(dim=(1, 2, 3))
        return (dsm_weights(lc.dsm_weighting, sigma) * per_image).mean()

    out, loss = {}, 0.0
    if lc.dsm_weight > 0:
        denoised, log_probs = tweedie.denoise_and_classify(log_joint, noisy, sigma)
        out["loss_dsm"] = dsm(denoised)
        loss = lc.dsm_weight * out["loss_dsm"]
    else:
        log_probs = tweedie.classify(log_joint, noisy)
    out["loss_ce"] = -torch.gather(log_probs, -1, labels[:, None]).mean()
    out["train_acc"] = (log_probs.argmax(-1) == labels).float().mean()
    loss = loss + lc.ce_weight * out["loss_ce"]
    if lc.conditional_dsm_weight > 0:
        out["loss_dsm_conditional"] = dsm(tweedie.denoise(log_joint, noisy, sigma, labels))
        loss = loss + lc.conditional_dsm_weight * out["loss_dsm_conditional"]
    return loss, out
