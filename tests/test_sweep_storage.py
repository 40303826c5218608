"""Storage URLs: DIR's embedded SQLite file or a PostgreSQL server, passwords kept out of what
is shown and stored, a storage lost mid-trial as one line, and the heartbeat that gives a
killed worker's trial to a live one, on the embedded store as on PostgreSQL."""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
import urllib.parse
from pathlib import Path

import pytest

from mnist_mlp import sweep
from mnist_mlp.runfiles import RunFiles, read_metrics
from mnist_mlp.sweep.storage import SweepError, bind_folder, reason, redact, storage_url

from .test_sweep import (
    ROOT,
    _run,
    _space,
    _wait,
    kill_a_worker_mid_trial,
    postgres,  # noqa: F401 -- the fixture
)


def test_storage_urls():
    out = Path("/tmp/some/dir")
    assert storage_url(None, out) == "sqlite:////tmp/some/dir/study.db"
    assert (storage_url("postgresql://u:secret@db.example/sweeps", out)
            == "postgresql+psycopg://u:secret@db.example/sweeps")
    with pytest.raises(SweepError, match="--storage takes postgresql://"):
        storage_url("mysql://u:secret@h/db", out)


@pytest.mark.parametrize("url, shown", [
    ("postgresql://u:secret@db.example:5433/s", "postgresql://u@db.example:5433/s"),
    ("postgresql://u@h/db?password=secret", "postgresql://u@h/db"),
    ("postgresql://u@h/db?sslmode=require&PassWord=secret&connect_timeout=3",
     "postgresql://u@h/db?sslmode=require&connect_timeout=3"),
    ("postgresql+psycopg://u:secret@h/db?PASSWORD=secret&sslpassword=secret",
     "postgresql+psycopg://u@h/db"),
    ("postgresql://u@h/db?pass%77ord=secret", "postgresql://u@h/db"),      # escaped key
    ("postgresql://u:p@ss:secret@h/db", "postgresql://u@h/db"),             # '@' unescaped
    ("postgresql://u:secret@[::1/db", "postgresql://u:***@[::1/db"),        # broken
    ("postgresql://u@h/db?sslmode=require", "postgresql://u@h/db?sslmode=require"),
])
def test_passwords_are_hidden_wherever_they_sit_in_a_url(url, shown):
    assert redact(url) == shown
    assert "secret" not in redact(url)


def test_a_folder_is_bound_to_its_storage_whatever_its_password(tmp_path):
    """Compared without passwords, and never shown: also a sweep.json that kept one."""
    (tmp_path / "sweep.json").write_text(json.dumps(
        {"study": "s", "storage": "postgresql://u@h/db?password=secret"}))
    assert bind_folder(tmp_path, "s", "postgresql://u:other@h/db") == "s"
    with pytest.raises(SweepError) as caught:
        bind_folder(tmp_path, "s", "postgresql://u:secret@elsewhere/db")
    assert "holds study 's' in postgresql://u@h/db;" in str(caught.value)
    assert "secret" not in str(caught.value)


def test_what_the_driver_says_of_a_url_shows_no_password():
    """libpq quotes a URL it cannot parse whole, password and all; the one line does not."""
    psycopg = pytest.importorskip("psycopg")
    with pytest.raises(psycopg.Error) as caught:
        psycopg.connect("postgresql://u:secret@[::1/db?password=secret", connect_timeout=5)
    assert "secret" in str(caught.value)
    assert "secret" not in reason(caught.value) and "\n" not in reason(caught.value)


def test_a_failed_first_connection_binds_nothing_and_hides_the_password(tiny_mnist,
                                                                        tmp_path):
    pytest.importorskip("psycopg")
    out, space = tmp_path / "sw", _space(tmp_path)
    wrong = "postgresql://mlp_test@127.0.0.1:1/sweeps?password=hunter2"   # nothing listens
    with pytest.raises(SweepError) as caught:
        _run(tiny_mnist, space, out, 1, storage=wrong)
    message = str(caught.value)
    assert message.startswith("cannot connect to postgresql://mlp_test@127.0.0.1:1/sweeps: ")
    assert "hunter2" not in message and "\n" not in message
    assert not (out / "sweep.json").exists()      # --out is still free for the right URL


