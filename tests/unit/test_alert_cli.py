"""Issue 19: ``titik-central maintenance add/list/delete`` on central's database (as the token
commands do): audited as the Unix user, bad input refused with exit 2 naming the field. On
the SQLite file and on PostgreSQL (``[store] url``, issue 21) alike."""

from __future__ import annotations

from pathlib import Path

import pytest

from central.cli import main, open_audit
from central.config import load_config
from central.store.base import DeviceState, WriteBatch
from central.store.pg import PgStore
from central.store.sqlite import SqliteStore


@pytest.fixture(params=["sqlite", "postgresql"])
def conf(request: pytest.FixtureRequest, tmp_path: Path) -> Path:
    db = tmp_path / "c.db"
    store: SqliteStore | PgStore
    if request.param == "sqlite":
        store = SqliteStore(db)
        where = f'path = "{db}"'
    else:
        url = request.getfixturevalue("pg_url")
        store = PgStore(url)
        where = f'url = "{url}"'
    store.write(WriteBatch(devices=[DeviceState("gw-1", region="Depok", groups=["kemang"])]))
    store.close()
    path = tmp_path / "central.toml"
    path.write_text(f'[mqtt]\nhost = "localhost"\n[store]\n{where}\n')
    return path


def test_add_list_delete(conf: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["maintenance", "list", "--config", str(conf)]) == 0
    assert "no maintenance windows now or to come" in capsys.readouterr().out
    args = ["maintenance", "add", "--group", "kemang", "--end", "+2h", "--reason", "fibre works"]
    assert main([*args, "--config", str(conf)]) == 0
    out = capsys.readouterr().out
    assert "group/kemang" in out
    assert "active" in out
    assert main(["maintenance", "add", "--region", "Depok", "--start", "2099-01-01T00:00Z",
                 "--end", "+30m", "--reason", "x", "--config", str(conf)]) == 0  # fmt: skip
    assert "planned" in capsys.readouterr().out
    assert main(["maintenance", "list", "--config", str(conf)]) == 0
    out = capsys.readouterr().out
    assert "group/kemang" in out
    assert "region/Depok" in out
    assert main(["maintenance", "delete", "1", "--config", str(conf)]) == 0
    assert "deleted by" in capsys.readouterr().out
    assert main(["maintenance", "list", "--config", str(conf)]) == 0
    assert "group/kemang" not in capsys.readouterr().out
    assert main(["maintenance", "list", "--all", "--config", str(conf)]) == 0
    assert "group/kemang" in capsys.readouterr().out
    audit = open_audit(load_config(conf))
    try:
        entries = audit.page(limit=10).items
    finally:
        audit.close()
    assert [(e.action, e.via) for e in reversed(entries)] == [
        ("maintenance.add", "cli"), ("maintenance.add", "cli"), ("maintenance.delete", "cli"),
    ]  # fmt: skip


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--group", "kemnag", "--end", "+1h"], "group: no gateway is in group 'kemnag'"),
        (["--device", "gw-2", "--end", "+1h"], "device: no gateway is in device 'gw-2'"),
        (["--group", "kemang", "--end", "2026-13-01T00:00Z"], "end: '2026-13-01T00:00Z' is not"),
        (["--group", "kemang", "--start", "01:00", "--end", "+1h"], "start: '01:00' is not a time"),
        (["--group", "kemang", "--end", "1000"], "end: must be after start"),
        # PostgreSQL's text refuses NUL: refused before any query, on both stores alike
        (["--group", "kemang", "--end", "+1h", "--reason", "a\x00b"], "reason: holds a NUL"),
    ],
)
def test_bad_input_exits_2_naming_the_field(
    conf: Path, capsys: pytest.CaptureFixture[str], args: list[str], message: str
) -> None:
    code = main(["maintenance", "add", "--reason", "r", *args, "--config", str(conf)])
    assert code == 2
    assert message in capsys.readouterr().err
    assert main(["maintenance", "delete", "7", "--config", str(conf)]) == 2
    assert "id: no maintenance window 7" in capsys.readouterr().err
