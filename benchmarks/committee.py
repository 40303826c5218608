"""What a committee gains over its members on the test set, and what limits it.

    python benchmarks/committee.py --model A.npz --model B.npz [--model C.npz ...]
    python benchmarks/committee.py --model A.npz --model B.npz --json

The members vote as `mlp eval --model A --model B` has them vote: the mean of their
class probabilities, each member fed the pixels at its own input scale. Prints each
member's test accuracy and errors, the digits every member misses and those at least
one misses, the errors each pair shares, and the accuracy of every sub-committee of two
or more members, best first. Members that share most of their errors gain little
together, whatever their number.
"""

from __future__ import annotations

import argparse
import itertools
import json
import sys
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from mnist_mlp import checkpoint  # noqa: E402
from mnist_mlp.checkpoint import CheckpointError  # noqa: E402
from mnist_mlp.dataset import DataSource, to_input  # noqa: E402
from mnist_mlp.mnist import DataError  # noqa: E402

MAX_MEMBERS = 10    # 1,013 sub-committees


def member_probabilities(nets: dict[Path, Any], pixels: np.ndarray) -> dict[str, np.ndarray]:
    """Each network's class probabilities (n, 10) for test pixels (n, 28, 28) uint8, by its
    checkpoint's file name (its path where two names clash)."""
    names = [p.name for p in nets]
    names = names if len(set(names)) == len(names) else [str(p) for p in nets]
    return {name: net.predict_proba(to_input(pixels, net.input_scale))
            for name, net in zip(names, nets.values())}


def analyse(probs: dict[str, np.ndarray], y: np.ndarray) -> dict:
    """Members' errors, their overlap, and every sub-committee's accuracy (y: (n,) labels)."""
    wrong = {name: p.argmax(axis=1) != y for name, p in probs.items()}
    names = list(probs)
    committees = [{"members": list(sub),
                   "accuracy": float((np.mean([probs[n] for n in sub], axis=0,
                                              dtype=np.float64).argmax(axis=1) == y).mean())}
                  for k in range(2, len(names) + 1) for sub in itertools.combinations(names, k)]
    return {
        "n": len(y),
        "members": [{"model": n, "accuracy": float(1 - wrong[n].mean()),
                     "errors": int(wrong[n].sum())} for n in names],
        "missed_by_all": int(np.all(list(wrong.values()), axis=0).sum()),
        "missed_by_any": int(np.any(list(wrong.values()), axis=0).sum()),
        "shared_errors": [{"models": [a, b], "errors": int((wrong[a] & wrong[b]).sum())}
                          for a, b in itertools.combinations(names, 2)],
        "committees": sorted(committees, key=lambda c: -c["accuracy"]),
    }


def markdown(report: dict) -> str:
    lines = ["| member | test accuracy | errors |", "| --- | --- | --- |"]
    lines += [f"| {m['model']} | {100 * m['accuracy']:.2f}% | {m['errors']} |"
              for m in report["members"]]
    lines += ["", f"Of {report['n']:,} test digits: {report['missed_by_any']} missed by at "
              f"least one member, {report['missed_by_all']} by every member.", "",
              "| pair | errors both make |", "| --- | --- |"]
    lines += [f"| {' + '.join(s['models'])} | {s['errors']} |" for s in report["shared_errors"]]
    lines += ["", "| committee | test accuracy |", "| --- | --- |"]
    lines += [f"| {' + '.join(c['members'])} | {100 * c['accuracy']:.2f}% |"
              for c in report["committees"]]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", type=Path, action="append", required=True,
                        help=f"a member's checkpoint; 2 to {MAX_MEMBERS} of them")
    parser.add_argument("--data-dir", type=Path, default=ROOT.parent / "shared" / "mnist",
                        help="MNIST's files (the test set is read)")
    parser.add_argument("--json", action="store_true", help="print JSON instead of tables")
    args = parser.parse_args(argv)
    if not 2 <= len(set(args.model)) <= MAX_MEMBERS:
        parser.error(f"give 2 to {MAX_MEMBERS} different --model files")

    nets = {path: checkpoint.load(path).net for path in dict.fromkeys(args.model)}
    pixels, y = DataSource(args.data_dir).load("test", flat=False)     # after the members
    report = analyse(member_probabilities(nets, pixels), y)
    print(json.dumps(report, indent=2) if args.json else markdown(report))


if __name__ == "__main__":
    try:
        main()
    except (CheckpointError, DataError) as exc:  # a missing or bad file: one line
        sys.exit(f"{Path(__file__).name}: {exc}")
