"""titik-ctl rollout's own checks (central/ctl/waves.py): it signs only documents it has
rebuilt from its own plan, and it names the gate's wave right."""

from __future__ import annotations

import argparse
import copy
from typing import Any

import pytest

from central.ctl.session import CtlError
from central.ctl.waves import CentralApi, Unreachable, api_from, check_prepared, follow, gate_line
from central.rollout.plan import Limits, Plan, documents

OLD = {"telemetry": {"interval_s": 60}}
NEW = {"telemetry": {"interval_s": 120}}
BODY = {"id": "r1", "group": "g1", "config": NEW, "waves": [10.0, 100.0]}


def prepared() -> dict[str, Any]:
    waves, restore = documents(Plan("r1", "g1", (10, 100), 4, NEW, OLD, Limits()))
    return {
        "topic": "titik/group/g1/config/desired",
        "base_version": 4,
        "documents": [{"payload": d} for d in [*waves, restore]],
    }


def test_the_documents_central_prepared_are_signed_when_they_are_the_plans() -> None:
    assert check_prepared(BODY, prepared(), "titik") == "titik/group/g1/config/desired"


@pytest.mark.parametrize(
    "tamper",
    [
        lambda p: p["documents"][0]["payload"]["config"].update(wifi={"country": "US"}),
        lambda p: p["documents"][1]["payload"].update(version=99),
        lambda p: p["documents"].pop(1),
        lambda p: p["documents"][0]["payload"]["rollout"].update(percent=50),
        lambda p: p.update(topic="titik/group/other/config/desired"),
    ],
)
def test_anything_else_is_refused_before_signing(tamper: Any) -> None:
    p = copy.deepcopy(prepared())
    tamper(p)
    with pytest.raises(CtlError):
        check_prepared(BODY, p, "titik")


def test_a_passed_gate_of_a_running_rollout_is_the_previous_waves() -> None:
    gate = {"verdict": "passed", "applied": 2, "size": 2, "failures": 0}
    r = {"status": "running", "wave": 1, "gate": gate}
    assert gate_line(r) == "wave 1's gate passed: 2/2 applied, 0 failed"
    assert gate_line({**r, "status": "completed"}).startswith("wave 2's gate passed")
    failed = {**gate, "verdict": "failed", "applied": 1, "failures": 1}
    assert gate_line({"status": "halted", "wave": 0, "gate": failed}).startswith(
        "wave 1's gate failed"
    )


def test_the_token_comes_from_a_file_or_the_environment_never_a_flag(tmp_path: Any) -> None:
    args = argparse.Namespace(api=None, token_file=None, api_ca=None, timeout=30.0)
    with pytest.raises(CtlError, match="no API token") as exc:
        api_from(args, {})
    assert exc.value.code == 2
    assert api_from(args, {"TITIK_API_TOKEN": "titik_x"}).url == "http://localhost:8080"
    f = tmp_path / "t"
    f.write_text("titik_y\n")
    args.token_file, args.api = str(f), "https://central:8443/"
    api = api_from(args, {})
    assert (api.token, api.url) == ("titik_y", "https://central:8443")
    args.api = "ftp://x"
    with pytest.raises(CtlError, match="http:// or https://"):
        api_from(args, {})


class Gone(CentralApi):
    """Central's API answering once, then not at all (central stopped): a stand-in for the
    HTTP side only; what is tested is what ctl tells the operator."""

    def __init__(self) -> None:
        super().__init__("http://central:8080", "t", None, 0.3)
        object.__setattr__(self, "calls", 0)

    def call(self, method: str, path: str, body: Any = None) -> Any:
        object.__setattr__(self, "calls", self.calls + 1)
        if self.calls == 1:
            return {"id": "r1", "status": "running", "wave": 0, "waves": [50, 100],
                    "wave_sizes": [2, 4], "progress": 0.5, "gate": None}  # fmt: skip
        raise Unreachable("cannot reach central's API at http://central:8080: refused")


