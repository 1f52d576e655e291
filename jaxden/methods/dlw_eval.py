"""Evaluation of a DLW weight net (Rui et al., arXiv 2301.06081): for each noise type and each
lower-level model, source or unseen target, the PSNR / SSIM of the noisy image, of the
unweighted model, of a hand-made weighting (``robust_weights``) and of the DLW-weighted
model, on centre crops of held-out photos; and figures of the weight maps."""

import os

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from jaxden import data, metrics, noise
from jaxden.evaluate import save_figure, save_markdown_and_json, subplots
from jaxden.methods.denoise import _crop
from jaxden.methods.dlw import robust_weights, solve

WEIGHTINGS = ("unweighted", "hand-made", "DLW")


def _images(config) -> tuple[list[str], jax.Array]:
    images = _crop(data.load_images(config.eval.dataset, grayscale=config.data.grayscale),
                   config.eval.crop)
    shapes = {x.shape for _, x in images}
    if len(shapes) != 1:
        raise ValueError(f"config.eval.crop={config.eval.crop}: the evaluation images have "
                         f"different sizes {sorted(shapes)}; set --config.eval.crop to a size "
                         f"no larger than the smallest image")
    return [name for name, _ in images], jnp.stack([jnp.asarray(x) for _, x in images])


def _noisy(kind: str, clean, seed: int):
    """(noisy, mask of the entries hit by impulses, stripes or dead columns)."""
    key = jax.random.fold_in(jax.random.key(seed), sorted(noise.NOISE_TYPES).index(kind))
    noisy, info = noise.NOISE_TYPES[kind](key, clean, return_info=True)
    return noisy, np.asarray(info["mask"])


def _weight_split(w, mask) -> tuple[float, float]:
    """Mean weight on the corrupted entries and on the others of the same (image, channel)
    planes: how strongly a weighting singles out what the noise hit."""
    w = np.asarray(w)
    hit_planes = np.broadcast_to(mask.any(axis=(1, 2), keepdims=True), mask.shape)
    return float(w[mask].mean()), float(w[hit_planes & ~mask].mean())


def _scores(x, clean):
    x = jnp.clip(x, 0, 1)
    return (float(jnp.mean(metrics.psnr_jit(x, clean))),
            float(jnp.mean(metrics.ssim_jit(x, clean))))


