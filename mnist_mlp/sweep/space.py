"""A sweep's space file: the base config, the settings fixed for every trial and the searched
ones, each checked against TrainConfig before any trial runs (see ``load_space``)."""

from __future__ import annotations

import json
import tomllib
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..config import (
    FIELDS,
    ConfigError,
    TrainConfig,
    coerce,
    find_preset,
    is_list,
    item_type,
    load_config_file,
    resolve,
    show_value,
)
from ..files import read_bounded

MAX_SPACE_BYTES = 1 << 20       # a space file is a few hundred bytes
SPACE_KEYS = ("config", "init", "extra", "fixed", "search")
DIMENSION_KEYS = ("low", "high", "log", "step", "choices")


class SpaceError(ValueError):
    """A space file that cannot be used; the message names the file and the key."""


@dataclass(frozen=True)
class Dimension:
    """One searched setting: numbers from ``low`` to ``high`` (``log`` scale or ``step``s
    optional), or one of ``choices`` (values as TrainConfig takes them: tuples for lists)."""

    name: str
    low: float | None = None
    high: float | None = None
    log: bool = False
    step: float | None = None
    choices: tuple[Any, ...] = ()

    def label(self, value: Any) -> Any:
        """A choice as Optuna stores it: lists as "800,800", since its choices are scalars."""
        return ",".join(map(str, value)) if isinstance(value, tuple) else value

    def suggest(self, trial: Any) -> Any:
        """This setting's value for ``trial`` (an ``optuna.Trial``), as TrainConfig takes it."""
        if self.choices:
            labels = [self.label(c) for c in self.choices]
            return self.choices[labels.index(trial.suggest_categorical(self.name, labels))]
        if item_type(self.name) is int:
            value = trial.suggest_int(self.name, self.low, self.high, step=self.step or 1,
                                      log=self.log)
        else:
            value = trial.suggest_float(self.name, self.low, self.high, step=self.step,
                                        log=self.log)
        return (value,) if is_list(self.name) else value

    def extremes(self) -> tuple[Any, ...]:
        """The values a space check tries: both ends of a range, or every choice."""
        if self.choices:
            return self.choices
        ends = (self.low, self.high)
        return tuple((v,) for v in ends) if is_list(self.name) else ends

    def to_dict(self) -> dict[str, Any]:
        if self.choices:
            return {"choices": [self.label(c) for c in self.choices]}
        return {"low": self.low, "high": self.high, "log": self.log, "step": self.step}


@dataclass(frozen=True)
class Space:
    """A validated space file: the base config (a preset or config file), the settings
    fixed for every trial, the searched ones, and the model every trial starts from
    (``init``) and users' folders mixed into every trial (``extra``), when given."""

    config: str                          # the base config file
    file_values: dict[str, Any]          # its values
    fixed: dict[str, Any]
    search: dict[str, Dimension]
    init: Path | None = None             # every trial starts from this model's weights
    extra: tuple[Path, ...] = ()         # users' labelled folders mixed into every trial

    def flags(self, params: Mapping[str, Any]) -> dict[str, Any]:
        """A trial's settings over the base config: the fixed ones and its searched ones."""
        return {**self.fixed, **params}

    def resolve(self, params: Mapping[str, Any]) -> TrainConfig:
        return resolve(self.file_values, self.flags(params))

    def fingerprint(self) -> str:
        """What the study must agree on: the base settings, the searched ranges, and the
        ``init`` model and ``extra`` folders when given."""
        return json.dumps({"base": self.resolve({}).to_dict(),
                           "search": {k: d.to_dict() for k, d in self.search.items()},
                           **({"init": str(self.init)} if self.init else {}),
                           **({"extra": list(map(str, self.extra))} if self.extra else {})},
                          sort_keys=True)


