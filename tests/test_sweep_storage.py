"""Storage URLs: DIR's embedded SQLite file or a PostgreSQL server, and passwords kept out
of what is shown."""

from __future__ import annotations

from pathlib import Path

import pytest

from mnist_mlp.sweep.storage import SweepError, redact, storage_url


def test_storage_urls():
    out = Path("/tmp/some/dir")
    assert storage_url(None, out) == "sqlite:////tmp/some/dir/study.db"
    assert (storage_url("postgresql://u:secret@db.example/sweeps", out)
            == "postgresql+psycopg://u:secret@db.example/sweeps")
    assert redact("postgresql://u:secret@db.example:5433/s") == \
        "postgresql://u@db.example:5433/s"
    with pytest.raises(SweepError, match="--storage takes postgresql://"):
        storage_url("mysql://u:secret@h/db", out)
