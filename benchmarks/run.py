"""jaxden (JAX) against its PyTorch twins, side by side, in one command.

    .venv/bin/python benchmarks/run.py [--quick] [--threads N] [--repeats R] [--out FILE.md]
                                       [--cases NAME,...] [--no-compile]

Every (case, framework) pair runs in a fresh subprocess pinned to the same N cores
(``os.sched_setaffinity``, which sizes XLA:CPU's thread pool; ``torch.set_num_threads(N)``),
on the same shapes and data (crops of skimage ``camera``, Gaussian noise sigma = 25/255,
NumPy seed 0). PyTorch runs eagerly and, where it works, with
``torch.compile`` (default inductor backend) applied to the network (and to the TV step).
Each callable is called once (the first-call time: JAX's trace and compile, or
``torch.compile``'s), twice more to warm up, then ``--repeats`` times. ``--rounds R`` (default 3)
runs every case R times, its frameworks alternating (JAX, eager, [compile], JAX, eager, ...),
and the table gives the smallest of the R subprocess medians (first call and memory: the
first round's). This machine slows down for seconds at a time (20-call medians within one
process: energy CE step 25-27 ms, and 37-38 ms in 9 of 112 windows; DSM step 54-58 ms, and
65-74 ms for 5-9 consecutive windows in 3 of 5 one-minute processes), so a single
subprocess per framework could land one side in a slow phase; the slow phases only add time,
and the fastest of R alternating rounds leaves them out on both sides. Nothing is cached
between runs (no JAX compilation cache, an empty inductor cache directory per subprocess).
Memory: the subprocess's peak resident set (``resource.getrusage`` ``ru_maxrss``), and its
growth from just before the first call (the case's working memory, compilation included).
The DSM step is a double backward, which ``torch.compile`` does not support: its row says so.

``--microbatches M`` runs the train steps as ``config.microbatches = M`` does (gradient
accumulation over M parts in a ``lax.scan``) and PyTorch's as M backward passes of the parts
before one optimiser step.
``--jax-devices N`` gives JAX N simulated CPU devices (``JAX_NUM_CPU_DEVICES``): the train steps
then shard their batch over them (the trainer's data parallelism) and XLA runs the shards in
parallel, one per core, where one device's intra-op threading leaves cores idle; the other
cases run on one device.

Cases (jaxden library code on the JAX side, ``benchmarks/torch_twins`` on the other):
- ``addunet_train``: one Adam step of MSE(AddUNet(noisy), clean), gated skips
  (``jaxden.train.step.make_update_fn``, as the trainer runs it).
- ``energy_ce_step``: one Adam step of the classification-denoising loss with CE only
  (``jaxden.methods.cdn.cdn_loss``, GradResNet of ``configs/cdn.py:quick``, "eps" read-out).
- ``dsm_step``: the same with DSM (weight 0.1): a double backprop.
- ``tweedie_denoise``: D(y) = y + sigma^2 grad_y logsumexp f (``jaxden.tweedie.denoise``).
- ``energy_forward``, ``addunet_forward``: inference forward passes.
- ``tv_solve``: weighted isotropic TV (``jaxden.solvers.tv``) to residual 1e-4, same stopping
  rule in both (the twin mirrors jaxden's iteration and its residual checks).
- ``dlw_hypergrad``: the DLW hypergradient, d/dtheta of MSE(tv(noisy, W = DLWNet_theta(noisy)),
  clean): jaxden implicit (``jaxden.methods.dlw.bilevel_loss``, tol 1e-4) against PyTorch
  autograd unrolled through K steps, K = the iterations jaxden's forward solve took.
- ``dlw_hypergrad_unrolled``: the same with jaxden unrolled through the same K steps too.
"""

import argparse
import inspect
import json
import os
import platform
import re
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), ".."))
sys.path.insert(0, ROOT)

CASES = ("addunet_train", "energy_ce_step", "dsm_step", "tweedie_denoise", "energy_forward",
         "addunet_forward", "tv_solve", "dlw_hypergrad", "dlw_hypergrad_unrolled")
