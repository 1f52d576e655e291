"""Every config variant builds its model and optimiser (shapes only: nothing is trained)."""

import jax
import pytest
from flax import nnx

from configs import addunet_denoise
from jaxden import methods
from jaxden.train.optim import make_optimizer

# Grayscale counts: stem + 7 conv blocks (3 encoder, bottleneck, 3 decoder) + 3 transposed
# convs + 1x1 head + 3 gates; e.g. default (C=64): 640 + 7*73,856 + 3*16,448 + 65 + 3.
EXPECTED_PARAMS = {"default": 567_044, "quick": 142_212, "tiny": 923}


@pytest.mark.parametrize("variant", sorted(EXPECTED_PARAMS))
def test_variant_builds(variant):
    config = addunet_denoise.get_config(variant)
    method = methods.get(config.method)
    model = nnx.eval_shape(lambda: method.build_model(config))
    params = nnx.state(model, nnx.Param)
    assert sum(x.size for x in jax.tree.leaves(params)) == EXPECTED_PARAMS[variant]
    tx, schedule = make_optimizer(config.optimizer, config.total_steps)
    assert float(schedule(config.total_steps // 2)) > 0
    assert config.batch_size % 8 == 0, "the batch must split over 8 devices"


def test_unknown_variant_and_method_are_named():
    with pytest.raises(ValueError, match="default, quick or tiny"):
        addunet_denoise.get_config("huge")
    with pytest.raises(ValueError, match="denoise"):
        methods.get("denoize")


def _every_variant():
    from configs import addunet_mtl, cdn, dlw

    for module in (addunet_mtl, cdn, dlw):
        rows = getattr(module, "ROWS", {"": None})
        for variant in ("default", "quick", "tiny"):
            for row in rows:
                yield module, f"{variant},{row}" if row else variant


@pytest.mark.parametrize("module,arg", list(_every_variant()),
                         ids=lambda v: v if isinstance(v, str) else v.__name__)
def test_every_method_variant_builds(module, arg):
    config = module.get_config(arg)
    method = methods.get(config.method)
    model = nnx.eval_shape(lambda: method.build_model(config))
    assert sum(x.size for x in jax.tree.leaves(nnx.state(model, nnx.Param))) > 0
    make_optimizer(config.optimizer, config.total_steps)


def test_robustness_variants():
    from configs import robustness

    for variant in ("default", "quick", "tiny"):
        rc = robustness.get_config(variant)
        assert rc.steps > 0 and rc.linf and rc.l2
    with pytest.raises(ValueError, match="quick, default or tiny"):
        robustness.get_config("huge")