def _number(key: str, value: Any, what: str) -> Any:
    """``value`` as one number for ``key`` (an item of a list setting), checked against the
    setting's type and bounds."""
    if isinstance(value, (list, dict)):
        raise ConfigError(f"{key}: {what} must be one number, not {show_value(value)}")
    value = coerce(key, value)
    return value[0] if is_list(key) else value


def _dimension(key: str, spec: Any) -> Dimension:
    """One ``[search]`` entry, checked against the setting's type, bounds and choices.

    Raises:
        ConfigError: the message names the key.
    """
    if key not in FIELDS:
        raise ConfigError(f"unknown setting {show_value(key)}; settings: {', '.join(FIELDS)}")
    if not isinstance(spec, dict):
        raise ConfigError(f"{key} must be {{ low = ..., high = ... }} or "
                          f"{{ choices = [...] }}, not {show_value(spec)}")
    unknown = [k for k in spec if k not in DIMENSION_KEYS]
    if unknown:
        raise ConfigError(f"{key}: unknown key {show_value(unknown[0])}; a searched setting has "
                          "low, high, log, step or choices")
    if "choices" in spec:
        if len(spec) > 1:
            raise ConfigError(f"{key}: choices go alone, without low, high, log or step")
        choices = spec["choices"]
        if not isinstance(choices, list) or not choices:
            raise ConfigError(f"{key}: choices must be a non-empty list")
        values = tuple(coerce(key, c) for c in choices)
        if len(set(values)) < len(values):
            raise ConfigError(f"{key}: a choice is listed twice")
        return Dimension(key, choices=values)
    if item_type(key) is str:
        raise ConfigError(f"{key} takes choices = [...], not a range")
    if "low" not in spec or "high" not in spec:
        raise ConfigError(f"{key} needs low and high, or choices")
    low, high = _number(key, spec["low"], "low"), _number(key, spec["high"], "high")
    if low >= high:
        raise ConfigError(f"{key}: {'empty' if low == high else 'reversed'} range: low "
                          f"{low} must be below high {high}")
    log = spec.get("log", False)
    if not isinstance(log, bool):
        raise ConfigError(f"{key}: log must be true or false")
    if log and low <= 0:
        raise ConfigError(f"{key}: a log range needs low > 0, not {low}")
    step = spec.get("step")
    if step is not None:
        kind = item_type(key)
        if isinstance(step, bool) or not isinstance(step, (int, float) if kind is float
                                                    else int) or not 0 < step <= high - low:
            raise ConfigError(f"{key}: step must be a positive {kind.__name__} at most "
                              f"high - low, not {show_value(step)}")
        if log:
            raise ConfigError(f"{key}: log and step do not go together")
        steps = (high - low) / step
        if abs(steps - round(steps)) > 1e-9 * max(1.0, steps):
            raise ConfigError(f"{key}: high - low ({high - low:g}) must be a whole number of "
                              f"steps of {step:g}")
    return Dimension(key, low=low, high=high, log=log, step=step)


def _base_config(name: Any, folder: Path) -> Path:
    """The ``config`` key: a preset name, or a config file (relative to the space file)."""
    if not isinstance(name, str):
        raise ConfigError(f"config must be a preset name or a config file, not {show_value(name)}")
    path = Path(name)
    if path.suffix or len(path.parts) > 1:
        path = folder / path
    return find_preset(str(path) if path.suffix or len(path.parts) > 1 else name).resolve()