BACKENDS = ("jax", "torch", "torch.compile")
SIGMA = 25 / 255
SIZES = {
    "full": dict(addunet=dict(batch=16, size=64, width=32, levels=3, convs_per_block=2),
                 energy=dict(batch=32, size=28, widths=(16, 32, 64), num_classes=10),
                 tv=dict(batch=8, size=64),
                 dlw=dict(batch=4, size=64, depth=5, features=64)),
    "quick": dict(addunet=dict(batch=4, size=32, width=16, levels=2, convs_per_block=1),
                  energy=dict(batch=8, size=28, widths=(8, 16, 32), num_classes=10),
                  tv=dict(batch=2, size=32),
                  dlw=dict(batch=2, size=32, depth=3, features=16)),
    # issue 9's network: a 1.2M-parameter GradResNet on 64 RGB 32x32 images (CIFAR-sized)
    "cifar": dict(addunet=dict(batch=16, size=64, width=32, levels=3, convs_per_block=2),
                  energy=dict(batch=64, size=32, widths=(64, 128, 256), num_classes=10,
                              channels=3),
                  tv=dict(batch=8, size=64),
                  dlw=dict(batch=4, size=64, depth=5, features=64)),
}
TV = dict(lam=0.1, tol=1e-4, max_iter=2000)
DLW = dict(lam=0.15, tol=1e-4, max_iter=2000)


def group_of(case: str) -> str:
    """The ``SIZES`` entry a case takes its shapes from."""
    return ("addunet" if case.startswith("addunet") else "tv" if case == "tv_solve"
            else "dlw" if case.startswith("dlw") else "energy")


def shape_text(group: str, s: dict) -> str:
    """The shape column for a ``SIZES[...][group]`` entry ``s``."""
    extra = {"addunet": f", width {s.get('width')}, {s.get('levels')} levels",
             "energy": f", widths {s.get('widths')}",
             "dlw": f", DLWNet {s.get('depth')}x{s.get('features')}", "tv": ""}[group]
    return f"{s['batch']}x{s['size']}x{s['size']}x{s.get('channels', 1)}{extra}"


def shape_of(case: str, sizes: dict) -> str:
    return shape_text(group_of(case), sizes[group_of(case)])


def parse_cases(parser, text: str, known) -> list:
    """The comma-separated case names of ``text``; a parser error names unknown ones."""
    cases = [c.strip() for c in text.split(",") if c.strip()]
    unknown = sorted(set(cases) - set(known))
    if unknown:
        parser.error(f"unknown cases {unknown}; choose from {', '.join(known)}")
    return cases


# ---------------------------------------------------------------------------------- data

def camera_batch(batch: int, size: int, seed: int = 0, channels: int = 1):
    """(clean, noisy) NHWC float32: crops of skimage's camera (``channels=3``: astronaut),
    Gaussian noise 25/255."""
    import numpy as np
    from skimage import data

    image = (data.camera()[..., None] if channels == 1 else data.astronaut()) / 255
    image = image.astype(np.float32)
    rng = np.random.default_rng(seed)
    corners = rng.integers(0, image.shape[0] - size, (batch, 2))
    clean = np.stack([image[i:i + size, j:j + size] for i, j in corners])
    noisy = clean + SIGMA * rng.standard_normal(clean.shape).astype(np.float32)
    return clean, noisy.astype(np.float32)


def energy_batch(s: dict):
    import numpy as np

    clean, noisy = camera_batch(s["batch"], s["size"], channels=s.get("channels", 1))
    labels = np.arange(s["batch"]) % s["num_classes"]
    return clean, noisy, labels, np.full((s["batch"],), SIGMA, np.float32)


def tv_weights(shape, seed: int = 1):
    import numpy as np

    return np.exp(0.5 * np.random.default_rng(seed).standard_normal(shape)).astype(np.float32)


# ------------------------------------------------------------------------------ JAX side

def addunet_model(s: dict):
    from flax import nnx

    from jaxden.models import AddUNet

    return AddUNet(1, width=s["width"], levels=s["levels"], convs_per_block=s["convs_per_block"],
                   skip="gated", rngs=nnx.Rngs(0))


def gradresnet_model(s: dict):
    """The energy network; one extra class as in ``configs/cdn.py``'s read-out."""
    from flax import nnx

    from jaxden.models import GradResNet

    return GradResNet(s.get("channels", 1), num_classes=s["num_classes"] + 1,
                      widths=s["widths"], blocks_per_stage=1, groups=8,
                      sigma_conditioning=True, rngs=nnx.Rngs(0))


def dlw_config():
    """``configs/dlw.py`` defaults with weighted TV as the only source, ``DLW``'s settings."""
    from configs import dlw as dlw_configs

    config = dlw_configs.get_config("default")
    config.dlw.update(sources=("tv",), tol=DLW["tol"], max_iter=DLW["max_iter"])
    config.dlw.lam.tv = DLW["lam"]
    return config


