"""Shared fixtures: tiny synthetic MNIST as a DataSource, one tiny run, real MNIST."""

from __future__ import annotations

import os
import signal
from pathlib import Path

import pytest

from mnist_mlp.dataset import DataSource
from mnist_mlp.mnist import RESOURCES

from .tiny_data import TINY, tiny_source


@pytest.fixture(autouse=True)
def _signal_handlers():
    """Each test leaves SIGINT and SIGTERM as it found them: `mlp train` stopped by a signal
    ignores further ones until its process exits, and these tests run it in-process."""
    saved = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}
    yield
    for s, handler in saved.items():
        signal.signal(s, handler)


REAL_MNIST = Path(os.environ.get("MLP_TEST_MNIST")
                  or Path(__file__).resolve().parents[2] / "shared" / "mnist")


@pytest.fixture
def tiny_mnist(tmp_path) -> DataSource:
    """Small synthetic IDX files (600 training, 200 test samples) in a folder of this test's
    own, as a DataSource whose resource table expects them: everything downstream runs the
    real verification code. The test may change or damage the files."""
    return tiny_source(tmp_path / "tiny")


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory) -> Path:
    """The TINY config trained once per session on tiny data, with its curves: the kept
    model's path (its .last.npz, .metrics.jsonl and .curves.png beside it). Read-only:
    a test that changes it works on ``tiny_data.copy_run``."""
    from mnist_mlp import run

    source = tiny_source(tmp_path_factory.mktemp("tiny-data"))
    out = tmp_path_factory.mktemp("tiny-run") / "m.npz"
    run.train(run.build_spec(out, flags=TINY, data=source), run.Hooks(progress=False))
    return out


def _real_mnist() -> Path:
    if not all((REAL_MNIST / r.gz_name).is_file() for r in RESOURCES):
        pytest.skip(f"real MNIST not found in {REAL_MNIST} (set MLP_TEST_MNIST to a folder of "
                    "the four .gz files)")
    return REAL_MNIST


@pytest.fixture(scope="session")
def real_mnist() -> Path:
    return _real_mnist()


@pytest.fixture(scope="session")
def real_model(tmp_path_factory) -> Path:
    """The `quick` preset (784-128-10, 3 epochs, ~97% test) trained once per session on real
    MNIST, through the library's run: its checkpoint, with the metrics log beside it."""
    from mnist_mlp import run

    out = tmp_path_factory.mktemp("real-model") / "quick.npz"
    spec = run.build_spec(out, "quick", data=DataSource(_real_mnist(), mirrors=()))
    run.train(spec, run.Hooks(progress=False, plots=False))
    return out


REAL_FASHION = Path(os.environ.get("MLP_TEST_FASHION") or "/usr/share/datasets/fashion-mnist")


@pytest.fixture(scope="session")
def real_fashion() -> Path:
    """The real Fashion-MNIST files: Debian's dataset-fashion-mnist package, or the folder
    named by MLP_TEST_FASHION."""
    from mnist_mlp.mnist import FASHION_RESOURCES

    if not all((REAL_FASHION / r.gz_name).is_file() for r in FASHION_RESOURCES):
        pytest.skip(f"real Fashion-MNIST not found in {REAL_FASHION} (apt-get install "
                    "dataset-fashion-mnist, or set MLP_TEST_FASHION to a folder of its files)")
    return REAL_FASHION


@pytest.fixture(scope="session")
def real_fashion_model(tmp_path_factory, real_fashion) -> Path:
    """The `quick` preset trained once per session on real Fashion-MNIST (~87% test)."""
    from mnist_mlp import run
    from mnist_mlp.mnist import FASHION_MNIST

    out = tmp_path_factory.mktemp("real-fashion-model") / "quick.npz"
    spec = run.build_spec(out, "quick", {"dataset": "fashion-mnist"},
                          data=DataSource(real_fashion, (), dataset=FASHION_MNIST))
    run.train(spec, run.Hooks(progress=False, plots=False))
    return out
