"""Faults during training and evaluation, each tried for real (issue 7, part 2).

Subprocess runs of ``train.py --config configs/addunet_denoise.py:tiny`` (200 steps, a checkpoint
every 20, four 48x48 crops of skimage's camera as data, 1 CPU device, a shared compilation cache)
are compared bitwise with one straight run of the same command (the ``straight`` fixture):

- ``test_sigkill_during_checkpoint_write_resumes_and_matches_straight_run``: SIGKILL while Orbax
  writes a checkpoint (its ``<step>.orbax-checkpoint-tmp`` directory exists, and is still there
  after the kill). The restart resumes from the last complete checkpoint, reports no damage,
  removes the leftover and ends with parameters bitwise equal to the straight run's.
- ``test_sigterm_saves_the_current_step_and_exits_143``: SIGTERM after checkpoint 20: the run
  saves a checkpoint at the step it reached (20 < step < 200), prints one line and exits with
  143; the same command resumes from that step and ends bitwise equal.
- ``test_damaged_latest_checkpoint_train_falls_back``: the latest checkpoint's array file cut in
  half: training says so in one warning line naming the step, moves it to
  ``<step>.corrupt-<time>`` (kept, not deleted), resumes from the one before, ends bitwise equal.
- ``test_disk_full_on_tmpfs`` (root only: mounts a 400 KiB tmpfs as the workdir): the save that
  fills the disk ends the run with one line naming the directory and "free space or use another
  --workdir", no traceback, status 1; the checkpoints before it restore; with more space the same
  command resumes and ends bitwise equal.
- ``test_random_sigkills_then_restart_matches_straight_run`` (slow, ~100 s; 600 steps, a
  checkpoint every 50, its own straight run): eight SIGKILLs, seeded, each at one of: a random
  step, while the 1st-3rd checkpoint write of the run is under way, or a random moment of
  start-up (restoring, compiling); then a run to the end: bitwise equal to the straight run,
  and no restart ever finds a damaged checkpoint.

In-process (8 simulated devices):

- ``test_damaged_latest_checkpoint_eval_falls_back``: a file of the latest checkpoint deleted,
  truncated, overwritten with garbage or with one byte flipped: ``restore_model`` (eval's restore)
  warns in one line naming the step and what is wrong, leaves the checkpoint in place, and
  returns the previous one.
- ``test_disk_full_during_an_async_save_is_raised_not_lost``: ENOSPC raised inside Orbax's
  background write (no root needed): the next save, or ``close()``, raises CheckpointWriteError
  naming the failed step, the directory and "free space or use another --workdir"; the previous
  checkpoint still restores.
"""

import asyncio
import errno
import gc
import logging
import os
import pathlib
import random
import re
import shutil
import signal
import subprocess
import sys
import time

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest
from flax import nnx
from PIL import Image

from jaxden import methods
from jaxden.train.checkpoint import CheckpointWriteError, Checkpoints
from jaxden.train.loop import restore_model
from jaxden.train.state import abstract_like

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
STEPS, EVERY = 200, 20
TMP = ".orbax-checkpoint-tmp"


class Runs:
    """The data, the compilation cache and the command line shared by every run here."""

    def __init__(self, base):
        self.data = base / "data"
        self.data.mkdir()
        import skimage.data

        camera = skimage.data.camera()
        for i, (r, c) in enumerate([(0, 0), (200, 200), (300, 100), (100, 350)]):
            Image.fromarray(camera[r:r + 48, c:c + 48]).save(self.data / f"crop{i}.png")
        self.env = {k: v for k, v in os.environ.items() if k != "JAXDEN_DEBUG"}
        self.env.update(JAX_PLATFORMS="cpu", JAX_NUM_CPU_DEVICES="1",
                        JAX_DISABLE_MOST_OPTIMIZATIONS="1",
                        JAX_COMPILATION_CACHE_DIR=str(base / "jax_cache"),
                        JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS="0",
                        JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES="0")

    def cmd(self, workdir, steps=STEPS, every=EVERY, log_every=EVERY):
        return [sys.executable, "train.py", "--config", "configs/addunet_denoise.py:tiny",
                "--workdir", str(workdir), f"--config.total_steps={steps}",
                f"--config.checkpoint_every_steps={every}", f"--config.log_every_steps={log_every}",
                f"--config.eval_every_steps={steps}", f"--config.data.train=folder:{self.data}",
                f"--config.data.val=folder:{self.data}"]

    def start(self, workdir, log, **kw):
        """train.py in the background, stdout and stderr to the file ``log``."""
        with open(log, "w") as f:
            return subprocess.Popen(self.cmd(workdir, **kw), cwd=ROOT, env=self.env, stdout=f,
                                    stderr=subprocess.STDOUT)

    def run(self, workdir, expect=0, **kw) -> str:
        """Run train.py to its end; its stdout and stderr together."""
        proc = subprocess.run(self.cmd(workdir, **kw), cwd=ROOT, env=self.env,
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                              timeout=600)
        assert proc.returncode == expect, proc.stdout[-3000:]
        return proc.stdout