def train_parts(case: str, s: dict):
    """(model, loss_fn, batch) of a train step for ``make_update_fn``, ``s`` its ``SIZES``
    entry; batch as NumPy arrays, leading axis the batch. ``dlw_hypergrad``: the DLW
    upper-level loss (the step ``benchmarks/scaling.py`` times with its Adam update)."""
    import jax.numpy as jnp
    import ml_collections
    from flax import nnx

    from jaxden.methods import cdn, dlw
    from jaxden.models import DLWNet

    if case == "addunet_train":
        clean, noisy = camera_batch(s["batch"], s["size"])

        def loss_fn(model, batch, key):
            return jnp.mean((model(batch["noisy"]) - batch["image"]) ** 2), {}

        return addunet_model(s), loss_fn, {"image": clean, "noisy": noisy}

    if case in ("energy_ce_step", "dsm_step"):
        clean, noisy, labels, sigma = energy_batch(s)
        lc = ml_collections.ConfigDict(dict(
            ce_weight=1.0, dsm_weight=0.1 if case == "dsm_step" else 0.0,
            conditional_dsm_weight=0.0, dsm_weighting="mse"))

        def loss_fn(model, batch, key):
            return cdn.cdn_loss(model, batch["image"], batch["label"], batch["noisy"],
                                batch["sigma"], loss_config=lc, scale="eps",
                                sigma_floor=1 / 255)

        return gradresnet_model(s), loss_fn, {"image": clean, "noisy": noisy,
                                              "label": labels, "sigma": sigma}

    if case == "dlw_hypergrad":
        clean, noisy = camera_batch(s["batch"], s["size"])
        config = dlw_config()
        model = DLWNet(1, depth=s["depth"], features=s["features"], rngs=nnx.Rngs(0))

        def loss_fn(model, batch, key):
            return dlw.bilevel_loss(model, batch["image"], batch["noisy"], config)

        return model, loss_fn, {"image": clean, "noisy": noisy}
    raise ValueError(case)


def jax_case(case: str, sizes: dict, opts: dict):
    """(callable, info, extract) for ``case``: the callable returns something to block on,
    ``extract(output)`` the iteration count of solver cases (None: nothing to extract)."""
    import jax
    import jax.numpy as jnp
    import optax
    from flax import nnx

    from jaxden import solvers, tweedie
    from jaxden.implicit import fixed_point
    from jaxden.methods import cdn, dlw
    from jaxden.models import DLWNet
    from jaxden.train import mesh as mesh_lib
    from jaxden.train.state import init_state
    from jaxden.train.step import make_update_fn

    info = {}

    def trainer(model, loss_fn, batch):
        """One Adam step as the trainer runs it: state replicated, the batch sharded on the
        ``data`` axis of all devices (``--jax-devices``)."""
        tx = optax.adam(1e-3)
        mesh = mesh_lib.data_mesh()
        replicated = mesh_lib.replicated(mesh)
        graphdef, state = init_state(model, tx)
        state = jax.device_put(state, replicated)
        update = make_update_fn(graphdef, loss_fn, tx, 0,
                                jax.tree.map(lambda x: x.sharding, state), replicated,
                                opts.get("microbatches", 1))
        batch = mesh_lib.global_batch(batch, mesh_lib.batch_sharded(mesh))
        holder = {"state": state}

        def run():
            holder["state"], metrics = update(holder["state"], batch)
            return metrics["loss"]

        return run

    if case in ("addunet_train", "energy_ce_step", "dsm_step"):
        return trainer(*train_parts(case, sizes[group_of(case)])), info, None

    if case == "addunet_forward":
        s = sizes["addunet"]
        _, noisy = camera_batch(s["batch"], s["size"])
        graphdef, state = nnx.split(addunet_model(s))
        forward = jax.jit(lambda state, y: nnx.merge(graphdef, state)(y))
        y = jnp.asarray(noisy)
        return lambda: forward(state, y), info, None

    if case in ("tweedie_denoise", "energy_forward"):
        s = sizes["energy"]
        _, noisy, _, sigma = energy_batch(s)
        graphdef, state = nnx.split(gradresnet_model(s))
        y, sig = jnp.asarray(noisy), jnp.asarray(sigma)

        def log_joint_of(state):
            return cdn.make_log_joint(nnx.merge(graphdef, state), sig, scale="eps",
                                      sigma_floor=1 / 255)

        if case == "tweedie_denoise":
            fn = jax.jit(lambda state, y: tweedie.denoise(log_joint_of(state), y, sig))
        else:
            fn = jax.jit(lambda state, y: log_joint_of(state)(y))
        return lambda: fn(state, y), info, None

    check_every = inspect.signature(fixed_point).parameters.get("check_every")  # jaxden's
    info["check_every"] = 1 if check_every is None else check_every.default
    if case == "tv_solve":
        s = sizes["tv"]
        _, noisy = camera_batch(s["batch"], s["size"])
        weights = tv_weights(noisy.shape)
        solve = jax.jit(lambda y, w: solvers.tv(y, TV["lam"], w, tol=TV["tol"],
                                                max_iter=TV["max_iter"]))
        y, w = jnp.asarray(noisy), jnp.asarray(weights)
        return lambda: solve(y, w), info, lambda out: int(jnp.max(out[1].iterations))

    # DLW hypergradient
    s = sizes["dlw"]
    clean, noisy = camera_batch(s["batch"], s["size"])
    config = dlw_config()
    if case == "dlw_hypergrad_unrolled":
        config.dlw.update(mode="unrolled", max_iter=opts["iterations"])
    model = DLWNet(1, depth=s["depth"], features=s["features"], rngs=nnx.Rngs(0))
    graphdef, params, rest = nnx.split(model, nnx.Param, ...)
    x, y = jnp.asarray(clean), jnp.asarray(noisy)

    @jax.jit
    def hypergradient(params):
        def loss(params):
            return dlw.bilevel_loss(nnx.merge(graphdef, params, rest), x, y, config)

        return jax.value_and_grad(loss, has_aux=True)(params)

    return (lambda: hypergradient(params), info,
            lambda out: int(out[0][1]["iterations_tv"]))


