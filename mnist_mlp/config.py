"""Training configuration: typed defaults, TOML presets, and their merge with flags.

Each ``TrainConfig`` field carries its default, help text, bounds and choices
once (in its ``metadata``); validation, the ``mlp train`` options and the
settings table of docs/training.md all come from there. Precedence: built-in defaults < the
``--config`` file < flags given on the command line. Unknown keys, wrong types
and out-of-range values are errors that name the key (and the file).
"""

from __future__ import annotations

import dataclasses
import math
import tomllib
import typing
from dataclasses import dataclass, field, fields
from importlib import resources
from pathlib import Path
from typing import Any

from .augment import AUGMENTATIONS
from .files import read_bounded
from .mnist import DATASETS, N_CLASSES, N_PIXELS
from .network import MAX_LAYERS, MAX_WIDTH
from .optim import OPTIMIZERS, SCHEDULES

PRESET_DIR = Path("configs")          # ./configs/NAME.toml is looked at before the built-ins
PRESET_PACKAGE_DIR = "configs"        # built-in presets: package data of mnist_mlp
DEFAULT_OUT = Path("checkpoints/mnist-mlp.npz")  # the kept model of `mlp train`, read by eval
MAX_CONFIG_BYTES = 1 << 20            # a preset is a few hundred bytes


class ConfigError(ValueError):
    """A config value that cannot be used; the message names the key."""


class ConfigFileError(ConfigError):
    """A config file that cannot be used; the message names the file and the key."""


@dataclass(frozen=True)
class Bounds:
    """A closed or half-open interval of allowed numbers."""

    low: float
    high: float
    low_open: bool = False
    high_open: bool = False

    def __contains__(self, value: float) -> bool:
        above = value > self.low if self.low_open else value >= self.low
        below = value < self.high if self.high_open else value <= self.high
        return math.isfinite(value) and above and below

    def __str__(self) -> str:
        def show(x: float) -> str:
            return str(x) if isinstance(x, int) else f"{x:g}"

        return (f"{'(' if self.low_open else '['}{show(self.low)}, {show(self.high)}"
                f"{')' if self.high_open else ']'}")


def setting(default: Any, help: str, bounds: Bounds | None = None,
            choices: tuple[str, ...] | None = None) -> Any:
    """A TrainConfig field: its default, help text, bounds (per item for lists) and choices."""
    return field(default=default, metadata={"help": help, "bounds": bounds, "choices": choices})


PROBABILITY = Bounds(0, 1, high_open=True)
MAX_TRAIN = 60_000  # MNIST's training images


