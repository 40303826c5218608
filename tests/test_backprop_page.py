"""docs/backprop.md stays true: each code link points at the line it quotes, and the worked
example is what docs/backprop_example.py prints."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PAGE = ROOT / "docs" / "backprop.md"
SCRIPT = ROOT / "docs" / "backprop_example.py"
BLOCK = re.compile(r"<!-- begin: python docs/backprop_example.py -->\n(.*?)\n"
                   r"<!-- end: python docs/backprop_example.py -->", re.S)


def test_every_code_link_points_at_the_line_it_quotes():
    lines = (ROOT / "mnist_mlp" / "network.py").read_text().splitlines()
    links = re.findall(r"\[`([^`]+)`\]\(\.\./mnist_mlp/network\.py#L(\d+)\)", PAGE.read_text())
    assert len(links) >= 18
    for code, number in links:
        assert code in lines[int(number) - 1], (code, number, lines[int(number) - 1])


def test_the_worked_example_is_the_scripts_output(real_mnist):
    done = subprocess.run([sys.executable, str(SCRIPT), "--data-dir", str(real_mnist)],
                          env={**os.environ, "OPENBLAS_NUM_THREADS": "1"},
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    page = BLOCK.search(PAGE.read_text())
    assert page, "the page has lost its example's markers"
    assert done.stdout.strip() == page.group(1).strip()


def test_without_mnist_the_script_says_so_in_one_line(tmp_path):
    done = subprocess.run([sys.executable, str(SCRIPT), "--data-dir", str(tmp_path)],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 1 and done.stdout == ""
    assert done.stderr.startswith("backprop_example.py: ") and done.stderr.count("\n") == 1
