"""notebooks/quickstart.ipynb runs top to bottom (issue 8), so it cannot rot.

The notebook runs in a fresh IPython kernel of this interpreter (the venv's python, through a
kernelspec written for the test: a ``python3`` kernelspec elsewhere on the Jupyter path, e.g. in
the user's home, cannot redirect it), in a temporary working directory, on CPU, with warnings
as errors inside the kernel as in this suite. It trains two tiny models in place (about a
minute on 2 idle CPU cores), so any cell that raises fails the test.
"""

import pathlib
import sys
import time

import pytest

nbclient = pytest.importorskip("nbclient")
nbformat = pytest.importorskip("nbformat")
kernelspec = pytest.importorskip("ipykernel.kernelspec")

NOTEBOOK = pathlib.Path(__file__).resolve().parent.parent / "notebooks" / "quickstart.ipynb"
CELL_TIMEOUT_S = 300  # per cell; the slowest (training the energy net) takes ~25 s when idle
# A cell the test runs before the notebook's: the suite's warnings-as-errors policy
# (pyproject's filterwarnings = ["error"]) inside the kernel. One exception: ipykernel 7.4's
# own shutdown handler warns a PendingDeprecationWarning about its do_shutdown, which as an
# error would break the kernel's shutdown; it is not the notebook's code.
WARNINGS_AS_ERRORS = """\
import warnings
warnings.simplefilter("error")
warnings.filterwarnings("ignore", category=PendingDeprecationWarning, module="ipykernel")"""


def test_quickstart_notebook_runs_top_to_bottom(tmp_path, monkeypatch):
    jupyter_dir = tmp_path / "jupyter"
    kernelspec.write_kernel_spec(jupyter_dir / "kernels" / "python3")  # argv[0]: sys.executable
    monkeypatch.setenv("JUPYTER_PATH", str(jupyter_dir))  # searched before the user's dirs
    monkeypatch.setenv("JUPYTER_RUNTIME_DIR", str(tmp_path / "runtime"))
    monkeypatch.setenv("JUPYTER_PLATFORM_DIRS", "1")  # jupyter_core's path-migration warning
    monkeypatch.setenv("JAX_PLATFORMS", "cpu")
    for var in ("JAXDEN_ADDUNET_WORKDIR", "JAXDEN_CDN_WORKDIR"):  # the train-in-place path
        monkeypatch.delenv(var, raising=False)
    workdir = tmp_path / "cwd"
    workdir.mkdir()

    nb = nbformat.read(NOTEBOOK, as_version=4)
    assert not any(cell.get("outputs") for cell in nb.cells), "commit the notebook stripped"
    nb.cells.insert(0, nbformat.v4.new_code_cell(WARNINGS_AS_ERRORS))
    client = nbclient.NotebookClient(
        nb, kernel_name="python3", timeout=CELL_TIMEOUT_S, startup_timeout=120,
        resources={"metadata": {"path": str(workdir)}},
    )
    start = time.perf_counter()
    client.execute()  # raises CellExecutionError, naming the cell, if any cell raises
    print(f"notebook ran in {time.perf_counter() - start:.1f} s with {sys.executable}")

    images = [o for cell in nb.cells for o in cell.get("outputs", [])
              if o.output_type == "display_data" and "image/png" in o.get("data", {})]
    assert len(images) == 3, "each part of the notebook shows one figure inline"
