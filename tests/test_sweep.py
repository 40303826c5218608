"""Sweeps: a bad space file refused before any trial; trials that are `mlp train` runs, selected
on validation only; pruning; several workers on the embedded store and on PostgreSQL, a killed
worker's trial run again; a clean stop and its resume; the results and the committee step."""

from __future__ import annotations

import dataclasses
import json
import os
import signal
import subprocess
import sys
import threading
import time
import urllib.parse
import uuid
from pathlib import Path

import pytest
from click.testing import CliRunner
from threadpoolctl import threadpool_info, threadpool_limits

from mnist_mlp import checkpoint, plots, sweep
from mnist_mlp.cli.sweep import sweep as sweep_command
from mnist_mlp.config import load_config_file, resolve
from mnist_mlp.runfiles import RunFiles, read_metrics
from mnist_mlp.sweep.results import format_table
from mnist_mlp.sweep.space import load_space
from mnist_mlp.sweep.storage import redact, storage_url
from mnist_mlp.sweep.trial import ThreadShare
from mnist_mlp.threads import cores, limit_threads, registered_worker

optuna = pytest.importorskip("optuna")

ROOT = Path(__file__).resolve().parents[1]
POSTGRES = os.environ.get("MLP_TEST_POSTGRES",
                          "postgresql://mlp_test:mlp_test@127.0.0.1/postgres")

SPACE = """
config = "quick"
[fixed]
epochs = {epochs}
val_size = 200
batch_size = {batch}
[search]
lr = {{ low = 0.05, high = 0.3, log = true }}
hidden = {{ choices = [[16], [8, 8]] }}
"""

# A worker process: a sweep on the tiny data (its folder and resource table handed down),
# started at a given moment, exiting as `mlp sweep` does.
WORKER = """
import json, sys, time
from pathlib import Path
import optuna, sqlalchemy
from mnist_mlp import sweep
from mnist_mlp.dataset import DataSource
from mnist_mlp.mnist import Resource
args = json.loads(sys.argv[1])
source = DataSource(Path(args.pop("folder")), mirrors=(),
                    resources=tuple(Resource(*r) for r in args.pop("resources")))
time.sleep(max(0.0, args.pop("start_at") - time.time()))
space = sweep.load_space(Path(args.pop("space_path")))
result = sweep.run_sweep(sweep.SweepSpec(space, Path(args.pop("out_dir")), args.pop("trials"),
                                         data=source, plots=False, heartbeat_s=1,
                                         threads=args.pop("threads", 1), **args))
print(json.dumps(result.report.to_dict()))
sys.exit(128 + result.signum if result.signum else 0)
"""


def _space(tmp_path, epochs=2, batch=100, text=SPACE) -> Path:
    path = tmp_path / "space.toml"
    path.write_text(text.format(epochs=epochs, batch=batch))
    return path


def _run(tiny_mnist, space, out, trials, note=lambda line: None, **kwargs
         ) -> sweep.SweepResult:
    kwargs = {"plots": False, "heartbeat_s": 1, **kwargs}
    spec = sweep.SweepSpec(sweep.load_space(space), out, trials, data=tiny_mnist, **kwargs)
    return sweep.run_sweep(spec, note)


def _study(out, storage=None):
    name = json.loads((out / "sweep.json").read_text())["study"]
    return optuna.load_study(study_name=name, storage=storage_url(storage, out))


def _worker(tiny_mnist, space, out, trials, start_at=0.0, **kwargs) -> subprocess.Popen:
    args = {"folder": str(tiny_mnist.folder), "start_at": start_at, "space_path": str(space),
            "out_dir": str(out), "trials": trials, **kwargs,
            "resources": [dataclasses.astuple(r) for r in tiny_mnist.resources]}
    return subprocess.Popen([sys.executable, "-c", WORKER, json.dumps(args)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "PYTHONPATH": str(ROOT),
                                 "OPENBLAS_NUM_THREADS": "1"})


def _finish(proc, timeout=180) -> dict:
    out, err = proc.communicate(timeout=timeout)
    assert proc.returncode == 0, err
    return json.loads(out)


