"""mnist-mlp: train, evaluate and use a multilayer perceptron on MNIST, in plain NumPy."""


def package_version() -> str:
    """The installed package's version, or "unknown" when run from a bare source tree."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("mnist-mlp")
    except PackageNotFoundError:
        return "unknown"