def committed(workdir) -> list[int]:
    path = os.path.join(workdir, "checkpoints")
    return sorted(int(d) for d in os.listdir(path) if d.isdigit()) if os.path.isdir(path) else []


def leftovers(workdir) -> list[str]:
    path = os.path.join(workdir, "checkpoints")
    return [d for d in os.listdir(path) if TMP in d] if os.path.isdir(path) else []


def params(workdir):
    model, _, step = restore_model(methods.get("denoise"), str(workdir))
    return step, nnx.to_pure_dict(nnx.state(model, nnx.Param))


def assert_bitwise_equal(a, b):
    jax.tree.map(lambda x, y: np.testing.assert_array_equal(np.asarray(x), np.asarray(y)), a, b)


def wait_for(predicate, proc, timeout=300.0, poll=0.001):
    """Poll ``predicate`` until it holds (True) or ``proc`` ends or time runs out (False)."""
    end = time.monotonic() + timeout
    while time.monotonic() < end and proc.poll() is None:
        if predicate():
            return True
        time.sleep(poll)
    return False


def one_line_messages(text: str) -> list[str]:
    """The lines of a run's output other than tqdm's progress bar."""
    lines = (line.strip() for line in re.split(r"[\r\n]", text))
    return [line for line in lines if line and not line.startswith("train denoise")]


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    return Runs(tmp_path_factory.mktemp("faults"))


@pytest.fixture(scope="module")
def straight(runs, tmp_path_factory):
    workdir = tmp_path_factory.mktemp("straight")
    runs.run(workdir)
    step, p = params(workdir)
    assert step == STEPS and committed(workdir) == [STEPS - 2 * EVERY, STEPS - EVERY, STEPS]
    return workdir, p


def kill_during_a_write(runs, workdir, log, nth=1, **kw) -> str | None:
    """Start a run, SIGKILL it as soon as the ``nth`` write that it is seen doing after a
    complete checkpoint exists is under way; the name of the write it interrupted, or None if the
    write finished first."""
    proc = runs.start(workdir, log, **kw)
    seen = set()

    def nth_write():
        if committed(workdir):
            seen.update(leftovers(workdir))
        return len(seen) >= nth and leftovers(workdir)

    try:
        wait_for(nth_write, proc)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    return (leftovers(workdir) or [None])[0]


def test_sigkill_during_checkpoint_write_resumes_and_matches_straight_run(runs, straight,
                                                                           tmp_path):
    workdir = tmp_path / "run"
    for _ in range(4):  # the write may finish between seeing it and the kill: try again
        interrupted = kill_during_a_write(runs, workdir, tmp_path / "killed.log")
        if interrupted:
            break
    assert interrupted, "no kill landed during a checkpoint write in 4 tries"
    last = max(committed(workdir))
    assert last < int(interrupted.split(".")[0]) < STEPS  # the half-written one is not taken

    out = one_line_messages(runs.run(workdir))
    assert out == [f"denoise: resuming from checkpoint {last} in {workdir}/checkpoints"], out
    assert not leftovers(workdir)
    step, p = params(workdir)
    assert step == STEPS
    assert_bitwise_equal(p, straight[1])


