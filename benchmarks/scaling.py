"""Throughput scaling of jaxden's main train steps on CPU (issue 9, deliverable 4).

    .venv/bin/python benchmarks/scaling.py [--quick] [--sizes full|quick|cifar] [--threads N]
                                           [--repeats R] [--cases NAME,...] [--devices 1,2,4,8]
                                           [--batch-scales 0.5,1,2,4] [--matmul-size 2048]
                                           [--out FILE.md]

Three tables, every number from a fresh subprocess pinned to the same first N cores of the
affinity mask (``os.sched_setaffinity``, which sizes XLA:CPU's thread pool), as
``benchmarks/run.py`` does:

1. Matmul peak: a jitted float32 ``jnp.dot`` of two square matrices (``--matmul-size``),
   2 n^3 FLOP per call over the median call time: the machine's attainable FLOP/s at N threads,
   measured in the same run.
2. Throughput vs batch size (``--batch-scales`` times the batch of run.py's ``SIZES`` entry,
   other shapes unchanged): median step time, steps/s, examples/s, and the achieved FLOP/s:
   XLA's own FLOP count of the compiled step (``jitted.lower(state, batch).compile()
   .cost_analysis()["flops"]``, the HLO cost model: convolutions count only taps that hit the
   image, not the padding) over the median step time, and that as a % of the matmul peak.
   XLA counts the body of a ``while`` loop once, whatever its trip count: for steps with loops
   (``dlw_hypergrad``: the TV solve to tolerance and the Krylov adjoint solve) the count, and the
   FLOP/s, are lower bounds, marked ">=".
3. Throughput vs simulated device count: ``JAX_NUM_CPU_DEVICES=N`` (N = ``--devices``), one
   subprocess each, the same global batch (the case's batch rounded up to a multiple of every N)
   sharded on the ``data`` mesh axis (``jaxden.train.mesh``), the parameters replicated.
   Simulated devices share the same physical cores: XLA runs their shards concurrently, so
   this weighs the cost of sharding (partitioned program, gradient all-reduce, per-device
   dispatch) against the cores that one device's intra-op threading leaves idle (on 2 cores,
   2-4 devices were 1.4-2.4x faster than one). Where the global batch is one of table 2's,
   its 1-device row is table 2's measurement.

Steps (each one ``jaxden.train.step.make_update_fn`` step with Adam, state donated, as the
trainer runs it; models, losses and data from ``benchmarks/run.py``'s ``train_parts``):
- ``addunet_train``: MSE(AddUNet(noisy), clean), gated skips.
- ``energy_ce_step``: the classification-denoising loss with CE only (``cdn.cdn_loss``).
- ``dsm_step``: the same with DSM (weight 0.1), a double backward.
- ``dlw_hypergrad``: the DLW upper-level loss (``dlw.bilevel_loss``: DLWNet weights, TV solve to
  tol 1e-4, implicit hypergradient), i.e. run.py's ``dlw_hypergrad`` plus the Adam update.

Timing: the step is compiled ahead (``lower(...).compile()``, which gives the FLOP count; the
"compile" note is its time, trace included), called once (which reuses that executable) and
twice more to warm up, then ``--repeats`` times, each call timed up to
``jax.block_until_ready`` on its whole output (new state and metrics); the tables give the
median. The matmul: 3 warm-up calls, then the median of max(``--repeats``, 5).
"""

import argparse
import json
import math
import os
import platform
import re
import statistics
import subprocess
import sys
import time

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), ".."))
sys.path.insert(0, ROOT)

from benchmarks.run import (SIZES, cpu_model, emit, group_of, last_error,  # noqa: E402
                            load_and_wall, parse_cases, pinned_run, shape_text, train_parts,
                            versions)

CASES = ("addunet_train", "energy_ce_step", "dsm_step", "dlw_hypergrad")


def hlo_loops(hlo_text: str) -> int:
    return len(re.findall(r"\bwhile\(", hlo_text))


