"""Where the time of one ``benchmarks/run.py`` case goes in XLA:CPU, op by op.

    .venv/bin/python benchmarks/profile_ops.py CASE [--sizes cifar] [--threads 1] [--top 15]
                                               [--microbatches 1]

Runs the JAX side of CASE (same shapes and data as ``benchmarks/run.py``) under
``jax.profiler.trace`` with XLA's per-op trace events on, dumps the optimised HLO, and joins the
two: every executed op (a fusion, a convolution, a dot, a copy) gets its busy time per call,
summed over XLA's worker threads (so with ``--threads 1`` the column adds up to the step), its
kind, its output shape and the JAX operation it comes from (``metadata.op_name``:
``jvp(...)`` is the forward pass, ``transpose(jvp(...))`` the backward pass, nested
``transpose(jvp(transpose(jvp(...))))`` the second-order ops of a double backprop).

Kinds: ``conv fwd`` (a convolution of the forward pass), ``conv input-grad`` /
``conv weight-grad`` (a backward convolution whose output is shaped like the input, or like a
kernel), ``dot`` (a matmul, e.g. an im2col convolution or the linear head), ``transpose``
(layout copies XLA inserts around convolutions), ``reduction``, ``elementwise`` (everything else).
With several threads it also prints each thread's total op time: against the wall time per
call, it shows how much of the step runs on one thread only.
The table is what BENCHMARKS.md's "Where the time goes" section quotes.
"""

import argparse
import collections
import glob
import os
import re
import sys
import tempfile
import time

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), ".."))
sys.path.insert(0, ROOT)

_INSTRUCTION = re.compile(r"^\s*(?:ROOT )?%([\w.\-]+) = (\S+?)(?:\{[^}]*\})? ([\w\-]+)\(")
_CALLS = re.compile(r"calls=%([\w.\-]+)")
_OP_NAME = re.compile(r'op_name="([^"]*)"')


def parse_hlo(text: str) -> dict:
    """name -> (kind, output shape, op_name, source line) for every instruction of an
    optimised HLO module; for a fusion, the kind and source line are those of its heaviest
    inner op (convolution, dot, reduce, transpose in that order), else "elementwise"."""
    computations, current = {}, None
    for line in text.splitlines():
        header = re.match(r"^(?:ENTRY )?%([\w.\-]+) ", line)
        if header and line.rstrip().endswith("{"):
            current = header.group(1)
            computations[current] = []
            continue
        m = _INSTRUCTION.match(line)
        if m and current:
            computations[current].append((m.group(1), m.group(2), m.group(3), line))
    ops = {}
    for body in computations.values():
        for name, shape, opcode, line in body:
            kind, source = opcode, line
            called = _CALLS.search(line)
            if opcode == "fusion" and called and called.group(1) in computations:
                inner = [op for _, _, op, _ in computations[called.group(1)]]
                for heavy in ("convolution", "dot", "reduce", "transpose"):
                    if heavy in inner:
                        kind = heavy
                        source = next(ln for _, _, op, ln in computations[called.group(1)]
                                      if op == heavy)
                        break
                else:
                    kind = "elementwise"
            op_name = _OP_NAME.search(source) or _OP_NAME.search(line)
            ops[name] = (kind, shape, op_name.group(1) if op_name else "", source)
    return ops


def classify(kind: str, op_name: str, source: str) -> str:
    if kind == "convolution":
        # a weight gradient is a convolution whose output is shaped like a kernel, (k, k)
        # spatial dimensions, and whose window is the whole image (XLA leaves some of them
        # without an op_name)
        out = re.search(r"= f32\[([\d,]+)\]", source)
        dims = [int(d) for d in out.group(1).split(",")] if out else []
        window = re.search(r"size=(\d+)x(\d+)", source)
        if (len(dims) == 4 and dims[1] <= 3 and dims[2] <= 3) or (
                window and int(window.group(1)) > 7):
            return "conv weight-grad"
        return "conv input-grad" if "transpose(" in op_name else "conv fwd"
    return {"dot": "dot", "transpose": "transpose", "reduce": "reduction"}.get(kind,
                                                                             "elementwise")


