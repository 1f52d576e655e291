"""``benchmarks/scaling.py --quick`` end to end, as a user runs it: one train step, 1 and 2
simulated devices, its three markdown tables parsed back (a smoke test of the plumbing, so
XLA's optimisations are off to keep compiles short: the numbers only have to be there)."""

import os
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def tables(text: str) -> dict[str, list[list[str]]]:
    """{heading: body rows (cells)} of each ``### heading``'s markdown table."""
    out, heading = {}, None
    for line in text.splitlines():
        if line.startswith("### "):
            heading = line[4:].strip()
            out[heading] = []
        elif heading and line.startswith("|"):
            out[heading].append([c.strip() for c in line.strip().strip("|").split("|")])
    return {h: rows[2:] for h, rows in out.items()}  # drop the header and the |---| line


def number(cell: str) -> float:
    return float(cell.removeprefix(">="))


def test_quick_run_prints_matmul_batch_and_device_tables(tmp_path):
    out = tmp_path / "scaling.md"
    env = {**os.environ, "JAX_PLATFORMS": "cpu", "JAX_DISABLE_MOST_OPTIMIZATIONS": "1"}
    proc = subprocess.run(
        [sys.executable, "benchmarks/scaling.py", "--quick", "--cases", "energy_ce_step",
         "--devices", "1,2", "--batch-scales", "0.5,1", "--repeats", "2", "--threads", "1",
         "--out", str(out)],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    t = tables(out.read_text())
    assert list(t) == ["Matmul peak", "Throughput vs batch size",
                       "Throughput vs simulated device count"]

    (matmul,) = t["Matmul peak"]
    assert number(matmul[2]) > 0 and number(matmul[3]) > 0, matmul

    rows = t["Throughput vs batch size"]
    assert [(r[0], int(r[1])) for r in rows] == [("energy_ce_step", 4), ("energy_ce_step", 8)]
    for r in rows:
        ms, steps, examples, gflop, gflops, pct = map(number, r[3:9])
        assert min(ms, steps, examples, gflop, gflops, pct) > 0, r
        assert abs(examples - int(r[1]) * steps) <= 0.01 * examples + 0.1, r

    rows = t["Throughput vs simulated device count"]
    assert [(r[0], int(r[1]), int(r[2]), int(r[3])) for r in rows] == [
        ("energy_ce_step", 1, 8, 8), ("energy_ce_step", 2, 8, 4)]
    for r in rows:
        assert min(map(number, r[4:8])) > 0, r