def time_step(case: str, s: dict, repeats: int) -> dict:
    """Build, cost and time one step on all devices (batch sharded on ``data``)."""
    import jax
    import optax

    from jaxden.train import mesh as mesh_lib
    from jaxden.train.state import init_state
    from jaxden.train.step import make_update_fn

    mesh = mesh_lib.data_mesh()
    mesh_lib.check_batch_size(s["batch"], mesh)
    replicated = mesh_lib.replicated(mesh)
    model, loss_fn, local = train_parts(case, s)
    tx = optax.adam(1e-3)
    graphdef, state = init_state(model, tx)
    state = jax.device_put(state, replicated)
    update = make_update_fn(graphdef, loss_fn, tx, 0,
                            jax.tree.map(lambda x: x.sharding, state), replicated)
    batch = mesh_lib.global_batch(local, mesh_lib.batch_sharded(mesh))

    start = time.perf_counter()
    compiled = update.lower(state, batch).compile()
    compile_s = time.perf_counter() - start
    cost = compiled.cost_analysis()
    if isinstance(cost, (list, tuple)):  # older jax: one dict per executable
        cost = cost[0]
    loops = hlo_loops(compiled.as_text())

    start = time.perf_counter()
    state, metrics = jax.block_until_ready(update(state, batch))
    first_s = time.perf_counter() - start
    for _ in range(2):
        state, metrics = jax.block_until_ready(update(state, batch))
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        state, metrics = jax.block_until_ready(update(state, batch))
        times.append(time.perf_counter() - start)
    out = dict(case=case, batch=s["batch"], devices=jax.device_count(),
               flops=float(cost["flops"]), while_loops=loops, compile_s=compile_s,
               first_s=first_s, median_s=statistics.median(times), min_s=min(times))
    if "iterations_tv" in metrics:
        out["iterations"] = int(metrics["iterations_tv"])
    return out


def matmul_peak(n: int, repeats: int) -> dict:
    import jax
    import jax.numpy as jnp

    ka, kb = jax.random.split(jax.random.key(0))
    a = jax.random.normal(ka, (n, n), jnp.float32)
    b = jax.random.normal(kb, (n, n), jnp.float32)
    dot = jax.jit(jnp.dot)
    xla_flops = dot.lower(a, b).compile().cost_analysis()
    if isinstance(xla_flops, (list, tuple)):
        xla_flops = xla_flops[0]
    for _ in range(3):
        jax.block_until_ready(dot(a, b))
    times = []
    for _ in range(max(repeats, 5)):
        start = time.perf_counter()
        jax.block_until_ready(dot(a, b))
        times.append(time.perf_counter() - start)
    return dict(n=n, flops=2.0 * n ** 3, xla_flops=float(xla_flops["flops"]),
                median_s=statistics.median(times), calls=len(times))


def worker(args) -> None:
    import jax

    want = int(os.environ.get("JAX_NUM_CPU_DEVICES", "1"))
    if jax.device_count() != want:
        raise RuntimeError(f"asked for {want} CPU devices, got {jax.device_count()}")
    if args.worker == "matmul":
        print("RESULT " + json.dumps(matmul_peak(args.matmul_size, args.repeats)), flush=True)
        return
    base = SIZES[args.sizes][group_of(args.worker)]
    for b in (int(x) for x in args.batches.split(",")):
        print("RESULT " + json.dumps(time_step(args.worker, dict(base, batch=b), args.repeats)),
              flush=True)


# -------------------------------------------------------------------------------- parent

def run_worker(kind: str, args, devices: int = 1, batches=()) -> list[dict]:
    """RESULT dicts of one worker subprocess (or one {"error": ...})."""
    inherited = re.sub(r"--xla_force_host_platform_device_count=\S+", "",
                       os.environ.get("XLA_FLAGS", ""))
    env = dict(os.environ, JAX_PLATFORMS="cpu", JAX_NUM_CPU_DEVICES=str(devices),
               OMP_NUM_THREADS=str(args.threads),
               XLA_FLAGS=(inherited + " --xla_cpu_multi_thread_eigen=true").strip())
    command = [sys.executable, os.path.abspath(__file__), "--worker", kind,
               "--sizes", args.sizes, "--repeats", str(args.repeats),
               "--matmul-size", str(args.matmul_size),
               "--batches", ",".join(map(str, batches)) or "0"]
    try:
        proc = pinned_run(command, env, args)
    except subprocess.TimeoutExpired:
        return [{"error": f"timed out after {args.timeout} s"}]
    results = [json.loads(line[len("RESULT "):]) for line in proc.stdout.splitlines()
               if line.startswith("RESULT ")]
    if proc.returncode or not results:
        results.append({"error": last_error(proc.stderr)})
    return results


