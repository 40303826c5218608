"""Speed of mnist-mlp against PyTorch and against the machine's matmul limit, on real MNIST.

    python benchmarks/bench.py --data-dir ../shared/mnist            # everything
    python benchmarks/bench.py --data-dir ../shared/mnist --only engine --reps 7
    python benchmarks/bench.py --data-dir ../shared/mnist --profile 784-800-10

Engine: training-loop seconds per epoch (``train_seconds``, no data loading or
validation) for each model at batch 128 with SGD momentum 0.9, alternating
mnist-mlp and PyTorch epochs (A B A B ...) when torch is importable, both on
the same threads. The matmul limit is N·(6·Σ dᵢdᵢ₊₁ − 2·d₀d₁) FLOPs per epoch
(forward, weight gradients, input gradients but the first layer's) at the
float32 GEMM rate of a 2048³ product measured here. Commands: wall seconds and
peak RSS of ``mlp train`` (default config), ``mlp eval``, ``mlp predict``, each
from process start. Prints a Markdown table; figures are medians.
"""

from __future__ import annotations

import argparse
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from mnist_mlp import data  # noqa: E402
from mnist_mlp.config import resolve  # noqa: E402
from mnist_mlp.runner import new_trainer  # noqa: E402

MODELS = {"784-128-10": (128,), "784-800-10": (800,), "784-1024-1024-10": (1024, 1024)}
BATCH, LR, MOMENTUM = 128, 0.05, 0.9


def gemm_flops_per_second(reps: int = 5) -> float:
    """float32 GEMM rate of a 2048³ product, median of ``reps``."""
    rng = np.random.default_rng(0)
    a = rng.random((2048, 2048), dtype=np.float32)
    b = rng.random((2048, 2048), dtype=np.float32)
    a @ b
    times = []
    for _ in range(reps):
        t = time.perf_counter()
        a @ b
        times.append(time.perf_counter() - t)
    return 2 * 2048 ** 3 / statistics.median(times)


def epoch_flops(sizes: list[int], n: int) -> float:
    pairs = sum(a * b for a, b in zip(sizes[:-1], sizes[1:]))
    return n * (6 * pairs - 2 * sizes[0] * sizes[1])


def engine_epoch(hidden, X, y, X_val, y_val, seed) -> float:
    """Training-loop seconds of one epoch of mnist-mlp's own Trainer."""
    cfg = resolve({"hidden": hidden, "epochs": 1, "batch_size": BATCH, "lr": LR,
                   "optimizer": "sgd", "momentum": MOMENTUM, "schedule": "constant",
                   "seed": seed})
    trainer = new_trainer(cfg, len(X))
    trainer.fit(X, y, X_val, y_val)
    return trainer.state.history[-1]["train_seconds"]


def torch_epoch(hidden, X, y, seed) -> float:
    """Training-loop seconds of one epoch of the same model and optimiser in PyTorch."""
    import torch

    torch.manual_seed(seed)
    sizes = [784, *hidden, 10]
    layers = []
    for i, (a, b) in enumerate(zip(sizes[:-1], sizes[1:])):
        linear = torch.nn.Linear(a, b)
        torch.nn.init.kaiming_normal_(linear.weight, nonlinearity="relu")  # He-normal, fan_in
        torch.nn.init.zeros_(linear.bias)
        layers += [linear] + ([torch.nn.ReLU()] if i < len(sizes) - 2 else [])
    model = torch.nn.Sequential(*layers)
    opt = torch.optim.SGD(model.parameters(), lr=LR, momentum=MOMENTUM)
    loss_fn = torch.nn.CrossEntropyLoss()
    Xt, yt = torch.from_numpy(X), torch.from_numpy(y)
    order = torch.from_numpy(np.random.default_rng(seed).permutation(len(X)))
    t = time.perf_counter()
    for start in range(0, len(X), BATCH):
        idx = order[start:start + BATCH]
        opt.zero_grad(set_to_none=True)
        loss = loss_fn(model(Xt[idx]), yt[idx])
        loss.backward()
        opt.step()
    return time.perf_counter() - t


def bench_engine(data_dir: Path, reps: int, threads: int) -> list[dict]:
    X, y = data.load_mnist("train", data_dir)          # all 60,000 for training
    X_val, y_val = X[:1000], y[:1000]                   # untimed; required by fit
    try:
        import torch

        torch.set_num_threads(threads)
        have_torch = True
    except ImportError:
        have_torch = False
        print("PyTorch not importable: mnist-mlp alone (pip install torch==2.13.0 to compare)",
              file=sys.stderr)
    peak = gemm_flops_per_second()
    rows = []
    for name, hidden in MODELS.items():
        ours, theirs = [], []
        for rep in range(reps):
            ours.append(engine_epoch(hidden, X, y, X_val, y_val, rep))
            if have_torch:
                theirs.append(torch_epoch(hidden, X, y, rep))
            print(f"{name} rep {rep}: mnist-mlp {ours[-1]:.3f}s"
                  + (f", torch {theirs[-1]:.3f}s" if theirs else ""), file=sys.stderr)
        t = statistics.median(ours)
        limit = epoch_flops([784, *hidden, 10], len(X)) / peak
        row = {"model": name, "seconds": t, "samples_per_s": len(X) / t,
               "share_of_limit": limit / t, "limit_seconds": limit}
        if theirs:
            row["torch_seconds"] = statistics.median(theirs)
            row["ratio"] = statistics.median(a / b for a, b in zip(ours, theirs))
        rows.append(row)
    print(f"float32 GEMM 2048³: {peak / 1e9:.1f} GFLOP/s", file=sys.stderr)
    return rows


