"""titik-sim's light gateways (central/sim/light.py) against a real, persistent Mosquitto and
``titik-central run``: what they send is what an agent sends, as the broker and central
read it. Every message a test subscriber gets is checked against the agent's wire models,
and central's store counts every record each gateway drew (no stand-in anywhere: the light
gateways are themselves the simulator's stand-in for agents, and these tests are what say
the stand-in speaks the agents' protocol)."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterator
from pathlib import Path

import pytest

from agent.protocol import Status, Telemetry, TelemetryBatch
from agent.protocol.client import make_client
from agent.protocol.topics import group_topic
from central.sim import cli
from central.sim.fleet import SimulatedFleet, gateway_plan, wait_connected
from central.sim.light import SUBACK, LightFleet
from central.sim.localbroker import wait_until
from central.sim.scenarios import outage, steady
from central.sim.stack import Stack, local_stack, records_lost
from tests.broker import subscriber

pytestmark = [pytest.mark.broker, pytest.mark.slow]

N = 30


@pytest.fixture
def stack(tmp_path: Path) -> Iterator[Stack]:
    with local_stack(tmp_path / "stack", gateways=N) as s:
        yield s


def _seqs(messages: list[tuple[str, bytes]]) -> dict[str, list[int]]:
    """Per device, the seqs of every sample seen, live or in a batch (models checked)."""
    got: dict[str, list[int]] = defaultdict(list)
    for topic, payload in messages:
        if topic.endswith("/telemetry"):
            t = Telemetry.model_validate_json(payload)
            got[t.device].append(t.seq)
        else:
            batch = TelemetryBatch.model_validate_json(payload)
            assert batch.historical and batch.records
            assert [r.seq for r in batch.records] == sorted(r.seq for r in batch.records)
            got[batch.device].extend(r.seq for r in batch.records)
    return got


def test_light_gateways_send_what_agents_send_and_lose_nothing(
    stack: Stack, tmp_path: Path
) -> None:
    """Status, Will, samples and batches parse as the agent's wire models; a resumed session
    is not subscribed again; a command to a group reaches every gateway; steady and a broker
    outage store every record drawn, once, in central."""
    assert stack.broker is not None
    plan = {str(d["id"]): d for d in gateway_plan(N)}
    fleet = LightFleet(
        N, stack.host, stack.ports, tmp_path / "gw", interval_s=1.0, ramp_s=1.0,
        reconnect_max_s=3.0, replay_jitter_s=1.0,
    )  # fmt: skip
    with subscriber(
        stack.broker,
        "titik/gw/+/status",
        "titik/gw/+/telemetry",
        "titik/gw/+/telemetry/batch",
        client_id="light-test",
        persistent=True,
    ) as sub:
        fleet.start()
        try:
            assert wait_connected(fleet, 30) == N
            # The online status, retained (a new subscriber gets it as such), where the
            # gateway is: as Agent.status(True).
            online: dict[str, Status] = {}
            with subscriber(stack.broker, "titik/gw/+/status", client_id="light-late") as late:
                while len(online) < N:
                    m = late.next()
                    s = Status.model_validate_json(m.payload)
                    device = m.topic.split("/")[2]
                    assert m.retain and s.online and s.boot >= 1 and s.platform == "simulated"
                    assert s.groups == plan[device]["groups"]
                    assert s.region == plan[device]["region"]
                    online[device] = s
            assert fleet.subscribes == N

            result = steady(fleet, stack, 4)
            assert result["connected"] == N and result["devices_stored"] == N
            assert result["records_lost"] == 0

            # A backhaul cut: the broker sends the Will (offline, the boot of that
            # connection); the gateway comes back on its resumed session, not subscribed again.
            dev = fleet.gateways[0].device
            boot = fleet.gateways[0].boot
            fleet.call_soon(lambda: fleet.drop(0))
            will = sub.next(lambda m: m.topic == f"titik/gw/{dev}/status" and b"false" in m.payload)
            s = Status.model_validate_json(will.payload)
            assert not s.online and s.boot == boot and s.groups == plan[dev]["groups"]
            back = sub.next(
                lambda m: m.topic == f"titik/gw/{dev}/status" and b'"online":true' in m.payload
            )
            assert Status.model_validate_json(back.payload).boot == boot + 1
            assert fleet.subscribes == N  # the broker resumed the session, subscriptions kept

            # What central sends a group reaches every gateway of it (acked at QoS 1).
            ctl = make_client("light-test-ctl", protocol="5")
            ctl.connect(stack.broker.host, stack.broker.port)
            ctl.loop_start()
            try:
                ctl.publish(group_topic("titik", "city", "cmd"), b"{}", qos=1).wait_for_publish(5)
                wait_until(lambda: fleet.received >= N, 10, "the command at every gateway")
            finally:
                ctl.loop_stop()
                ctl.disconnect()

            down = outage(fleet, stack, 4, drain_timeout=60)
            assert down["records_lost"] == 0 and down["reconnects"] == N
            assert isinstance(down["backlog_records"], int) and down["backlog_records"] >= N
            assert records_lost(fleet, stack, timeout=30) == 0
            assert fleet.connected == N
        finally:
            fleet.stop()
        # Every seq each gateway drew reached the broker: live, or replayed in a batch.
        drawn = {device: set(range(r[0], r[1] + 1)) for (device, _), r in fleet.expected().items()}
        assert all(r[1] - r[0] + 1 == r[2] for r in fleet.expected().values())

        def all_seen() -> bool:
            while not sub.messages.empty():
                sub.seen.append(sub.messages.get_nowait())
            seen = _seqs([(m.topic, m.payload) for m in sub.seen if "/telemetry" in m.topic])
            return all(seqs <= set(seen[device]) for device, seqs in drawn.items())

        wait_until(all_seen, 10, "every seq drawn at the subscriber")
    assert any(m.topic.endswith("/batch") for m in sub.seen)
    # Topic aliases are the broker's business: every subscriber gets full topic names.
    assert all(m.topic.startswith("titik/gw/gw-sim-") for m in sub.seen)


def test_titik_sim_light_runs_only_what_needs_no_agent(capsys: pytest.CaptureFixture[str]) -> None:
    for argv, says in (
        (["--light", "--scenario", "steady,canary"], "--light runs none"),
        (["--light", "--service-interval", "60"], "light gateways send no service report"),
    ):
        with pytest.raises(SystemExit) as exc:
            cli.main(argv)
        assert exc.value.code == 2
        assert says in capsys.readouterr().err


def test_a_light_gateway_subscribes_as_the_real_agent_does(tmp_path: Path) -> None:
    """Its subscriptions are those a real agent (SimulatedFleet's, not started) makes for the
    same device, in the same order."""
    light = LightFleet(3, "127.0.0.1", 1, tmp_path / "light")
    real = SimulatedFleet(3, "127.0.0.1", 1, tmp_path / "real")
    for g, agent in zip(light.gateways, real.agents, strict=True):
        assert g.device == agent.device_id
        assert g.subscriptions == agent.link.subscriptions
        assert g.topics.telemetry == agent.topics.telemetry


def test_a_light_gateway_counts_itself_subscribed_only_when_every_topic_is_granted(
    tmp_path: Path,
) -> None:
    """A SUBACK carries one reason code per topic asked for: a short one, or one refusal,
    leaves the gateway unsubscribed, so its next connect subscribes again (as MqttLink)."""
    fleet = LightFleet(1, "127.0.0.1", 1, tmp_path)
    g = fleet.gateways[0]
    n = len(g.subscriptions)
    assert n > 1

    def suback(codes: bytes) -> bool:
        fleet._packet(0, SUBACK << 4, b"\x00\x01\x00" + codes, 0.0)  # id 1, no properties
        return g.subscribed

    assert suback(b"\x01" * n)
    assert not suback(b"\x01" * (n - 1))
    assert not suback(b"\x01" * (n - 1) + b"\x87")  # not authorized
    assert not suback(b"\x01" * (n + 1))