def batch_sizes(base: int, scales) -> list[int]:
    return sorted({max(1, round(base * x)) for x in scales})


def global_batch_for(base: int, devices) -> int:
    m = math.lcm(*devices)
    return m * max(1, math.ceil(base / m))


def matmul_table(mm: dict, args) -> list[str]:
    lines = ["### Matmul peak", "",
             "| operation | threads | median ms | GFLOP/s |", "|---|---:|---:|---:|"]
    if "error" in mm:
        return lines + [f"| float32 jnp.dot | {args.threads} | fails: {mm['error']} | - |"]
    n = mm["n"]
    return lines + [f"| float32 jnp.dot {n}x{n} @ {n}x{n} (2n^3 = {mm['flops'] / 1e9:.1f} "
                    f"GFLOP; XLA counts {mm['xla_flops'] / 1e9:.1f}) | {args.threads} | "
                    f"{1e3 * mm['median_s']:.1f} | {mm['flops'] / mm['median_s'] / 1e9:.1f} |"]


def batch_table(results: dict, peak, args) -> list[str]:
    lines = ["### Throughput vs batch size", "",
             f"One device, {args.threads} thread(s). GFLOP/step: XLA's count for the compiled "
             "step; '>=' where the step has while loops (XLA counts a loop body once).", "",
             "| case | batch | shape | median ms | steps/s | examples/s | GFLOP/step | "
             "GFLOP/s | % of matmul peak | notes |",
             "|---|---:|---|---:|---:|---:|---:|---:|---:|---|"]
    base = SIZES[args.sizes]
    for case, rows in results.items():
        for r in rows:
            if "error" in r:
                lines.append(f"| {case} | - | - | fails | - | - | - | - | - | {r['error']} |")
                continue
            t, ge = r["median_s"], ">=" if r["while_loops"] else ""
            gflops = r["flops"] / t / 1e9
            pct = f"{ge}{100 * gflops / peak:.1f}" if peak else "-"
            notes = [f"compile {r['compile_s']:.1f} s"]
            if r["while_loops"]:
                notes.append(f"{r['while_loops']} while loops")
            if "iterations" in r:
                notes.append(f"TV solve {r['iterations']} iterations")
            shape = shape_text(group_of(case), dict(base[group_of(case)], batch=r["batch"]))
            lines.append(f"| {case} | {r['batch']} | {shape} | {1e3 * t:.1f} | {1 / t:.2f} | "
                         f"{r['batch'] / t:.1f} | {ge}{r['flops'] / 1e9:.3f} | "
                         f"{ge}{gflops:.2f} | {pct} | {'; '.join(notes)} |")
    return lines


