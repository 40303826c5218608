"""Running an exported model as a user would, and Python without the onnx extra."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort

from mnist_mlp import checkpoint
from mnist_mlp.network import MLP


def run_onnx(model: onnx.ModelProto, pixels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """ONNX Runtime's logits and probabilities (n, 10) for pixels (n, 784), as a user runs it."""
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    sess = ort.InferenceSession(model.SerializeToString(), opts,
                                providers=["CPUExecutionProvider"])
    logits, probs = sess.run(["logits", "probabilities"], {"pixels": pixels})
    return logits, probs


def perturbed_copy(model: checkpoint.Checkpoint, path: Path) -> checkpoint.Checkpoint:
    """A second committee member: ``model`` with noise on its weights, saved at ``path`` and
    loaded."""
    rng = np.random.default_rng(7)
    W = [w + rng.normal(0, 0.5 * w.std(), w.shape).astype(np.float32) for w in model.net.W]
    checkpoint.save(path, MLP.from_params(W, model.net.b, model.input_scale), model.meta)
    return checkpoint.load(path)


def without_onnx(code: str) -> subprocess.CompletedProcess:
    """Python running ``code`` where ``import onnx`` fails, as without the extra."""
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    return subprocess.run([sys.executable, "-c", "import sys; sys.modules['onnx'] = None\n"
                           + code], capture_output=True, text=True, env=env, timeout=60,
                          check=False)