def load_space(path: Path) -> Space:
    """Read a space file and check it against TrainConfig before any trial runs::

        config = "default"      # the base: a preset name or a config file
        init = "model.npz"      # optional: every trial starts from these weights
        extra = ["my-digits"]   # optional: users' labelled folders in every trial
        [fixed]
        epochs = 12
        [search]
        lr = { low = 0.02, high = 0.3, log = true }
        hidden = { choices = [[800], [1024], [800, 800]] }

    Every value must fit its setting's type, bounds and choices; each searched setting's
    ends (or choices) must make a valid config with the rest; a sweep needs val_size > 0.

    Raises:
        SpaceError: unreadable, not TOML, an unknown key, an empty or reversed range, a
            value out of bounds, a setting both fixed and searched, an ``init`` that is not
            a file or an ``extra`` that is not a folder; names file and key.
    """
    path = Path(path)

    def fail(message: str) -> SpaceError:
        return SpaceError(f"{path}: {message}")

    try:
        raw = tomllib.loads(read_bounded(path, MAX_SPACE_BYTES).decode("utf-8"))
    except OSError as exc:
        raise fail(exc.strerror or str(exc)) from None
    except (UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise fail(f"not a TOML space file ({exc})") from None
    except RecursionError:
        raise fail("nested too deeply to be a space file") from None
    unknown = [k for k in raw if k not in SPACE_KEYS]
    if unknown:
        raise fail(f"unknown key {show_value(unknown[0])}; a space file has config, init, "
                   "extra, [fixed] and [search]")
    fixed_raw, search_raw = raw.get("fixed", {}), raw.get("search")
    if not isinstance(fixed_raw, dict):
        raise fail("fixed must be a table: [fixed]")
    if not isinstance(search_raw, dict) or not search_raw:
        raise fail("nothing to search: add a [search] table, e.g. lr = { low = 0.02, "
                   "high = 0.3, log = true }")
    try:
        config = _base_config(raw.get("config", "default"), path.parent)
        file_values = load_config_file(config)
    except ConfigError as exc:
        raise fail(f"config: {exc}") from None
    try:
        fixed = {k: coerce(k, v) for k, v in fixed_raw.items()}
    except ConfigError as exc:
        raise fail(f"in [fixed], {exc}") from None
    both = [k for k in search_raw if k in fixed]
    if both:
        raise fail(f"{both[0]} is both in [fixed] and in [search]; keep it in one")
    try:
        search = {k: _dimension(k, v) for k, v in search_raw.items()}
    except ConfigError as exc:
        raise fail(f"in [search], {exc}") from None
    init, extra = _start(raw, path.parent, fail)
    space = Space(str(config), file_values, fixed, search, init, extra)
    try:
        base = space.resolve({})
    except ConfigError as exc:
        raise fail(f"config and [fixed]: {exc}") from None
    _check_validation(space, base, fail)
    return space


def _start(raw: dict[str, Any], folder: Path, fail: Callable[[str], SpaceError]
           ) -> tuple[Path | None, tuple[Path, ...]]:
    """The space's ``init`` model and ``extra`` folders, relative to its file's folder."""
    init, extra = raw.get("init"), raw.get("extra", [])
    if init is not None and not isinstance(init, str):
        raise fail(f"init must be a checkpoint's path, not {show_value(init)}")
    if not (isinstance(extra, list) and all(isinstance(e, str) for e in extra)):
        raise fail(f"extra must be a list of folders, not {show_value(extra)}")
    init_path = None
    if init is not None:
        init_path = (folder / init).absolute()
        if not init_path.is_file():
            raise fail(f"init: {init_path}: no such checkpoint")
    folders = tuple((folder / e).absolute() for e in extra)
    missing = [f for f in folders if not f.is_dir()]
    if missing:
        raise fail(f"extra: {missing[0]}: not a folder of labelled images")
    return init_path, folders


def _check_validation(space: Space, base: TrainConfig, fail: Callable[[str], SpaceError]
                      ) -> None:
    """Each searched setting's ends with the rest make a valid config with a validation split."""
    tries = [(None, None, base)]
    for key, dim in space.search.items():
        for value in dim.extremes():
            try:
                tries.append((key, value, space.resolve({key: value})))
            except ConfigError as exc:
                raise fail(f"in [search], {key} = {dim.label(value)}: {exc}") from None
    for key, value, cfg in tries:
        if cfg.val_size == 0:
            where = f"with {key} = {value}, " if key else ""
            raise fail(f"{where}val_size is 0: a sweep selects on the validation split; set "
                       "val_size > 0 in [fixed]")