def test_sigterm_saves_the_current_step_and_exits_143(runs, straight, tmp_path):
    workdir, log = tmp_path / "run", tmp_path / "run.log"
    proc = runs.start(workdir, log)
    try:
        assert wait_for(lambda: committed(workdir), proc, poll=0.005), log.read_text()[-2000:]
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=120) == 143, log.read_text()[-3000:]
    finally:
        proc.kill()
    last = one_line_messages(log.read_text())[-1]
    m = re.fullmatch(rf"stopped by SIGTERM at step (\d+) of {STEPS}; checkpoint \1 is saved in "
                     rf"{re.escape(str(workdir))}/checkpoints; the same command resumes from it",
                     last)
    assert m, last
    stopped = int(m[1])
    assert EVERY < stopped < STEPS and max(committed(workdir)) == stopped

    out = one_line_messages(runs.run(workdir))
    assert out == [f"denoise: resuming from checkpoint {stopped} in {workdir}/checkpoints"], out
    step, p = params(workdir)
    assert step == STEPS
    assert_bitwise_equal(p, straight[1])


def damage(path: pathlib.Path, how: str) -> None:
    data = path.read_bytes()
    if how == "delete":
        path.unlink()
    elif how == "truncate":
        path.write_bytes(data[: len(data) // 2])
    elif how == "garbage":
        path.write_bytes(random.Random(0).randbytes(max(len(data), 64)))
    elif how == "flip":
        flipped = bytearray(data)
        flipped[len(data) // 2] ^= 0x01
        path.write_bytes(bytes(flipped))
    else:
        raise ValueError(how)


def array_file(checkpoint_dir) -> str:
    """The OCDBT data file of a checkpoint's state (one, for a model this small)."""
    (name,) = os.listdir(os.path.join(checkpoint_dir, "state", "d"))
    return os.path.join("state", "d", name)


def test_damaged_latest_checkpoint_train_falls_back(runs, straight, tmp_path):
    workdir = tmp_path / "run"
    shutil.copytree(straight[0], workdir)
    latest = workdir / "checkpoints" / str(STEPS)
    damaged = array_file(latest)
    damage(latest / damaged, "truncate")
    size = os.path.getsize(latest / damaged)

    out = one_line_messages(runs.run(workdir))
    assert len(out) == 2, "\n".join(out)  # whole lines: pytest would shorten a list's repr
    assert re.fullmatch(rf"warning: checkpoint {STEPS} in {re.escape(str(workdir))}/checkpoints "
                        rf"is damaged: its state metadata cannot be read \(ValueError: .*\); "
                        rf"moved it to .*/checkpoints/{STEPS}\.corrupt-\d{{8}}T\d{{6}}, falling "
                        rf"back to the previous checkpoint", out[0]), out[0]
    assert out[1] == f"denoise: resuming from checkpoint {STEPS - EVERY} in {workdir}/checkpoints"
    (aside,) = [d for d in os.listdir(workdir / "checkpoints") if ".corrupt-" in d]
    assert os.path.getsize(workdir / "checkpoints" / aside / damaged) == size  # kept as it was
    step, p = params(workdir)
    assert step == STEPS
    assert_bitwise_equal(p, straight[1])


DAMAGES = [("state/_METADATA", "delete"), ("state/_METADATA", "truncate"),
           ("state/_METADATA", "garbage"), ("array", "truncate"), ("array", "garbage"),
           ("array", "flip"), ("state/manifest.ocdbt", "delete"),
           ("state/array_metadatas/process_0", "truncate"), ("config/metadata", "garbage")]


@pytest.mark.parametrize("where,how", DAMAGES)
def test_damaged_latest_checkpoint_eval_falls_back(straight, tmp_path, capsys, where, how):
    workdir = tmp_path / "run"
    shutil.copytree(straight[0], workdir)
    latest = workdir / "checkpoints" / str(STEPS)
    damage(latest / (array_file(latest) if where == "array" else where), how)

    _, _, step = restore_model(methods.get("denoise"), str(workdir))
    assert step == STEPS - EVERY
    warning = capsys.readouterr().err.strip()
    assert re.fullmatch(rf"warning: checkpoint {STEPS} in {re.escape(str(workdir))}/checkpoints "
                        rf"is damaged: its (state metadata|arrays|config) cannot be read "
                        rf"\(\w+: .+\); left {re.escape(str(latest))} in place and skipped it, "
                        rf"falling back to the previous checkpoint", warning), warning
    assert sorted(os.listdir(workdir / "checkpoints")) == sorted(
        str(s) for s in committed(straight[0]))  # read-only: nothing moved or deleted


def disk_full(*args, **kwargs):
    raise OSError(errno.ENOSPC, "No space left on device")


async def disk_full_async(*args, **kwargs):
    disk_full()


def test_disk_full_during_an_async_save_is_raised_not_lost(tmp_path, monkeypatch):
    from orbax.checkpoint._src.path import async_path

    config = ml_collections.ConfigDict({"note": "toy"})
    state = {"w": jnp.arange(4096, dtype=jnp.float32)}
    checkpoints = Checkpoints(str(tmp_path))
    checkpoints.save(1, state, config)
    checkpoints.close()

    checkpoints = Checkpoints(str(tmp_path))
    monkeypatch.setattr(async_path, "write_text", disk_full_async)
    checkpoints.save(2, state, config)  # returns at once; the write fails in the background
    with pytest.raises(CheckpointWriteError) as raised:
        checkpoints.close()
    monkeypatch.undo()
    assert str(raised.value) == (
        f"no space left on device while writing checkpoint 2 to {tmp_path}/checkpoints: free "
        f"space or use another --workdir (checkpoint 1 there is intact; the same command "
        f"resumes from it)")
    with Checkpoints(str(tmp_path), read_only=True) as reader:
        assert reader.steps() == [1]
        restored = reader.restore_state(abstract_like(state))
    np.testing.assert_array_equal(restored["w"], state["w"])


def test_full_disk_met_by_another_workdir_write(tmp_path, monkeypatch):
    """A full disk met while appending metrics or writing config.json: reported as the
    in-flight save's failure where the disk filled under that save (a race of the tmpfs test
    below), else naming the file; other errors pass unchanged."""
    from orbax.checkpoint._src.path import async_path

    config = ml_collections.ConfigDict({"note": "toy"})
    state = {"w": jnp.arange(4096, dtype=jnp.float32)}
    metrics = f"{tmp_path}/metrics.jsonl"
    checkpoints = Checkpoints(str(tmp_path))
    checkpoints.save(1, state, config)
    checkpoints.close()

    checkpoints = Checkpoints(str(tmp_path))
    monkeypatch.setattr(async_path, "write_text", disk_full_async)
    checkpoints.save(2, state, config)  # fails in the background
    with pytest.raises(CheckpointWriteError) as raised:
        with checkpoints.reporting_full_disk(metrics):
            disk_full()
    monkeypatch.undo()
    assert str(raised.value) == (
        f"no space left on device while writing checkpoint 2 to {tmp_path}/checkpoints: free "
        f"space or use another --workdir (checkpoint 1 there is intact; the same command "
        f"resumes from it)")
    with pytest.raises(CheckpointWriteError) as raised:
        with checkpoints.reporting_full_disk(metrics):
            disk_full()
    assert str(raised.value) == (
        f"no space left on device while writing {metrics}: free space or use another "
        f"--workdir (checkpoint 1 there is intact; the same command resumes from it)")
    with pytest.raises(PermissionError):
        with checkpoints.reporting_full_disk(metrics):
            raise PermissionError(errno.EACCES, "Permission denied", metrics)
    checkpoints.close()


def mount_tmpfs(path, size) -> bool:
    if os.geteuid() != 0 or not shutil.which("mount"):
        return False
    return subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)],
                          capture_output=True).returncode == 0