def profile_engine(data_dir: Path, model: str) -> None:
    """cProfile of one training epoch of ``model``: where the time goes, by function."""
    import cProfile
    import pstats

    X, y = data.load_mnist("train", data_dir)
    profiler = cProfile.Profile()
    profiler.runcall(engine_epoch, MODELS[model], X, y, X[:1000], y[:1000], 0)
    pstats.Stats(profiler, stream=sys.stderr).sort_stats("tottime").print_stats(12)


def measure(cmd: list[str]) -> tuple[float, float]:
    """Wall seconds and peak RSS (MB) of ``cmd``, run in a fresh helper process."""
    out = subprocess.run([sys.executable, __file__, "--measure", *cmd],
                         capture_output=True, text=True, check=True).stdout.split()
    return float(out[-2]), float(out[-1])


def _measure_child(cmd: list[str]) -> None:
    t = time.perf_counter()
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wall = time.perf_counter() - t
    print(wall, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024)


def bench_commands(data_dir: Path, reps: int) -> list[dict]:
    mlp = [sys.executable, "-m", "mnist_mlp"]
    with tempfile.TemporaryDirectory() as tmp:
        model = Path(tmp) / "m.npz"
        data_opts = ["--data-dir", str(data_dir)]
        train = measure([*mlp, "train", "--quiet", *data_opts, "--out", str(model)])
        image = Path(tmp) / "digit.png"
        from PIL import Image

        digits, _ = data.load_mnist("test", data_dir, flat=False)
        Image.fromarray(255 - digits[0]).resize((300, 300)).save(image)
        rows = [{"command": "mlp train (default config)", "seconds": train[0], "rss": train[1]}]
        for label, cmd in (("mlp eval (10,000 images)", ["eval", "--model", str(model),
                                                          *data_opts]),
                           ("mlp predict (one image)", ["predict", "--model", str(model),
                                                        str(image)])):
            runs = [measure([*mlp, *cmd]) for _ in range(reps)]
            rows.append({"command": label, "seconds": statistics.median(r[0] for r in runs),
                         "rss": statistics.median(r[1] for r in runs)})
    return rows


def markdown(engine: list[dict], commands: list[dict], threads: int) -> str:
    lines = [f"Machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
             f"{threads} BLAS threads, Python {platform.python_version()}, "
             f"NumPy {np.__version__}.", ""]
    if engine:
        torch_cols = "torch" in "".join(engine[0])
        lines += ["| model (batch 128, SGD momentum) | mnist-mlp s/epoch | samples/s | "
                  "share of matmul limit |" + (" PyTorch s/epoch | ratio |" if torch_cols else ""),
                  "| --- | --- | --- | --- |" + (" --- | --- |" if torch_cols else "")]
        for r in engine:
            line = (f"| {r['model']} | {r['seconds']:.2f} | {r['samples_per_s']:,.0f} | "
                    f"{100 * r['share_of_limit']:.0f}% |")
            if "ratio" in r:
                line += f" {r['torch_seconds']:.2f} | {r['ratio']:.2f}x |"
            lines.append(line)
        lines.append("")
    if commands:
        lines += ["| command, from process start | wall s | peak RSS MB |", "| --- | --- | --- |"]
        lines += [f"| {r['command']} | {r['seconds']:.2f} | {r['rss']:.0f} |" for r in commands]
    return "\n".join(lines)


def main() -> None:
    if sys.argv[1:2] == ["--measure"]:
        _measure_child(sys.argv[2:])
        return
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data-dir", type=Path, default=Path(os.environ.get("MLP_DATA_DIR",
                                                                             "data")))
    parser.add_argument("--reps", type=int, default=5)
    parser.add_argument("--only", choices=("engine", "commands"))
    parser.add_argument("--profile", choices=tuple(MODELS), help="profile one epoch instead")
    args = parser.parse_args()
    if args.profile:
        profile_engine(args.data_dir, args.profile)
        return
    threads = int(os.environ.get("OMP_NUM_THREADS") or os.cpu_count() or 1)
    engine = [] if args.only == "commands" else bench_engine(args.data_dir, args.reps, threads)
    commands = [] if args.only == "engine" else bench_commands(args.data_dir, args.reps)
    print(markdown(engine, commands, threads))


if __name__ == "__main__":
    main()