def test_losing_central_while_following_says_the_rollout_goes_on() -> None:
    import io

    out = io.StringIO()
    assert follow(Gone(), "r1", out, 0.05) == 1
    text = out.getvalue()
    assert "trying again for 0.3 s" in text
    assert (
        "stopped following: central's API is gone. Rollout r1 goes on in central (running, wave 1/2"
        in text
    )
    assert "titik-ctl rollout abort r1" in text


# -- titik-ctl upgrade (central/ctl/upgrade.py) ----------------------------------------------

UP_BODY: dict[str, Any] = {
    "id": "u1", "group": "g1", "manifest": {"version": "0.2.0", "sig": {"kid": "k"}},
    "waves": [10.0, 100.0], "steps": 2, "spread_s": 60.0, "window": "01:00-05:00",
    "tz": "Asia/Jakarta", "health_timeout_s": 60.0,
}  # fmt: skip


def up_prepared() -> dict[str, Any]:
    import time

    from central.rollout.upgrade import UpgradeSpec, commands, expiry

    b = UP_BODY
    spec = UpgradeSpec(b["manifest"], 60.0, 2, 60.0, b["window"], b["tz"], expiry(time.time()))
    return {
        "topic": "titik/group/g1/cmd",
        "documents": [{"payload": c} for c in commands("u1", (10.0, 100.0), spec)],
    }


def test_upgrade_commands_are_signed_only_when_they_are_the_plans() -> None:
    from central.ctl.upgrade import check_prepared as check_upgrade

    assert check_upgrade(UP_BODY, up_prepared(), "titik") == "titik/group/g1/cmd"


@pytest.mark.parametrize(
    "tamper",
    [
        lambda p: p["documents"][0]["payload"]["args"]["rollout"].update(percent=100),
        lambda p: p["documents"][1]["payload"]["args"].update(health_timeout_s=3600),
        lambda p: p["documents"][0]["payload"].update(name="reboot"),
        lambda p: p["documents"].pop(3),
        lambda p: [d["payload"].update(expires_at=2_000_000_000_000) for d in p["documents"]],
        lambda p: p.update(topic="titik/group/other/cmd"),
    ],
)
def test_any_other_upgrade_command_is_refused_before_signing(tamper: Any) -> None:
    from central.ctl.upgrade import check_prepared as check_upgrade

    p = copy.deepcopy(up_prepared())
    tamper(p)
    with pytest.raises(CtlError):
        check_upgrade(UP_BODY, p, "titik")


def test_an_upgrades_gate_line_names_its_wave_and_failure_rate() -> None:
    gate = {"verdict": "failed", "wave": 1, "applied": 2, "size": 3, "failures": 1,
            "answered": 3, "failure_pct": 33.33, "pending": 0}  # fmt: skip
    r = {"kind": "upgrade", "status": "halted", "wave": 1, "gate": gate}
    assert (
        gate_line(r) == "wave 1's gate failed: 2/3 upgraded, 1 failed (33.33% of 3 that answered)"
    )


def test_upgrade_start_without_a_key_or_with_a_bad_window_is_a_usage_error(
    tmp_path: Any, capsys: Any, monkeypatch: Any
) -> None:
    from central.ctl.cli import main

    manifest = tmp_path / "m.json"
    manifest.write_text('{"version": "0.2.0", "min_from": "0.1.0", "packages": []}')
    argv = ["upgrade", "start", "--group", "g1", "--manifest", str(manifest)]
    monkeypatch.delenv("TITIK_SIGNING_KEY", raising=False)
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "upgrade start signs the manifest and the commands: give --key" in err
    key = tmp_path / "k.pem"
    assert main(["keygen", "--out", str(key)]) == 0
    monkeypatch.setenv("TITIK_API_TOKEN", "a-token")
    monkeypatch.setenv("TITIK_API", "http://127.0.0.1:9")  # never reached: refused before
    assert main(["--key", str(key), *argv, "--window", "1-5"]) == 2
    assert "--window: '1-5' is not HH:MM-HH:MM (e.g. 01:00-05:00)" in capsys.readouterr().err
