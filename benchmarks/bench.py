"""Speed of mnist-mlp against PyTorch, JAX and the machine's matmul limit, on real MNIST.

    python benchmarks/bench.py --data-dir ../shared/mnist            # everything
    python benchmarks/bench.py --data-dir ../shared/mnist --only engine --reps 7
    python benchmarks/bench.py --data-dir ../shared/mnist --only profile --model 784-800-10
    python benchmarks/bench.py --data-dir ../shared/mnist --only best --best-steps 0
    python benchmarks/bench.py --data-dir ../shared/mnist --images 5000 --reps 1   # a smoke run

Engine: training-loop seconds per epoch of each model at batch 128 with SGD
momentum 0.9 (same initial weights, same sample order), mnist-mlp's Trainer
beside PyTorch (eager) and JAX (the whole step in one ``jax.jit``, timed after
compiling) when they are importable, alternating epochs (A B C A B C ...). The
matmul limit is N·(6·Σ dᵢdᵢ₊₁ − 2·d₀d₁) FLOPs per epoch (forward, weight
gradients, input gradients but the first layer's) at the float32 GEMM rate of a
2048³ product measured here. Best: the ``best`` preset's steps, built as ``mlp
train --config best`` builds them, with its elastic distortions and without
(``augment none``), alternating. Concurrent: two processes training 784-800-10
for an epoch at once, started together, with 2 and with 1 BLAS threads each,
against one alone. Profile: a training step of mnist-mlp replayed through the
engine's own functions in turn (network.forward, softmax_cross_entropy,
network.backward, the optimiser's step) beside the Trainer's own step, the rest
being Python. Commands: wall seconds and peak RSS of ``mlp train`` (default config,
with and without its per-epoch curves), ``mlp eval``, ``mlp predict``, each from
process start. Serve: latency of ``POST /api/predict`` for a 280x280 canvas PNG
against ``mlp serve`` in its own process (median and 95th percentile of
sequential requests), and requests per second with 8 concurrent clients. Prints
where it ran and Markdown tables to stdout, progress to stderr; figures are
medians of ``--reps``.
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

from frameworks import jax_epoch, torch_epoch  # noqa: E402
from renderings import canvas_png  # noqa: E402

from mnist_mlp.config import ConfigError, find_preset, load_config_file, resolve  # noqa: E402
from mnist_mlp.dataset import DataSource  # noqa: E402
from mnist_mlp.mnist import DataError  # noqa: E402
from mnist_mlp.network import MLP, softmax_cross_entropy  # noqa: E402
from mnist_mlp.threads import limit_threads  # noqa: E402
from mnist_mlp.train import Callback, Trainer  # noqa: E402

MODELS = {"784-128-10": (128,), "784-800-10": (800,), "784-1024-1024-10": (1024, 1024)}
CONCURRENT_MODEL = "784-800-10"
BATCH, LR, MOMENTUM = 128, 0.05, 0.9
THREAD_VARIABLES = ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS")
ENV_PREFIXES = ("OPENBLAS_", "OMP_", "MKL_", "XLA_")


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
    """Matrix-product FLOPs of an epoch of n samples: forward, dW, and dA but the first's."""
    pairs = sum(a * b for a, b in zip(sizes[:-1], sizes[1:]))
    return n * (6 * pairs - 2 * sizes[0] * sizes[1])


def load_train(data_dir: Path, images: int | None) -> tuple[np.ndarray, np.ndarray]:
    """The first ``images`` of the 60,000 training images (all for None): X (n, 784), y (n,)."""
    X, y = DataSource(data_dir).load("train")
    return X[:images], y[:images]


def sample_order(seed: int, n: int) -> np.ndarray:
    """The first epoch's sample order (n,) of a Trainer seeded with ``seed``."""
    return np.random.default_rng([seed, 1]).permutation(n)


def engine_trainer(hidden: tuple[int, ...], n: int, seed: int, epochs: int = 1) -> Trainer:
    """mnist-mlp's Trainer for the engine benchmark: batch 128, SGD momentum, constant rate,
    no distortions or dropout (whatever the default preset has)."""
    cfg = resolve({"hidden": list(hidden), "epochs": epochs, "batch_size": BATCH, "lr": LR,
                   "optimizer": "sgd", "momentum": MOMENTUM, "schedule": "constant",
                   "augment": "none", "dropout": [0.0], "input_dropout": 0.0,
                   "val_size": 0, "seed": seed})
    return Trainer(cfg, MLP(cfg.sizes, seed=cfg.seed), n)