def evaluate_dlw(model, config, workdir: str, step: int) -> str:
    """Writes ``workdir/eval/results.md``, ``results.json`` and ``weights.png``; returns the
    markdown."""
    e, d = config.eval, config.dlw
    names, clean = _images(config)
    graphdef, state = nnx.split(model)
    weight_net = jax.jit(lambda s, y: nnx.merge(graphdef, s)(y))
    solve_jit = jax.jit(lambda name, y, w: solve(name, y, w, d.lam, tol=e.tol,
                                                 max_iter=e.max_iter), static_argnums=0)
    models = [(m, "source") for m in d.sources] + [(m, "unseen") for m in d.targets
                                                    if m not in d.sources]
    rows, figure_rows, solver_stats, splits = [], [], [], {}
    for kind in e.noise_types:
        noisy, mask = _noisy(kind, clean, e.seed)
        weights = {"unweighted": None, "hand-made": robust_weights(noisy),
                   "DLW": weight_net(state, noisy)}
        if mask.any():
            splits[kind] = {w: _weight_split(weights[w], mask) for w in ("hand-made", "DLW")}
        noisy_scores = _scores(noisy, clean)
        for m, role in models:
            cells = {"noisy": noisy_scores}
            for w_name, w in weights.items():
                x, info = solve_jit(m, noisy, w)
                cells[w_name] = _scores(x, clean)
                solver_stats.append((kind, m, w_name, float(jnp.max(info.residual)),
                                     int(jnp.max(info.iterations))))
                if w_name == "DLW" and m == d.sources[0]:
                    figure_rows.append((kind, noisy, weights, x))
            rows.append({"noise": kind, "model": m, "role": role, "scores": cells})
        print(f"dlw eval: {kind} done", flush=True)

    columns = ["noisy", *WEIGHTINGS]
    lines = [f"# DLW ({config.model.name}), checkpoint step {step}", "",
             f"{len(names)} images of `{e.dataset}` ({', '.join(names)}), centre crops "
             f"{e.crop or 'none'}, {'gray' if config.data.grayscale else 'RGB'}; noise of each "
             f"type with the DLW authors' parameter ranges, seed {e.seed}. Lower levels solved "
             f"to relative residual {e.tol:g} (at most {e.max_iter} iterations). PSNR (dB, "
             f"data range 1) / SSIM (Gaussian window 11, σ 1.5). Sources: trained through; "
             f"unseen: never seen in training. Not comparable to published tables (other "
             f"images).", "",
             "| noise | model | " + " | ".join(columns) + " |",
             "|---|---|" + "---|" * len(columns)]
    for r in rows:
        cells = " | ".join(f"{r['scores'][c][0]:.2f} / {r['scores'][c][1]:.4f}" for c in columns)
        lines.append(f"| {r['noise']} | {r['model']} ({r['role']}) | {cells} |")
    if splits:
        lines += ["", "Mean weight on the entries the noise hit (impulses, stripes, dead "
                  "columns) / on the other entries of the same channels of the same images:",
                  "", "| noise | hand-made | DLW |", "|---|---|---|"]
        lines += [f"| {kind} | " + " | ".join(f"{hit:.3f} / {rest:.3f}" for hit, rest in
                                              split.values()) + " |"
                  for kind, split in splits.items()]
    worst = max(solver_stats, key=lambda s: s[3])
    lines += ["", f"Largest final solver residual: {worst[3]:.2e} ({worst[1]}, {worst[0]}, "
              f"{worst[2]}, {worst[4]} iterations). Weight maps (minimum over channels): "
              f"weights.png."]
    markdown = "\n".join(lines)
    outdir = os.path.join(workdir, "eval")
    save_markdown_and_json(outdir, markdown, {
        "step": step, "images": names, "rows": rows,
        "weight_on_hit_vs_rest": splits,
        "solver": [dict(zip(("noise", "model", "weighting", "residual", "iterations"), s))
                   for s in solver_stats]})
    if jax.process_index() == 0 and e.figure_images:
        _weight_figure(figure_rows, clean, e.figure_images, d.sources[0],
                       os.path.join(outdir, "weights.png"))
    return markdown


def _weight_figure(figure_rows, clean, n_images, model, path):
    """Per noise type and image: clean, noisy, hand-made W, DLW W, DLW-weighted solution.

    A weight map shows the minimum over channels: a corruption of one channel (a dead column
    in one band) shows there, where the channel mean can hide it (weight moved to the
    healthy channels of the same pixels raised it)."""
    n = min(n_images, len(clean))
    fig, axes = subplots(len(figure_rows) * n, 5, figsize=(11, 2.3 * len(figure_rows) * n),
                         squeeze=False)
    for r, (kind, noisy, weights, x) in enumerate(figure_rows):
        for i in range(n):
            row = axes[r * n + i]
            panels = [(clean[i], "clean", False), (noisy[i], f"{kind}", False),
                      (weights["hand-made"][i], "hand-made W (channel min)", True),
                      (weights["DLW"][i], "DLW W (channel min)", True),
                      (x[i], f"{model}, DLW W", False)]
            for ax, (img, title, is_weight) in zip(row, panels):
                img = np.asarray(img)
                if is_weight:
                    img = img.min(-1)
                    ax.imshow(img, cmap="magma", vmin=0,
                              vmax=max(float(np.percentile(img, 99)), 1e-6))
                else:
                    img = np.clip(img, 0, 1)
                    ax.imshow(img[..., 0] if img.shape[-1] == 1 else img, cmap="gray",
                              vmin=0, vmax=1)
                ax.set_title(title, fontsize=8)
                ax.axis("off")
    save_figure(fig, path)
