"""Pure logic of remote config: documents, overlay, validation, the controller's decisions,
signatures and command parsing. Hooks and the agent are test doubles here (pure logic);
tests/integration/test_remote.py runs the real hooks against a real broker."""

from __future__ import annotations

import base64
import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from agent.protocol.remote_schema import RemoteConfig
from agent.protocol.signing import SignatureError, Verifier, canonical, public_key_text, sign
from agent.remote.commands import CommandFailed, CommandProcessor, parse_command
from agent.remote.controller import ConfigController
from agent.remote.desired import (
    HOOK_SECTIONS,
    Rejected,
    changed_sections,
    overlay,
    parse_document,
    redact,
    validate,
)
from agent.remote.hooks import HookError


def test_hook_sections_exist_in_the_schema() -> None:
    assert set(HOOK_SECTIONS) <= set(RemoteConfig.model_fields)


def test_overlay_merges_objects_and_replaces_the_rest() -> None:
    group = {"wifi": {"ssids": {"public": {"ssid": "G", "max_clients": 50, "radios": ["radio0"]}}}}
    device = {"wifi": {"ssids": {"public": {"ssid": "D", "radios": ["radio1"]}}}, "agent": {}}
    assert overlay([group, device]) == {
        "wifi": {"ssids": {"public": {"ssid": "D", "max_clients": 50, "radios": ["radio1"]}}},
        "agent": {},
    }


@pytest.mark.parametrize(
    ("config", "path"),
    [
        ({"wifi": {"radios": {"radio0": {"channel": 15}}}}, "wifi.radios.radio0"),
        ({"wifi": {"radios": {"radio0": {"txpower": 40}}}}, "wifi.radios.radio0.txpower"),
        ({"wifi": {"ssids": {"p": {"ssid": ""}}}}, "wifi.ssids.p.ssid"),
        ({"wifi": {"ssids": {"p": {"ssid": "x", "encryption": "psk2"}}}}, "wifi.ssids.p"),
        ({"hotspot": {"download_kbps": 1}}, "hotspot.download_kbps"),
        ({"telemetry": {"interval_s": 1}}, "telemetry.interval_s"),
        ({"maintenance": {"reboot_window": "25:00-26:00"}}, "maintenance.reboot_window"),
        ({"firewall": {}}, "firewall: unknown key"),
        ({"mqtt": {"port": 0}}, "mqtt.port"),
    ],
)
def test_invalid_configs_name_the_key_path(config: dict[str, Any], path: str) -> None:
    with pytest.raises(Rejected, match=f"^{path}"):
        validate(config)


def test_documents() -> None:
    assert parse_document(b'{"version": 3, "config": {}}')["version"] == 3
    for bad, msg in [
        (b"[]", "must be a JSON object"),
        (b"{", "not JSON"),
        (b'{"version": -1, "config": {}}', "version"),
        (b'{"version": true, "config": {}}', "version"),
        (b'{"version": 1}', "config"),
        (b'{"version": 1, "config": {}, "x": 1}', "x: unknown key"),
        (b" " * 70000, "more than"),
    ]:
        with pytest.raises(Rejected, match=msg):
            parse_document(bad)


def test_changed_sections_and_redaction() -> None:
    assert changed_sections({"a": 1, "b": 2}, {"a": 1, "b": 3, "c": 4}) == ["b", "c"]
    cfg = {"wifi": {"ssids": {"p": {"ssid": "x", "key": "supersecret"}}}}
    assert "supersecret" not in json.dumps(redact(cfg))
    assert cfg["wifi"]["ssids"]["p"]["key"] == "supersecret"  # the original is untouched


class FakeHooks:
    """Records calls; ``fail`` maps 'section action' to an error (pure-logic double)."""

    def __init__(self) -> None:
        self.calls: list[str] = []
        self.fail: dict[str, str] = {}

    def has(self, section: str) -> bool:
        return True

    def _do(self, section: str, action: str) -> None:
        self.calls.append(f"{section} {action}")
        if f"{section} {action}" in self.fail:
            raise HookError(section, action, self.fail[f"{section} {action}"])

    def validate(self, section: str, data: Mapping[str, Any]) -> None:
        self._do(section, "validate")

    def snapshot(self, section: str) -> None:
        self._do(section, "snapshot")

    def apply(self, section: str, data: Mapping[str, Any]) -> bool:
        self._do(section, "apply")
        return True

    def restore(self, section: str) -> None:
        self._do(section, "restore")