def order_of(op_name: str) -> str:
    """Which pass an op belongs to, from the nesting of JAX's transformations: ``jvp`` only,
    forward; one ``transpose(``, the backward pass; two, the second-order pass of a double
    backprop."""
    if not op_name:
        return "unlabelled (no op_name)"
    depth = op_name.count("transpose(")
    return {0: "forward", 1: "backward"}.get(depth, f"order {depth}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("case")
    parser.add_argument("--sizes", default="cifar")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--calls", type=int, default=3)
    parser.add_argument("--top", type=int, default=15)
    parser.add_argument("--microbatches", type=int, default=1,
                        help="train steps in this many parts, as run.py --microbatches")
    parser.add_argument("--keep", help="write the trace and HLO dump here "
                                           "(default: a temporary folder)")
    args = parser.parse_args()
    work = args.keep or tempfile.mkdtemp(prefix="jaxden_profile_")
    if args.threads:
        os.sched_setaffinity(0, sorted(os.sched_getaffinity(0))[: args.threads])
    os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") + " --xla_cpu_enable_xprof_traceme"
                               f"=true --xla_dump_to={work}/hlo --xla_dump_hlo_as_text").strip()
    os.environ.setdefault("JAX_PLATFORMS", "cpu")
    import jax
    from jax.profiler import ProfileData

    from benchmarks import run

    fn, _, _ = run.jax_case(args.case, run.SIZES[args.sizes], {
        "iterations": None, "check_every": 1, "microbatches": args.microbatches})
    for _ in range(3):
        jax.block_until_ready(fn())
    start = time.perf_counter()
    with jax.profiler.trace(f"{work}/trace"):
        for _ in range(args.calls):
            jax.block_until_ready(fn())
    wall = (time.perf_counter() - start) / args.calls * 1e3

    dumps = sorted(glob.glob(f"{work}/hlo/*after_optimizations.txt"), key=os.path.getsize)
    ops = {}
    for path in dumps:
        with open(path) as f:
            ops.update(parse_hlo(f.read()))
    busy, per_thread = collections.Counter(), collections.Counter()
    profile = ProfileData.from_file(glob.glob(f"{work}/trace/**/*.xplane.pb", recursive=True)[0])
    for plane in profile.planes:
        for line in plane.lines:
            for event in line.events:
                if event.name in ops:
                    busy[event.name] += event.duration_ns / 1e6 / args.calls
                    per_thread[line.name] += event.duration_ns / 1e6 / args.calls
    total = sum(busy.values())
    by_kind, by_order = collections.Counter(), collections.Counter()
    for name, ms in busy.items():
        kind, shape, op_name, source = ops[name]
        by_kind[classify(kind, op_name, source)] += ms
        by_order[order_of(op_name)] += ms
    print(f"{args.case} ({args.sizes}, {args.threads} thread(s)): {wall:.1f} ms per call "
          f"under the profiler; ops traced: {total:.1f} ms (thread-summed)\n")
    print("XLA ops per thread (ms per call; an op that XLA splits over threads counts on "
          "each): " + ", ".join(f"{ms:.1f}" for _, ms in per_thread.most_common()) + "\n")
    print("| kind | ms per call | share |\n|---|---:|---:|")
    for kind, ms in by_kind.most_common():
        print(f"| {kind} | {ms:.1f} | {100 * ms / total:.0f}% |")
    print("\n| pass | ms per call | share |\n|---|---:|---:|")
    for order, ms in sorted(by_order.items()):
        print(f"| {order} | {ms:.1f} | {100 * ms / total:.0f}% |")
    print(f"\nTop {args.top} ops:\n\n| ms | op | kind | output | from |\n|---:|---|---|---|---|")
    for name, ms in busy.most_common(args.top):
        kind, shape, op_name, source = ops[name]
        print(f"| {ms:.1f} | {name} | {classify(kind, op_name, source)} | {shape} | "
              f"{op_name.split('/', 1)[-1]} |")


if __name__ == "__main__":
    main()