# -------------------------------------------------------------------------- PyTorch side

def torch_case(case: str, sizes: dict, opts: dict, compiled: bool):
    import numpy as np
    import torch

    from benchmarks.torch_twins import addunet, cdn, dlwnet, energy, tv, tweedie

    info = {}
    wrap = torch.compile if compiled else (lambda f: f)

    def nchw(a):
        return torch.tensor(np.transpose(a, (0, 3, 1, 2)))

    def trainer(model, loss_fn, batch_size):
        """One Adam step; ``loss_fn(rows)`` the loss of the batch rows ``rows`` (a slice),
        accumulated over ``opts["microbatches"]`` (default 1) equal parts."""
        opt = torch.optim.Adam(model.parameters(), lr=1e-3)
        parts = opts.get("microbatches", 1)
        size = batch_size // parts

        def run():
            opt.zero_grad(set_to_none=True)
            for j in range(parts):
                loss = loss_fn(slice(j * size, (j + 1) * size)) / parts
                loss.backward()
            opt.step()
            return loss

        return run

    if case.startswith("addunet"):
        s = sizes["addunet"]
        clean, noisy = map(nchw, camera_batch(s["batch"], s["size"]))
        model = addunet.AddUNet(1, width=s["width"], levels=s["levels"],
                                convs_per_block=s["convs_per_block"], skip="gated")
        net = wrap(model)
        if case == "addunet_train":
            return trainer(model, lambda r: ((net(noisy[r]) - clean[r]) ** 2).mean(),
                           len(noisy)), info, None
        model.requires_grad_(False)

        def forward():
            with torch.inference_mode():
                return net(noisy)

        return forward, info, None

    if case in ("energy_ce_step", "dsm_step", "tweedie_denoise", "energy_forward"):
        s = sizes["energy"]
        clean, noisy, labels, sigma = energy_batch(s)
        clean, noisy = nchw(clean), nchw(noisy)
        labels, sigma = torch.tensor(labels), torch.tensor(sigma)
        model = energy.GradResNet(s.get("channels", 1), num_classes=s["num_classes"] + 1,
                                  widths=s["widths"],
                                  blocks_per_stage=1, groups=8, sigma_conditioning=True)
        net = wrap(model)
        if case in ("energy_ce_step", "dsm_step"):
            lc = argparse.Namespace(ce_weight=1.0, conditional_dsm_weight=0.0,
                                    dsm_weight=0.1 if case == "dsm_step" else 0.0,
                                    dsm_weighting="mse")
            return trainer(model, lambda r: cdn.cdn_loss(
                net, clean[r], labels[r], noisy[r], sigma[r], loss_config=lc, scale="eps",
                sigma_floor=1 / 255)[0], len(noisy)), info, None
        model.requires_grad_(False)
        log_joint = cdn.make_log_joint(net, sigma, scale="eps", sigma_floor=1 / 255)
        if case == "tweedie_denoise":
            return (lambda: tweedie.denoise(log_joint, noisy, sigma, create_graph=False), info,
                    None)

        def forward():
            with torch.inference_mode():
                return log_joint(noisy)

        return forward, info, None

    step_fn = torch.compile if compiled else None
    if case == "tv_solve":
        s = sizes["tv"]
        _, noisy = camera_batch(s["batch"], s["size"])
        weights = nchw(tv_weights(noisy.shape))
        y = nchw(noisy)

        def solve():
            with torch.inference_mode():
                return tv.tv(y, TV["lam"], weights, tol=TV["tol"], max_iter=TV["max_iter"],
                             check_every=opts["check_every"], step_fn=step_fn)

        return solve, info, lambda out: int(out[2].max())

    s = sizes["dlw"]
    clean, noisy = map(nchw, camera_batch(s["batch"], s["size"]))
    model = dlwnet.DLWNet(1, depth=s["depth"], features=s["features"])
    net = wrap(model)
    def hypergradient():
        model.zero_grad(set_to_none=True)
        x = tv.tv(noisy, DLW["lam"], net(noisy), tol=None, max_iter=opts["iterations"],
                  step_fn=step_fn)[0]
        loss = ((x - clean) ** 2).mean()
        loss.backward()
        return loss

    return hypergradient, info, lambda out: opts["iterations"]