def test_the_command_exits_2_on_a_bad_space_before_any_trial(tmp_path):
    path = tmp_path / "space.toml"
    path.write_text('[search]\nlr = { low = 0.3, high = 0.02 }\n')
    result = CliRunner().invoke(sweep_command, [str(path), "--trials", "2", "--out",
                                                str(tmp_path / "out")])
    assert result.exit_code == 2
    assert f"Error: {path}: in [search], lr: reversed range" in result.output
    assert not (tmp_path / "out" / "trial-0000.npz").exists()


def test_without_optuna_the_command_says_how_to_install_it(tmp_path):
    code = ("import sys; sys.modules['optuna'] = None\n"
            "from mnist_mlp.cli.sweep import sweep\n"
            "sweep.main(sys.argv[1:], prog_name='mlp sweep')")
    space = _space(tmp_path)
    proc = subprocess.run([sys.executable, "-c", code, str(space), "--trials", "1", "--out",
                           str(tmp_path / "out")], check=False, capture_output=True, text=True,
                          env={**os.environ, "PYTHONPATH": str(ROOT)}, timeout=60)
    assert proc.returncode == 1
    assert proc.stderr == "Error: mlp sweep needs Optuna: pip install 'mnist-mlp[sweep]'\n"


# ---------------------------------------------------------------- one worker

@pytest.mark.parametrize("path", sorted((ROOT / "docs").glob("sweep-*.toml")),
                         ids=lambda p: p.name)
def test_the_space_files_in_the_docs_are_valid(path):
    assert load_space(path).search       # checked whole against mlp train's settings


def test_a_sweep_trains_selects_on_validation_and_continues(tiny_mnist, tmp_path):
    for name in ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"):
        (tiny_mnist.folder / name).write_bytes(b"not the test set")  # reading it would fail
    out, space = tmp_path / "sw", _space(tmp_path)
    lines = []
    result = _run(tiny_mnist, space, out, 3, note=lines.append, plots=True)
    rows = result.report.rows
    assert result.signum is None and len(rows) == 3 and len(lines) == 3
    assert sorted(r.number for r in rows) == [0, 1, 2]
    for r in rows:
        files = RunFiles(Path(r.checkpoint))
        assert files.kept == out / f"trial-{r.number:04d}.npz"
        assert all(p.is_file() for p in (files.kept, files.last, files.curves))
        history = read_metrics(files.metrics)
        assert r.epochs == len(history) == 2
        assert r.value == max(h["val_accuracy"] for h in history)
        assert checkpoint.load(files.kept).meta["config"] == r.config
    values = [r.value for r in rows if r.state == "complete"]
    assert values == sorted(values, reverse=True)
    best = result.report.best
    assert load_config_file(out / "best.toml") == {
        k: tuple(v) if isinstance(v, list) else v for k, v in best.config.items()}
    assert resolve(load_config_file(out / "best.toml")).to_dict() == checkpoint.load(
        Path(best.checkpoint)).meta["config"]
    assert (out / "sweep.png").stat().st_size > 0

    again = _run(tiny_mnist, space, out, 3)                 # the same: nothing left to do
    assert [r.number for r in again.report.rows] == [r.number for r in rows]
    more = _run(tiny_mnist, space, out, 4)                  # one more trial
    assert sorted(r.number for r in more.report.rows) == [0, 1, 2, 3]
    report = _run(tiny_mnist, space, out, 0).report         # only reports
    assert len(report.rows) == 4
    table = format_table(report)
    assert table.splitlines()[1].split() == ["rank", "trial", "state", "val", "acc", "epochs",
                                             "seconds", "settings"]
    assert f"hidden={report.rows[0].params['hidden']}" in table.splitlines()[2]


def test_a_directory_keeps_to_its_study(tiny_mnist, tmp_path):
    out, space = tmp_path / "sw", _space(tmp_path)
    _run(tiny_mnist, space, out, 1, study="first")
    with pytest.raises(sweep.SweepError, match="holds study 'first' in its own study.db"):
        _run(tiny_mnist, space, out, 1, study="second")
    other = _space(tmp_path, epochs=3)
    with pytest.raises(sweep.SweepError, match="was started with another space"):
        _run(tiny_mnist, other, out, 2)


