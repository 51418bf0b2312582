"""Fleet state rules, driven without I/O."""

from __future__ import annotations

from agent.protocol import ConfigReported, Status
from central.ingest.fleet import FleetState, Rules
from central.store.base import DesiredDoc, DeviceState, ReportedDoc, Sample
from central.store.compliance import compliance

DEV = "gw-1"


def sample(
    seq: int,
    ts: float,
    *,
    boot: int = 1,
    sid: str = "s1",
    historical: bool = False,
    temp_c: float | None = 50.0,
    disk_used_pct: float | None = 20.0,
    mem_used_pct: float | None = 30.0,
    clients: int | None = 5,
) -> Sample:
    return Sample(
        DEV,
        sid,
        seq,
        ts,
        historical,
        boot,
        clients,
        10.0,
        mem_used_pct,
        temp_c,
        disk_used_pct,
        "0.1",
        "{}",
    )


def fleet() -> FleetState:
    return FleetState(Rules(offline_after_s=600, temp_c=80, disk_used_pct=90, mem_used_pct=90))


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


def test_a_repeated_status_leaves_the_device_row_unwritten() -> None:
    """After a broker restart central gets every gateway's Will more than once (a stopping
    Mosquitto sends them, and an edge's bridge re-sends every retained status when it
    reconnects): only a status that changes something marks the row to be written."""
    f = fleet()
    place = {"site": "S1", "region": "R1", "lat": -6.2, "lon": 106.8, "groups": ["g"]}
    f.apply_status(DEV, Status(online=True, boot=5, **place), now=100)
    f.take()
    will = Status(online=False, boot=5, **place)
    assert f.apply_status(DEV, will, now=101)
    assert f.take()[0] == [f.states[DEV]]
    for at in (102, 103):
        assert f.apply_status(DEV, will, now=at)
        assert f.take() == ([], [])  # the same Will again: nothing to write
    assert f.states[DEV].offline_since == 101
    moved = Status(online=False, boot=5, **{**place, "site": "S2"})
    assert f.apply_status(DEV, moved, now=104)
    assert [d.site for d in f.take()[0]] == ["S2"]
    assert f.apply_status(DEV, Status(online=True, boot=6, **place), now=105)
    devices, _ = f.take()
    assert [(d.online, d.boot) for d in devices] == [(True, 6)]


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
    # Dated from when the gateway went down, not from when the rule noticed (issue 19).
    assert opened.at == 10 and f.open_alerts[(DEV, "offline")].since == 10
    assert opened.detail == "offline since 1970-01-01 00:00:10Z (alert after 10 min)"
    f.apply_status(DEV, Status(online=True, boot=2), now=800)
    (closed,) = f.take()[1]
    assert (closed.kind, closed.close) == ("offline", True)


def test_threshold_alerts_open_and_close() -> None:
    f = fleet()
    f.apply_live(sample(1, 1.0, temp_c=85.0, disk_used_pct=95.0, mem_used_pct=91.0), now=1)
    kinds = sorted(c.kind for c in f.take()[1])
    assert kinds == ["disk", "mem", "temp"]
    f.apply_live(sample(2, 2.0, temp_c=85.5, disk_used_pct=95.0, mem_used_pct=50.0), now=2)
    assert [(c.kind, c.close) for c in f.take()[1]] == [("mem", True)]
    f.apply_live(
        sample(3, 3.0, temp_c=None, disk_used_pct=None, mem_used_pct=None), now=3
    )  # unknown: unchanged
    assert f.take()[1] == []
    assert set(f.open_alerts) == {(DEV, "temp"), (DEV, "disk")}


def report(state: str, versions: dict[str, int], error: str | None = None) -> ReportedDoc:
    return ReportedDoc(
        DEV,
        ConfigReported.model_construct(
            version=1, source="gw", versions=versions, state=state, error=error, hash=None, ts=1.0
        ),
        "{}",
    )


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


# --- ordering: what becomes current state (docs/protocol.md, "Ordering") ----------------------


def test_a_future_stamped_sample_is_never_current_and_opens_a_clock_alert() -> None:
    f = fleet()
    assert f.apply_live(sample(1, 1000.0, clients=4), now=1000) == "current"
    # A forged or mis-stamped sample: seq far ahead, ts a year ahead.
    assert f.apply_live(sample(10**9, 1000.0 + 365 * 86400, clients=99), now=1001) == "future"
    st = f.states[DEV]
    assert (st.seq, st.clients, st.last_ts) == (1, 4, 1000.0)
    assert [(c.kind, c.close) for c in f.take()[1]] == [("clock", False)]
    # Every later real sample is current: the device does not freeze.
    for i in range(2, 6):
        assert f.apply_live(sample(i, 1000.0 + 10 * i, clients=i), now=1000 + 10 * i) == "current"
    assert (st.seq, st.clients, st.online) == (5, 5, True)
    assert [(c.kind, c.close) for c in f.take()[1]] == [("clock", True)]


def test_the_tolerance_is_a_rule() -> None:
    f = FleetState(Rules(future_s=60))
    assert f.apply_live(sample(1, 1060.0), now=1000) == "current"  # exactly at the edge
    assert f.apply_live(sample(2, 1060.5), now=1000) == "future"