# ---------------------------------------------------------------------------- one worker

def rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def worker(args) -> None:
    case, backend = args.worker.split(":")
    sizes = SIZES[args.sizes]
    opts = {"iterations": args.iterations, "check_every": args.check_every,
            "microbatches": args.microbatches}
    if backend == "jax":
        import jax

        fn, info, extract = jax_case(case, sizes, opts)
        block = jax.block_until_ready
    else:
        import torch

        torch.set_num_threads(args.threads)
        fn, info, extract = torch_case(case, sizes, opts, compiled=backend == "torch.compile")
        block = (lambda x: x)  # PyTorch CPU ops are synchronous
    base = rss_mb()
    start = time.perf_counter()
    block(fn())
    first = time.perf_counter() - start
    for _ in range(2):
        block(fn())
    times = []
    for _ in range(args.repeats):
        start = time.perf_counter()
        out = block(fn())
        times.append(time.perf_counter() - start)
    if extract is not None:
        info["iterations"] = extract(out)
    result = dict(info, first_s=first, median_ms=1e3 * statistics.median(times),
                  min_ms=1e3 * min(times), peak_mb=rss_mb(), delta_mb=rss_mb() - base)
    print("RESULT " + json.dumps(result), flush=True)


# -------------------------------------------------------------------------------- parent

def pinned_run(command, env, args):
    """``subprocess.run`` of ``command`` pinned to the first ``args.threads`` cores of the
    affinity mask, output captured; raises ``subprocess.TimeoutExpired``."""
    cpus = sorted(os.sched_getaffinity(0))[: args.threads]
    return subprocess.run(command, env=env, capture_output=True, text=True,
                          timeout=args.timeout, preexec_fn=lambda: os.sched_setaffinity(0, cpus))


def last_error(stderr: str) -> str:
    """The last line of a failed worker's stderr that mentions an error (else its last line)."""
    lines = [ln for ln in stderr.strip().splitlines() if ln.strip()]
    errors = [ln for ln in lines if "Error" in ln or "error" in ln]
    return (errors or lines or ["no output"])[-1][:300]


def run_worker(case, backend, args, extra=()):
    # XLA:CPU sizes its thread pool from the affinity mask (it has no thread-count flag)
    env = dict(os.environ, JAX_PLATFORMS="cpu", OMP_NUM_THREADS=str(args.threads),
               JAX_NUM_CPU_DEVICES=str(args.jax_devices))
    command = [sys.executable, os.path.abspath(__file__), "--worker", f"{case}:{backend}",
               "--threads", str(args.threads), "--repeats", str(args.repeats),
               "--microbatches", str(args.microbatches), *extra]
    command += ["--sizes", args.sizes]
    # a fresh, empty inductor cache: torch.compile's first call is a cold compile, like JAX's
    env["TORCHINDUCTOR_CACHE_DIR"] = cache = tempfile.mkdtemp(prefix="jaxden_bench_inductor_")
    try:
        proc = pinned_run(command, env, args)
    except subprocess.TimeoutExpired:
        return {"error": f"timed out after {args.timeout} s"}
    finally:
        shutil.rmtree(cache, ignore_errors=True)
    for line in reversed(proc.stdout.splitlines()):
        if line.startswith("RESULT "):
            return json.loads(line[len("RESULT "):])
    return {"error": last_error(proc.stderr)}


