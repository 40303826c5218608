"""Teaching a model a style of digits it never saw: digits of other writers, scanned at 8x8.

    pip install scikit-learn          # its bundled digits: 1,797 scans of 43 writers, 8x8
    python benchmarks/teach.py export DIR [--per-digit 10] [--seed 0]
    python benchmarks/teach.py measure --model checkpoints/mnist-mlp.npz --work DIR \\
        [--per-digit 10] [--data-dir ../shared/mnist] [--json]

``export`` writes the digits as a user would have them: each 8x8 scan enlarged to 64x64
(bilinear), dark ink on white paper, a PNG file in a labelled folder. ``per-digit`` of each
digit go to DIR/corrections/<digit>/ (what a user would correct on the page), VALIDATION of
each to DIR/validation/<digit>/ (what the `tune` preset's recipe was chosen on), the rest to
DIR/held-out/<digit>/ (what the taught model is scored on, never trained or chosen on).

``measure`` runs the commands a user would: ``mlp eval --images`` of the held-out digits
and ``mlp eval`` of MNIST's test set with the model, then ``mlp train --config tune --init
MODEL --extra DIR/corrections`` and both scores again with the taught model, timing the
teach step from process start (the BLAS threads as the environment sets them); it prints a
Markdown table (or --json) with the machine and its BLAS kernel.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
from bench import machine, machine_markdown
from PIL import Image

SIDE = 64      # the enlarged scan's side, pixels
SCALE = 16.0   # the scans' darkest ink
VALIDATION = 30  # scans of each digit set aside to choose a teaching recipe on


def export(folder: Path, per_digit: int, seed: int) -> dict[str, int]:
    """Write the scans as labelled folders; the number of images in each part."""
    from sklearn.datasets import load_digits

    digits = load_digits()
    rng = np.random.default_rng(seed)
    counts = {"corrections": 0, "validation": 0, "held-out": 0}
    for digit in range(10):
        chosen = rng.permutation(np.flatnonzero(digits.target == digit))
        for rank, index in enumerate(chosen):
            part = ("corrections" if rank < per_digit else
                    "validation" if rank < per_digit + VALIDATION else "held-out")
            ink = digits.images[index] / SCALE                          # (8, 8) in [0, 1]
            paper = np.round(255 * (1 - ink)).astype(np.uint8)         # dark ink on white
            path = folder / part / str(digit) / f"{index:04d}.png"
            path.parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray(paper).resize((SIDE, SIDE), Image.BILINEAR).save(path)
            counts[part] += 1
    return counts


def _mlp(*args: str | Path) -> tuple[str, float]:
    """Run ``mlp ARGS``; its stdout and wall seconds from process start."""
    start = time.perf_counter()
    done = subprocess.run(["mlp", *map(str, args)], capture_output=True, text=True)
    if done.returncode:
        last = (done.stderr.strip().splitlines() or ["failed"])[-1].removeprefix("Error: ")
        sys.exit(f"teach.py: mlp {args[0]}: {last}")
    return done.stdout, time.perf_counter() - start


def _accuracy(model: Path, *source: str | Path) -> float:
    return json.loads(_mlp("eval", "--model", model, "--json", "-q", *source)[0])["accuracy"]


def measure(model: Path, work: Path, per_digit: int, data: list[str]) -> dict:
    """Scores before and after teaching, and the teach step's time."""
    counts = export(work, per_digit, seed=0)
    taught = work / "taught.npz"
    before = {"style": _accuracy(model, "--images", work / "held-out"),
              "mnist": _accuracy(model, *data)}
    _, seconds = _mlp("train", "--config", "tune", "--init", model, "--extra",
                      work / "corrections", "--out", taught, "--overwrite", "--no-plots", "-q",
                      *data)
    after = {"style": _accuracy(taught, "--images", work / "held-out"),
             "mnist": _accuracy(taught, *data)}
    return {"model": str(model), "counts": counts, "before": before, "after": after,
            "teach_seconds": seconds, "machine": machine()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    out = sub.add_parser("export")
    out.add_argument("folder", type=Path)
    run = sub.add_parser("measure")
    run.add_argument("--model", type=Path, required=True)
    run.add_argument("--work", type=Path, required=True)
    run.add_argument("--data-dir")
    run.add_argument("--json", action="store_true")
    for p in (out, run):
        p.add_argument("--per-digit", type=int, default=10)
    out.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    try:
        import sklearn  # noqa: F401
    except ImportError:
        sys.exit("benchmarks/teach.py needs scikit-learn's digits: pip install scikit-learn")
    if args.command == "export":
        print(json.dumps(export(args.folder, args.per_digit, args.seed)))
        return
    data = ["--data-dir", args.data_dir] if args.data_dir else []
    result = measure(args.model, args.work, args.per_digit, data)
    if args.json:
        print(json.dumps(result))
        return
    b, a = result["before"], result["after"]
    print(f"| model | held-out scans ({result['counts']['held-out']}) | MNIST test | teach s |\n"
          f"| --- | --- | --- | --- |\n"
          f"| {args.model} | {100 * b['style']:.2f}% | {100 * b['mnist']:.2f}% | |\n"
          f"| taught ({result['counts']['corrections']} corrections) | "
          f"{100 * a['style']:.2f}% | {100 * a['mnist']:.2f}% | {result['teach_seconds']:.1f} |"
          "\n")
    print("\n".join(machine_markdown(result["machine"])))


if __name__ == "__main__":
    main()
