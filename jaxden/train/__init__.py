"""The generic trainer: mesh and shardings, train state, the jitted update, Orbax checkpoints,
metrics log and loop. It imports no method and no model: a method plugs in through
``jaxden.train.plugin.Method``."""
