"""Compare evaluated runs: the multi-task comparison table, gate study and stability report.

    python -m jaxden.compare --out docs/mtl runs/mtl/*

Each WORKDIR must have been trained and evaluated (``eval/results.json`` from ``eval.py``, and
``metrics.jsonl`` from ``train.py``). Runs that share a row label (e.g. "MTL gated") and
differ only in seed are grouped: tables show the mean over seeds, ± the standard deviation
(ddof 1) when there are several. Writes ``comparison.md``, ``gates.png`` (learned gate per
level, one bar per row) and ``stability.png`` (loss and gradient-norm curves of every seed of
every row with more than one seed).

Spikes: a logged window (``log_every_steps`` steps) after the first 10% of training counts as
a spike when its largest per-step value (``loss_max`` or ``grad_norm_max``) exceeds
``SPIKE_FACTOR`` times the median of the window means over the ``SPIKE_HISTORY`` previous
windows.
"""

import argparse
import json
import os
import sys
from collections import defaultdict

import numpy as np

from jaxden.evaluate import save_figure, subplots
from jaxden.methods.multitask_eval import gate_table, save_gate_plot
from jaxden.train.metrics_log import MetricsLog

SPIKE_FACTOR = 2.0
SPIKE_HISTORY = 20
WARMUP_FRACTION = 0.1


class CompareError(ValueError):
    """A workdir is not a trained and evaluated run."""


def load_run(workdir: str) -> dict:
    """{"workdir", "results" (eval/results.json), "log" (metrics.jsonl records)}."""
    path = os.path.join(workdir, "eval", "results.json")
    if not os.path.isfile(path):
        raise CompareError(f"{path} is missing: run `python eval.py --workdir {workdir}` first")
    with open(path) as f:
        results = json.load(f)
    if "label" not in results:
        raise CompareError(f"{path} is not a multi-task evaluation (config.method=multitask)")
    return {"workdir": workdir, "results": results, "log": MetricsLog(workdir).read()}


def count_spikes(log: list[dict], key: str) -> int:
    """Spikes of ``key`` ("loss" or "grad_norm") in a metrics log (module docstring)."""
    records = [r for r in log if r.get(key) is not None and r.get(f"{key}_max") is not None]
    if not records:
        return 0
    start = WARMUP_FRACTION * records[-1]["step"]
    means = np.array([r[key] for r in records])
    spikes = 0
    for i, r in enumerate(records):
        if r["step"] <= start or i < SPIKE_HISTORY:
            continue
        spikes += r[f"{key}_max"] > SPIKE_FACTOR * np.median(means[i - SPIKE_HISTORY:i])
    return int(spikes)


def _mean_std(values: list) -> tuple:
    values = [v for v in values if v is not None]
    if not values:
        return None, None
    return float(np.mean(values)), float(np.std(values, ddof=1)) if len(values) > 1 else None


def group_runs(runs: list[dict]) -> dict[str, list[dict]]:
    """Runs by row label; multi-task runs of one label but several lambdas are told apart by
    a " λ=..." suffix."""
    def lam(run):
        results = run["results"]
        return results["config"].get("cls_weight") if len(results["tasks"]) == 2 else None

    lambdas = defaultdict(set)
    for run in runs:
        lambdas[run["results"]["label"]].add(lam(run))
    groups = defaultdict(list)
    for run in runs:
        label = run["results"]["label"]
        suffix = f" λ={lam(run):g}" if len(lambdas[label]) > 1 else ""
        groups[label + suffix].append(run)
    return dict(groups)


def mean_scores(group: list[dict]) -> dict:
    """{sigma: {"psnr", "ssim", "acc"}: (mean, std)} over the group's seeds."""
    sigmas = group[0]["results"]["sigmas"]
    return {str(s): {k: _mean_std([r["results"]["scores"][str(s)][k] for r in group])
                     for k in ("psnr", "ssim", "acc")} for s in sigmas}


def _fmt(mean_std, kind) -> str:
    mean, std = mean_std
    if mean is None:
        return "—"
    scale, digits, unit = (100, 2, "%") if kind == "acc" else (1, 2 if kind == "psnr" else 4, "")
    text = f"{scale * mean:.{digits}f}{unit}"
    return text if std is None else f"{text} ± {scale * std:.{digits}f}"