@dataclass(frozen=True)
class TrainConfig:
    """Every hyperparameter of a training run. The defaults are ``configs/default.toml``."""

    dataset: str = setting("mnist", "The dataset to train on (without --config, fashion-mnist "
                                    "starts from its own preset, fashion-default).",
                           choices=tuple(DATASETS))
    hidden: tuple[int, ...] = setting((800,), "Hidden layer widths, e.g. 500,300.",
                                      Bounds(1, MAX_WIDTH))
    epochs: int = setting(14, "Passes over the training split.", Bounds(1, 100_000))
    batch_size: int = setting(128, "Samples per gradient step.", Bounds(1, MAX_TRAIN))
    lr: float = setting(0.1, "Peak learning rate.", Bounds(0, 1e6, low_open=True))
    optimizer: str = setting("nesterov", "Update rule.", choices=tuple(OPTIMIZERS))
    momentum: float = setting(0.9, "SGD momentum, or Adam's beta1.", PROBABILITY)
    weight_decay: float = setting(0.0, "L2 (sgd, nesterov, adam) or decoupled (adamw) decay "
                                       "of the weights; biases are not decayed.", Bounds(0, 10))
    dropout: tuple[float, ...] = setting((0.0,), "Hidden-unit drop probability: one, or one "
                                                 "per hidden layer.", PROBABILITY)
    input_dropout: float = setting(0.0, "Input-pixel drop probability.", PROBABILITY)
    label_smoothing: float = setting(0.0, "ε: targets (1 - ε) one-hot + ε/10.", PROBABILITY)
    max_norm: float = setting(0.0, "Bound on each unit's incoming weight norm (0: off).",
                              Bounds(0, 1e6))
    schedule: str = setting("cosine", "Learning-rate schedule after warm-up.",
                            choices=tuple(SCHEDULES))
    warmup_epochs: float = setting(0.0, "Linear learning-rate warm-up, in epochs (at most "
                                        "--epochs).", Bounds(0, 100_000))
    augment: str = setting("affine", "Random distortions of each training batch.",
                           choices=tuple(AUGMENTATIONS))
    augment_end: float = setting(1.0, "Strength of the distortions in the last epoch, relative "
                                      "to the first; it falls linearly from one epoch to the "
                                      "next (1: the same throughout).", Bounds(0, 1))
    mixup: float = setting(0.0, "α of mixup: each batch trains on λ·X + (1 - λ)·X' with "
                                "targets mixed alike, X' its own images in a random order "
                                "and λ ~ Beta(α, α), e.g. 0.3 (0: off).", Bounds(0, 100))
    ema: float = setting(0.0, "Decay of an exponential moving average of the weights, e.g. "
                              "0.999 (0: off); each epoch keeps whichever of the average and "
                              "the weights validates better.", PROBABILITY)
    val_size: int = setting(5000, "Last N training samples held out for validation (0: train "
                                  "on all 60,000; the last epoch is the model).",
                            Bounds(0, MAX_TRAIN - 1))
    patience: int = setting(0, "Early stopping once N epochs have passed since the kept "
                               "epoch (0: off; needs --val-size > 0).", Bounds(0, 100_000))
    select_tolerance: float = setting(0.0, "Keep the latest epoch whose validation accuracy "
                                           "is within this of the best so far (0.001 = 0.1 "
                                           "points; 0: the best).", Bounds(0, 1))
    extra_share: float = setting(0.25, "Share of each epoch's samples that come from --extra "
                                       "folders (their images repeated to fill it).",
                                 PROBABILITY)
    seed: int = setting(0, "Seeds initialisation, shuffling, dropout, distortions.",
                        Bounds(0, 2**63 - 1))

    def __post_init__(self):
        for f in fields(self):
            check_value(f.name, getattr(self, f.name))
        _check_together(self)

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON/TOML-friendly values (tuples become lists)."""
        return {k: list(v) if isinstance(v, tuple) else v
                for k, v in dataclasses.asdict(self).items()}

    @property
    def sizes(self) -> list[int]:
        """Layer widths of the network: [784, *hidden, 10]."""
        return [N_PIXELS, *self.hidden, N_CLASSES]


FIELDS = {f.name: f for f in fields(TrainConfig)}
FIELD_TYPES = typing.get_type_hints(TrainConfig)


def item_type(key: str) -> type:
    """int, float or str: the field's type, or the item type of a tuple field."""
    kind = FIELD_TYPES[key]
    return typing.get_args(kind)[0] if typing.get_origin(kind) is tuple else kind


def is_list(key: str) -> bool:
    return typing.get_origin(FIELD_TYPES[key]) is tuple


def check_value(key: str, value: Any) -> None:
    """Bounds and choices of one field, from its metadata.

    Raises:
        ConfigError: out of range or not a choice; the message names the key.
    """
    meta = FIELDS[key].metadata
    bounds, choices = meta["bounds"], meta["choices"]
    items = value if is_list(key) else (value,)
    if is_list(key) and not items:
        raise ConfigError(f"{key} must have at least one value")
    if choices is not None and value not in choices:
        raise ConfigError(f"{key} must be one of {', '.join(choices)}, not {show_value(value)}")
    if bounds is not None and not all(v in bounds for v in items):
        raise ConfigError(f"{key} must be in {bounds}, not {show_value(value)}")


def show_value(value: Any, limit: int = 40) -> str:
    """A value for an error message, cut short: a hostile file may hold a megabyte of it."""
    text = ",".join(map(str, value)) if isinstance(value, tuple) else repr(value)
    return text if len(text) <= limit else text[:limit] + "..."


def _check_together(cfg: TrainConfig) -> None:
    """Rules that tie two fields together."""
    if len(cfg.hidden) >= MAX_LAYERS:
        raise ConfigError(f"hidden may have at most {MAX_LAYERS - 1} layers, not "
                          f"{len(cfg.hidden)}")
    if len(cfg.dropout) not in (1, len(cfg.hidden)):
        raise ConfigError(f"dropout must be one rate or one per hidden layer "
                          f"({len(cfg.hidden)}), not {show_value(cfg.dropout)}")
    if cfg.warmup_epochs > cfg.epochs:
        raise ConfigError(f"warmup_epochs ({cfg.warmup_epochs:g}) must be between 0 and "
                          f"epochs ({cfg.epochs})")
    if cfg.augment_end != 1 and cfg.augment == "none":
        raise ConfigError("augment_end needs distortions to weaken: augment is none")
    if cfg.augment_end != 1 and cfg.epochs == 1:
        raise ConfigError("augment_end needs at least 2 epochs to fall over: epochs is 1")
    if cfg.patience and not cfg.val_size:
        raise ConfigError("patience needs a validation split: val_size 0 trains on all "
                          "the data and keeps the last epoch")