def test_disk_full_on_tmpfs(runs, straight, tmp_path):
    disk = tmp_path / "disk"
    disk.mkdir()
    if not mount_tmpfs(disk, "400k"):
        pytest.skip("needs root to mount a small tmpfs")
    try:
        workdir = disk / "run"
        output = runs.run(workdir, expect=1)
        out = one_line_messages(output)
        assert "Traceback" not in output and len(out) == 2, out
        m = re.fullmatch(rf"error: no space left on device while writing checkpoint (\d+) to "
                         rf"{workdir}/checkpoints: free space or use another --workdir "
                         rf"\(checkpoint (\d+) there is intact; the same command resumes from "
                         rf"it\)", out[1])
        assert m, out[1]
        failed, intact = int(m[1]), int(m[2])
        assert intact == max(committed(workdir)) and intact < failed < STEPS
        assert params(workdir)[0] == intact

        subprocess.run(["mount", "-o", "remount,size=4m", str(disk)], check=True)
        out = one_line_messages(runs.run(workdir))
        assert out == [f"denoise: resuming from checkpoint {intact} in {workdir}/checkpoints"]
        step, p = params(workdir)
        assert step == STEPS and not leftovers(workdir)
        assert_bitwise_equal(p, straight[1])
    finally:
        subprocess.run(["umount", str(disk)], check=True)


