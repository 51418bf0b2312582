"""Issue 18, point 2: the audit log is append-only and hash-chained; tampering is detected.

Also what the broker audit makes of each message (central/ingest/audit.py ``Recorder``, no
broker here: tests/integration/test_broker_audit.py runs it against Mosquitto and titik-ctl)
and ``GET /api/audit``.
"""

from __future__ import annotations

import json
import sqlite3
import threading
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
from fastapi.testclient import TestClient

from agent.protocol.signing import sign
from central.api.app import create_app
from central.cli import main
from central.ingest.audit import Recorder, Seen
from central.store.audit import GENESIS, AuditLog, entry_hash, message_ref
from central.store.pg.tables import PgAuditLog
from central.store.sqlite import SqliteStore
from tests.central_auth import auth_headers


@pytest.fixture(params=["sqlite", "postgresql"])
def audit(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[AuditLog]:
    """The log in SQLite, and in PostgreSQL (central/store/pg/tables.py; tests/postgres.py)."""
    log: AuditLog
    if request.param == "sqlite":
        log = AuditLog(tmp_path / "audit.db")
    else:
        log = PgAuditLog(request.getfixturevalue("pg_url"))
    yield log
    log.close()


def reopen(audit: AuditLog) -> AuditLog:
    """Another AuditLog on the same database (another process would open one)."""
    return PgAuditLog(audit.url) if isinstance(audit, PgAuditLog) else AuditLog(audit.path)


def store_toml(audit: AuditLog) -> str:
    if isinstance(audit, PgAuditLog):
        return f'[store]\nurl = "{audit.url}"\n'
    return f'[store]\npath = "{audit.path}"\n'


def fill(audit: AuditLog, n: int = 5) -> None:
    for i in range(n):
        audit.append(
            f"user{i}", "command", f"gw/gw-{i}", key_id=f"k{i}", result="published",
            detail={"name": "reboot", "i": i}, via="web",
        )  # fmt: skip


def tamper(where: Path | AuditLog, *sql: str) -> None:
    """What someone with write access to the file (or the database's owner) can do: drop
    the triggers, then edit."""
    if isinstance(where, PgAuditLog):
        with psycopg.connect(where.url) as pg:
            pg.execute("ALTER TABLE audit DISABLE TRIGGER USER")
            for s in sql:
                pg.execute(s.encode())
        return
    conn = sqlite3.connect(where if isinstance(where, Path) else where.path)
    conn.execute("DROP TRIGGER audit_no_update")
    conn.execute("DROP TRIGGER audit_no_delete")
    for s in sql:
        conn.execute(s)
    conn.commit()
    conn.close()


def test_entries_are_chained(audit: AuditLog) -> None:
    fill(audit, 3)
    entries = list(reversed(audit.page().items))
    assert [e.seq for e in entries] == [1, 2, 3]
    assert entries[0].prev == GENESIS
    assert [e.prev for e in entries[1:]] == [e.hash for e in entries[:-1]]
    for e in entries:
        fields = {k: getattr(e, k) for k in ("seq", "at", "actor", "action", "target",
                                             "key_id", "via", "result", "detail", "ref", "prev")}  # fmt: skip
        assert entry_hash(fields) == e.hash
    assert audit.verify() == []


def test_a_batch_commits_together_or_not_at_all(audit: AuditLog) -> None:
    """The broker audit records many answers in one transaction: they chain like single
    appends, a ref repeated inside the batch is recorded once, and a failure rolls the whole
    batch back (the messages are not acked, so they come again)."""
    fill(audit, 1)
    with audit.batch():
        fill(audit, 3)
        again = [
            audit.append("x", "config.result", "gw/a", key_id=None, result="applied",
                         via="broker", ref="answer:1:a")
            for _ in range(2)
        ]  # fmt: skip
    assert again[0].seq == again[1].seq == 5
    assert audit.head() is not None and audit.head().seq == 5  # type: ignore[union-attr]

    def failing() -> None:
        with audit.batch():
            fill(audit, 2)
            raise RuntimeError("disk gone")

    with pytest.raises(RuntimeError):
        failing()
    assert audit.head().seq == 5  # type: ignore[union-attr]
    fill(audit, 1)  # and the log goes on from where it was
    assert audit.head().seq == 6 and audit.verify() == []  # type: ignore[union-attr]


def test_the_store_refuses_updates_and_deletes(audit: AuditLog) -> None:
    fill(audit, 2)
    if isinstance(audit, PgAuditLog):
        for sql in (
            "UPDATE audit SET result = 'ok' WHERE seq = 1",
            "DELETE FROM audit WHERE seq = 2",
            "TRUNCATE audit",
        ):
            with (
                psycopg.connect(audit.url) as pg,
                pytest.raises(psycopg.errors.RaiseException, match="append-only"),
            ):
                pg.execute(sql.encode())
    else:
        conn = sqlite3.connect(audit.path)
        with pytest.raises(sqlite3.IntegrityError, match="append-only"):
            conn.execute("UPDATE audit SET result = 'ok' WHERE seq = 1")
        with pytest.raises(sqlite3.IntegrityError, match="append-only"):
            conn.execute("DELETE FROM audit WHERE seq = 2")
        conn.close()
    assert audit.verify() == []


def test_a_changed_and_a_deleted_entry_are_named(
    audit: AuditLog, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    fill(audit, 6)
    tamper(
        audit,
        "UPDATE audit SET result = 'refused' WHERE seq = 2",
        "DELETE FROM audit WHERE seq = 4",
    )
    problems = audit.verify()
    assert problems == [
        "entry #2: its fields do not match its hash (changed)",
        "entry #4 missing (deleted?): the log jumps to #5",
    ]
    # The CLI: exit 1, the first break first.
    conf = tmp_path / "central.toml"
    conf.write_text(f'[mqtt]\nhost = "127.0.0.1"\n{store_toml(audit)}')
    assert main(["audit", "verify", "--config", str(conf)]) == 1
    out = capsys.readouterr().out.splitlines()
    assert out[0] == "BROKEN: entry #2: its fields do not match its hash (changed)"
    assert "entry #4 missing" in out[1]


def test_a_rehashed_entry_breaks_the_next_link(audit: AuditLog) -> None:
    """Changing an entry and recomputing its hash (the scheme is public) moves the break to
    the entry after it; only rewriting the whole tail goes unseen (docs/security.md)."""
    fill(audit, 4)
    e = audit.get(2)
    assert e is not None
    fields = {k: getattr(e, k) for k in ("seq", "at", "actor", "action", "target", "key_id",
                                         "via", "result", "detail", "ref", "prev")}  # fmt: skip
    fields["actor"] = "someone-else"
    tamper(
        audit,
        f"UPDATE audit SET actor = 'someone-else', hash = '{entry_hash(fields)}' WHERE seq = 2",  # noqa: S608 - a hex digest
    )
    assert audit.verify() == [
        "entry #3: prev does not match the hash of entry #2 (an entry before it was changed or "
        "inserted)"
    ]


def test_the_cli_says_whole_with_the_head(
    audit: AuditLog, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    fill(audit, 2)
    conf = tmp_path / "central.toml"
    conf.write_text(f'[mqtt]\nhost = "127.0.0.1"\n{store_toml(audit)}')
    assert main(["audit", "verify", "--config", str(conf)]) == 0
    head = audit.head()
    assert head is not None
    assert capsys.readouterr().out.strip() == (
        f"the audit log is whole: 2 entries, head #2 hash {head.hash}"
    )


def test_appends_from_many_threads_and_connections_make_one_chain(audit: AuditLog) -> None:
    others = [reopen(audit) for _ in range(3)]

    def work(log: AuditLog, who: str) -> None:
        for i in range(20):
            log.append(who, "x", f"t{i}", key_id=None, result="ok", via="web")

    threads = [threading.Thread(target=work, args=(lg, f"w{n}")) for n, lg in enumerate(others)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert audit.page(limit=0).total == 60
    assert audit.verify() == []
    for lg in others:
        lg.close()


def test_bad_fields_are_refused_with_the_reason(audit: AuditLog) -> None:
    with pytest.raises(ValueError, match="via: must be one of web, ctl, broker"):
        audit.append("a", "b", "c", key_id=None, result="ok", via="email")
    with pytest.raises(ValueError, match="actor: must be 1-512 characters"):
        audit.append("", "b", "c", key_id=None, result="ok", via="web")
    with pytest.raises(ValueError, match="detail: more than"):
        audit.append("a", "b", "c", key_id=None, result="ok", via="web", detail={"x": "y" * 20000})
    assert audit.page().total == 0


# -- what the broker audit records -----------------------------------------------------------

PREFIX = "titik"


def signed(topic: str, body: dict[str, object]) -> bytes:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    key = Ed25519PrivateKey.from_private_bytes(bytes(range(32)))
    return json.dumps(sign(key, topic, body)).encode()


def test_a_signed_command_and_its_answers(audit: AuditLog) -> None:
    rec = Recorder(PREFIX, audit)
    topic = f"{PREFIX}/group/g1/cmd"
    payload = signed(topic, {"id": "c-1", "name": "kick", "args": {"mac": "aa:bb:cc:dd:ee:ff"},
                             "expires_at": 2_000_000_000})  # fmt: skip
    action = rec.record(Seen(topic, payload, via="ctl"))
    assert action is not None
    assert action.actor.startswith("key:") and action.key_id == action.actor[4:]
    assert (action.action, action.target, action.via, action.result) == (
        "command", "group/g1", "ctl", "published",
    )  # fmt: skip
    assert action.details["args"] == ["mac"] and "aa:bb" not in action.detail  # names only
    # Delivered again (QoS 1 redelivery): recorded once.
    assert rec.record(Seen(topic, payload, via="ctl")) == action
    ok = json.dumps({"id": "c-1", "ok": True, "result": {}, "ts": 1}).encode()
    bad = json.dumps({"id": "c-1", "ok": False, "error": "args.mac: unknown", "ts": 1}).encode()
    a1 = rec.record(Seen(f"{PREFIX}/gw/gw-1/cmd/result", ok))
    a2 = rec.record(Seen(f"{PREFIX}/gw/gw-2/cmd/result", bad))
    assert a1 is not None and a2 is not None
    assert (a1.action, a1.target, a1.result, a1.details["of"]) == (
        "command.result", "gw/gw-1", "ok", action.seq,
    )  # fmt: skip
    assert a2.result == "error: args.mac: unknown" and a2.actor == action.actor
    assert rec.record(Seen(f"{PREFIX}/gw/gw-1/cmd/result", ok)) == a1  # repeated: once
    # A result for a command the log never saw is not recorded (a gateway cannot grow it).
    other = json.dumps({"id": "c-zzz", "ok": True, "ts": 1}).encode()
    assert rec.record(Seen(f"{PREFIX}/gw/gw-1/cmd/result", other)) is None
    assert audit.answers([action.seq])[action.seq] == [a1, a2]
    assert audit.verify() == []


def test_an_upgrades_answers_each_step_recorded_once_and_kept_for_its_rollout(
    audit: AuditLog,
) -> None:
    """An upgrade command is answered in several steps (docs/upgrades.md): each step is an
    entry of its own (the one-answer-per-gateway rule would keep only ``verified``), the
    progress reports are not, and an upgrade rollout's answers are handed over for its gate."""
    rec = Recorder(PREFIX, audit)
    topic = f"{PREFIX}/group/g1/cmd"
    cid = "up:city-0.2.0:1.1"
    payload = signed(topic, {"id": cid, "name": "upgrade", "args": {"manifest": {}},
                             "expires_at": 2_000_000_000})  # fmt: skip
    action = rec.record(Seen(topic, payload))
    assert action is not None
    res = f"{PREFIX}/gw/gw-1/cmd/result"
    answers = [
        {"id": cid, "ok": True, "result": {"step": "verified"}, "ts": 1},
        {"id": cid, "ok": True, "step": "downloading", "result": {"step": "downloading"}, "ts": 2},
        {"id": cid, "ok": True, "step": "installing", "result": {"step": "installing"}, "ts": 3},
        {"id": cid, "ok": False, "step": "rolled_back", "error": "health gate", "ts": 4},
    ]
    got = [rec.record(Seen(res, json.dumps(a).encode())) for a in answers]
    assert got[1] is None  # progress: not in the log
    assert [e.details.get("step") for e in got if e is not None] == [
        None, "installing", "rolled_back",
    ]  # fmt: skip
    assert got[3] is not None and got[3].result == "error: health gate"
    # the same step delivered again: recorded once; a step no agent reports: not at all
    assert rec.record(Seen(res, json.dumps(answers[3]).encode())) == got[3]
    made_up = {"id": cid, "ok": True, "step": "grow_the_log_1", "ts": 5}
    assert rec.record(Seen(res, json.dumps(made_up).encode())) is None
    steps = [(r, row.step, row.ok) for r, row in rec.steps]  # one row per gateway, kept
    assert steps[:4] == [
        ("city-0.2.0", "verified", True), ("city-0.2.0", "downloading", True),
        ("city-0.2.0", "installing", True), ("city-0.2.0", "rolled_back", False),
    ]  # fmt: skip
    assert audit.verify() == []


def test_a_config_push_its_reports_and_no_secret(audit: AuditLog) -> None:
    rec = Recorder(PREFIX, audit)
    topic = f"{PREFIX}/gw/gw-1/config/desired"
    body = {"version": 7, "config": {"wifi": {"key": "s3cret-passphrase"}, "log": {}}}
    push = rec.record(Seen(topic, signed(topic, body), retained=True))
    assert push is not None
    assert (push.action, push.target, push.via) == ("config.push", "gw/gw-1", "broker")
    assert push.details["version"] == 7 and push.details["keys"] == ["log", "wifi"]
    assert "s3cret" not in push.detail
    unsigned = rec.record(Seen(f"{PREFIX}/group/g1/config/desired", json.dumps(body).encode()))
    assert unsigned is not None and (unsigned.actor, unsigned.key_id) == ("unsigned", None)

    def report(state: str, version: int = 7, error: str | None = None) -> bytes:
        return json.dumps({"version": version, "source": "gw", "versions": {"gw": version},
                           "state": state, "error": error, "ts": 1}).encode()  # fmt: skip

    reported = f"{PREFIX}/gw/gw-1/config/reported"
    assert rec.record(Seen(reported, report("applying"))) is None  # not final
    applied = rec.record(Seen(reported, report("applied")))
    assert applied is not None and applied.result == "applied"
    assert applied.details == {"of": push.seq, "version": 7}
    rolled = rec.record(Seen(reported, report("rolled_back", error="wifi: no link")))
    assert rolled is not None and rolled.result == "rolled_back: wifi: no link"
    assert rec.record(Seen(reported, report("applied", version=6))) is None  # not audited
    cleared = rec.record(Seen(topic, b""))
    assert cleared is not None and cleared.action == "config.clear"
    assert audit.verify() == []


def test_web_actions_are_not_recorded_twice(audit: AuditLog) -> None:
    """The web actions append with the message's ref before publishing; the broker audit
    then finds it and adds nothing."""
    topic = f"{PREFIX}/gw/gw-1/cmd"
    payload = signed(topic, {"id": "w-1", "name": "collect_now", "args": {}, "expires_at": 2e9})
    web = audit.append(
        "alice", "command", "gw/gw-1", key_id="k", result="published", via="web",
        ref=message_ref(topic, payload),
    )  # fmt: skip
    assert Recorder(PREFIX, audit).record(Seen(topic, payload)) == web
    assert audit.page().total == 1


@pytest.mark.parametrize(
    "topic",
    ["other/gw/gw-1/cmd", f"{PREFIX}/gw/gw 1/cmd", f"{PREFIX}/gw/gw-1/telemetry"],
)
def test_other_topics_are_not_recorded(audit: AuditLog, topic: str) -> None:
    assert Recorder(PREFIX, audit).record(Seen(topic, b"{}")) is None


@pytest.mark.parametrize("payload", [b"\xff", b"[1]", b'{"sig": 5}', b"1e999999"])
def test_a_malformed_command_is_still_recorded(audit: AuditLog, payload: bytes) -> None:
    e = Recorder(PREFIX, audit).record(Seen(f"{PREFIX}/gw/gw-1/cmd", payload))
    assert e is not None and e.actor == "unsigned" and e.action == "command"


# -- the API ----------------------------------------------------------------------------------


def test_get_api_audit_pages_filters_and_answers(tmp_path: Path) -> None:
    store = SqliteStore(tmp_path / "api.db")
    audit = AuditLog(store.path)
    rec = Recorder(PREFIX, audit)
    topic = f"{PREFIX}/gw/gw-1/cmd"
    action = rec.record(Seen(topic, signed(topic, {"id": "c-9", "name": "collect_now",
                                                   "args": {}, "expires_at": 2e9})))  # fmt: skip
    assert action is not None
    rec.record(Seen(f"{PREFIX}/gw/gw-1/cmd/result", b'{"id": "c-9", "ok": true, "ts": 1}'))
    fill(audit, 3)
    client = TestClient(create_app(store), headers=auth_headers(store, "viewer"))
    body = client.get("/api/audit").json()
    assert body["total"] == 5 and [i["seq"] for i in body["items"]] == [5, 4, 3, 2, 1]
    first = body["items"][-1]
    assert first["action"] == "command" and first["key_id"] == action.key_id
    assert first["detail"]["name"] == "collect_now"
    assert first["answers"] == [
        {"seq": 2, "at": first["answers"][0]["at"], "target": "gw/gw-1", "result": "ok"}
    ]
    assert client.get("/api/audit?actor=user1").json()["total"] == 1
    assert client.get("/api/audit?action=command&limit=1&offset=1").json()["items"][0]["seq"] == 4
    assert client.get("/api/audit?via=broker").json()["total"] == 2
    assert client.get("/api/audit?limit=1001").status_code == 422
    verify = client.get("/api/audit/verify").json()
    assert verify["ok"] is True and verify["entries"] == 5
    tamper(store.path, "DELETE FROM audit WHERE seq = 3")
    verify = client.get("/api/audit/verify").json()
    assert verify["ok"] is False and verify["problems"] == [
        "entry #3 missing (deleted?): the log jumps to #4"
    ]
    audit.close()
    store.close()
