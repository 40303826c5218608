"""Which epoch to keep: a long run with each epoch's test accuracy recorded beside it.

    python benchmarks/selection.py --config best --seed 0 --data-dir ../shared/mnist \
        --out runs/best-s0.npz --record runs/best-s0.selection.jsonl

Trains exactly as ``mlp train --config NAME --seed S`` does (a ``run.RunSpec`` run), plus
one callback that scores the weights and, with ``--ema``, their average on the
test set after every epoch and appends them, with the epoch's validation
scores and the seconds it spent, to ``--record``. The run itself never sees
those test scores: they are for comparing selection rules afterwards, with
``--compare RECORD...``, which prints for each rule (best validation, a
tolerance, last epoch; weights or average) the test accuracy of the epoch it
would keep. Committees of the recorded runs are scored with ``mlp eval``.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from mnist_mlp import metrics, run  # noqa: E402
from mnist_mlp.config import ConfigError  # noqa: E402
from mnist_mlp.dataset import DataSource  # noqa: E402
from mnist_mlp.mnist import DataError  # noqa: E402
from mnist_mlp.records import average_is_kept, kept_epoch  # noqa: E402
from mnist_mlp.runfiles import RunError  # noqa: E402
from mnist_mlp.train import Callback  # noqa: E402

TOLERANCES = (0.0, 0.0005, 0.001, 0.002)


class TestProbe(Callback):
    """After each epoch: test accuracy of the weights (and of their average) to a JSON log."""

    def __init__(self, X_test, y_test, record: Path):
        self.X, self.y, self.record = X_test, y_test, record
        self.record.write_text("")

    def on_epoch_end(self, trainer, row, kept):
        t0 = time.perf_counter()
        line = {**row, "test_accuracy": metrics.evaluate(trainer.net, self.X, self.y)["accuracy"]}
        if trainer.average is not None:
            line["ema_test_accuracy"] = metrics.evaluate(trainer.averaged_net(), self.X,
                                                         self.y)["accuracy"]
        line["probe_seconds"] = time.perf_counter() - t0
        with self.record.open("a") as f:
            f.write(json.dumps(line) + "\n")


def train(args) -> None:
    X_test, y_test = DataSource(args.data_dir).load("test")
    flags = {"seed": args.seed, **({"epochs": args.epochs} if args.epochs else {})}
    t0 = time.perf_counter()
    spec = run.build_spec(args.out, args.config, flags, data=DataSource(args.data_dir),
                          start=run.Start("overwrite"))
    result = run.train(spec, run.Hooks(progress=False,
                                       callbacks=[TestProbe(X_test, y_test, args.record)]))
    wall = time.perf_counter() - t0
    rows = [json.loads(line) for line in args.record.read_text().splitlines()]
    probe = sum(r["probe_seconds"] for r in rows)
    print(json.dumps({"config": args.config, "seed": args.seed, "wall_seconds": wall,
                      "probe_seconds": probe, "wall_without_probe": wall - probe,
                      "kept_epoch": result.trainer.state.kept_epoch}))


def compare(records: list[Path]) -> None:
    """Test accuracy of the epoch each rule keeps, per record (selection by validation only)."""
    print("| run | rule | kept epoch | val | test |")
    print("| --- | --- | --- | --- | --- |")
    for path in records:
        rows = [json.loads(line) for line in path.read_text().splitlines()]
        averaged = rows[0].get("ema_val_accuracy") is not None
        rules = [(f"weights, tolerance {t:g}", t, False) for t in TOLERANCES]
        if averaged:
            rules += [(f"better of weights and average, tolerance {t:g}", t, True)
                      for t in TOLERANCES]
        for name, tolerance, with_average in rules:
            view = rows if with_average else [{**r, "ema_val_accuracy": None} for r in rows]
            epoch = kept_epoch(view, tolerance)
            r = rows[epoch - 1]
            use_average = with_average and average_is_kept(r)
            val = r["ema_val_accuracy"] if use_average else r["val_accuracy"]
            test = r["ema_test_accuracy"] if use_average else r["test_accuracy"]
            print(f"| {path.stem} | {name} | {epoch} | {100 * val:.2f}% | {100 * test:.2f}% |")
        last = rows[-1]
        print(f"| {path.stem} | last epoch, weights | {last['epoch']} | "
              f"{100 * last['val_accuracy']:.2f}% | {100 * last['test_accuracy']:.2f}% |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default="best")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--epochs", type=int, help="override the preset's epochs")
    parser.add_argument("--data-dir", type=Path, default=None)
    parser.add_argument("--out", type=Path, default=Path("selection.npz"))
    parser.add_argument("--record", type=Path, default=Path("selection.jsonl"))
    parser.add_argument("--compare", type=Path, nargs="+", metavar="RECORD",
                        help="compare the rules on recorded runs instead of training")
    args = parser.parse_args()
    if args.compare:
        compare(args.compare)
    else:
        train(args)


if __name__ == "__main__":
    try:
        main()
    except (ConfigError, DataError, RunError) as exc:  # a missing or bad file: one line
        sys.exit(f"{Path(__file__).name}: {exc}")