LONG = dict(steps=600, every=50, log_every=10)


def last_logged(workdir) -> int:
    path = os.path.join(workdir, "metrics.jsonl")
    if not os.path.exists(path):
        return 0
    with open(path) as f:
        steps = re.findall(r'^\{"step": (\d+),', f.read(), flags=re.M)
    return int(steps[-1]) if steps else 0


@pytest.mark.slow
def test_random_sigkills_then_restart_matches_straight_run(runs, tmp_path):
    straight = tmp_path / "straight"
    runs.run(straight, **LONG)
    rng = random.Random(7)
    workdir, kills = tmp_path / "run", []
    while len(kills) < 8:
        log = tmp_path / f"run{len(kills)}.log"
        moment = rng.choice(["write", "step", "step", "start-up"])
        if moment == "write":
            nth = rng.randint(1, 3)
            kills.append(f"while writing {kill_during_a_write(runs, workdir, log, nth, **LONG)}")
        else:
            proc = runs.start(workdir, log, **LONG)
            try:
                if moment == "start-up":  # restoring, compiling
                    wait_for(lambda: False, proc, timeout=rng.uniform(0.0, 8.0))
                else:  # a random step of the next 150, then a random fraction of a step
                    target = last_logged(workdir) + rng.randint(1, 150)
                    wait_for(lambda: last_logged(workdir) >= target, proc)
                    time.sleep(rng.uniform(0.0, 0.01))
            finally:
                proc.send_signal(signal.SIGKILL)
                proc.wait()
            kills.append(f"{moment}: after step {last_logged(workdir)}")
        assert "damaged" not in log.read_text(), (kills, log.read_text()[-2000:])
        assert max(committed(workdir), default=0) < LONG["steps"], kills
    out = one_line_messages(runs.run(workdir, **LONG))
    assert not any("damaged" in line for line in out), out
    print("kills:", kills)
    (step, p), (_, want) = params(workdir), params(straight)
    assert step == LONG["steps"]
    assert_bitwise_equal(p, want)


@pytest.mark.parametrize("kind", ["Task", "Future"])
def test_unretrieved_tensorstore_errors_are_not_reported(tmp_path, caplog, kind):
    """Once jaxden's checkpoints are in use, asyncio's "Task exception was never retrieved" and
    "Future exception was never retrieved" reports of a tensorstore read error (the other
    failed reads of a damaged checkpoint, whose first error is already reported) are dropped;
    any other error is still reported."""
    with Checkpoints(str(tmp_path)):
        pass

    async def fail(message):
        raise ValueError(message)

    def orphan(message):  # a task or future that fails, collected without its error retrieved
        loop = asyncio.new_event_loop()
        if kind == "Task":
            pending = loop.create_task(fail(message))
            loop.run_until_complete(asyncio.sleep(0.01))
        else:  # as tensorstore's awaitables set it: an error never raised in Python
            pending = loop.create_future()
            pending.set_exception(ValueError(message))
        loop.close()
        del pending
        gc.collect()

    def reports():
        return [r for r in caplog.records
                if r.getMessage().startswith(f"{kind} exception was never retrieved")]

    with caplog.at_level(logging.ERROR, logger="asyncio"):
        orphan("OUT_OF_RANGE: Error reading \"w/.zarray\" [tensorstore_spec='{}']")
        assert not reports()
        orphan("some other failure")
        assert reports()
