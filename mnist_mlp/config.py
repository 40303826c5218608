"""Training configuration: typed defaults, TOML presets, and their merge with flags.

Precedence: built-in defaults < the ``--config`` file < flags given on the
command line. Unknown keys and wrong types are errors that name the key and
the file.
"""

from __future__ import annotations

import dataclasses
import math
import tomllib
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

PRESET_DIRS = (Path("configs"), Path(__file__).resolve().parent.parent / "configs")
DEFAULT_OUT = Path("checkpoints/mnist-mlp.npz")  # best checkpoint of `mlp train`, read by eval


class ConfigError(ValueError):
    """A config file or value that cannot be used; the message names the key."""


@dataclass(frozen=True)
class TrainConfig:
    """Every hyperparameter of a training run. The defaults are ``configs/default.toml``."""

    hidden: tuple[int, ...] = (800,)  # hidden layer widths, e.g. (500, 300)
    epochs: int = 12                  # passes over the training split
    batch_size: int = 128             # samples per gradient step
    lr: float = 0.1                   # peak learning rate
    optimizer: str = "nesterov"       # sgd | nesterov | adam | adamw
    momentum: float = 0.9             # SGD momentum, or Adam's beta1
    weight_decay: float = 0.0         # L2 for sgd/nesterov/adam, decoupled for adamw
    dropout: tuple[float, ...] = (0.0,)  # hidden-unit drop probability: one, or one per layer
    input_dropout: float = 0.0        # drop probability of each input pixel
    label_smoothing: float = 0.0      # ε: targets (1 - ε) one-hot + ε / 10
    max_norm: float = 0.0             # bound on each unit's incoming weight norm; 0 = off
    schedule: str = "cosine"          # constant | step | cosine
    warmup_epochs: float = 0.0        # linear warm-up length, in epochs
    augment: str = "none"             # none | affine | elastic
    val_size: int = 5000              # last N training samples held out for validation
    patience: int = 0                 # stop after N epochs without a better val accuracy; 0 = off
    seed: int = 0                     # seeds initialisation, shuffling, dropout, augmentation

    def __post_init__(self):
        _validate(self)

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON/TOML-friendly values (tuples become lists)."""
        return {k: list(v) if isinstance(v, tuple) else v
                for k, v in dataclasses.asdict(self).items()}

    @property
    def sizes(self) -> list[int]:
        """Layer widths of the network: [784, *hidden, 10]."""
        return [784, *self.hidden, 10]


FIELD_TYPES = {f.name: f.type for f in fields(TrainConfig)}
CHOICES = {
    "optimizer": ("sgd", "nesterov", "adam", "adamw"),
    "schedule": ("constant", "step", "cosine"),
    "augment": ("none", "affine", "elastic"),
}


def _validate(cfg: TrainConfig) -> None:
    def need(ok: bool, key: str, what: str) -> None:
        if not ok:
            raise ConfigError(f"{key} must be {what}, not {getattr(cfg, key)!r}")

    need(len(cfg.hidden) >= 1 and all(h >= 1 for h in cfg.hidden), "hidden",
         "one or more positive widths")
    need(cfg.epochs >= 1, "epochs", ">= 1")
    need(cfg.batch_size >= 1, "batch_size", ">= 1")
    need(cfg.lr > 0 and math.isfinite(cfg.lr), "lr", "> 0")
    need(0 <= cfg.momentum < 1, "momentum", "in [0, 1)")
    need(cfg.weight_decay >= 0, "weight_decay", ">= 0")
    for key in ("input_dropout", "label_smoothing"):
        need(0 <= getattr(cfg, key) < 1, key, "in [0, 1)")
    need(len(cfg.dropout) in (1, len(cfg.hidden)) and all(0 <= p < 1 for p in cfg.dropout),
         "dropout", "in [0, 1), one rate or one per hidden layer")
    need(cfg.max_norm >= 0, "max_norm", ">= 0")
    need(0 <= cfg.warmup_epochs <= cfg.epochs, "warmup_epochs", "between 0 and epochs")
    need(0 < cfg.val_size < 60_000, "val_size", "in [1, 60000)")
    need(cfg.patience >= 0, "patience", ">= 0")
    need(cfg.seed >= 0, "seed", ">= 0")
    for key, options in CHOICES.items():
        need(getattr(cfg, key) in options, key, "one of " + ", ".join(options))


def coerce(key: str, value: Any) -> Any:
    """Check ``value`` against the field's type and convert it (int -> float, list -> tuple).

    Raises:
        ConfigError: unknown key or wrong type.
    """
    if key not in FIELD_TYPES:
        raise ConfigError(f"unknown key {key!r}; known keys: {', '.join(FIELD_TYPES)}")
    kind = FIELD_TYPES[key]
    if kind.startswith("tuple["):
        item = kind[len("tuple["):-len(", ...]")]                 # "int" or "float"
        items = value if isinstance(value, list) else [value]
        try:
            return tuple(coerce_scalar(key, item, v) for v in items)
        except ConfigError:
            one, many = {"int": ("an integer", "integers"), "float": ("a number", "numbers")}[item]
            raise ConfigError(f"{key} must be {one} or a list of {many}, not {value!r}") from None
    return coerce_scalar(key, kind, value)


def coerce_scalar(key: str, kind: str, value: Any) -> Any:
    """``value`` as ``kind`` ("int", "float", "str"); ints are accepted as floats, bools never.

    Raises:
        ConfigError: wrong type.
    """
    if kind == "int" and isinstance(value, int) and not isinstance(value, bool):
        return value
    if kind == "float" and isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    if kind == "str" and isinstance(value, str):
        return value
    raise ConfigError(f"{key} must be of type {kind}, not {type(value).__name__} ({value!r})")


def find_preset(name: str) -> Path:
    """A config file path, or a bare preset name looked up in ``./configs`` then the project's.

    Raises:
        ConfigError: nothing by that name.
    """
    path = Path(name)
    if path.is_file():
        return path
    if path.suffix == "" and len(path.parts) == 1:
        for folder in PRESET_DIRS:
            candidate = folder / f"{name}.toml"
            if candidate.is_file():
                return candidate
    known = sorted({p.stem for d in PRESET_DIRS if d.is_dir() for p in d.glob("*.toml")})
    raise ConfigError(f"no config file or preset {name!r}; presets: {', '.join(known) or 'none'}")


def load_config_file(path: Path) -> dict[str, Any]:
    """Read a TOML preset into checked field values.

    Raises:
        ConfigError: unreadable TOML, unknown key or wrong type; the message names the file.
    """
    try:
        raw = tomllib.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise ConfigError(f"{path}: {exc}") from None
    try:
        return {key: coerce(key, value) for key, value in raw.items()}
    except ConfigError as exc:
        raise ConfigError(f"{path}: {exc}") from None


def resolve(file_values: dict[str, Any] | None = None, flag_values: dict[str, Any] | None = None,
            base: TrainConfig | None = None) -> TrainConfig:
    """``base`` (default: built-in defaults) overridden by the file, then by the flags."""
    merged = {**(file_values or {}), **(flag_values or {})}
    return dataclasses.replace(base or TrainConfig(), **merged)