class FakeHost:
    def __init__(self) -> None:
        self.reports: list[dict[str, Any]] = []
        self.runtime: list[Mapping[str, Any]] = []
        self.mid = 0

    def publish_reported(self, payload: bytes) -> int | None:
        self.reports.append(json.loads(payload))
        self.mid += 1
        return self.mid

    def apply_runtime(self, applied: Mapping[str, Any]) -> None:
        self.runtime.append(applied)


class Clock:
    def __init__(self) -> None:
        self.t = 100.0

    def __call__(self) -> float:
        return self.t


def make(tmp_path: Path, hooks: FakeHooks, host: FakeHost, clock: Clock) -> ConfigController:
    return ConfigController(
        tmp_path, ["g1"], hooks, host, rollback_timeout_s=10, clock=clock, wall=lambda: 1e9
    )


def doc(version: int, config: dict[str, Any]) -> bytes:
    return json.dumps({"version": version, "config": config}).encode()


WIFI = {"wifi": {"ssids": {"public": {"ssid": "A"}}}}


def test_apply_waits_for_broker_contact_then_commits(tmp_path: Path) -> None:
    hooks, host, clock = FakeHooks(), FakeHost(), Clock()
    c = make(tmp_path, hooks, host, clock)
    c.on_desired("gw", "t", doc(1, WIFI))
    assert hooks.calls == ["wifi validate", "wifi snapshot", "wifi apply"]
    assert host.reports[-1]["state"] == "applying"
    c.on_ack(host.mid)  # the broker acknowledged the "applying" report
    assert host.reports[-1]["state"] == "applied"
    assert not (tmp_path / "applying.json").exists()
    c.on_desired("gw", "t", doc(1, WIFI))  # retained copy on reconnect
    assert len(hooks.calls) == 3
    assert (
        ConfigController(tmp_path, ["g1"], hooks, host, rollback_timeout_s=1).applied == c.applied
    )


def test_no_contact_rolls_back(tmp_path: Path) -> None:
    hooks, host, clock = FakeHooks(), FakeHost(), Clock()
    c = make(tmp_path, hooks, host, clock)
    c.on_desired("gw", "t", doc(1, WIFI))
    clock.t += 11
    c.tick()
    assert hooks.calls[-1] == "wifi restore"
    assert host.reports[-1]["state"] == "rolled_back"
    assert host.runtime[-1] == {}
    c.on_desired("gw", "t", doc(1, WIFI))  # the same version is not tried again
    assert hooks.calls.count("wifi apply") == 1
    c.on_desired("gw", "t", doc(2, WIFI))  # a newer one is
    assert hooks.calls.count("wifi apply") == 2


def test_hook_failure_rolls_back_and_validation_failure_changes_nothing(tmp_path: Path) -> None:
    hooks, host, clock = FakeHooks(), FakeHost(), Clock()
    c = make(tmp_path, hooks, host, clock)
    hooks.fail["wifi apply"] = "boom"
    c.on_desired("gw", "t", doc(1, WIFI))
    assert host.reports[-1]["state"] == "rolled_back"
    assert host.reports[-1]["error"] == "wifi apply: boom"
    assert hooks.calls[-1] == "wifi restore"
    hooks.fail = {"wifi validate": "radios.radio9: no such radio"}
    hooks.calls.clear()
    c.on_desired("gw", "t", doc(2, WIFI))
    assert hooks.calls == ["wifi validate"]
    assert host.reports[-1]["state"] == "rejected"


def test_restart_mid_apply_restores(tmp_path: Path) -> None:
    hooks, host, clock = FakeHooks(), FakeHost(), Clock()
    make(tmp_path, hooks, host, clock).on_desired("gw", "t", doc(1, WIFI))  # never acked
    hooks2, host2 = FakeHooks(), FakeHost()
    c = make(tmp_path, hooks2, host2, clock)
    assert hooks2.calls == ["wifi restore"]
    assert host2.reports[-1]["state"] == "rolled_back"
    assert c.applied == {}
    c.on_desired("gw", "t", doc(1, WIFI))
    assert "wifi apply" not in hooks2.calls


