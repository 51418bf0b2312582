"""Fleet state rules, driven without I/O."""

from __future__ import annotations

from agent.protocol import Status
from central.fleet import Fleet, Rules, compliance
from central.store.base import DesiredDoc, DeviceState, ReportedDoc, Sample

DEV = "gw-1"


def sample(
    seq: int,
    ts: float,
    *,
    boot: int = 1,
    sid: str = "s1",
    historical: bool = False,
    temp: float | None = 50.0,
    disk: float | None = 20.0,
    mem: float | None = 30.0,
    clients: int | None = 5,
) -> Sample:
    return Sample(DEV, sid, seq, ts, historical, boot, clients, 10.0, mem, temp, disk, "0.1", "{}")


def fleet() -> Fleet:
    return Fleet(Rules(offline_after_s=600, temp_c=80, disk_pct=90, mem_pct=90))


def test_live_sample_sets_current_state_and_online() -> None:
    f = fleet()
    f.apply_live(sample(1, 1000.0, clients=7), now=1000.5)
    st = f.states[DEV]
    assert st.online and st.clients == 7 and st.seq == 1 and st.last_seen == 1000.5
    devices, _ = f.take()
    assert [d.device for d in devices] == [DEV]
    assert f.take() == ([], [])


def test_historical_sample_never_overwrites_current_state() -> None:
    f = fleet()
    f.apply_live(sample(10, 2000.0, clients=7), now=2000)
    f.apply_historical(sample(3, 1500.0, clients=99, historical=True))
    st = f.states[DEV]
    assert (st.clients, st.seq, st.last_ts) == (7, 10, 2000.0)


def test_historical_sample_of_unknown_device_creates_it_offline() -> None:
    f = fleet()
    f.apply_historical(sample(3, 1500.0, historical=True))
    assert not f.states[DEV].online and f.states[DEV].clients is None


def test_late_live_sample_older_than_current_is_ignored() -> None:
    f = fleet()
    f.apply_live(sample(10, 2000.0, clients=7), now=2000)
    f.apply_live(sample(9, 1940.0, clients=1), now=2001)
    assert f.states[DEV].clients == 7


def test_stale_will_with_lower_boot_is_ignored() -> None:
    f = fleet()
    assert f.apply_status(DEV, Status(online=True, boot=5, region="R1", groups=["g"]), now=100)
    assert not f.apply_status(DEV, Status(online=False, boot=4), now=101)
    st = f.states[DEV]
    assert st.online and st.boot == 5 and st.region == "R1" and st.groups == ["g"]
    # The current session's Will counts.
    assert f.apply_status(DEV, Status(online=False, boot=5), now=102)
    assert not st.online and st.offline_reason == "will" and st.offline_since == 102


def test_telemetry_of_an_ended_session_does_not_bring_it_back_online() -> None:
    f = fleet()
    f.apply_status(DEV, Status(online=True, boot=5), now=100)
    f.apply_status(DEV, Status(online=False, boot=5, reason="shutdown"), now=101)
    f.apply_live(sample(1, 100.5, boot=5), now=102)
    assert not f.states[DEV].online
    f.apply_live(sample(2, 103.0, boot=6), now=103)
    assert f.states[DEV].online and f.states[DEV].boot == 6


def test_staleness_uses_the_inferred_interval() -> None:
    f = fleet()
    f.apply_live(sample(1, 1000.0), now=1000)
    f.apply_live(sample(2, 1010.0), now=1010)
    assert f.states[DEV].interval_s == 10
    f.check(now=1039)
    assert f.states[DEV].online
    f.check(now=1041)
    st = f.states[DEV]
    assert not st.online and st.offline_reason == "stale" and st.offline_since == 1010
    f.apply_live(sample(3, 1050.0), now=1050)
    assert f.states[DEV].online


def test_default_interval_is_60s_when_it_cannot_be_inferred() -> None:
    f = fleet()
    f.apply_live(sample(1, 1000.0), now=1000)
    f.apply_live(sample(5, 1010.0), now=1010)  # a gap: not consecutive
    assert f.states[DEV].interval_s == 60
    f.check(now=1010 + 179)
    assert f.states[DEV].online
    f.check(now=1010 + 181)
    assert not f.states[DEV].online


def test_offline_alert_opens_after_n_minutes_and_closes_when_back() -> None:
    f = fleet()
    f.apply_status(DEV, Status(online=True, boot=1), now=0)
    f.apply_status(DEV, Status(online=False, boot=1), now=10)
    f.check(now=10 + 599)
    assert f.take()[1] == []
    f.check(now=10 + 600)
    f.check(now=10 + 700)  # opened once
    (opened,) = f.take()[1]
    assert (opened.kind, opened.device, opened.close) == ("offline", DEV, False)
    f.apply_status(DEV, Status(online=True, boot=2), now=800)
    (closed,) = f.take()[1]
    assert (closed.kind, closed.close) == ("offline", True)


def test_threshold_alerts_open_and_close() -> None:
    f = fleet()
    f.apply_live(sample(1, 1.0, temp=85.0, disk=95.0, mem=91.0), now=1)
    kinds = sorted(c.kind for c in f.take()[1])
    assert kinds == ["disk", "mem", "temp"]
    f.apply_live(sample(2, 2.0, temp=85.5, disk=95.0, mem=50.0), now=2)
    assert [(c.kind, c.close) for c in f.take()[1]] == [("mem", True)]
    f.apply_live(sample(3, 3.0, temp=None, disk=None, mem=None), now=3)  # unknown: unchanged
    assert f.take()[1] == []
    assert set(f.open_alerts) == {(DEV, "temp"), (DEV, "disk")}


def report(state: str, versions: dict[str, int], error: str | None = None) -> ReportedDoc:
    return ReportedDoc(DEV, 1, "gw", versions, state, error, None, 1.0, "{}")


def test_config_alerts() -> None:
    f = fleet()
    f.apply_reported(report("rejected", {}, "wifi.x: unknown key"), now=1)
    (a,) = f.take()[1]
    assert (a.kind, a.detail) == ("config_rejected", "wifi.x: unknown key")
    f.apply_reported(report("rolled_back", {}, "no broker"), now=2)
    f.apply_reported(report("applied", {"gw": 2}), now=3)
    changes = [(c.kind, c.close) for c in f.take()[1]]
    assert changes == [
        ("config_rolled_back", False),
        ("config_rejected", True),
        ("config_rolled_back", True),
    ]


def test_compliance() -> None:
    st = DeviceState(device=DEV, groups=["jkt"])
    desired = {
        "group/jkt": DesiredDoc("group/jkt", 3, "{}", 0),
        f"gw/{DEV}": DesiredDoc(f"gw/{DEV}", 12, "{}", 0),
        "group/other": DesiredDoc("group/other", 9, "{}", 0),
    }
    ok = compliance(st, desired, report("applied", {"group/jkt": 3, "gw": 12}))
    assert ok.compliant and ok.missing == [] and ok.desired == {"group/jkt": 3, f"gw/{DEV}": 12}
    old = compliance(st, desired, report("applied", {"group/jkt": 2, "gw": 12}))
    assert not old.compliant and old.missing == ["group/jkt"]
    bad = compliance(st, desired, report("rejected", {"group/jkt": 3, "gw": 12}, "x"))
    assert not bad.compliant and bad.error == "x"
    assert not compliance(st, desired, None).compliant
    assert compliance(DeviceState(device="gw-none"), {}, None).compliant
    cleared = {f"gw/{DEV}": DesiredDoc(f"gw/{DEV}", None, "", 0)}
    assert compliance(DeviceState(device=DEV), cleared, None).compliant
