"""A tampered checkpoint cannot run code (issue 7, part 4).

jaxden's checkpoints are Orbax's StandardSave (arrays in tensorstore/OCDBT, metadata in JSON) plus
the config as JSON; nothing is pickled, and restoring reads no pickle. Here a real checkpoint of
the tiny denoiser has files replaced by a pickle whose unpickling creates a marker file (the
payload is shown to work: ``pickle.loads`` of it creates the marker):

- ``test_a_pickle_in_a_checkpoint_is_never_unpickled``: each file that Orbax or jaxden reads
  (step metadata, the config JSON, the state's tree metadata, shardings, array metadata, the
  OCDBT manifests and the array data), a planted ``state/checkpoint`` (Orbax's legacy msgpack
  name), and every file at once. ``restore_model`` (what eval.py and resuming use) either
  restores (the file is not needed) or fails with CheckpointCorruptError; the marker is never
  created.
- ``test_no_unsafe_loader_in_the_code``: no pickle, ``allow_pickle=True``, ``torch.load``,
  ``yaml.load``, ``eval(`` or ``exec(`` in jaxden/, configs/, train.py, eval.py or benchmarks/.
"""

import os
import pathlib
import pickle
import re
import shutil

import jax
import pytest

from configs import addunet_denoise
from jaxden import methods
from jaxden.train import mesh as mesh_lib
from jaxden.train.checkpoint import CheckpointCorruptError, Checkpoints
from jaxden.train.loop import restore_model
from jaxden.train.optim import make_optimizer
from jaxden.train.state import init_state

ROOT = pathlib.Path(__file__).resolve().parent.parent


class Plant:
    """Unpickling this creates the file ``marker``: the proof that code ran."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return pathlib.Path.touch, (pathlib.Path(self.marker),)


@pytest.fixture(scope="module")
def pristine(tmp_path_factory):
    workdir = tmp_path_factory.mktemp("pristine")
    config = addunet_denoise.get_config("tiny")
    tx, _ = make_optimizer(config.optimizer, config.total_steps)
    _, state = init_state(methods.get("denoise").build_model(config), tx)
    state = jax.device_put(state, mesh_lib.replicated(mesh_lib.data_mesh()))
    with Checkpoints(str(workdir)) as checkpoints:
        checkpoints.save(1, state, config)
    return workdir


def payload(marker) -> bytes:
    data = pickle.dumps(Plant(marker))
    pickle.loads(data)  # the payload is live: loading it runs code
    assert os.path.exists(marker)
    os.remove(marker)
    return data


TARGETS = ["_CHECKPOINT_METADATA", "config/metadata", "state/_METADATA", "state/_sharding",
           "state/array_metadatas/process_0", "state/manifest.ocdbt",
           "state/ocdbt.process_0/manifest.ocdbt", "state/d/*", "state/checkpoint", "*"]


@pytest.mark.parametrize("target", TARGETS)
def test_a_pickle_in_a_checkpoint_is_never_unpickled(pristine, tmp_path, target, capsys):
    workdir, marker = tmp_path / "run", tmp_path / "code_ran"
    shutil.copytree(pristine, workdir)
    step = workdir / "checkpoints" / "1"
    data = payload(marker)
    files = ([p for p in step.rglob("*") if p.is_file()] if target == "*"
             else list(step.glob(target)) if "*" in target else [step / target])
    assert files
    for path in files:
        path.write_bytes(data)

    try:
        _, _, restored = restore_model(methods.get("denoise"), str(workdir))
        assert restored == 1
    except CheckpointCorruptError as e:
        assert str(e).startswith(f"no readable checkpoint in {workdir}/checkpoints "
                                 f"(checkpoint 1: its "), e
    assert not marker.exists()
    capsys.readouterr()


UNSAFE = re.compile(r"\bimport pickle|\bpickle\.|cloudpickle|\bdill\b|allow_pickle\s*=\s*True|"
                    r"torch\.load|yaml\.load\(|yaml\.unsafe_load|marshal\.load|"
                    r"(?<![\w.])eval\(|(?<![\w.])exec\(")


def test_no_unsafe_loader_in_the_code():
    files = [ROOT / "train.py", ROOT / "eval.py"]
    for folder in ("jaxden", "configs", "benchmarks"):
        files += sorted((ROOT / folder).rglob("*.py"))
    found = [f"{f.relative_to(ROOT)}:{i}: {line.strip()}" for f in files
             for i, line in enumerate(f.read_text().splitlines(), 1) if UNSAFE.search(line)]
    assert not found, found
