"""What the commands share: the data options as one DataSource, the model option, error
lines. Exercised through small commands built on them."""

from __future__ import annotations

from pathlib import Path

import click
import pytest
from click.testing import CliRunner

from mnist_mlp.cli.common import (
    CONTEXT,
    data_options,
    ensure_data,
    fail,
    load_models,
    model_option,
    output_error,
)
from mnist_mlp.dataset import DataSource
from mnist_mlp.download import DOWNLOAD_DEADLINE_S
from mnist_mlp.mnist import DEFAULT_MIRRORS

from ..mirrors import Mirror
from .runner import toy_model

SOURCES = []


@click.command(context_settings=CONTEXT)
@data_options
@click.option("-q", "--quiet", is_flag=True)
@click.option("--ensure", is_flag=True)
def show_source(source: DataSource, quiet: bool, ensure: bool) -> None:
    SOURCES.append(source)
    if ensure:
        ensure_data(source, quiet)


@click.command(context_settings=CONTEXT)
@model_option
def show_models(models: tuple[Path, ...]) -> None:
    ckpt = load_models(models)
    click.echo(f"{type(ckpt.net).__name__} {len(models)}")


def _source(*args, env=None) -> DataSource:
    SOURCES.clear()
    result = CliRunner().invoke(show_source, [str(a) for a in args], env=env)
    assert result.exit_code == 0, result.output
    return SOURCES[0]


@pytest.fixture
def no_env(monkeypatch):
    monkeypatch.delenv("MLP_DATA_DIR", raising=False)
    monkeypatch.delenv("MLP_MNIST_MIRRORS", raising=False)


def test_the_data_options_are_one_source(no_env, tmp_path):
    assert _source() == DataSource(Path("data"), DEFAULT_MIRRORS, DOWNLOAD_DEADLINE_S)
    env = {"MLP_DATA_DIR": str(tmp_path), "MLP_MNIST_MIRRORS": "http://a/,http://b/"}
    assert _source(env=env) == DataSource(tmp_path, ("http://a/", "http://b/"))
    given = _source("--data-dir", tmp_path / "x", "--mirror", "http://c/", "--mirror",
                    "http://d/", "--download-timeout", "5", env=env)
    assert given == DataSource(tmp_path / "x", ("http://c/", "http://d/"), 5)


@pytest.mark.parametrize("args", [["--download-timeout", "0"], ["--download-timeout", "x"],
                                  ["--data-dir"]])
def test_bad_data_options_are_usage_errors(no_env, args):
    result = CliRunner().invoke(show_source, args)
    assert result.exit_code == 2 and "Error:" in result.output


def test_what_is_downloaded_is_said_unless_quiet(tiny_mnist, tmp_path, no_env):
    files = {f"/mnist/{p.name}": p.read_bytes() for p in tiny_mnist.folder.glob("*.gz")}
    mirror = Mirror(files)
    try:
        for quiet, folder in ((False, tmp_path / "a"), (True, tmp_path / "b")):
            source = DataSource(folder, (mirror.url,), resources=tiny_mnist.resources)
            command = click.command()(lambda: ensure_data(source, quiet))
            result = CliRunner().invoke(command, [])
            assert result.exit_code == 0, result.output
            assert result.stderr == ("" if quiet else source.summary(
                [(r, "downloaded") for r in source.resources]) + "\n")
            assert result.stdout == ""
    finally:
        mirror.close()


def test_data_errors_are_one_line(tmp_path, no_env):
    mirror = Mirror({})                                   # 404 for everything
    try:
        result = CliRunner().invoke(show_source, ["--data-dir", str(tmp_path), "--mirror",
                                                  mirror.url, "--ensure", "-q"])
    finally:
        mirror.close()
    assert result.exit_code == 1 and result.output.count("\n") == 1
    assert result.output.startswith("Error: could not download train-images-idx3-ubyte.gz (")


def test_models_one_or_a_committee(tmp_path, monkeypatch):
    one, two = toy_model(tmp_path, 0, "a.npz"), toy_model(tmp_path, 1, "b.npz")
    runner = CliRunner()
    assert runner.invoke(show_models, ["--model", str(one)]).output == "MLP 1\n"
    result = runner.invoke(show_models, ["--model", str(one), "--model", str(two)])
    assert result.output == "Committee 2\n"
    result = runner.invoke(show_models, ["--model", str(one), "--model", str(tmp_path / "x")])
    assert result.exit_code == 1
    assert result.output == f"Error: {tmp_path / 'x'}: no such checkpoint; train one with " \
                            "`mlp train`\n"
    monkeypatch.chdir(tmp_path)                         # no checkpoints/ here
    result = runner.invoke(show_models, [], catch_exceptions=False)
    assert result.exit_code == 1 and "checkpoints/mnist-mlp.npz" in result.output


def test_error_lines():
    assert isinstance(fail("bad"), click.ClickException) and fail("bad").exit_code == 1
    assert fail(ValueError("x: y")).message == "x: y"
    error = output_error(Path("p.png"), OSError(28, "No space left on device"))
    assert error.message == "p.png: No space left on device"
