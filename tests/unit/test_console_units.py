"""The console's pure parts against the code they mirror: command models vs the agent's own
handlers, the SQL compliance count vs central.store.compliance, the hand-written per-gateway
exposition vs prometheus_client's parser, and prepare on arbitrary bodies."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path
from tempfile import TemporaryDirectory
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from prometheus_client.parser import text_string_to_metric_families

from agent.remote import actions
from agent.remote.commands import CommandFailed
from central.actions.commands import COMMANDS, check_args
from central.actions.core import ActionError, Console, Target
from central.api.metrics import DEVICE_SERIES, device_exposition
from central.store.base import DesiredDoc, DeviceState, ReportedDoc, WriteBatch
from central.store.pg import PgStore
from central.store.sqlite import SqliteStore

# --- command models vs the agent's handlers -------------------------------------------------


class _Gateway:
    """Sinks for the handlers' side effects; only their argument checks are under test."""

    class cfg:
        class mqtt:
            host = "broker"

    class platform:
        name = "stub"

        @staticmethod
        def diagnostics(targets: dict[str, str]) -> dict[str, Any]:
            return {}

        @staticmethod
        def kick_client(mac: str, ban: int) -> dict[str, Any]:
            return {}

        @staticmethod
        def restart_wifi() -> dict[str, Any]:
            return {}

    remote = None

    def schedule_reboot(self, delay_s: float) -> None: ...

    def collect_now(self) -> int:
        return 1


HANDLERS = actions.handlers(_Gateway())  # type: ignore[arg-type]


def test_every_agent_command_has_a_model() -> None:
    assert set(COMMANDS) == set(HANDLERS)


values = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-10, 100_000),
    st.floats(allow_nan=False, allow_infinity=False, min_value=-10, max_value=100_000),
    st.sampled_from(["", "-x", "02:00:00:00:00:01", "02:00:00:00:00:0G", "example.net", "x" * 254]),
)
arg_keys = st.sampled_from(["delay_s", "mac", "ban_s", "ping", "dns", "http", "other"])


@settings(max_examples=400, deadline=None)
@given(name=st.sampled_from(sorted(HANDLERS)), args=st.dictionaries(arg_keys, values, max_size=3))
def test_central_refuses_exactly_what_the_agent_refuses(name: str, args: dict[str, Any]) -> None:
    try:
        HANDLERS[name](dict(args))
        agent_ok = True
    except (CommandFailed, AttributeError, TypeError):
        agent_ok = False  # AttributeError/TypeError: the stub's get_config (not an arg check)
    if name == "get_config":
        agent_ok = not args
    error = ""
    try:
        check_args(name, args)
    except ValueError as exc:
        error = str(exc)
    assert (not error) == agent_ok, (name, args)
    assert not error or error.startswith("args."), error


# --- the SQL compliance count vs the Python rule -------------------------------------------

groups = st.lists(st.sampled_from(["a", "b", "c"]), unique=True, max_size=3)
versions = st.dictionaries(
    st.sampled_from(["gw", "group/a", "group/b", "group/c"]), st.integers(1, 3)
)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    devices=st.lists(
        st.tuples(
            groups,
            st.one_of(st.none(), st.tuples(st.sampled_from(["applied", "rejected"]), versions)),
        ),
        max_size=6,
    ),
    desired=st.dictionaries(
        st.sampled_from(["group/a", "group/b", "group/c", "gw/d0", "gw/d1", "gw/d2"]),
        st.one_of(st.none(), st.integers(1, 3)),
    ),
)
def test_noncompliant_sql_agrees_with_the_python_rule(
    devices: list[Any], desired: dict[str, Any]
) -> None:
    from agent.protocol import ConfigReported

    with TemporaryDirectory() as tmp:
        store = SqliteStore(Path(tmp) / "c.db")
        states, reports = [], []
        for i, (gs, rep) in enumerate(devices):
            states.append(DeviceState(f"d{i}", groups=gs))
            if rep is not None:
                report = ConfigReported(state=rep[0], versions=rep[1])
                reports.append(ReportedDoc(f"d{i}", report, "{}"))
        docs = [DesiredDoc(t, v, "{}", 0.0) for t, v in desired.items()]
        store.write(WriteBatch(devices=states, reported=reports, desired=docs))
        assert store.noncompliant_count() == sum(not r.compliant for r in store.compliance())
        store.close()