def test_outputs_that_are_not_regular_files_are_refused_before_any_trial(tiny_mnist,
                                                                         tmp_path):
    out = tmp_path / "sw"
    out.mkdir()
    os.mkfifo(out / "best.toml")
    with pytest.raises(sweep.SweepError, match="best.toml: is a FIFO, not a regular file"):
        _run(tiny_mnist, _space(tmp_path), out, 1)
    assert not (out / "trial-0000.npz").exists()


def test_the_pruner_stops_hopeless_trials_resumably(tiny_mnist, tmp_path):
    text = SPACE.replace("lr = {{ low = 0.05, high = 0.3, log = true }}",
                         "lr = {{ choices = [0.2, 1e-6] }}")
    out, space = tmp_path / "sw", _space(tmp_path, epochs=4, batch=50, text=text)
    report = _run(tiny_mnist, space, out, 10, seed=0).report
    pruned = [r for r in report.rows if r.state == "pruned"]
    complete = [r for r in report.rows if r.state == "complete"]
    assert pruned and len(pruned) + len(complete) == 10
    assert {r.params["lr"] for r in pruned} == {1e-6}
    for r in pruned:
        history = read_metrics(RunFiles(Path(r.checkpoint)).metrics)
        assert 2 <= len(history) < 4 and r.epochs == len(history)   # stopped early...
        assert RunFiles(Path(r.checkpoint)).last.is_file()           # ...resumably
        assert r.value is None and r.score == max(h["val_accuracy"] for h in history)
    assert all(r.epochs == 4 for r in complete)
    assert max(r.value for r in complete) > max(r.score for r in pruned)


def test_the_figure_shows_each_trial_and_each_setting(tiny_mnist, tmp_path):
    text = SPACE.replace("hidden = {{", "seed = {{ choices = [0, 1, 2] }}\nhidden = {{")
    out, space = tmp_path / "sw", _space(tmp_path, epochs=3, text=text)
    rows = _run(tiny_mnist, space, out, 6, seed=0).report.rows
    fig = plots.sweep_figure(rows, load_space(space).search, {"lr": 0.75})
    top, lr_ax, seed_ax, hidden_ax = fig.axes
    done = sorted((r for r in rows if r.state == "complete"), key=lambda r: r.number)
    early = sorted((r for r in rows if r.state == "pruned"), key=lambda r: r.number)
    lines = {line.get_label(): line for line in top.get_lines()}
    for label, group in (("completed", done), ("stopped early (best epoch)", early)):
        assert list(lines[label].get_xdata()) == [r.number for r in group]
        assert list(lines[label].get_ydata()) == [100 * r.score for r in group]
    assert list(lines["best so far"].get_ydata()) == [
        100 * max(r.value for r in done[:i + 1]) for i in range(len(done))]
    assert [list(line.get_xdata()) for line in lr_ax.get_lines()] == [
        [r.params["lr"] for r in done], [r.params["lr"] for r in early]]
    assert lr_ax.get_xscale() == "log" and lr_ax.get_title() == "lr (75% of importance)"
    assert [t.get_text() for t in hidden_ax.get_xticklabels()] == ["16", "8,8"]
    assert list(hidden_ax.get_lines()[0].get_xdata()) == [
        ["16", "8,8"].index(r.params["hidden"]) for r in done]
    assert list(seed_ax.get_lines()[0].get_xdata()) == [r.params["seed"] for r in done]


def test_top_checkpoints_are_the_best_completed_trials(tiny_mnist, tmp_path):
    out, space = tmp_path / "sw", _space(tmp_path)
    report = _run(tiny_mnist, space, out, 3).report
    best = [Path(r.checkpoint) for r in report.rows if r.state == "complete"]
    assert sweep.top_checkpoints(out, 2) == best[:2]
    with pytest.raises(sweep.SweepError, match="has 3 completed trials, fewer than 4"):
        sweep.top_checkpoints(out, 4)
    best[0].unlink()
    with pytest.raises(sweep.SweepError, match="checkpoint .* is not on this machine"):
        sweep.top_checkpoints(out, 1)
    with pytest.raises(sweep.SweepError, match="not a sweep folder"):
        sweep.top_checkpoints(tmp_path, 1)