def coerce(key: str, value: Any) -> Any:
    """Check ``value``'s type and range for ``key`` and convert it (int -> float, list -> tuple).

    Raises:
        ConfigError: unknown key, wrong type, or out of range.
    """
    if key not in FIELDS:
        raise ConfigError(f"unknown key {show_value(key)}; known keys: {', '.join(FIELDS)}")
    kind = item_type(key)
    if is_list(key):
        items = value if isinstance(value, list) else [value]
        try:
            value = tuple(_coerce_scalar(key, kind, v) for v in items)
        except ConfigError:
            one, many = {int: ("an integer", "integers"), float: ("a number", "numbers")}[kind]
            raise ConfigError(f"{key} must be {one} or a list of {many}, not "
                              f"{show_value(value)}") from None
    else:
        value = _coerce_scalar(key, kind, value)
    check_value(key, value)
    return value


def _coerce_scalar(key: str, kind: type, value: Any) -> Any:
    """``value`` as ``kind`` (int, float, str); ints are accepted as floats, bools never."""
    if isinstance(value, bool):
        pass
    elif kind is int and isinstance(value, int):
        return value
    elif kind is float and isinstance(value, (int, float)):
        return float(value)
    elif kind is str and isinstance(value, str):
        return value
    raise ConfigError(f"{key} must be of type {kind.__name__}, not {type(value).__name__} "
                      f"({show_value(value)})")


def preset_names() -> list[str]:
    """Names of the built-in presets."""
    folder = resources.files("mnist_mlp") / PRESET_PACKAGE_DIR
    return sorted(p.name.removesuffix(".toml") for p in folder.iterdir()
                  if p.name.endswith(".toml"))


def builtin_preset(name: str) -> Path:
    """The packaged preset ``name`` (one of ``preset_names()``), whatever ``./configs`` holds."""
    return Path(str(resources.files("mnist_mlp") / PRESET_PACKAGE_DIR / f"{name}.toml"))


def find_preset(name: str) -> Path:
    """A config file path, or a bare preset name looked up in ``./configs``, then built in.

    Raises:
        ConfigFileError: nothing by that name.
    """
    path = Path(name)
    if path.suffix == "" and len(path.parts) == 1:
        local = PRESET_DIR / f"{name}.toml"
        if local.exists():
            return local
        if name in preset_names():
            return builtin_preset(name)
    if path.exists():
        return path
    raise ConfigFileError(f"no config file or preset {name!r}; presets: "
                          f"{', '.join(preset_names())}")


def load_config_file(path: Path) -> dict[str, Any]:
    """Read a TOML preset into checked field values.

    Raises:
        ConfigFileError: unreadable or not TOML, an unknown key, a wrong type or
            a value out of range; the message names the file and the key.
    """
    try:
        text = read_bounded(Path(path), MAX_CONFIG_BYTES).decode("utf-8-sig")  # BOM or not
        raw = tomllib.loads(text)
    except OSError as exc:
        raise ConfigFileError(f"{path}: {exc.strerror or exc}") from None
    except (UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise ConfigFileError(f"{path}: {exc}") from None
    except RecursionError:
        raise ConfigFileError(f"{path}: nested too deeply to be a config") from None
    try:
        return {key: coerce(key, value) for key, value in raw.items()}
    except ConfigError as exc:
        raise ConfigFileError(f"{path}: {exc}") from None


def resolve(file_values: dict[str, Any] | None = None, flag_values: dict[str, Any] | None = None,
            base: TrainConfig | None = None) -> TrainConfig:
    """``base`` (default: built-in defaults) overridden by the file, then by the flags.

    Raises:
        ConfigError: a value out of range, or fields that do not fit together.
    """
    merged = {**(file_values or {}), **(flag_values or {})}
    return dataclasses.replace(base or TrainConfig(), **merged)


def markdown_table() -> str:
    """The table of ``mlp train`` settings in docs/training.md, made from the fields'
    metadata."""
    rows = ["| option | default | range or choices | meaning |", "| --- | --- | --- | --- |"]
    for name, fld in FIELDS.items():
        meta = fld.metadata
        default = ",".join(map(str, fld.default)) if is_list(name) else fld.default
        allowed = ("\\|".join(meta["choices"]) if meta["choices"]
                   else f"{meta['bounds']}{' each' if is_list(name) else ''}")
        rows.append(f"| `--{name.replace('_', '-')}` | {default} | {allowed} | "
                    f"{meta['help']} |")
    return "\n".join(rows)
