"""Config: defaults match configs/default.toml, presets load, bad files are named."""

from __future__ import annotations

from pathlib import Path

import pytest

from mnist_mlp.config import (
    FIELDS,
    ConfigError,
    TrainConfig,
    find_preset,
    is_list,
    item_type,
    load_config_file,
    markdown_table,
    preset_names,
    resolve,
)

CONFIGS = Path(__file__).resolve().parents[1] / "configs"


def test_builtin_defaults_are_default_toml():
    assert resolve(load_config_file(CONFIGS / "default.toml")) == TrainConfig()


@pytest.mark.parametrize("path", sorted(CONFIGS.glob("*.toml")), ids=lambda p: p.stem)
def test_every_preset_loads(path):
    cfg = resolve(load_config_file(path))
    assert cfg.sizes[0] == 784 and cfg.sizes[-1] == 10


def test_bare_name_finds_the_preset(monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)  # not from ./configs: from the project's
    assert find_preset("quick").resolve() == (CONFIGS / "quick.toml").resolve()
    (tmp_path / "configs").mkdir()
    (tmp_path / "configs" / "quick.toml").write_text("epochs = 1\n")
    assert find_preset("quick") == Path("configs/quick.toml")
    with pytest.raises(ConfigError, match="no config file or preset 'nope'.*quick"):
        find_preset("nope")


@pytest.mark.parametrize("text, message", [
    ("epochz = 3\n", "unknown key 'epochz'"),
    ("epochs = 'three'\n", "epochs must be of type int"),
    ("epochs = 2.5\n", "epochs must be of type int"),
    ("lr = true\n", "lr must be of type float"),
    ("hidden = [800, 'x']\n", "hidden must be an integer or a list of integers"),
    ("dropout = 'half'\n", "dropout must be a number or a list of numbers"),
    ("epochs = \n", "Invalid value"),
])
def test_bad_files_name_the_key_and_file(tmp_path, text, message):
    path = tmp_path / "bad.toml"
    path.write_text(text)
    with pytest.raises(ConfigError, match=message) as info:
        load_config_file(path)
    assert str(path) in str(info.value)


def test_a_learning_rate_of_zero_is_refused(tmp_path):
    """lr 0 would train nothing and fail later in the schedule: the bound is open."""
    with pytest.raises(ConfigError, match=r"lr must be in \(0, 1e\+06\], not 0.0"):
        resolve({}, {"lr": 0.0})
    path = tmp_path / "zero.toml"
    path.write_text("lr = 0\n")
    with pytest.raises(ConfigError, match="lr must be in"):
        load_config_file(path)
    assert resolve({}, {"lr": 1e-12}).lr == 1e-12


def test_values_are_checked():
    with pytest.raises(ConfigError, match=r"lr must be in \(0, 1e\+06\], not -1.0"):
        resolve({}, {"lr": -1.0})
    with pytest.raises(ConfigError, match="optimizer must be one of"):
        resolve({"optimizer": "rmsprop"})
    with pytest.raises(ConfigError, match="dropout must be in"):
        resolve({"dropout": (1.0,)})
    with pytest.raises(ConfigError, match="one rate or one per hidden layer"):
        resolve({"hidden": (64, 32), "dropout": (0.1, 0.2, 0.3)})
    with pytest.raises(ConfigError, match="augment_end needs distortions"):
        resolve({"augment": "none", "augment_end": 0.5})
    with pytest.raises(ConfigError, match="augment_end needs at least 2 epochs"):
        resolve({"augment": "affine", "augment_end": 0.5, "epochs": 1})
    with pytest.raises(ConfigError, match=r"augment_end must be in \[0, 1\]"):
        resolve({}, {"augment_end": 1.5})


def test_flags_beat_file_beats_defaults():
    cfg = resolve({"epochs": 2, "lr": 0.5, "hidden": (64,)}, {"lr": 0.01})
    assert (cfg.epochs, cfg.lr, cfg.hidden) == (2, 0.01, (64,))
    assert cfg.batch_size == TrainConfig().batch_size
    assert resolve({"hidden": (500, 300)}).sizes == [784, 500, 300, 10]


def test_a_config_file_may_start_with_a_byte_order_mark(tmp_path):
    path = tmp_path / "bom.toml"
    path.write_bytes(b"\xef\xbb\xbfepochs = 3\n")
    assert load_config_file(path) == {"epochs": 3}


def test_choices_come_from_the_registries():
    from mnist_mlp.augment import AUGMENTATIONS
    from mnist_mlp.optim import OPTIMIZERS, SCHEDULES

    assert FIELDS["optimizer"].metadata["choices"] == tuple(OPTIMIZERS)
    assert FIELDS["schedule"].metadata["choices"] == tuple(SCHEDULES)
    assert FIELDS["augment"].metadata["choices"] == tuple(AUGMENTATIONS)


def test_types_are_read_from_the_annotations():
    assert item_type("hidden") is int and is_list("hidden")
    assert item_type("dropout") is float and is_list("dropout")
    assert item_type("lr") is float and not is_list("lr")
    assert item_type("optimizer") is str


def test_the_documented_table_is_made_from_the_fields():
    docs = (Path(__file__).resolve().parents[1] / "docs" / "training.md").read_text()
    assert markdown_table() in docs


@pytest.mark.parametrize("name", preset_names())
def test_every_preset_is_a_valid_config_that_says_what_it_is(name):
    path = find_preset(name)
    assert path.read_text().startswith("# ")
    cfg = resolve(load_config_file(path))
    assert cfg.epochs >= 1 and cfg.sizes[0] == 784 and cfg.sizes[-1] == 10


def test_presets_ship_in_the_package(monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)
    names = preset_names()
    assert {"default", "quick", "best"} <= set(names)
    assert sorted(p.stem for p in CONFIGS.glob("*.toml")) == names
    assert find_preset("best").parent.parent.name == "mnist_mlp"
