"""Speed of mnist-mlp against PyTorch and against the machine's matmul limit, on real MNIST.

    python benchmarks/bench.py --data-dir ../shared/mnist            # everything
    python benchmarks/bench.py --data-dir ../shared/mnist --only engine --reps 7
    python benchmarks/bench.py --data-dir ../shared/mnist --profile 784-800-10
    python benchmarks/bench.py --data-dir ../shared/mnist --only serve

Engine: training-loop seconds per epoch (``train_seconds``, no data loading or
validation) for each model at batch 128 with SGD momentum 0.9, alternating
mnist-mlp and PyTorch epochs (A B A B ...) when torch is importable, both on
the same threads. The matmul limit is N·(6·Σ dᵢdᵢ₊₁ − 2·d₀d₁) FLOPs per epoch
(forward, weight gradients, input gradients but the first layer's) at the
float32 GEMM rate of a 2048³ product measured here. Commands: wall seconds and
peak RSS of ``mlp train`` (default config, with and without its per-epoch
curves), ``mlp eval``, ``mlp predict``, each from process start. Serve: latency
of ``POST /api/predict`` for a 280x280 canvas PNG against ``mlp serve`` in its
own process (median and 95th percentile of sequential requests), and requests
per second with 8 concurrent clients. Prints Markdown tables; figures are medians.
"""

from __future__ import annotations

import argparse
import json
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

from mnist_mlp.config import resolve  # noqa: E402
from mnist_mlp.dataset import DataSource  # noqa: E402
from mnist_mlp.network import MLP  # noqa: E402
from mnist_mlp.train import Trainer  # noqa: E402

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
    trainer = Trainer(cfg, MLP(cfg.sizes, seed=cfg.seed), len(X))
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
    X, y = DataSource(data_dir).load("train")          # all 60,000 for training
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

    X, y = DataSource(data_dir).load("train")
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

        digits, _ = DataSource(data_dir).load("test", flat=False)
        Image.fromarray(255 - digits[0]).resize((300, 300)).save(image)
        no_plots = measure([*mlp, "train", "--quiet", "--no-plots", *data_opts, "--out",
                            str(Path(tmp) / "n.npz")])
        rows = [{"command": "mlp train (default config)", "seconds": train[0], "rss": train[1]},
                {"command": "mlp train --no-plots", "seconds": no_plots[0],
                 "rss": no_plots[1]}]
        for label, cmd in (("mlp eval (10,000 images)", ["eval", "--model", str(model),
                                                          *data_opts]),
                           ("mlp predict (one image)", ["predict", "--model", str(model),
                                                        str(image)])):
            runs = [measure([*mlp, *cmd]) for _ in range(reps)]
            rows.append({"command": label, "seconds": statistics.median(r[0] for r in runs),
                         "rss": statistics.median(r[1] for r in runs)})
    return rows


def canvas_png(digit: np.ndarray) -> bytes:
    """A 280x280 RGBA PNG of an MNIST digit, white strokes on transparency, as a canvas exports."""
    import io

    from PIL import Image

    alpha = Image.fromarray(digit).resize((200, 200), Image.BICUBIC)
    rgba = Image.new("RGBA", (280, 280), (255, 255, 255, 0))
    layer = Image.new("L", (280, 280), 0)
    layer.paste(alpha, (40, 40))
    rgba.putalpha(layer)
    out = io.BytesIO()
    rgba.save(out, format="PNG")
    return out.getvalue()


def bench_serve(data_dir: Path, requests: int = 200, clients: int = 8) -> list[dict]:
    """Latency and throughput of ``POST /api/predict`` against ``mlp serve`` on loopback."""
    import http.client
    import signal
    from concurrent.futures import ThreadPoolExecutor

    from mnist_mlp import run

    digits, _ = DataSource(data_dir).load("test", flat=False)
    bodies = [canvas_png(d) for d in digits[:50]]
    with tempfile.TemporaryDirectory() as tmp:
        model = Path(tmp) / "m.npz"
        run.train(model, source=DataSource(data_dir), progress=False, plots=False)  # default
        server = subprocess.Popen([sys.executable, "-m", "mnist_mlp", "serve", "--model",
                                   str(model), "--port", "0"], stdout=subprocess.PIPE, text=True)
        try:
            host, port = server.stdout.readline().split("http://")[1].split("/")[0].split(":")

            def post(body: bytes) -> float:
                conn = http.client.HTTPConnection(host, int(port), timeout=30)
                t = time.perf_counter()
                conn.request("POST", "/api/predict", body=body)
                response = conn.getresponse()
                response.read()
                assert response.status == 200
                conn.close()
                return time.perf_counter() - t

            for body in bodies[:10]:
                post(body)                                          # warm up
            latencies = sorted(post(bodies[i % len(bodies)]) for i in range(requests))
            t = time.perf_counter()
            with ThreadPoolExecutor(clients) as pool:
                list(pool.map(post, [bodies[i % len(bodies)] for i in range(requests)]))
            rate = requests / (time.perf_counter() - t)
        finally:
            server.send_signal(signal.SIGINT)
            server.wait(timeout=30)
    return [{"median_ms": 1000 * statistics.median(latencies),
             "p95_ms": 1000 * latencies[int(0.95 * len(latencies)) - 1],
             "rate": rate, "clients": clients, "bytes": statistics.median(map(len, bodies))}]