@settings(
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
@given(
    devices=st.lists(
        st.tuples(
            groups,
            st.one_of(st.none(), st.tuples(st.sampled_from(["applied", "rejected"]), versions)),
        ),
        max_size=6,
    ),
    desired=st.dictionaries(
        st.sampled_from(["group/a", "group/b", "group/c", "gw/d0", "gw/d1", "gw/d2"]),
        st.one_of(st.none(), st.integers(1, 3)),
    ),
)
def test_noncompliant_sql_agrees_with_the_python_rule_on_postgresql(
    pg_store: PgStore, devices: list[Any], desired: dict[str, Any]
) -> None:
    """The same property for the PostgreSQL store's SQL (central/store/pg/queries.py), on one
    database emptied before each example."""
    from agent.protocol import ConfigReported

    with pg_store._conn() as conn:
        conn.execute("TRUNCATE devices, config_desired, config_reported")
    states, reports = [], []
    for i, (gs, rep) in enumerate(devices):
        states.append(DeviceState(f"d{i}", groups=gs))
        if rep is not None:
            reports.append(
                ReportedDoc(f"d{i}", ConfigReported(state=rep[0], versions=rep[1]), "{}")
            )
    docs = [DesiredDoc(t, v, "{}", 0.0) for t, v in desired.items()]
    pg_store.write(WriteBatch(devices=states, reported=reports, desired=docs))
    assert pg_store.noncompliant_count() == sum(not r.compliant for r in pg_store.compliance())


@pytest.fixture
def pg_store(pg_url: str) -> Iterator[PgStore]:
    store = PgStore(pg_url)
    yield store
    store.close()


# --- the per-gateway exposition -------------------------------------------------------------


def test_device_exposition_parses_with_prometheus_clients_parser(tmp_path: Path) -> None:
    store = SqliteStore(tmp_path / "c.db")
    odd = 'Jl. "Merdeka" \\ 5\nlantai 2'
    store.write(
        WriteBatch(
            devices=[
                DeviceState("gw-1", site=odd, region="Utara", lat=-6.2, lon=106.8, online=True,
                            clients=12, cpu_pct=12.5, temp_c=1e-5, last_seen=time.time(),
                            version="0.1.0"),
                DeviceState("gw-2"),  # never sent a sample: only up=0 and its info
            ]
        )
    )  # fmt: skip
    text = device_exposition(store.device_rows()).decode()
    fams = {f.name: f for f in text_string_to_metric_families(text)}
    assert set(fams) == {n for n, _, _ in DEVICE_SERIES} | {"titik_device_info"}
    up = {s.labels["device"]: s.value for s in fams["titik_device_up"].samples}
    assert up == {"gw-1": 1, "gw-2": 0}
    clients = {s.labels["device"]: s.value for s in fams["titik_device_clients"].samples}
    assert clients == {"gw-1": 12}
    assert fams["titik_device_temp_celsius"].samples[0].value == 1e-5
    info = {s.labels["device"]: s.labels for s in fams["titik_device_info"].samples}
    assert info["gw-1"]["site"] == odd and info["gw-1"]["lat"] == "-6.2"
    assert info["gw-2"]["region"] == ""


def test_region_series_and_device_series_option(tmp_path: Path) -> None:
    from fastapi.testclient import TestClient

    from central.api.app import create_app
    from central.store.base import AlertChange
    from tests.central_auth import auth_headers

    store = SqliteStore(tmp_path / "c.db")
    store.write(
        WriteBatch(
            devices=[
                DeviceState("gw-1", region="Utara", online=True, clients=3),
                DeviceState("gw-2", region="Utara"),
                DeviceState("gw-3"),
            ],
            alerts=[AlertChange("temp", "gw-1", 1.0, "hot")],
        )
    )
    headers = auth_headers(store, "viewer")
    for on in (False, True):
        client = TestClient(create_app(store, device_series=on, web_dir=tmp_path / "none"))
        text = client.get("/metrics", headers=headers).text
        fams = {f.name: f for f in text_string_to_metric_families(text)}
        region = {
            (s.labels["region"], s.labels["status"]): s.value
            for s in fams["titik_region_devices"].samples
        }
        assert region == {
            ("", "online"): 0,
            ("", "offline"): 1,
            ("Utara", "online"): 1,
            ("Utara", "offline"): 1,
        }
        alerts = fams["titik_region_alerts_open"].samples
        assert [(s.labels["region"], s.labels["kind"], s.value) for s in alerts] == [
            ("Utara", "temp", 1)
        ]
        assert ("titik_device_up" in fams) is on


def test_device_block_is_built_by_its_own_thread_while_scraped() -> None:
    """A scrape serves the block the thread built; the thread rebuilds every max_age_s, stops
    when nobody has scraped for idle_s, and a build that fails keeps the last good block."""
    import threading

    from central.api.metrics import RefreshedBlock

    built = threading.Semaphore(0)
    calls: list[int] = []
    fail = threading.Event()

    def build() -> bytes:
        calls.append(1)
        if fail.is_set():
            built.release()
            raise RuntimeError("store gone")
        built.release()
        return f"block {len(calls)}\n".encode()

    now = [100.0]
    block = RefreshedBlock(build, max_age_s=0.05, idle_s=10.0, clock=lambda: now[0])
    try:
        assert block.get() == b"block 1\n"  # the first scrape builds it itself
        assert built.acquire(timeout=1)
        assert built.acquire(timeout=5)  # and the thread rebuilds without being asked
        assert block.get().startswith(b"block ")
        assert block.builds >= 2 and len(calls) >= 2
        fail.set()
        assert built.acquire(timeout=5)
        assert built.acquire(timeout=5)
        assert block.get().startswith(b"block ")  # the last good one
        fail.clear()
        now[0] += 60.0  # nobody scraped for longer than idle_s: the thread stops
        thread = block._thread
        assert thread is not None
        thread.join(timeout=5)
        assert not thread.is_alive() and block._body is None
        n = len(calls)
        assert block.get() == f"block {n + 1}\n".encode()  # built by the scrape again
    finally:
        block.close()


# --- prepare on arbitrary bodies ------------------------------------------------------------

json_values = st.recursive(
    st.one_of(st.none(), st.booleans(), st.integers(), st.floats(), st.text(max_size=8)),
    lambda inner: st.one_of(
        st.lists(inner, max_size=3), st.dictionaries(st.text(max_size=8), inner, max_size=3)
    ),
    max_leaves=12,
)
config_keys = st.sampled_from(
    ["wifi", "telemetry", "mqtt", "agent", "hotspot", "maintenance", "config", "version", "x"]
)
bodies = st.one_of(
    st.dictionaries(config_keys, json_values, max_size=4),
    st.fixed_dictionaries(
        {"name": st.one_of(st.sampled_from(sorted(COMMANDS)), st.text(max_size=5))},
        optional={"args": json_values, "expires_in_s": json_values, "extra": json_values},
    ),
)


@settings(max_examples=300, deadline=None)
@given(kind=st.sampled_from(["config", "command"]), body=bodies)
def test_prepare_either_builds_a_valid_document_or_names_the_problem(
    kind: str, body: dict[str, Any]
) -> None:
    console = Console(prefix="titik", signing_keys=[], publisher=None, docs=None)
    who = {"actor": "a", "token_id": "tok-1"}
    try:
        p = console.prepare(kind, Target(device="gw-1"), body, **who)  # type: ignore[arg-type]
    except ActionError as exc:
        refused = exc
    else:
        refused = None
    if refused is not None:
        assert refused.status in (409, 422)
        assert str(refused).split(":")[0].startswith(("config", "body", "(document)"))
        return
    # What is prepared is what a gateway accepts: a document the agent's checks take.
    encoded = json.dumps(p.payload, ensure_ascii=False).encode()
    if kind == "config":
        from agent.remote.desired import parse_document, validate

        validate(parse_document(encoded)["config"])
    else:
        from agent.remote.commands import parse_command

        cmd, _ = parse_command(encoded, time.time())
        assert cmd.name in COMMANDS