def comparison_table(groups: dict[str, list[dict]]) -> str:
    sigmas = next(iter(groups.values()))[0]["results"]["sigmas"]
    lines = ["| row | seeds | params | " + " | ".join(
        f"σ={s} PSNR / SSIM / acc" for s in sigmas) + " |",
        "|---|---|---|" + "---|" * len(sigmas)]
    for label, group in groups.items():
        scores = mean_scores(group)
        cells = [" / ".join(_fmt(scores[str(s)][k], k) for k in ("psnr", "ssim", "acc"))
                 for s in sigmas]
        params = group[0]["results"].get("params")
        lines.append(f"| {label} | {len(group)} | {params:,} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def modulation_summary(groups: dict[str, list[dict]]) -> str:
    """Per gated row: the change in PSNR and accuracy when one level's gate is scaled, mean
    over seeds, relative to the unmodulated model."""
    parts = []
    for label, group in groups.items():
        if "modulation" not in group[0]["results"]:
            continue
        sigma = group[0]["results"]["config"]["eval"]["modulation_sigma"]
        lines = [f"| {label}, σ={sigma} | ΔPSNR (dB) | Δaccuracy (points) |", "|---|---|---|"]
        for name in group[0]["results"]["modulation"]:
            if name == "all gates x1":
                continue
            cells = []
            for k, scale in (("psnr", 1), ("acc", 100)):
                pairs = [(r["results"]["modulation"][name][k],
                          r["results"]["modulation"]["all gates x1"][k]) for r in group]
                cells.append("—" if pairs[0][0] is None else
                             f"{scale * np.mean([a - b for a, b in pairs]):+.2f}")
            lines.append(f"| {name} | {cells[0]} | {cells[1]} |")
        base = _mean_std([r["results"]["modulation"]["all gates x1"]["psnr"] for r in group])
        acc = _mean_std([r["results"]["modulation"]["all gates x1"]["acc"] for r in group])
        n = min(group[0]["results"]["num_examples"],
                group[0]["results"]["config"]["eval"]["modulation_examples"])
        parts += [f"Unmodulated, on the first {n} test images: PSNR {_fmt(base, 'psnr')} dB, "
                  f"accuracy {_fmt(acc, 'acc')}.", "", "\n".join(lines), ""]
    return "\n".join(parts)


def stability_table(groups: dict[str, list[dict]], sigma: int) -> str:
    lines = [f"| row | seed | loss spikes | grad-norm spikes | max grad norm | final loss | "
             f"σ={sigma} PSNR | σ={sigma} acc |", "|---|---|---|---|---|---|---|---|"]
    for label, group in groups.items():
        if len(group) < 2:
            continue
        for r in group:
            log, s = r["log"], r["results"]["scores"][str(sigma)]
            max_grad = max((x.get("grad_norm_max") or 0.0) for x in log) if log else None
            lines.append(
                f"| {label} | {r['results']['seed']} | {count_spikes(log, 'loss')} | "
                f"{count_spikes(log, 'grad_norm')} | "
                f"{'—' if max_grad is None else f'{max_grad:.3g}'} | "
                f"{log[-1]['loss']:.4g} | {_fmt((s['psnr'], None), 'psnr')} | "
                f"{_fmt((s['acc'], None), 'acc')} |")
        scores = mean_scores(group)[str(sigma)]
        lines.append(f"| {label} | spread (± std) | | | | | {_fmt(scores['psnr'], 'psnr')} | "
                     f"{_fmt(scores['acc'], 'acc')} |")
    return "\n".join(lines)


def save_stability_plot(path: str, groups: dict[str, list[dict]]) -> None:
    import matplotlib

    fig, axes = subplots(1, 2, figsize=(10, 3.4))
    colours = matplotlib.rcParams["axes.prop_cycle"].by_key()["color"]
    seeded = [(label, group) for label, group in groups.items() if len(group) > 1]
    for c, (label, group) in enumerate(seeded):
        for j, r in enumerate(group):
            steps = [x["step"] for x in r["log"] if x.get("loss") is not None]
            for ax, key in zip(axes, ("loss", "grad_norm")):
                ax.plot(steps, [x[key] for x in r["log"] if x.get("loss") is not None],
                        color=colours[c % len(colours)], lw=0.7, alpha=0.8,
                        label=label if j == 0 else None)
    for ax, key in zip(axes, ("training loss (window mean)", "gradient norm (window mean)")):
        ax.set_yscale("log")
        ax.set_xlabel("step")
        ax.set_title(key, fontsize=9)
        ax.legend(fontsize=7)
    save_figure(fig, path)


def compare(workdirs: list[str], out: str) -> str:
    """Write the comparison of ``workdirs`` in ``out``; return the markdown."""
    if not workdirs:
        raise CompareError("no workdirs given: pass the evaluated runs to compare")
    runs = [load_run(w) for w in workdirs]
    groups = group_runs(runs)
    os.makedirs(out, exist_ok=True)
    gates = {label: np.mean([r["results"]["gates"] for r in g], axis=0).tolist()
             for label, g in groups.items() if "gates" in g[0]["results"]}
    parts = ["# Multi-task comparison", "",
             "Runs: " + ", ".join(f"`{w}`" for w in workdirs), "",
             "Mean over seeds (± std over seeds where there are several); test split:", "",
             comparison_table(groups), ""]
    if gates:
        save_gate_plot(os.path.join(out, "gates.png"), gates,
                       "learned skip gates by level (mean over seeds)")
        per_run = {f"{label} (seed {r['results']['seed']})": r["results"]["gates"]
                   for label, g in groups.items() for r in g if "gates" in r["results"]}
        parts += ["## Learned gates", "", "Mean over seeds:", "", gate_table(gates), "",
                  "Per run:", "", gate_table(per_run), "", "## Gate modulation at inference", "",
                  modulation_summary(groups)]
    if any(len(g) > 1 for g in groups.values()):
        sigmas = runs[0]["results"]["sigmas"]
        sigma = 25 if 25 in sigmas else sigmas[-1]
        save_stability_plot(os.path.join(out, "stability.png"), groups)
        parts += ["## Training stability", "",
                  f"Spikes: window max > {SPIKE_FACTOR:g} x the median of the previous "
                  f"{SPIKE_HISTORY} window means, after the first {WARMUP_FRACTION:.0%} of "
                  "training.", "", stability_table(groups, sigma), ""]
    markdown = "\n".join(parts)
    with open(os.path.join(out, "comparison.md"), "w") as f:
        f.write(markdown)
    return markdown


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m jaxden.compare", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", required=True, help="folder for comparison.md and the plots")
    parser.add_argument("workdirs", nargs="+", help="trained and evaluated run folders")
    args = parser.parse_args(argv)
    try:
        print(compare(args.workdirs, args.out))
    except CompareError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