def combine(rounds: list[dict]) -> dict:
    """One (case, framework)'s result over its rounds: the smallest of their medians (the
    machine's slow phases only add time), the fastest call of any, the first round's first
    call and memory; an error if any failed."""
    failed = [r for r in rounds if "error" in r]
    if failed:
        return failed[0]
    medians = [r["median_ms"] for r in rounds]
    return dict(rounds[0], median_ms=min(medians),
                min_ms=min(r["min_ms"] for r in rounds), round_medians_ms=medians)


def versions() -> dict:
    from importlib.metadata import version

    out = {name: version(name) for name in ("jax", "jaxlib", "flax", "optax", "torch", "numpy")}
    out["python"] = platform.python_version()
    return out


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def fmt_ms(r):
    if r is None:
        return "not run"
    return "fails" if "error" in r else f"{r['median_ms']:.1f}"


def ratio(a, b):
    if a is None or b is None or "error" in a or "error" in b:
        return "-"
    return f"{a['median_ms'] / b['median_ms']:.2f}"


def tables(results, args, sizes) -> str:
    def note(case, row):
        notes = []
        jax_r = row.get("jax") or {}
        if "iterations" in jax_r:
            its = [f"JAX {jax_r['iterations']}"]
            for b in ("torch", "torch.compile"):
                if row.get(b) and "iterations" in row[b]:
                    its.append(f"{b} {row[b]['iterations']}")
            notes.append("iterations: " + ", ".join(its))
        rounds = [f"{b} " + "/".join(f"{ms:.1f}" for ms in row[b]["round_medians_ms"])
                  for b in BACKENDS if len((row.get(b) or {}).get("round_medians_ms", [])) > 1]
        if rounds:
            notes.append("rounds (ms): " + ", ".join(rounds))
        for b in BACKENDS:
            if row.get(b) and "error" in row[b]:
                notes.append(f"{b}: {row[b]['error']}")
        return "; ".join(notes)

    lines = ["| case | shape | JAX ms | PyTorch eager ms | torch.compile ms | "
             "JAX / eager | JAX / compile | notes |", "|---|---|---:|---:|---:|---:|---:|---|"]
    for case, row in results.items():
        lines.append(f"| {case} | {shape_of(case, sizes)} | {fmt_ms(row.get('jax'))} | "
                     f"{fmt_ms(row.get('torch'))} | {fmt_ms(row.get('torch.compile'))} | "
                     f"{ratio(row.get('jax'), row.get('torch'))} | "
                     f"{ratio(row.get('jax'), row.get('torch.compile'))} | "
                     f"{note(case, row)} |")
    lines += ["", "First call (s; JAX: trace + compile + run, torch.compile: compile + run) and "
              "peak resident memory (MB; in parentheses the growth from just before the first "
              "call):", "",
              "| case | JAX first s | eager first s | compile first s | JAX peak MB | "
              "eager peak MB | compile peak MB |", "|---|---:|---:|---:|---:|---:|---:|"]

    def first(r):
        return "-" if r is None or "error" in r else f"{r['first_s']:.2f}"

    def mem(r):
        return "-" if r is None or "error" in r else f"{r['peak_mb']:.0f} ({r['delta_mb']:+.0f})"

    for case, row in results.items():
        lines.append(f"| {case} | " + " | ".join(first(row.get(b)) for b in BACKENDS) + " | "
                     + " | ".join(mem(row.get(b)) for b in BACKENDS) + " |")
    return "\n".join(lines)


TRAIN_STEPS = {"addunet_train": "AddUNet train step", "energy_ce_step": "energy CE step",
               "dsm_step": "DSM step (double backprop)", "dlw_hypergrad": "DLW bilevel step"}


