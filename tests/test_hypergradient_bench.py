"""``benchmarks/hypergradient.py`` end to end on a small grid (16x16, one problem, two forward
tolerances, K = 20 and 200, unrolled with and without remat): its rows, and its "at equal
accuracy" pairing as ``benchmarks/run.py`` reads it (``hypergradient_ratios``), recomputed
from the printed rows.
The timings only have to be consistent with each other; the memory figures are XLA's
compiled buffer sizes, which do not vary between runs."""

import os
import re
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from benchmarks.run import hypergradient_ratios  # noqa: E402

ROW = re.compile(r"^(implicit tol=\S+|unrolled(?:\+remat)? K=\d+)\s+(\d+)-(\d+)"
                 r"\s+([\d.]+)\s+([\d.]+)\s+([\d.e+-]+)$")


def test_small_grid_rows_and_equal_accuracy_pairs():
    proc = subprocess.run(
        [sys.executable, "benchmarks/hypergradient.py", "--size", "16", "--problems", "1",
         "--repeats", "1", "--rounds", "1", "--tols", "1e-2,1e-6", "--iterations", "20,200"],
        cwd=ROOT, capture_output=True, text=True, timeout=600,
        env=dict(os.environ, JAX_PLATFORMS="cpu"))
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    rows = {m.group(1): (int(m.group(2)), int(m.group(3)), float(m.group(4)),
                         float(m.group(5)), float(m.group(6)))
            for m in map(ROW.match, proc.stdout.splitlines()) if m}
    implicit = {k: v for k, v in rows.items() if k.startswith("implicit")}
    assert sorted(implicit) == sorted(
        f"implicit tol={tol},adj={adj}" for tol, adjs in
        (("1e-02", ("1e+00", "3e-01", "1e-01")), ("1e-06", ("1e-04", "3e-05", "1e-05")))
        for adj in adjs), proc.stdout
    assert rows["unrolled K=20"][:2] == (20, 20) and rows["unrolled K=200"][:2] == (200, 200)
    # remat: the same gradient (error) from fewer kept iterates
    for k in (20, 200):
        assert rows[f"unrolled+remat K={k}"][:2] == (k, k)
        assert rows[f"unrolled+remat K={k}"][4] == rows[f"unrolled K={k}"][4]
    assert rows["unrolled+remat K=200"][3] < rows["unrolled K=200"][3] / 5
    # the tighter tolerance takes more forward steps and gives a more exact gradient
    assert rows["implicit tol=1e-06,adj=1e-04"][0] > rows["implicit tol=1e-02,adj=1e+00"][0]
    assert rows["implicit tol=1e-06,adj=1e-04"][4] < 1e-3 < rows["implicit tol=1e-02,adj=1e+00"][4]
    # unrolled memory grows with K; implicit memory does not depend on the tolerance
    assert rows["unrolled K=200"][3] > 5 * rows["unrolled K=20"][3]
    assert len({v[3] for v in implicit.values()}) == 1
    pairs = hypergradient_ratios(proc.stdout)  # the plain unrolled rows only
    assert [k for k, *_ in pairs] == [20, 200], proc.stdout
    assert len(re.findall(r"^  unrolled\+remat K=\d+ \(err", proc.stdout, re.M)) == 2
    for k, match, time_ratio, memory_ratio in pairs:
        _, _, t_unrolled, m_unrolled, e_unrolled = rows[f"unrolled K={k}"]
        accurate = {name: v for name, v in implicit.items() if v[4] <= e_unrolled}
        # the fastest implicit row at least as accurate (times printed to 0.1 ms: ties allowed)
        assert match in accurate
        assert accurate[match][2] <= min(v[2] for v in accurate.values()) + 0.1
        # the printed ratios, within what the rows' rounding (0.1 ms, 0.01 MB) allows
        assert _within_rounding(time_ratio, t_unrolled, accurate[match][2], 0.05)
        assert _within_rounding(memory_ratio, m_unrolled, accurate[match][3], 0.005)


def _within_rounding(ratio, numerator, denominator, half_step):
    low = (numerator - half_step) / (denominator + half_step)
    high = (numerator + half_step) / max(denominator - half_step, 1e-9)
    return low * 0.99 - 0.5 <= ratio <= high * 1.01 + 0.5  # the ratio's own rounding