def mlp_epoch(hidden: tuple[int, ...], X: np.ndarray, y: np.ndarray, seed: int) -> float:
    """Training-loop seconds of one epoch of mnist-mlp's own Trainer (no validation)."""
    trainer = engine_trainer(hidden, len(X), seed)
    trainer.fit(X, y)
    return trainer.state.history[-1]["train_seconds"]


def other_frameworks(threads: int) -> dict:
    """Name -> epoch function of each comparison framework that imports; the rest reported."""
    found = {}
    try:
        import torch

        torch.set_num_threads(threads)
        found["PyTorch"] = torch_epoch
    except ImportError:
        print("PyTorch not importable: left out (pip install torch==2.13.0 to compare)",
              file=sys.stderr)
    try:
        import jax  # noqa: F401

        found["JAX"] = jax_epoch
    except ImportError:
        print("JAX not importable: left out (pip install jax to compare)", file=sys.stderr)
    return found


def bench_engine(X: np.ndarray, y: np.ndarray, models: list[str], reps: int, threads: int,
                 peak: float) -> list[dict]:
    """Seconds per epoch of each model in mnist-mlp and the other frameworks, alternating."""
    others = other_frameworks(threads)
    rows = []
    for name in models:
        hidden = MODELS[name]
        times: dict[str, list[float]] = {"mnist-mlp": [], **{k: [] for k in others}}
        for rep in range(reps):
            times["mnist-mlp"].append(mlp_epoch(hidden, X, y, rep))
            net, order = MLP([784, *hidden, 10], seed=rep), sample_order(rep, len(X))
            for label, epoch in others.items():
                times[label].append(epoch(net.W, net.b, X, y, order, BATCH, LR, MOMENTUM))
            print(f"{name} rep {rep}: " + ", ".join(f"{k} {v[-1]:.3f}s" for k, v in
                                                     times.items()), file=sys.stderr)
        limit = epoch_flops([784, *hidden, 10], len(X)) / peak
        row = {"model": name, "images": len(X), "limit_seconds": limit, "frameworks": {}}
        for label, ts in times.items():
            t = statistics.median(ts)
            row["frameworks"][label] = {
                "seconds": t, "samples_per_s": len(X) / t, "share_of_limit": limit / t,
                "mlp_ratio": statistics.median(a / b for a, b in zip(times["mnist-mlp"], ts))}
        rows.append(row)
    return rows


def best_seconds(cfg, X: np.ndarray, y: np.ndarray, steps: int) -> float:
    """Training-loop seconds of the first ``steps`` steps of a run of ``cfg``, built as
    ``mlp train`` builds it."""
    trainer = Trainer(cfg, MLP(cfg.sizes, seed=cfg.seed), len(X))
    trainer.fit(X, y, should_stop=lambda: trainer.state.step >= steps)
    return trainer.state.seconds


