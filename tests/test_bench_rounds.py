"""``benchmarks/run.py --rounds 2`` end to end on its cheapest case (``tv_solve --quick``):
each framework runs twice, alternating, and the table gives the faster round's median on
each side (session 18; the machine's slow phases only add time). A smoke test of the
plumbing: the numbers only have to be consistent with each other."""

import os
import re
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_rounds_alternate_and_the_table_takes_the_fastest(tmp_path):
    out = tmp_path / "bench.md"
    proc = subprocess.run(
        [sys.executable, "benchmarks/run.py", "--quick", "--no-compile", "--cases", "tv_solve",
         "--rounds", "2", "--repeats", "3", "--out", str(out)],
        cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    # the progress lines: JAX, eager, JAX, eager
    order = re.findall(r"^\s*tv_solve (\S+)", proc.stdout, re.M)
    assert order == ["jax", "torch", "jax", "torch"], proc.stdout
    row = next(line for line in out.read_text().splitlines()  # the time table's, not memory's
               if line.startswith("| tv_solve"))
    cells = [c.strip() for c in row.strip().strip("|").split("|")]
    jax_ms, torch_ms, ratio, note = float(cells[2]), float(cells[3]), float(cells[5]), cells[7]
    rounds = re.search(r"rounds \(ms\): jax ([\d.]+)/([\d.]+), torch ([\d.]+)/([\d.]+)", note)
    assert rounds, note
    jax_rounds, torch_rounds = map(float, rounds.groups()[:2]), map(float, rounds.groups()[2:])
    assert jax_ms == min(jax_rounds) and torch_ms == min(torch_rounds), row
    assert abs(ratio - jax_ms / torch_ms) <= 0.01, row
    assert "Fastest of 2 round(s) (frameworks alternating)" in out.read_text()