def test_a_seq_jump_with_a_plausible_ts_holds_current_state_at_most_until_stale() -> None:
    f = fleet()
    for i in range(1, 4):
        f.apply_live(sample(i, 1000.0 + 10 * i), now=1000 + 10 * i)
    assert f.states[DEV].interval_s == 10
    # A forged sample within the tolerance: seq far ahead, ts 4 minutes ahead.
    assert f.apply_live(sample(10**9, 1030.0 + 240, clients=99), now=1031) == "current"
    # Real samples now look older (lower seq, earlier ts) while that state is fresh...
    assert f.apply_live(sample(4, 1040.0), now=1040) == "late"
    assert f.apply_live(sample(5, 1050.0), now=1050) == "late"
    # ...but never for longer than 3 x interval: then any sample takes over.
    assert f.apply_live(sample(6, 1062.0), now=1062) == "new_session"
    assert f.apply_live(sample(7, 1072.0, clients=7), now=1072) == "current"
    st = f.states[DEV]
    assert (st.seq, st.clients, st.online) == (7, 7, True)


def test_counters_restored_from_a_backup_start_a_new_session() -> None:
    """Same sid, seq and boot back (state restored from a backup), clock right: at once."""
    f = fleet()
    f.apply_status(DEV, Status(online=True, boot=40), now=1000)
    for i in range(500, 503):
        f.apply_live(sample(i, 1000.0 + 10 * (i - 500), boot=40), now=1000 + 10 * (i - 500))
    assert f.apply_status(DEV, Status(online=True, boot=31), now=1030)  # not a stale Will
    assert f.apply_live(sample(120, 1031.0, boot=31, clients=3), now=1031) == "new_session"
    st = f.states[DEV]
    assert (st.seq, st.boot, st.clients, st.online) == (120, 31, 3, True)
    assert f.apply_live(sample(121, 1041.0, boot=31), now=1041) == "current"
    # The new session's Will counts; the old session's boot is no reference any more.
    assert f.apply_status(DEV, Status(online=False, boot=31), now=1050)
    assert not st.online and st.offline_reason == "will"


def test_a_wiped_gateway_with_its_clock_behind_recovers_within_its_staleness() -> None:
    """New sid, boot and seq back to the start, and no real-time clock yet (ts behind)."""
    f = fleet()
    f.apply_live(sample(900, 5000.0, boot=77, sid="old"), now=5000)
    f.apply_live(sample(901, 5060.0, boot=77, sid="old"), now=5060)
    # Fresh state, earlier ts in another sid: could be a straggler of an older lifetime.
    assert f.apply_live(sample(0, 100.0, boot=1, sid="new"), now=5070) == "late"
    # Once the old state is past its staleness (3 x 60 s), the new lifetime takes over.
    assert f.apply_live(sample(3, 280.0, boot=1, sid="new", clients=2), now=5250) == "new_session"
    st = f.states[DEV]
    assert (st.sid, st.seq, st.boot, st.online, st.clients) == ("new", 3, 1, True, 2)
    assert f.apply_live(sample(4, 340.0, boot=1, sid="new"), now=5310) == "current"


def test_a_new_sid_with_a_newer_ts_is_a_new_session_at_once() -> None:
    f = fleet()
    f.apply_live(sample(900, 5000.0, boot=77, sid="old"), now=5000)
    assert f.apply_live(sample(0, 5010.0, boot=1, sid="new"), now=5010) == "new_session"
    assert f.states[DEV].boot == 1 and f.states[DEV].online


def test_the_current_sample_again_is_late_and_changes_nothing() -> None:
    f = fleet()
    f.apply_live(sample(5, 1000.0, clients=5), now=1000)
    f.take()
    assert f.apply_live(sample(5, 1000.0, clients=5), now=5000) == "late"  # even when stale
    assert f.take() == ([], [])


def test_a_gateway_that_publishes_is_never_held_longer_than_its_staleness() -> None:
    """Property of the rules: after any history, some of it hostile, a gateway that keeps
    publishing (seq + 1, ts + 60 s, within the tolerance) is current again within 3 x the
    interval central had for it (its staleness period) plus one sample."""
    import math
    import random

    rng = random.Random(16)
    for _ in range(500):
        f = fleet()
        now = 10_000.0
        for _ in range(rng.randint(0, 6)):
            now += rng.uniform(0, 100)
            f.apply_live(
                sample(
                    rng.choice([0, 1, 2, 10**6, 10**15]),
                    rng.choice([0.0, now - 5000, now, now + 299, now + 10**6]),
                    boot=rng.choice([0, 5, 10**12]),
                    sid=rng.choice(["a", "b"]),
                ),
                now=now,
            )
            if rng.random() < 0.3:
                f.apply_status(DEV, Status(online=rng.random() < 0.5, boot=rng.randint(0, 9)), now)
        held = 3 * f.states[DEV].interval_s if DEV in f.states else 0.0
        seq, ts = rng.randint(0, 50), now - rng.uniform(-200, 5000)
        current = online = None
        for k in range(1, math.ceil(max(held, 180) / 60) + 3):
            outcome = f.apply_live(sample(seq + k, ts + 60 * k, sid="c"), now=now + 60 * k)
            f.check(now + 60 * k)
            if current is None and outcome in ("current", "new_session"):
                current = k
            if current is not None and f.states[DEV].online:
                online = k
                break
        # Current again within its staleness; online again within that or, when a status
        # ended its session just before, within the staleness after that status.
        assert current is not None and 60 * current <= held + 60, (current, held)
        assert online is not None and 60 * online <= max(held, 180) + 60, (online, held)
        assert f.states[DEV].sid == "c"