def bench_best(data_dir: Path, images: int | None, steps: int, reps: int) -> list[dict]:
    """The ``best`` preset's steps with its distortions and with ``augment none``, alternating.

    ``steps`` 0: a whole epoch."""
    file_values = load_config_file(find_preset("best"))
    configs = {augment: resolve(file_values, {"augment": augment})
               for augment in (file_values["augment"], "none")}
    X, y, _, _ = DataSource(data_dir).load_train_val(configs["none"].val_size)
    X, y = X[:images], y[:images]
    n_batches = -(-len(X) // configs["none"].batch_size)
    steps = min(steps or n_batches, n_batches)
    times: dict[str, list[float]] = {augment: [] for augment in configs}
    for rep in range(reps):
        for augment, cfg in configs.items():
            times[augment].append(best_seconds(cfg, X, y, steps))
        print(f"best rep {rep}: " + ", ".join(f"{k} {v[-1]:.3f}s" for k, v in times.items()),
              file=sys.stderr)
    plain = times["none"]
    sizes = "-".join(map(str, configs["none"].sizes))
    return [{"augment": augment, "sizes": sizes, "optimizer": cfg.optimizer, "steps": steps,
             "batch": cfg.batch_size, "seconds": statistics.median(times[augment]),
             "ms_per_step": 1000 * statistics.median(times[augment]) / steps,
             "ratio_to_none": statistics.median(a / b for a, b in zip(times[augment], plain))}
            for augment, cfg in configs.items()]


def _concurrent_child(data_dir: Path, images: int | None, threads: int) -> None:
    """One epoch of 784-800-10 with ``threads`` BLAS threads, once the parent says "go"."""
    X, y = load_train(data_dir, images)
    print("ready", flush=True)
    sys.stdin.readline()
    with limit_threads(threads):
        from threadpoolctl import threadpool_info

        blas = [lib["num_threads"] for lib in threadpool_info() if lib["user_api"] == "blas"]
        start = time.monotonic()
        seconds = mlp_epoch(MODELS[CONCURRENT_MODEL], X, y, 0)
        end = time.monotonic()
    print(json.dumps({"start": start, "end": end, "seconds": seconds, "images": len(X),
                      "blas_threads": blas}))


def concurrent_round(data_dir: Path, images: int | None, processes: int, threads: int
                     ) -> list[dict]:
    """``processes`` children training at once, told to start at the same moment once each
    has loaded the data; each child's start, end (monotonic clock) and training seconds."""
    env = {**os.environ, **{k: str(threads) for k in THREAD_VARIABLES}}
    cmd = [sys.executable, __file__, "--child-threads", str(threads), "--data-dir",
           str(data_dir), *(["--images", str(images)] if images else [])]
    children = [subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
                                 env=env) for _ in range(processes)]
    try:
        for child in children:
            if child.stdout.readline().strip() != "ready":
                raise RuntimeError(f"a training process failed to start: {cmd}")
        for child in children:
            child.stdin.write("go\n")
            child.stdin.flush()
        outputs = [child.communicate()[0] for child in children]
        if any(child.returncode for child in children):
            raise RuntimeError(f"a training process failed: {cmd}")
    finally:
        for child in children:
            if child.poll() is None:
                child.kill()
                child.wait()
    return [json.loads(out) for out in outputs]


def bench_concurrent(data_dir: Path, images: int | None, reps: int) -> list[dict]:
    """One and two processes at once, each with 2 and with 1 BLAS threads, alternating."""
    layouts = [(processes, threads) for processes in (1, 2) for threads in (2, 1)]
    runs: dict[tuple[int, int], list[list[dict]]] = {layout: [] for layout in layouts}
    for rep in range(reps):
        for layout in layouts:
            runs[layout].append(concurrent_round(data_dir, images, *layout))
            print(f"concurrent rep {rep}, {layout[0]} x {layout[1]} threads: "
                  + ", ".join(f"{r['seconds']:.3f}s" for r in runs[layout][-1]),
                  file=sys.stderr)
    rows = []
    for (processes, threads), rounds in runs.items():
        n = rounds[0][0]["images"]
        rates = [processes * n / (max(r["end"] for r in rnd) - min(r["start"] for r in rnd))
                 for rnd in rounds]
        rows.append({"model": CONCURRENT_MODEL, "images": n, "processes": processes,
                     "threads": threads,
                     "blas_threads": sorted({t for rnd in rounds for r in rnd
                                             for t in r["blas_threads"]}),
                     "seconds": statistics.median(r["seconds"] for rnd in rounds for r in rnd),
                     "images_per_s": statistics.median(rates)})
    return rows


class StepClock(Callback):
    """Each step's seconds as the Trainer times it (``state.seconds`` grows around a step)."""

    def __init__(self):
        self.before = 0.0
        self.steps: list[float] = []

    def on_epoch_begin(self, trainer, epoch, n_samples, done):
        self.before = trainer.state.seconds

    def on_batch_end(self, trainer, n, loss):
        self.steps.append(trainer.state.seconds - self.before)
        self.before = trainer.state.seconds


PHASES = ("batch gather", "network.forward", "softmax_cross_entropy", "network.backward",
          "optimiser step")


def replay_step(trainer: Trainer, X: np.ndarray, y: np.ndarray, idx: np.ndarray,
                clock: dict[str, float]) -> None:
    """One training step of ``trainer`` through the engine's own functions, as
    ``Trainer._step`` calls them (network.forward, softmax_cross_entropy, network.backward,
    the optimiser's step), adding the seconds of each to ``clock``."""
    net, opt = trainer.net, trainer.optimizer
    t = time.perf_counter

    def lap(phase: str, since: float) -> float:
        now = t()
        clock[phase] += now - since
        return now

    s = t()
    Xb, yb = X[idx], y[idx]                                      # (B, 784), (B,)
    s = lap("batch gather", s)
    Z, cache = net.forward(Xb, trainer.dropout, trainer.rng)     # (B, 10)
    s = lap("network.forward", s)
    np.count_nonzero(Z.argmax(axis=1) == yb)
    _, dZ = softmax_cross_entropy(Z, yb, trainer.cfg.label_smoothing)
    s = lap("softmax_cross_entropy", s)
    dW, db = net.backward(dZ, cache)
    s = lap("network.backward", s)
    opt.step([*dW, *db], trainer.lr_at(trainer.state.step))
    lap("optimiser step", s)