def run_hypergradient(args) -> list:
    """``benchmarks/hypergradient.py`` in a subprocess pinned like the cases: its
    equal-accuracy lines as (unrolled K, implicit row, time ratio, memory ratio)."""
    script = os.path.join(os.path.dirname(os.path.abspath(__file__)), "hypergradient.py")
    try:
        proc = pinned_run([sys.executable, script], dict(os.environ, JAX_PLATFORMS="cpu"),
                          args)
    except subprocess.TimeoutExpired:
        return []
    return hypergradient_ratios(proc.stdout)


def hypergradient_ratios(stdout: str) -> list:
    """The equal-accuracy lines of ``hypergradient.py``'s output as (unrolled K, implicit
    row, time ratio, memory ratio), for the plain unrolled rows (the authors' method), not
    the ``unrolled+remat`` ones."""
    pattern = re.compile(r"^\s*unrolled K=(\d+) \(err [^)]*\) vs (implicit tol=\S+): "
                         r"unrolled/implicit time ([\d.]+)x, temp memory ([\d.]+)x")
    return [(int(m.group(1)), m.group(2), float(m.group(3)), float(m.group(4)))
            for m in map(pattern.search, stdout.splitlines()) if m]


def targets(results, hypergradient) -> str:
    """Issue 9's targets as ratios of this run's medians, each with its limit."""
    def median(case, backend="jax"):
        r = (results.get(case) or {}).get(backend)
        return None if r is None or "error" in r else r["median_ms"]

    rows = []
    for case, label in TRAIN_STEPS.items():
        a, b = median(case), median(case, "torch")
        if a is not None and b is not None:
            rows.append((f"{label}: JAX / PyTorch eager", a / b, "<= 1.0", a / b <= 1.0))
    for num, den, label, limit in [("dsm_step", "energy_ce_step", "DSM step / CE step", 2.5),
                                   ("tweedie_denoise", "energy_forward",
                                    "Tweedie denoise / forward", 2.0)]:
        a, b = median(num), median(den)
        if a is not None and b is not None:
            rows.append((f"{label} (JAX)", a / b, f"<= {limit}", a / b <= limit))
    for k, match, time_ratio, memory_ratio in hypergradient:
        rows.append((f"hypergradient, unrolled K={k} / {match}: time", time_ratio, ">= 10",
                     time_ratio >= 10))
        rows.append((f"hypergradient, unrolled K={k} / {match}: temporary memory",
                     memory_ratio, ">= 100", memory_ratio >= 100))
    lines = ["| target | ratio | limit | met |", "|---|---:|---|---|"]
    lines += [f"| {label} | {value:.2f} | {limit} | {'yes' if ok else 'no'} |"
              for label, value, limit, ok in rows]
    return "\n".join(lines)


def load_and_wall(load_before, load_after, started: float) -> str:
    """The header's load averages (1, 5, 15 min) around the run and its wall time."""
    return (f"load average (1, 5, 15 min) before {tuple(round(x, 2) for x in load_before)}, "
            f"after {tuple(round(x, 2) for x in load_after)}; wall time "
            f"{time.time() - started:.0f} s")