def device_table(results: dict, args) -> list[str]:
    lines = ["### Throughput vs simulated device count", "",
             f"`JAX_NUM_CPU_DEVICES=N`, one subprocess each, all on the same {args.threads} "
             "core(s): XLA runs the simulated devices' shards concurrently, so this weighs "
             "the cost of sharding the batch (partitioned program, gradient all-reduce, "
             "per-device dispatch) against the cores one device leaves idle. 1 device: table "
             "2's row where it has this batch.", "",
             "| case | devices | global batch | per device | median ms | steps/s | examples/s | "
             "time vs 1 device |", "|---|---:|---:|---:|---:|---:|---:|---:|"]
    for case, by_n in results.items():
        one = by_n.get(1)
        for n, r in by_n.items():
            if "error" in r:
                lines.append(f"| {case} | {n} | - | - | fails | - | - | {r['error']} |")
                continue
            t = r["median_s"]
            rel = (f"{t / one['median_s']:.2f}" if one is not None and "error" not in one
                   else "-")
            lines.append(f"| {case} | {n} | {r['batch']} | {r['batch'] // n} | {1e3 * t:.1f} | "
                         f"{1 / t:.2f} | {r['batch'] / t:.1f} | {rel} |")
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true",
                        help="tiny shapes, 1024 matmul, 3 repeats: a smoke run (= --sizes quick)")
    parser.add_argument("--sizes", choices=sorted(SIZES), default="full",
                        help="run.py's shape set the batch sizes scale")
    parser.add_argument("--threads", type=int, default=len(os.sched_getaffinity(0)),
                        help="pin every subprocess to the first N cores of the affinity mask")
    parser.add_argument("--repeats", type=int, default=None,
                        help="timed calls after warm-up (default 10, --quick 3)")
    parser.add_argument("--cases", default=",".join(CASES))
    parser.add_argument("--devices", default="1,2,4,8", help="simulated device counts")
    parser.add_argument("--batch-scales", default="0.5,1,2,4",
                        help="batch sizes: these multiples of the SIZES entry's batch")
    parser.add_argument("--matmul-size", type=int, default=None,
                        help="n of the n x n matmul peak (default 2048, --quick 1024)")
    parser.add_argument("--timeout", type=int, default=1200, help="seconds per subprocess")
    parser.add_argument("--out", help="write the markdown tables here")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    parser.add_argument("--batches", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.quick:
        args.sizes = "quick"
    if args.repeats is None:
        args.repeats = 3 if args.quick else 10
    if args.matmul_size is None:
        args.matmul_size = 1024 if args.quick else 2048
    if args.worker:
        worker(args)
        return

    cases = parse_cases(parser, args.cases, CASES)
    devices = [int(x) for x in args.devices.split(",") if x.strip()]
    scales = [float(x) for x in args.batch_scales.split(",") if x.strip()]
    sizes = SIZES[args.sizes]
    load_before = os.getloadavg()
    started = time.time()

    print(f"{'matmul peak':>32}", end=" ", flush=True)
    mm = run_worker("matmul", args)[0]
    peak = None if "error" in mm else mm["flops"] / mm["median_s"] / 1e9
    print(mm["error"] if peak is None else f"{peak:.1f} GFLOP/s", flush=True)

    by_batch, by_devices = {}, {}
    for case in cases:
        base = sizes[group_of(case)]["batch"]
        print(f"{case + ' batches':>32}", end=" ", flush=True)
        rows = by_batch[case] = run_worker(case, args, 1, batch_sizes(base, scales))
        print(", ".join(r["error"] if "error" in r else
                        f"{r['batch']}: {1e3 * r['median_s']:.1f} ms" for r in rows), flush=True)
        gb = global_batch_for(base, devices)
        by_devices[case] = {}
        same = [r for r in rows if r.get("batch") == gb and r.get("devices") == 1]
        for n in devices:
            print(f"{case + f' {n} devices':>32}", end=" ", flush=True)
            if n == 1 and same:  # measured already, in the batch-size subprocess
                r = by_devices[case][n] = same[0]
            else:
                r = by_devices[case][n] = run_worker(case, args, n, [gb])[-1]
            print(r["error"] if "error" in r else f"batch {gb}: {1e3 * r['median_s']:.1f} ms",
                  flush=True)
    load_after = os.getloadavg()
    v = versions()
    header = [
        f"- Command: `{' '.join(['.venv/bin/python', 'benchmarks/scaling.py', *sys.argv[1:]])}`",
        f"- Machine: {cpu_model()}, {os.cpu_count()} logical CPUs, {args.threads} thread(s) "
        f"(cores {sorted(os.sched_getaffinity(0))[: args.threads]}), "
        f"{platform.system()} {platform.release()}",
        "- Versions: " + ", ".join(f"{k} {val}" for k, val in v.items()),
        f"- Shapes: run.py's `{args.sizes}` sizes; median of {args.repeats} steps after the "
        f"first call and 2 warm-up calls; " + load_and_wall(load_before, load_after, started),
    ]
    emit("\n".join(header + [""] + matmul_table(mm, args) + [""]
                    + batch_table(by_batch, peak, args) + [""]
                    + device_table(by_devices, args)) + "\n", args.out)


if __name__ == "__main__":
    main()