def profile_model(X: np.ndarray, y: np.ndarray, name: str, steps: int, peak: float) -> dict:
    """Milliseconds per step of each phase of a replayed step and of the Trainer's own step,
    taken in turn (medians of ``steps`` each), and each phase's products at the 2048³ GEMM
    rate."""
    full = len(X) // BATCH
    trainer = engine_trainer(MODELS[name], len(X), seed=0, epochs=-(-steps // full) + 1)
    clock, phases = StepClock(), {p: [] for p in PHASES}
    order = np.random.default_rng(0).permutation(len(X))
    for k in range(steps):
        trainer.fit(X, y, callbacks=[clock], should_stop=lambda: True)   # one step
        times = dict.fromkeys(PHASES, 0.0)
        replay_step(trainer, X, y, order[(k % full) * BATCH:(k % full + 1) * BATCH], times)
        for p in PHASES:
            phases[p].append(times[p])
    sizes = trainer.net.sizes
    pairs = [a * b for a, b in zip(sizes[:-1], sizes[1:])]
    gemm = {"network.forward": sum(pairs),                        # X Wᵀ
            "network.backward": sum(pairs) + sum(pairs[1:])}      # dZᵀ X, and dZ W but layer 1
    rows = [{"phase": p, "ms": 1000 * statistics.median(phases[p]),
             "ideal_ms": 1000 * 2 * BATCH * gemm[p] / peak if p in gemm else None}
            for p in PHASES]
    step = 1000 * statistics.median(clock.steps)
    print(f"profile {name}: step {step:.2f} ms, phases {sum(r['ms'] for r in rows):.2f} ms",
          file=sys.stderr)
    rows.append({"phase": "Python and the rest", "ms": step - sum(r["ms"] for r in rows),
                 "ideal_ms": None})
    rows.append({"phase": "step (the Trainer's)", "ms": step,
                 "ideal_ms": sum(r["ideal_ms"] or 0 for r in rows)})
    for r in rows:
        r["share"] = r["ms"] / step
    return {"model": name, "steps": steps, "batch": BATCH, "images": len(X), "phases": rows}


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


def canvas_bytes(digit: np.ndarray) -> bytes:
    """A 280x280 RGBA PNG of an MNIST digit (28, 28) uint8, as a browser canvas exports it."""
    import io

    out = io.BytesIO()
    canvas_png(digit / 255.0, out)
    return out.getvalue()


def bench_serve(data_dir: Path, requests: int = 200, clients: int = 8) -> list[dict]:
    """Latency and throughput of ``POST /api/predict`` against ``mlp serve`` on loopback."""
    import http.client
    import signal
    from concurrent.futures import ThreadPoolExecutor

    from mnist_mlp import run

    digits, _ = DataSource(data_dir).load("test", flat=False)
    bodies = [canvas_bytes(d) for d in digits[:50]]
    with tempfile.TemporaryDirectory() as tmp:
        model = Path(tmp) / "m.npz"
        spec = run.build_spec(model, data=DataSource(data_dir))            # the default run
        run.train(spec, run.Hooks(progress=False, plots=False))
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
    """Where the figures were measured: CPU, its vector units, cores, Python, NumPy and its
    BLAS (kernel, threads), the BLAS and OpenMP variables in force, PyTorch, JAX."""
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
    simd = ("AVX-512" if "avx512f" in flags else "AVX2" if "avx2" in flags
            else "AVX" if "avx" in flags else "no AVX")
    record = {"cpu": cpu, "simd": simd + (" with FMA" if "fma" in flags else ""),
              "isa": sorted(f for f in flags if f.startswith(("avx", "fma", "sse4"))),
              "cores": os.cpu_count(), "python": platform.python_version(),
              "numpy": np.__version__, "blas": None,
              "env": {k: v for k, v in sorted(os.environ.items()) if k.startswith(ENV_PREFIXES)},
              "torch": None, "jax": None}
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
    try:
        import jax

        record["jax"] = {"version": jax.__version__, "backend": jax.default_backend(),
                         "threads": "XLA's own thread pool"}
    except ImportError:
        pass
    return record


def machine_markdown(where: dict) -> list[str]:
    blas = where["blas"]
    blas_text = (", ".join(f"{b['internal_api']} {b['version']} ({b['architecture']} kernels, "
                           f"{b['num_threads']} threads)" for b in blas)
                 if isinstance(blas, list) else blas)
    others = ([f"PyTorch {where['torch']['version']} ({where['torch']['blas']}, "
               f"{where['torch']['threads']} threads)"] if where["torch"] else []) + (
              [f"JAX {where['jax']['version']} ({where['jax']['backend']}, "
               f"{where['jax']['threads']})"] if where["jax"] else [])
    env = ", ".join(f"{k}={v}" for k, v in where["env"].items()) or "none"
    return [f"Machine: {where['cpu']} ({where['simd']}), {where['cores']} cores, Python "
            f"{where['python']}, NumPy {where['numpy']} with {blas_text}"
            + "".join(f"; {o}" for o in others) + f". BLAS/OpenMP variables set: {env}.", ""]


def engine_markdown(engine: list[dict]) -> list[str]:
    others = [k for k in engine[0]["frameworks"] if k != "mnist-mlp"]
    lines = [f"| model (batch 128, SGD momentum, {engine[0]['images']:,} images) | "
             "mnist-mlp s/epoch | share of matmul limit |"
             + "".join(f" {k} s/epoch | share | mnist-mlp ÷ {k} |" for k in others),
             "| --- | --- | --- |" + " --- | --- | --- |" * len(others)]
    for r in engine:
        f = r["frameworks"]
        lines.append(f"| {r['model']} | {f['mnist-mlp']['seconds']:.2f} | "
                     f"{100 * f['mnist-mlp']['share_of_limit']:.0f}% |"
                     + "".join(f" {f[k]['seconds']:.2f} | {100 * f[k]['share_of_limit']:.0f}% | "
                               f"{f[k]['mlp_ratio']:.2f}x |" for k in others))
    return [*lines, ""]


def best_markdown(best: list[dict]) -> list[str]:
    r0 = best[0]
    lines = [f"| `best` preset, {r0['sizes']} {r0['optimizer']}, {r0['steps']} steps of "
             f"{r0['batch']} | seconds | ms/step | ratio to augment none |",
             "| --- | --- | --- | --- |"]
    lines += [f"| augment {r['augment']} | {r['seconds']:.2f} | {r['ms_per_step']:.2f} | "
              f"{r['ratio_to_none']:.3f}x |" for r in best]
    return [*lines, ""]


def concurrent_markdown(concurrent: list[dict]) -> list[str]:
    r0 = concurrent[0]
    lines = [f"| {r0['model']}, one epoch of {r0['images']:,} images | BLAS threads each | "
             "s/epoch each | images/s in total |", "| --- | --- | --- | --- |"]
    for r in concurrent:
        runs = "one run alone" if r["processes"] == 1 else f"{r['processes']} runs at once"
        lines.append(f"| {runs} | {r['threads']} | {r['seconds']:.2f} | "
                     f"{r['images_per_s']:,.0f} |")
    return [*lines, ""]


def profile_markdown(profile: dict) -> list[str]:
    steps = -(-profile["images"] // profile["batch"])         # an epoch of the images used
    lines = [f"| phase of a step, {profile['model']} (batch {profile['batch']}, median of "
             f"{profile['steps']} steps) | ms/step | s/epoch ({steps} steps) | share of step "
             "| at the 2048³ GEMM rate, ms |", "| --- | --- | --- | --- | --- |"]
    lines += [f"| {r['phase']} | {r['ms']:.3f} | {r['ms'] * steps / 1000:.3f} | "
              f"{100 * r['share']:.0f}% | "
              + (f"{r['ideal_ms']:.3f} |" if r["ideal_ms"] is not None else "|")
              for r in profile["phases"]]
    return [*lines, ""]


def commands_markdown(commands: list[dict]) -> list[str]:
    lines = ["| command, from process start | wall s | peak RSS MB |", "| --- | --- | --- |"]
    lines += [f"| {r['command']} | {r['seconds']:.2f} | {r['rss']:.0f} |" for r in commands]
    return [*lines, ""]


def serve_markdown(serving: list[dict]) -> list[str]:
    lines = []
    for r in serving:
        lines += ["| POST /api/predict, 280x280 canvas PNG | median ms | 95th percentile ms | "
                  f"requests/s, {r['clients']} clients |", "| --- | --- | --- | --- |",
                  f"| {r['bytes'] / 1024:.1f} KB body, default model | {r['median_ms']:.1f} | "
                  f"{r['p95_ms']:.1f} | {r['rate']:.0f} |", ""]
    return lines


PARTS = ("engine", "best", "concurrent", "profile", "commands", "serve")


def count(text: str) -> int:
    """A whole number of at least 0, for argparse."""
    if not text.isdigit():
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number")
    return int(text)


def positive(text: str) -> int:
    """A whole number of at least 1, for argparse."""
    if count(text) < 1:
        raise argparse.ArgumentTypeError(f"{text!r} is not at least 1")
    return int(text)


def main() -> None:
    if sys.argv[1:2] == ["--measure"]:
        _measure_child(sys.argv[2:])
        return
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data-dir", type=Path, default=Path(os.environ.get("MLP_DATA_DIR",
                                                                             "data")),
                        help="folder of the MNIST files (default: $MLP_DATA_DIR or data)")
    parser.add_argument("--only", choices=PARTS, action="append",
                        help="run this part (repeatable; default: all)")
    parser.add_argument("--reps", type=positive, default=5,
                        help="repetitions of each figure, alternating (default: 5)")
    parser.add_argument("--images", type=positive, metavar="N",
                        help="engine, best, concurrent, profile: train on the first N "
                             "training images (default: all)")
    parser.add_argument("--model", choices=tuple(MODELS), action="append",
                        help="engine and profile: this model only (repeatable; default: "
                             "all three)")
    parser.add_argument("--best-steps", type=count, default=300, metavar="N",
                        help="best: steps timed in each run (0: a whole epoch; default: 300)")
    parser.add_argument("--profile-steps", type=positive, default=300, metavar="N",
                        help="profile: steps timed, the Trainer's and the replayed in turn "
                             "(default: 300)")
    parser.add_argument("--json", type=Path, metavar="FILE",
                        help="also write every figure, with the machine's record, as JSON")
    parser.add_argument("--child-threads", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.images is not None and args.images < BATCH:
        parser.error(f"--images must be at least one batch, {BATCH}")
    if args.child_threads:
        _concurrent_child(args.data_dir, args.images, args.child_threads)
        return
    if "OPENBLAS_CORETYPE" in os.environ:
        print(f"warning: OPENBLAS_CORETYPE={os.environ['OPENBLAS_CORETYPE']} is set: OpenBLAS "
              "runs that kernel, not the one for this CPU", file=sys.stderr)
    parts = set(args.only or PARTS)
    threads = int(os.environ.get("OMP_NUM_THREADS") or os.cpu_count() or 1)
    results: dict = {"machine": machine()}
    lines = machine_markdown(results["machine"])
    if parts & {"engine", "profile"}:
        peak = gemm_flops_per_second()
        results["gemm_2048_flops_per_s"] = peak
        lines += [f"float32 GEMM 2048³: {peak / 1e9:.1f} GFLOP/s", ""]
        X, y = load_train(args.data_dir, args.images)
    if "engine" in parts:
        results["engine"] = bench_engine(X, y, args.model or list(MODELS), args.reps, threads,
                                         peak)
        lines += engine_markdown(results["engine"])
    if "best" in parts:
        results["best"] = bench_best(args.data_dir, args.images, args.best_steps, args.reps)
        lines += best_markdown(results["best"])
    if "concurrent" in parts:
        results["concurrent"] = bench_concurrent(args.data_dir, args.images, args.reps)
        lines += concurrent_markdown(results["concurrent"])
    if "profile" in parts:
        results["profile"] = [profile_model(X, y, name, args.profile_steps, peak)
                              for name in args.model or MODELS]
        for profile in results["profile"]:
            lines += profile_markdown(profile)
    if "commands" in parts:
        results["commands"] = bench_commands(args.data_dir, args.reps)
        lines += commands_markdown(results["commands"])
    if "serve" in parts:
        results["serve"] = bench_serve(args.data_dir)
        lines += serve_markdown(results["serve"])
    print("\n".join(lines))
    if args.json:
        args.json.write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    try:
        main()
    except (ConfigError, DataError) as exc:  # a missing or bad file: one line
        sys.exit(f"{Path(__file__).name}: {exc}")