# ---------------------------------------------------------------- several workers

def test_two_workers_at_once_share_the_embedded_study(tiny_mnist, tmp_path):
    out, space = tmp_path / "sw", _space(tmp_path)
    start = time.time() + 3
    workers = [_worker(tiny_mnist, space, out, 6, start_at=start) for _ in range(2)]
    reports = [_finish(w) for w in workers]
    trials = _study(out).get_trials()
    assert sorted(t.number for t in trials) == list(range(6))      # exactly 6, each once
    assert {t.state.name for t in trials} <= {"COMPLETE", "PRUNED"}
    assert {t.user_attrs["pid"] for t in trials} == {w.pid for w in workers}  # both worked
    assert len({t.user_attrs["checkpoint"] for t in trials}) == 6
    assert all(len(r["trials"]) == 6 for r in reports)


class _NotedTrial:
    """What a worker notes on its trial (Optuna's set_user_attr)."""

    def __init__(self):
        self.user_attrs: dict = {}

    def set_user_attr(self, key, value):
        self.user_attrs[key] = value


@pytest.mark.skipif(cores() < 2, reason="one core: every share of it is one thread")
def test_a_workers_threads_follow_the_live_workers_epoch_by_epoch(tmp_path):
    """A worker that started alone gives up threads before its next epoch when another
    worker arrives, and takes them back when it leaves; --threads stays as given."""
    folder, trial = tmp_path / "workers", _NotedTrial()

    def blas() -> set[int]:
        return {lib["num_threads"] for lib in threadpool_info() if lib["user_api"] == "blas"}

    with threadpool_limits(1, user_api="blas"), registered_worker(folder):
        share = ThreadShare(trial, folder, None)
        with limit_threads(share.count()):
            assert blas() == {cores()} and trial.user_attrs["threads"] == cores()
            with registered_worker(folder):
                share.on_epoch_begin(None, 2, 100, 0)
                assert blas() == {cores() // 2} and trial.user_attrs["threads"] == cores() // 2
            share.on_epoch_begin(None, 3, 100, 0)
            assert blas() == {cores()} and trial.user_attrs["threads"] == cores()
        assert blas() == {1}                            # the trial's limits undone after it
        fixed = ThreadShare(trial, folder, 1)
        with limit_threads(fixed.count()), registered_worker(folder):
            fixed.on_epoch_begin(None, 2, 100, 0)
            assert blas() == {1} and trial.user_attrs["threads"] == 1


@pytest.mark.skipif(cores() < 2, reason="one core: every share of it is one thread")
def test_a_worker_with_nothing_left_to_train_leaves_the_cores_to_the_one_training(
        tiny_mnist, tmp_path):
    out, space = tmp_path / "sw", _space(tmp_path, epochs=3)
    start = time.time() + 3
    workers = [_worker(tiny_mnist, space, out, 1, start_at=start, threads=None)
               for _ in range(2)]
    for w in workers:
        _finish(w)
    (trial,) = _study(out).get_trials()
    assert trial.state.name == "COMPLETE" and trial.user_attrs["threads"] == cores()
    assert not list((out / "workers").glob("*.lock"))


def test_a_stopped_worker_saves_its_trial_and_the_sweep_resumes_it(tiny_mnist, tmp_path):
    out, space = tmp_path / "sw", _space(tmp_path, epochs=20, batch=20)
    worker = _worker(tiny_mnist, space, out, 1, pruner="none")
    metrics = RunFiles(out / "trial-0000.npz").metrics
    _wait(lambda: metrics.exists() and len(metrics.read_text().splitlines()) >= 2, worker)
    worker.send_signal(signal.SIGTERM)
    _, err = worker.communicate(timeout=60)
    assert worker.returncode == 143, err
    first = _study(out).get_trials()
    assert [t.state.name for t in first] == ["FAIL", "WAITING"]
    assert first[0].user_attrs["interrupted"] == "SIGTERM"
    saved = len(read_metrics(metrics))

    result = _run(tiny_mnist, space, out, 1, pruner="none")       # the same again
    assert result.signum is None
    rows = {r["number"]: r for r in result.report.to_dict()["trials"]}
    assert rows[0]["state"] == "interrupted"
    assert rows[1]["state"] == "complete" and rows[1]["retry_of"] == 0
    assert rows[1]["checkpoint"] == str(out / "trial-0000.npz")
    assert [t.user_attrs["resumed_from_epoch"] for t in _study(out).get_trials()][1] >= saved
    assert [r["epoch"] for r in read_metrics(metrics)] == list(range(1, 21))


def test_the_command_stops_on_a_signal_and_the_same_command_resumes(real_mnist, tmp_path):
    space = tmp_path / "space.toml"
    space.write_text('config = "quick"\n[fixed]\nepochs = 30\nhidden = [8]\nval_size = 55000\n'
                     'batch_size = 500\n[search]\nlr = { low = 0.05, high = 0.2 }\n')
    out = tmp_path / "sw"
    args = [str(space), "--trials", "1", "--out", str(out), "--data-dir", str(real_mnist),
            "--no-plots", "--pruner", "none"]
    metrics = RunFiles(out / "trial-0000.npz").metrics

    def stop_after_an_epoch():
        deadline = time.monotonic() + 120
        while not (metrics.exists() and metrics.read_text()) and time.monotonic() < deadline:
            time.sleep(0.02)
        os.kill(os.getpid(), signal.SIGTERM)      # handled in the main thread, by the sweep

    threading.Thread(target=stop_after_an_epoch, daemon=True).start()
    result = CliRunner().invoke(sweep_command, args)
    assert result.exit_code == 143, result.output
    assert ("SIGTERM: stopped; trial 0 is saved and resumes when the sweep continues (the "
            "same command)") in result.stderr
    assert len(read_metrics(metrics)) < 30

    result = CliRunner().invoke(sweep_command, [*args, "--json"])
    assert result.exit_code == 0, result.output
    trials = json.loads(result.stdout)["trials"]
    assert [(t["number"], t["state"], t["retry_of"]) for t in trials] == [
        (1, "complete", 0), (0, "interrupted", None)]
    assert [r["epoch"] for r in read_metrics(metrics)] == list(range(1, 31))


def _wait(condition, *procs, timeout=120):
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        for p in procs:
            assert p.poll() is None, p.communicate()[1]
        time.sleep(0.1)


# ---------------------------------------------------------------- PostgreSQL

@pytest.fixture
def postgres(tmp_path) -> str:
    """The URL of a fresh, empty database on the test server, dropped afterwards. Without a
    server the test is skipped, except under CI, where that fails."""
    psycopg = pytest.importorskip("psycopg")
    try:
        admin = psycopg.connect(POSTGRES, autocommit=True, connect_timeout=5)
    except psycopg.Error as exc:
        reason = (f"no PostgreSQL server at {redact(POSTGRES)} "
                  f"({str(exc).strip().splitlines()[0]}); set MLP_TEST_POSTGRES")
        if os.environ.get("CI") == "true":
            pytest.fail(reason)
        pytest.skip(reason)
    name = f"mlp_test_{uuid.uuid4().hex[:12]}"
    admin.execute(f'CREATE DATABASE "{name}"')
    try:
        yield urllib.parse.urlunsplit(urllib.parse.urlsplit(POSTGRES)._replace(path="/" + name))
    finally:
        admin.execute(f'DROP DATABASE "{name}" WITH (FORCE)')
        admin.close()


def test_workers_started_together_on_a_fresh_database_all_work(tiny_mnist, tmp_path,
                                                                postgres):
    space, start = _space(tmp_path), time.time() + 3
    workers = [_worker(tiny_mnist, space, tmp_path / f"machine{i}", 4, storage=postgres,
                       study="shared", start_at=start) for i in range(2)]
    for w in workers:
        _finish(w)
    trials = optuna.load_study(study_name="shared", storage=storage_url(postgres, tmp_path)
                               ).get_trials()
    assert sorted(t.number for t in trials) == [0, 1, 2, 3]
    assert {t.state.name for t in trials} <= {"COMPLETE", "PRUNED"}
    for t in trials:   # each machine keeps the runs of the trials it ran
        machine = next(i for i, w in enumerate(workers) if w.pid == t.user_attrs["pid"])
        assert Path(t.user_attrs["checkpoint"]).parent == tmp_path / f"machine{machine}"
        assert Path(t.user_attrs["checkpoint"]).is_file()


def kill_a_worker_mid_trial(tiny_mnist, space, out, study_trials, **args) -> None:
    """Two workers of three trials in ``out``, one SIGKILLed once its trial has logged two
    epochs; the other must run that trial again, resuming its files. ``study_trials()``:
    the study's trials, or None while there is no study yet."""
    victim, survivor = (_worker(tiny_mnist, space, out, 3, **args) for _ in range(2))

    def victims_trial():
        for t in study_trials() or ():
            if t.state.name == "RUNNING" and t.user_attrs.get("pid") == victim.pid and \
                    "checkpoint" in t.user_attrs:
                log = RunFiles(Path(t.user_attrs["checkpoint"])).metrics
                if log.exists() and len(log.read_text().splitlines()) >= 2:
                    return t
        return None

    found = []
    _wait(lambda: found.append(victims_trial()) or found[-1] is not None, victim, survivor)
    dead = found[-1]
    victim.send_signal(signal.SIGKILL)
    victim.wait(10)
    _finish(survivor)
    trials = study_trials()
    assert trials[dead.number].state.name == "FAIL"
    (rerun,) = [t for t in trials if t.system_attrs.get("failed_trial") == dead.number]
    assert rerun.state.name == "COMPLETE" and rerun.user_attrs["pid"] == survivor.pid
    assert rerun.user_attrs["checkpoint"] == dead.user_attrs["checkpoint"]
    assert rerun.user_attrs["resumed_from_epoch"] >= 2                  # resumed, not redone
    log = RunFiles(Path(rerun.user_attrs["checkpoint"])).metrics
    assert [r["epoch"] for r in read_metrics(log)] == list(range(1, 21))
    assert sum(t.state.name == "COMPLETE" for t in trials) == 3


def test_a_killed_workers_trial_is_run_again_by_a_live_worker(tiny_mnist, tmp_path, postgres):
    storage = storage_url(postgres, tmp_path)

    def study_trials():
        try:
            return optuna.load_study(study_name="s", storage=storage).get_trials()
        except KeyError:    # no study yet
            return None

    # both workers on one machine: the rerun resumes the files
    kill_a_worker_mid_trial(tiny_mnist, _space(tmp_path, epochs=20, batch=20),
                            tmp_path / "machine", study_trials, storage=postgres, study="s",
                            pruner="none")


def test_trials_start_from_the_spaces_model_with_its_users_images(tiny_mnist, tiny_run,
                                                                  tmp_path):
    from PIL import Image, ImageDraw

    (tmp_path / "mine" / "1").mkdir(parents=True)
    image = Image.new("L", (100, 100), 255)
    ImageDraw.Draw(image).line([(50, 10), (50, 90)], fill=0, width=9)
    image.save(tmp_path / "mine" / "1" / "a.png")
    text = (SPACE.replace('config = "quick"', f'config = "quick"\ninit = "{tiny_run}"\n'
                                              'extra = ["mine"]')
            .replace("hidden = {{ choices = [[16], [8, 8]] }}\n", "")
            .replace("[fixed]\n", "[fixed]\nhidden = [16]\n"))
    result = _run(tiny_mnist, _space(tmp_path, text=text), tmp_path / "sw", 2)
    assert len(result.report.rows) == 2
    for row in result.report.rows:
        meta = checkpoint.load(Path(row.checkpoint)).meta
        assert meta["init"]["model"] == str(tiny_run)
        assert meta["extra"] == [{"folder": str(tmp_path / "mine"), "count": 1,
                                  "sha256": meta["extra"][0]["sha256"]}]
