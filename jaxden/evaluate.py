"""Result tables (markdown + JSON) and image grids shared by every method's evaluation.

A result set is ``scores[metric][method][sigma][image] -> float``; tables show the mean over
images per noise level, then one per-image table per metric.
"""

import json
import os

import jax
import numpy as np
from matplotlib.figure import Figure

Scores = dict[str, dict[str, dict[int, dict[str, float]]]]


def mean_table(scores: Scores, sigmas: list[int]) -> str:
    """Markdown table: one row per method, PSNR / SSIM (mean over images) per sigma."""
    methods = list(scores["psnr"])
    head = "| method | " + " | ".join(f"σ={s} PSNR / SSIM" for s in sigmas) + " |"
    rule = "|---|" + "---|" * len(sigmas)
    rows = [
        f"| {m} | "
        + " | ".join(
            f"{np.mean(list(scores['psnr'][m][s].values())):.2f} / "
            f"{np.mean(list(scores['ssim'][m][s].values())):.4f}"
            for s in sigmas
        )
        + " |"
        for m in methods
    ]
    return "\n".join([head, rule, *rows])


def per_image_table(scores: Scores, metric: str, sigma: int) -> str:
    methods = list(scores[metric])
    images = list(scores[metric][methods[0]][sigma])
    fmt = "{:.2f}" if metric == "psnr" else "{:.4f}"
    head = "| image | " + " | ".join(methods) + " |"
    rule = "|---|" + "---|" * len(methods)
    rows = [
        f"| {name} | " + " | ".join(fmt.format(scores[metric][m][sigma][name]) for m in methods)
        + " |"
        for name in images
    ]
    return "\n".join([head, rule, *rows])


def format_score(value, kind: str) -> str:
    """A PSNR (dB, 2 decimals), SSIM (4 decimals) or accuracy ("acc", a percentage); None is
    "—"."""
    if value is None:
        return "—"
    return f"{100 * value:.2f}%" if kind == "acc" else f"{value:.{2 if kind == 'psnr' else 4}f}"


def score_table(rows: dict[str, dict], sigmas) -> str:
    """Markdown: one row per name, "PSNR / SSIM / accuracy" per sigma."""
    head = "| model | " + " | ".join(f"σ={s} PSNR / SSIM / acc" for s in sigmas) + " |"
    lines = [head, "|---|" + "---|" * len(sigmas)]
    for name, by_sigma in rows.items():
        cells = [" / ".join(format_score(by_sigma[str(s)][k], k)
                            for k in ("psnr", "ssim", "acc")) for s in sigmas]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def write_results(outdir: str, header: str, scores: Scores, sigmas: list[int], extra: dict) -> str:
    """Write ``results.md`` and ``results.json`` in ``outdir`` (process 0 only); return the
    markdown."""
    parts = [header, "", "Mean over images:", "", mean_table(scores, sigmas), ""]
    for s in sigmas:
        parts += [f"PSNR (dB) per image, σ={s}:", "", per_image_table(scores, "psnr", s), ""]
    markdown = "\n".join(parts)
    payload = {**extra, "sigmas": sigmas,
               "scores": {m: {k: {str(s): v for s, v in d.items()} for k, d in by.items()}
                          for m, by in scores.items()}}
    save_markdown_and_json(outdir, markdown, payload)
    return markdown


def save_markdown_and_json(outdir: str, markdown: str, payload: dict) -> None:
    """``outdir/results.md`` and ``outdir/results.json``, written by process 0 only."""
    if jax.process_index() != 0:
        return
    os.makedirs(outdir, exist_ok=True)
    with open(os.path.join(outdir, "results.md"), "w") as f:
        f.write(markdown)
    with open(os.path.join(outdir, "results.json"), "w") as f:
        json.dump(payload, f, indent=2)


def save_grid(path: str, rows: list[tuple[str, list[tuple[str, np.ndarray]]]]) -> None:
    """A PNG grid: one row per image, one column per (title, HWC image in [0,1]) panel; written
    by process 0 only."""
    if jax.process_index() != 0:
        return
    ncol = max(len(panels) for _, panels in rows)
    fig, axes = subplots(len(rows), ncol, figsize=(2.6 * ncol, 2.6 * len(rows)), squeeze=False)
    for r, (name, panels) in enumerate(rows):
        for c, ax in enumerate(axes[r]):
            ax.axis("off")
            if c < len(panels):
                title, img = panels[c]
                img = np.clip(img, 0, 1)
                ax.imshow(img[..., 0] if img.shape[-1] == 1 else img, cmap="gray", vmin=0, vmax=1)
                ax.set_title(f"{name}: {title}" if c == 0 else title, fontsize=8)
    save_figure(fig, path)


def subplots(nrows: int = 1, ncols: int = 1, **options):
    """(figure, axes) as ``pyplot.subplots``, but a bare ``matplotlib.figure.Figure`` that
    pyplot never sees: no backend is selected or switched (a notebook's stays as it was), and
    nothing has to be closed. ``options``: ``figsize`` and ``Figure.subplots``' keywords."""
    fig = Figure(figsize=options.pop("figsize", None))
    return fig, fig.subplots(nrows, ncols, **options)


def save_figure(fig, path: str) -> None:
    """Lay out and write a figure as PNG at 110 dpi, creating the folder."""
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
