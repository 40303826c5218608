"""Running `mlp` in-process through click's CliRunner, and what the CLI tests share."""

from __future__ import annotations

from pathlib import Path

from click.testing import CliRunner, Result

from mnist_mlp import checkpoint
from mnist_mlp.cli import main
from mnist_mlp.network import MLP


def mlp(*args: object, expect: int | None = 0) -> Result:
    """``mlp ARGS...`` (each argument as a string); asserts the exit code unless None."""
    result = CliRunner().invoke(main, [str(a) for a in args])
    if expect is not None:
        assert result.exit_code == expect, (result.exit_code, result.output[-2000:])
    return result


def one_line(result: Result, *fragments: str) -> str:
    """The only line of output, an error line naming ``fragments``."""
    assert "Traceback" not in result.output and result.output.count("\n") == 1, result.output
    line = result.output.strip()
    assert line.startswith("Error: "), line
    for fragment in fragments:
        assert fragment in line, line
    return line


def toy_model(folder: Path, seed: int = 0, name: str = "toy.npz") -> Path:
    """An untrained 784-8-10 checkpoint."""
    path = folder / name
    checkpoint.save(path, MLP([784, 8, 10], seed=seed), {})
    return path
