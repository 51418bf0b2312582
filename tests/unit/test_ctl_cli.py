"""titik-ctl's argument handling, errors and exit codes, without a broker."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from agent.protocol.signing import public_key_text
from central.ctl import cli as ctl
from central.ctl import commands, session
from central.sim.localbroker import free_port


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = ctl.main(list(argv))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_help_explains_every_command(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "--help")
    assert code == 0
    for name in (
        "keygen",
        "devices",
        "device",
        "config",
        "cmd",
        "watch",
        "exit codes",
        "TITIK_MQTT_PASSWORD",
    ):
        assert name in out
    for sub in (["config", "push"], ["cmd"], ["watch"], ["keygen"], ["devices"]):
        code, out, _ = run(capsys, *sub, "--help")
        assert code == 0
        assert "example" in out


def test_usage_errors_exit_2(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    assert run(capsys, "config", "push", "--file", "x.json")[0] == 2  # no --device/--group
    code, _, err = run(capsys, "--key", str(tmp_path / "missing.pem"), "devices")
    assert code == 2
    assert "titik-ctl keygen --out FILE" in err
    cfg = tmp_path / "c.json"
    cfg.write_text(json.dumps({"telemetry": {"interval_s": 5}}))
    code, _, err = run(
        capsys, "config", "push", "--group", "g", "--file", str(cfg), "--canary", "0%"
    )
    assert code == 2
    assert "--canary" in err
    code, _, err = run(
        capsys, "config", "push", "--device", "a", "--file", str(cfg), "--canary", "1"
    )
    assert code == 2
    assert "--group" in err
    code, _, err = run(capsys, "--broker", "host:port", "devices")
    assert code == 2
    assert "the port must be a number" in err


def test_an_unreachable_broker_says_what_to_check(capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run(capsys, "--broker", f"127.0.0.1:{free_port()}", "--timeout", "2", "devices")
    assert code == 1
    assert "cannot reach the broker" in err
    assert "--broker" in err


def test_keygen_writes_a_private_key_and_prints_the_public_one(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    key = tmp_path / "ops.pem"
    code, out, _ = run(capsys, "keygen", "--out", str(key))
    assert code == 0
    assert key.stat().st_mode & 0o777 == 0o600
    assert out.strip().splitlines()[-1].startswith("ed25519:")
    loaded = session.load_key(str(key))
    assert public_key_text(loaded.public_key()) == out.strip().splitlines()[-1]
    assert session.load_key(key.read_text()) is not None  # TITIK_SIGNING_KEY may hold the PEM
    code, _, err = run(capsys, "keygen", "--out", str(key))
    assert code == 2
    assert "--force" in err
    assert run(capsys, "keygen", "--out", str(key), "--force")[0] == 0


def test_password_comes_from_the_environment_only() -> None:
    args = ctl.build_parser().parse_args(["--username", "ops", "devices"])
    s = session.settings_from(
        args, {"TITIK_MQTT_PASSWORD": "s3cret", "TITIK_BROKER": "mq.example:8883"}
    )
    assert (s.host, s.port, s.username, s.password) == ("mq.example", 8883, "ops", "s3cret")
    assert "s3cret" not in repr(s)
    with pytest.raises(SystemExit):
        ctl.build_parser().parse_args(["--password", "x", "devices"])


@pytest.mark.parametrize(
    ("text", "tls", "expected"),
    [
        ("localhost", False, ("localhost", 1883)),
        ("mq:1884", False, ("mq", 1884)),
        ("mq", True, ("mq", 8883)),
        ("[::1]:1885", False, ("::1", 1885)),
    ],
)
def test_broker_addresses(text: str, tls: bool, expected: tuple[str, int]) -> None:
    assert session.parse_broker(text, tls) == expected


def test_topics_and_event_lines() -> None:
    assert session.device_of("titik/gw/gw-1/config/reported", "titik", "config/reported") == "gw-1"
    assert session.device_of("titik/gw/gw-1/status", "titik", "config/reported") is None
    line = commands.event_line(
        "titik/gw/gw-1/config/reported",
        {"state": "rejected", "source": "gw", "version": 3, "hash": "ab", "error": "x: bad"},
        "titik",
        retained=False,
    )
    assert line is not None
    assert line.endswith("gw-1 config rejected source=gw version=3 hash=ab error='x: bad'")
    status = commands.event_line(
        "titik/gw/gw-1/status", {"online": False, "boot": 2}, "titik", True
    )
    assert status is not None
    assert status.endswith("gw-1 status offline boot=2 (retained)")


def test_config_file_forms(tmp_path: Path) -> None:
    bare = tmp_path / "bare.json"
    bare.write_text('{"telemetry": {"interval_s": 5}}')
    doc = tmp_path / "doc.json"
    doc.write_text('{"version": 3, "config": {"telemetry": {"interval_s": 5}}}')
    assert commands.read_config_file(str(bare)) == commands.read_config_file(str(doc))
    bad = tmp_path / "bad.json"
    bad.write_text("[1]")
    with pytest.raises(session.CtlError, match="must be a JSON object"):
        commands.read_config_file(str(bad))


def test_progress_in_a_log_is_throttled_and_ends_with_the_last_state() -> None:
    import io

    from central.ctl.session import Progress

    now = [0.0]
    out = io.StringIO()
    p = Progress(out, every_s=2.0, clock=lambda: now[0])
    for i in range(1000):  # a rollout to 1,000 gateways: one change every 5 ms
        now[0] = i * 0.005
        p.update(f"applied {i + 1} of 1000")
    p.done()
    lines = out.getvalue().splitlines()
    assert lines[0] == "applied 1 of 1000"
    assert lines[-1] == "applied 1000 of 1000"
    assert len(lines) <= 5  # 5 s of changes: one line per 2 s and the end


def test_ctl_reads_a_config_report_in_its_one_shape() -> None:
    # titik-ctl validates a report with the same model as central and the agent
    # (agent.protocol.ConfigReported): what central would quarantine decides no rollout.
    from central.ctl.session import report_of

    good = report_of(b'{"version":3,"source":"gw","versions":{"gw":3},"state":"applied","x":1}')
    assert good is not None
    assert good["state"] == "applied" and good["versions"] == {"gw": 3} and good["error"] is None
    assert good["x"] == 1  # unknown keys are kept, as everywhere on the wire
    for bad in (
        b'{"version":1180591620717411303424,"versions":{},"state":"applied"}',  # 2^70
        b'{"version":3,"versions":"gw","state":"applied"}',
        b'{"version":"3","versions":{},"state":"applied"}',
        b"not json",
        b"[]",
    ):
        assert report_of(bad) is None, bad
