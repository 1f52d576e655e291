"""jaxden's figure files leave matplotlib's backend alone (a notebook's inline backend stays).

In a fresh interpreter (the suite's own process has long imported jaxden), with MPLBACKEND
set to a non-default backend as a notebook or a user's matplotlibrc would: importing every
module that draws must not change it, and ``save_grid`` must still write a PNG.
"""

import os
import subprocess
import sys

SCRIPT = """
import sys
import matplotlib
import numpy as np
import jaxden.compare, jaxden.robustness, jaxden.methods.dlw_eval, jaxden.methods.multitask_eval
from jaxden import evaluate
evaluate.save_grid(sys.argv[1], [("a", [("clean", np.zeros((8, 8, 1))), ("rgb", np.ones((8, 8, 3)))])])
print(matplotlib.get_backend(), "matplotlib.pyplot" in sys.modules)
"""


def test_figures_keep_the_matplotlib_backend(tmp_path):
    path = tmp_path / "grid" / "g.png"
    env = {**os.environ, "MPLBACKEND": "svg", "JAX_PLATFORMS": "cpu"}
    out = subprocess.run([sys.executable, "-c", SCRIPT, str(path)], env=env, check=True,
                         capture_output=True, text=True).stdout.split()
    assert out == ["svg", "False"]
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