def test_the_right_storage_after_a_wrong_one_on_the_same_folder_works(tiny_mnist, tmp_path,
                                                                      postgres):  # noqa: F811
    out, space = tmp_path / "sw", _space(tmp_path)
    parts = urllib.parse.urlsplit(postgres)
    with pytest.raises(SweepError, match="cannot connect"):
        _run(tiny_mnist, space, out, 1, storage=postgres.replace(parts.netloc,
                                                                 f"{parts.username}@[::1]:1"))
    # The password as a query parameter: used to connect, never written to sweep.json.
    right = urllib.parse.urlunsplit(parts._replace(
        netloc=f"{parts.username}@{parts.hostname}:{parts.port or 5432}",
        query=urllib.parse.urlencode({"password": parts.password})))
    report = _run(tiny_mnist, space, out, 1, storage=right, study="s").report
    assert [r.state for r in report.rows] == ["complete"]
    shown = f"postgresql://{parts.username}@{parts.hostname}:{parts.port or 5432}{parts.path}"
    assert json.loads((out / "sweep.json").read_text()) == {"study": "s", "storage": shown}
    assert report.storage == shown
    # Compared without the password: given in the user part now, it is the same storage.
    again = _run(tiny_mnist, space, out, 2, storage=urllib.parse.urlunsplit(
        parts._replace(netloc=f"{parts.username}:{parts.password}@{parts.hostname}:"
                              f"{parts.port or 5432}")), study="s").report
    assert len(again.rows) == 2


# A worker whose errors end it as `mlp sweep` ends: SweepError as one line, exit 1.
WORKER = """
import json, sys
from pathlib import Path
from mnist_mlp import sweep
from mnist_mlp.dataset import DataSource
from mnist_mlp.mnist import Resource
args = json.loads(sys.argv[1])
source = DataSource(Path(args.pop("folder")), mirrors=(),
                    resources=tuple(Resource(*r) for r in args.pop("resources")))
space = sweep.load_space(Path(args.pop("space_path")))
try:
    sweep.run_sweep(sweep.SweepSpec(space, Path(args.pop("out_dir")), args.pop("trials"),
                                    data=source, plots=False, heartbeat_s=1, threads=1, **args))
except sweep.SweepError as exc:
    sys.exit(f"Error: {exc}")
"""


def test_a_database_lost_mid_trial_is_one_line_and_the_sweep_continues(tiny_mnist, tmp_path,
                                                                       postgres):  # noqa: F811
    psycopg = pytest.importorskip("psycopg")
    db = urllib.parse.urlsplit(postgres).path[1:]
    out, space = tmp_path / "sw", _space(tmp_path, epochs=20, batch=20)
    args = {"space_path": str(space), "out_dir": str(out), "trials": 2, "storage": postgres,
            "study": "s", "pruner": "none", "folder": str(tiny_mnist.folder),
            "resources": [dataclasses.astuple(r) for r in tiny_mnist.resources]}
    proc = subprocess.Popen([sys.executable, "-c", WORKER, json.dumps(args)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "PYTHONPATH": str(ROOT),
                                 "OPENBLAS_NUM_THREADS": "1"})
    metrics = RunFiles(out / "trial-0000.npz").metrics
    _wait(lambda: metrics.exists() and len(metrics.read_text().splitlines()) >= 2, proc)
    admin_url = urllib.parse.urlunsplit(urllib.parse.urlsplit(postgres)._replace(
        path="/postgres"))
    with psycopg.connect(admin_url, autocommit=True) as admin:
        # Refused from now on, and every open connection cut: the database is lost.
        admin.execute(f'ALTER DATABASE "{db}" ALLOW_CONNECTIONS false')
        admin.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                      "WHERE datname = %s", (db,))
        try:
            _, err = proc.communicate(timeout=120)
        finally:
            admin.execute(f'ALTER DATABASE "{db}" ALLOW_CONNECTIONS true')
    assert proc.returncode == 1
    assert err.startswith(f"Error: the study storage {redact(postgres)} failed: ")
    assert len(err.splitlines()) == 1, err
    assert f":{urllib.parse.urlsplit(postgres).password}@" not in err

    report = _run(tiny_mnist, space, out, 2, storage=postgres, study="s",
                  pruner="none").report                     # the same again: it goes on
    states = {r.number: (r.state, r.retry_of) for r in report.rows}
    assert states[0] == ("died", None) and ("complete", 0) in states.values()
    assert sum(state == "complete" for state, _ in states.values()) == 2
    assert [r["epoch"] for r in read_metrics(metrics)] == list(range(1, 21))


def test_a_killed_workers_trial_is_run_again_on_the_embedded_store(tiny_mnist, tmp_path):
    """The heartbeat's rerun without PostgreSQL: two workers on DIR's study.db, one killed
    mid-trial; the other runs its trial again, resuming its files."""
    out = tmp_path / "sw"

    def study_trials():
        try:
            return sweep.load_study(out)[0].get_trials()
        except sweep.SweepError:    # no study yet
            return None

    kill_a_worker_mid_trial(tiny_mnist, _space(tmp_path, epochs=20, batch=20), out,
                            study_trials, pruner="none")