def test_group_documents_overlay_in_order(tmp_path: Path) -> None:
    hooks, host, clock = FakeHooks(), FakeHost(), Clock()
    c = make(tmp_path, hooks, host, clock)
    c.on_desired("group/g1", "t", doc(5, {"telemetry": {"interval_s": 30}, **WIFI}))
    c.on_ack(host.mid)
    c.on_desired("gw", "t", doc(1, {"telemetry": {"interval_s": 60}}))
    c.on_ack(host.mid)
    assert c.applied["telemetry"]["interval_s"] == 60
    assert c.applied["wifi"]["ssids"]["public"]["ssid"] == "A"
    assert host.reports[-1]["versions"] == {"group/g1": 5, "gw": 1}


def test_signed_documents(tmp_path: Path) -> None:
    key = Ed25519PrivateKey.generate()
    v = Verifier([public_key_text(key.public_key())])
    hooks, host = FakeHooks(), FakeHost()
    c = ConfigController(
        tmp_path, [], hooks, host, rollback_timeout_s=1, verifier=v, require_signature=True
    )
    c.on_desired("gw", "t/desired", doc(1, WIFI))
    assert host.reports[-1]["error"].startswith("signature: missing")
    signed = sign(key, "t/desired", {"version": 2, "config": WIFI})
    c.on_desired("gw", "t/other-topic", json.dumps(signed).encode())
    assert "does not match" in host.reports[-1]["error"]
    c.on_desired("gw", "t/desired", json.dumps(signed).encode())
    assert host.reports[-1]["state"] == "applying"


def test_signing_format_is_reproducible() -> None:
    key = Ed25519PrivateKey.generate()
    body = sign(key, "titik/gw/a/cmd", {"b": 1, "a": "é"})
    assert canonical(body) == '{"a":"é","b":1}'.encode()
    raw = base64.b64decode(body["sig"]["value"])
    key.public_key().verify(raw, b"titik-sig-v1\ntitik/gw/a/cmd\n" + canonical(body))
    v = Verifier([public_key_text(key.public_key())])
    assert v.verify("titik/gw/a/cmd", body) == body["sig"]["kid"]
    with pytest.raises(SignatureError, match="not trusted"):
        Verifier([public_key_text(Ed25519PrivateKey.generate().public_key())]).verify(
            "titik/gw/a/cmd", body
        )


def test_command_parsing() -> None:
    cmd, _ = parse_command(b'{"id":"a1","name":"reboot","expires_at":200}', now=100)
    assert (cmd.id, cmd.name, cmd.args) == ("a1", "reboot", {})
    for bad, msg in [
        (b'{"id":"a/1","name":"x","expires_at":200}', "id:"),
        (b'{"id":"a","expires_at":200}', "name: missing"),
        (b'{"id":"a","name":"x","expires_at":50}', "expired 50s ago"),
        (b'{"id":"a","name":"x"}', "expires_at"),
        (b'{"id":"a","name":"x","expires_at":200,"args":[]}', "args: must be an object"),
        (b"nope", "not JSON"),
    ]:
        with pytest.raises(CommandFailed, match=msg):
            parse_command(bad, now=100)


def test_command_ids_are_remembered_across_restarts_until_expiry(tmp_path: Path) -> None:
    runs: list[int] = []
    handlers = {"x": lambda args: runs.append(1) or {"n": len(runs)}}
    now = [100.0]
    p = CommandProcessor(tmp_path, handlers, wall=lambda: now[0])
    body = b'{"id":"c1","name":"x","expires_at":200}'
    assert p.handle("t", body)["ok"]
    assert not CommandProcessor(tmp_path, handlers, wall=lambda: now[0]).handle("t", body)["ok"]
    assert runs == [1]
    now[0] = 300.0  # c1 expired: forgotten when the next id is remembered
    CommandProcessor(tmp_path, handlers, wall=lambda: now[0]).handle(
        "t", b'{"id":"c2","name":"x","expires_at":400}'
    )
    assert "c1" not in json.loads((tmp_path / "command-ids.json").read_text())


def test_a_crashing_handler_is_an_error_result(tmp_path: Path) -> None:
    p = CommandProcessor(tmp_path, {"x": lambda args: 1 // 0}, wall=lambda: 100.0)
    res = p.handle("t", b'{"id":"c1","name":"x","expires_at":200}')
    assert res == {
        "id": "c1",
        "ok": False,
        "ts": 100.0,
        "error": "internal error: ZeroDivisionError",
    }
