"""Why ``train.py`` or ``eval.py`` could not parse its command line, in one line naming the fix.

absl and ml_collections report a mistyped config key as a bare ``KeyError('width')`` (with a
suggestion only among the keys of the same sub-config) and a bad value as ``invalid literal for
int()``. ``explain`` names the override, the nearest valid keys anywhere in the config (so
``--config.width`` suggests ``--config.model.width``) and the type a field takes.
"""

import difflib
import os
import re

import ml_collections

_EXAMPLES = {"workdir": "runs/NAME", "config": "configs/addunet_denoise.py:quick"}
_REQUIRED = re.compile(r"Flag --(\w+) must have a value other than None")
_BAD_VALUE = re.compile(r"flag --(?P<flag>\w+)\.(?P<path>[\w.]+)=(?P<raw>.*?): ")


def overrides(argv: list[str], flag: str = "config") -> list[str]:
    """The dotted paths that ``argv`` overrides, as ``model.width`` for ``--config.model.width``
    (with ``=value`` or the value as the next argument)."""
    out = []
    for arg in argv:
        if arg.startswith(f"--{flag}."):
            out.append(arg[len(flag) + 3:].split("=", 1)[0])
    return out


def config_paths(config: ml_collections.ConfigDict, prefix: str = "") -> list[str]:
    """Every dotted path of ``config``, sub-configs included (``model``, ``model.width``...)."""
    out = []
    for key in config.keys():
        path = f"{prefix}{key}"
        out.append(path)
        value = config[key]
        if isinstance(value, ml_collections.ConfigDict):
            out.extend(config_paths(value, f"{path}."))
    return out


def nearest_keys(path: str, paths: list[str]) -> list[str]:
    """Valid paths close to ``path``: the same last key in another sub-config first
    (``width`` -> ``model.width``), else close spellings of the whole path or its last key."""
    leaf = path.rsplit(".", 1)[-1]
    same_leaf = [p for p in paths if p.rsplit(".", 1)[-1] == leaf]
    if same_leaf:
        return same_leaf[:3]
    close = difflib.get_close_matches(path, paths, n=3, cutoff=0.75)
    if close:
        return close
    leaves = {p.rsplit(".", 1)[-1]: p for p in paths}
    return [leaves[k] for k in difflib.get_close_matches(leaf, list(leaves), n=3, cutoff=0.75)]


def _unknown_key(path: str, paths: list[str], flag: str) -> str:
    near = nearest_keys(path, paths)
    if near:
        fix = "did you mean " + " or ".join(f"--{flag}.{p}" for p in near) + "?"
    else:
        parent = path.rpartition(".")[0]
        if parent not in paths:  # a top-level key, or a sub-config that does not exist
            parent = ""
        siblings = [p.rpartition(".")[2] for p in paths if p.rpartition(".")[0] == parent]
        fix = (f"the keys {f'of --{flag}.{parent}' if parent else 'at the top'} are "
               f"{', '.join(siblings)}")
    return f"--{flag}.{path}: no such config key; {fix}"


def _bad_value(path: str, raw: str, config: ml_collections.ConfigDict, flag: str) -> str | None:
    parent, _, key = path.rpartition(".")
    holder = config
    try:
        for part in filter(None, parent.split(".")):
            holder = holder[part]
        kind = holder.get_type(key)
        current = holder[key]
    except (KeyError, AttributeError, TypeError):
        return None
    name = getattr(kind, "__name__", str(kind))
    name = f"{'an' if name[0] in 'aeiou' else 'a'} {name}"
    if kind is bool:
        example = f", e.g. --{flag}.{path}=False"
    elif current is None:
        example = ""
    else:  # the config's own value
        example = f", e.g. --{flag}.{path}=" + repr(current).replace(" ", "")
    return f"--{flag}.{path}={raw}: config.{path} takes {name}{example}"


class BadFlag(ValueError):
    """A flag whose message already names the fix."""


def check_config_files(flag_values, values: dict[str, str | None]) -> None:
    """Raise BadFlag if a config-file flag (``--config configs/x.py:variant``) names a file
    that does not exist, suggesting the nearest file beside it; ``values`` maps flag names to
    their values in argv (None if absent)."""
    for name, value in values.items():
        if not value or type(flag_values[name].parser).__name__ != "ConfigFileFlagParser":
            continue
        path = value.split(":", 1)[0]
        if os.path.isfile(path):
            continue
        folder = os.path.dirname(path) or "."
        files = sorted(os.path.join(os.path.dirname(path), f) for f in os.listdir(folder)
                       if f.endswith(".py")) if os.path.isdir(folder) else []
        near = difflib.get_close_matches(path, files, n=1, cutoff=0.6)
        fix = (f"did you mean --{name} {near[0]}?" if near else
               f"the config files there are {', '.join(files)}" if files else
               "check the path")
        raise BadFlag(f"--{name} {value}: no such config file {path} (working directory "
                      f"{os.getcwd()}); {fix}")


def explain(error: BaseException, argv: list[str], config: ml_collections.ConfigDict | None,
            flag: str = "config") -> str | None:
    """One line naming the fix for a failure to parse ``argv``'s overrides of ``config``, a
    missing config file or a missing required flag, or None for other errors (the caller then
    reports ``error`` as is)."""
    if isinstance(error, BadFlag):
        return str(error)
    required = _REQUIRED.search(str(error))
    if required:
        name = required[1]
        return f"--{name} is missing: add it, e.g. --{name}={_EXAMPLES.get(name, 'VALUE')}"
    if config is None:
        return None
    paths = config_paths(config)
    for path in overrides(argv, flag):
        if path not in paths:
            return _unknown_key(path, paths, flag)
    match = _BAD_VALUE.search(str(error))
    if match and match["flag"] == flag:
        return _bad_value(match["path"], match["raw"], config, flag)
    return None


def flag_config(flag, path: str | None) -> ml_collections.ConfigDict | None:
    """The config that a config flag's overrides apply to: its value once parsed, else its
    default (``DEFINE_config_dict``), else the config file at ``path`` loaded again; None if
    there is none (a missing or broken config file is the error itself)."""
    for config in (getattr(flag, "value", None), getattr(flag, "default", None)):
        if isinstance(config, ml_collections.ConfigDict):
            return config
    if not path:
        return None
    try:
        config = flag.parser.parse(path)
    except Exception:  # noqa: BLE001 - reported by the caller as the original error
        return None
    return config if isinstance(config, ml_collections.ConfigDict) else None