def emit(text: str, out: str | None) -> None:
    """Print the report, and write it to ``out`` when given."""
    print()
    print(text)
    if out:
        with open(out, "w") as f:
            f.write(text)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true",
                        help="small shapes, a fast run (= --sizes quick)")
    parser.add_argument("--sizes", choices=sorted(SIZES), default="full",
                        help="shape set; cifar: issue 9's 1.2M-parameter GradResNet on "
                             "64x32x32x3")
    parser.add_argument("--threads", type=int, default=len(os.sched_getaffinity(0)))
    parser.add_argument("--repeats", type=int, default=None,
                        help="timed calls after warm-up (default 10, --quick 5)")
    parser.add_argument("--cases", default=",".join(CASES))
    parser.add_argument("--rounds", type=int, default=3,
                        help="subprocesses per (case, framework), frameworks alternating")
    parser.add_argument("--no-compile", action="store_true", help="skip torch.compile")
    parser.add_argument("--timeout", type=int, default=1200, help="seconds per subprocess")
    parser.add_argument("--out", help="write the markdown tables here")
    parser.add_argument("--jax-devices", type=int, default=1,
                        help="simulated CPU devices for JAX (JAX_NUM_CPU_DEVICES): the train "
                             "steps shard their batch over them, as the trainer does; one per "
                             "core runs each core's shard in parallel")
    parser.add_argument("--microbatches", type=int, default=1,
                        help="train steps as config.microbatches: gradients accumulated over "
                             "this many parts of the batch (PyTorch: as many backward passes)")
    parser.add_argument("--no-hypergradient", action="store_true",
                        help="skip benchmarks/hypergradient.py (the implicit vs unrolled "
                             "targets at equal accuracy)")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    parser.add_argument("--iterations", type=int, default=None, help=argparse.SUPPRESS)
    parser.add_argument("--check-every", type=int, default=1, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.quick:
        args.sizes = "quick"
    if args.repeats is None:
        args.repeats = 5 if args.quick else 10
    if args.worker:
        worker(args)
        return

    cases = parse_cases(parser, args.cases, CASES)
    # jaxden.train.step.check_microbatches's rule; not imported: importing jaxden in this
    # parent would set XLA_FLAGS (jaxden.xla_cpu) for every worker, 1-thread ones included
    for case in set(cases) & {"addunet_train", "energy_ce_step", "dsm_step"}:
        batch = SIZES[args.sizes][group_of(case)]["batch"]
        if args.microbatches < 1 or batch % (args.microbatches * args.jax_devices):
            parser.error(f"--microbatches {args.microbatches}: {case}'s batch of {batch} rows "
                         f"over {args.jax_devices} JAX device(s) does not split into "
                         f"{args.microbatches} equal parts; pick a divisor of "
                         f"{batch // args.jax_devices}")
    backends = [b for b in BACKENDS if not (args.no_compile and b == "torch.compile")]
    sizes = SIZES[args.sizes]
    load_before = os.getloadavg()
    started = time.time()
    results, probe, rows = {}, {}, {}  # rows: each case's per-round results, by framework

    def dlw_iterations():
        """K for the PyTorch unrolled hypergradient: the iterations of jaxden's forward solve
        in ``dlw_hypergrad`` (run once more on its own if that case was not asked for)."""
        r = (rows.get("dlw_hypergrad", {}).get("jax") or [None])[0]
        if r is None:
            r = probe.setdefault("dlw", run_worker("dlw_hypergrad", "jax", args))
        return r.get("iterations")

    for case in cases:
        row = rows[case] = {backend: [] for backend in backends}
        for _ in range(args.rounds):
            for backend in backends:
                extra = []
                if case == "dlw_hypergrad_unrolled" or (case == "dlw_hypergrad"
                                                        and backend != "jax"):
                    k = dlw_iterations()
                    if k is None:
                        row[backend].append(
                            {"error": "needs the JAX iteration count, which failed"})
                        continue
                    extra += ["--iterations", str(k)]
                if case == "tv_solve" and backend != "jax":
                    extra += ["--check-every", str(row["jax"][0].get("check_every", 1))]
                print(f"{case:>24} {backend:<14}", end=" ", flush=True)
                row[backend].append(run_worker(case, backend, args, extra))
                r = row[backend][-1]
                print(r["error"] if "error" in r else
                      f"median {r['median_ms']:.1f} ms, first {r['first_s']:.2f} s, "
                      f"peak {r['peak_mb']:.0f} MB", flush=True)
        results[case] = {backend: combine(rounds) for backend, rounds in row.items()}
    hypergradient = []
    if not (args.no_hypergradient or args.quick):
        print("hypergradient.py (implicit vs unrolled at equal accuracy)", flush=True)
        hypergradient = run_hypergradient(args)
    load_after = os.getloadavg()
    v = versions()
    header = [
        f"- Command: `{' '.join(['.venv/bin/python', 'benchmarks/run.py', *sys.argv[1:]])}`",
        f"- Machine: {cpu_model()}, {os.cpu_count()} logical CPUs, {args.threads} thread(s) "
        f"per framework (same cores), {platform.system()} {platform.release()}; JAX "
        f"devices {args.jax_devices} (train steps shard their batch over them); "
        f"microbatches {args.microbatches}",
        "- Versions: " + ", ".join(f"{k} {val}" for k, val in v.items()),
        f"- Fastest of {args.rounds} round(s) (frameworks alternating) of the median of "
        f"{args.repeats} calls after the first call and 2 warm-up calls; "
        + load_and_wall(load_before, load_after, started),
    ]
    emit("\n".join(header) + "\n\n" + tables(results, args, sizes) + "\n\nTargets "
         "(issue 9; ratios of the medians above, hypergradient rows from "
         "`benchmarks/hypergradient.py` run in this command):\n\n"
         + targets(results, hypergradient) + "\n", args.out)


if __name__ == "__main__":
    main()