def machine() -> dict:
    """Where the figures were measured: CPU, ISA, cores, Python, NumPy and its BLAS, PyTorch."""
    cpu, flags = platform.processor() or platform.machine(), set()
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                key, _, value = line.partition(":")
                if key.strip() == "model name":
                    cpu = value.strip()
                elif key.strip() == "flags":
                    flags = set(value.split())
    except OSError:
        pass
    record = {"cpu": cpu, "isa": sorted(f for f in flags if f.startswith(("avx", "fma", "sse4"))),
              "cores": os.cpu_count(), "python": platform.python_version(),
              "numpy": np.__version__, "blas": None, "torch": None}
    try:
        from threadpoolctl import threadpool_info

        record["blas"] = [{k: lib.get(k) for k in ("internal_api", "version", "architecture",
                                                   "num_threads", "prefix")}
                          for lib in threadpool_info() if lib["user_api"] == "blas"]
    except ImportError:
        record["blas"] = "unknown (pip install threadpoolctl)"
    try:
        import torch

        record["torch"] = {"version": torch.__version__, "threads": torch.get_num_threads(),
                           "blas": torch.__config__.show().split("BLAS_INFO=")[-1].split(",")[0]}
    except ImportError:
        pass
    return record


def markdown(engine: list[dict], commands: list[dict], threads: int,
             serving: list[dict] = ()) -> str:
    where = machine()
    blas = where["blas"]
    blas_text = (", ".join(f"{b['internal_api']} {b['version']} ({b['architecture']}, "
                           f"{b['num_threads']} threads)" for b in blas)
                 if isinstance(blas, list) else blas)
    lines = [f"Machine: {where['cpu']} ({', '.join(where['isa'])}), {where['cores']} cores, "
             f"Python {where['python']}, NumPy {where['numpy']} with {blas_text}"
             + (f", PyTorch {where['torch']['version']} ({where['torch']['blas']}, "
                f"{where['torch']['threads']} threads)" if where["torch"] else "") + ".", ""]
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
        lines.append("")
    for r in serving:
        lines += ["| POST /api/predict, 280x280 canvas PNG | median ms | 95th percentile ms | "
                  f"requests/s, {r['clients']} clients |", "| --- | --- | --- | --- |",
                  f"| {r['bytes'] / 1024:.1f} KB body, default model | {r['median_ms']:.1f} | "
                  f"{r['p95_ms']:.1f} | {r['rate']:.0f} |"]
    return "\n".join(lines)


def main() -> None:
    if sys.argv[1:2] == ["--measure"]:
        _measure_child(sys.argv[2:])
        return
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data-dir", type=Path, default=Path(os.environ.get("MLP_DATA_DIR",
                                                                             "data")))
    parser.add_argument("--reps", type=int, default=5)
    parser.add_argument("--only", choices=("engine", "commands", "serve"))
    parser.add_argument("--profile", choices=tuple(MODELS), help="profile one epoch instead")
    parser.add_argument("--json", type=Path, metavar="FILE",
                        help="also write every figure, with the machine's record, as JSON")
    args = parser.parse_args()
    if args.profile:
        profile_engine(args.data_dir, args.profile)
        return
    threads = int(os.environ.get("OMP_NUM_THREADS") or os.cpu_count() or 1)
    engine = bench_engine(args.data_dir, args.reps, threads) if args.only in (None, "engine") \
        else []
    commands = bench_commands(args.data_dir, args.reps) if args.only in (None, "commands") \
        else []
    serving = bench_serve(args.data_dir) if args.only in (None, "serve") else []
    print(markdown(engine, commands, threads, serving))
    if args.json:
        args.json.write_text(json.dumps({"machine": machine(), "engine": engine,
                                         "commands": commands, "serve": serving}, indent=1))


if __name__ == "__main__":
    main()
