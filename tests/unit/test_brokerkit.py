"""The broker kit's files: certificates, mosquitto.conf, ACL, password file, bundles."""

from __future__ import annotations

import ipaddress
import shutil
import stat
import tomllib
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from agent.config import parse_config
from central.broker.kit import KitDir
from central.ctl import cli as ctl
from central.ctl import session
from central.ingest.audit import audit_subscriptions
from central.ingest.decode import subscriptions

needs_passwd = pytest.mark.skipif(
    shutil.which("mosquitto_passwd") is None and not Path("/usr/bin/mosquitto_passwd").exists(),
    reason="mosquitto_passwd not installed",
)


def run(*argv: str) -> int:
    return ctl.main(["broker", *argv])


@pytest.fixture
def kit(tmp_path: Path) -> KitDir:
    assert (
        run(
            "init",
            "--dir",
            str(tmp_path / "kit"),
            "--hostname",
            "broker.example.net",
            "--san",
            "127.0.0.1",
            "--san",
            "localhost",
        )
        == 0
    )
    return KitDir(tmp_path / "kit")


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def load_cert(path: Path) -> x509.Certificate:
    return x509.load_pem_x509_certificate(path.read_bytes())


def test_init_writes_the_ca_server_certificate_and_safe_modes(kit: KitDir) -> None:
    assert mode(kit.ca_key) == 0o600
    assert mode(kit.server_key) == 0o600
    assert mode(kit.passwd) == 0o600
    ca, srv = load_cert(kit.ca_pem), load_cert(kit.server_pem)
    assert isinstance(ca.public_key(), ec.EllipticCurvePublicKey)
    assert ca.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    srv.verify_directly_issued_by(ca)
    sans = srv.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert sans.get_values_for_type(x509.DNSName) == ["broker.example.net", "localhost"]
    assert sans.get_values_for_type(x509.IPAddress) == [ipaddress.ip_address("127.0.0.1")]
    eku = srv.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert list(eku) == [ExtendedKeyUsageOID.SERVER_AUTH]
    crl = x509.load_pem_x509_crl(kit.crl_pem.read_bytes())
    assert crl.is_signature_valid(ca.public_key())  # type: ignore[arg-type]
    assert len(crl) == 0


def test_init_refuses_to_overwrite_a_kit(kit: KitDir, capsys: pytest.CaptureFixture[str]) -> None:
    assert run("init", "--dir", str(kit.root), "--hostname", "x") == 2
    assert "already exists" in capsys.readouterr().err
    assert run("init", "--dir", str(kit.root), "--hostname", "x", "--force") == 0


def test_mosquitto_conf_has_tls_no_anonymous_limits_and_persistence(kit: KitDir) -> None:
    conf = kit.conf.read_text().splitlines()
    for line in (
        "allow_anonymous false",
        f"password_file {kit.passwd}",
        f"acl_file {kit.acl}",
        "listener 8883",
        "listener 8884",
        "require_certificate true",
        "use_identity_as_username true",
        f"crlfile {kit.crl_pem}",
        "max_queued_messages 10000",
        "max_inflight_messages 20",
        "max_packet_size 1048576",
        "persistence true",
        "user mosquitto",
        "tls_version tlsv1.2",
    ):
        assert line in conf, line
    assert conf.count(f"certfile {kit.server_pem}") == 2
    assert "allow_anonymous true" not in conf


def test_one_listener_can_be_left_out(tmp_path: Path) -> None:
    d = tmp_path / "k"
    assert run("init", "--dir", str(d), "--hostname", "h", "--password-port", "0") == 0
    conf = KitDir(d).conf.read_text()
    assert "listener 8883" in conf and "listener 8884" not in conf
    assert (
        run(
            "init",
            "--dir",
            str(d),
            "--hostname",
            "h",
            "--port",
            "0",
            "--password-port",
            "0",
            "--force",
        )
        == 2
    )


@needs_passwd
def test_add_gateway_hashes_the_password_with_mosquitto_passwd(kit: KitDir) -> None:
    assert run("add-gateway", "--dir", str(kit.root), "gw-1", "--group", "g1") == 0
    password = (kit.bundle("gw-1") / "mqtt.env").read_text().strip().split("=", 1)[1]
    line = kit.passwd.read_text().strip()
    assert line.startswith("gw-1:$7$")  # mosquitto_passwd's PBKDF2-SHA512
    assert password not in line
    assert mode(kit.bundle("gw-1") / "mqtt.env") == 0o600
    # Adding again replaces the credentials; another gateway gets its own line.
    assert run("add-gateway", "--dir", str(kit.root), "gw-1", "--generate-password") == 0
    assert run("add-gateway", "--dir", str(kit.root), "gw-2", "--generate-password") == 0
    users = [ln.split(":")[0] for ln in kit.passwd.read_text().splitlines()]
    assert users == ["gw-1", "gw-2"]
    assert kit.passwd.read_text().splitlines()[0] != line


@needs_passwd
def test_password_from_env(
    kit: KitDir, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.delenv("TITIK_MQTT_PASSWORD", raising=False)
    assert run("add-operator", "--dir", str(kit.root), "ops", "--password-from-env") == 2
    assert "TITIK_MQTT_PASSWORD" in capsys.readouterr().err
    monkeypatch.setenv("TITIK_MQTT_PASSWORD", "s3cret-operator")
    assert run("add-operator", "--dir", str(kit.root), "ops", "--password-from-env") == 0
    assert (kit.bundle("ops") / "mqtt.env").read_text() == "TITIK_MQTT_PASSWORD=s3cret-operator\n"


def test_client_certificate_has_the_id_as_cn(kit: KitDir) -> None:
    assert run("add-gateway", "--dir", str(kit.root), "gw-7", "--cert") == 0
    bundle = kit.bundle("gw-7")
    leaf = load_cert(bundle / "client.pem")
    leaf.verify_directly_issued_by(load_cert(kit.ca_pem))
    assert leaf.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == "gw-7"
    eku = leaf.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert list(eku) == [ExtendedKeyUsageOID.CLIENT_AUTH]
    assert mode(bundle / "client.key") == 0o600
    assert (bundle / "ca.pem").read_bytes() == kit.ca_pem.read_bytes()
    assert not (bundle / "mqtt.env").exists()  # --cert alone: no password
    assert kit.passwd.read_text() == ""


def test_acl_patterns_groups_and_roles(kit: KitDir) -> None:
    assert (
        run(
            "add-gateway",
            "--dir",
            str(kit.root),
            "gw-1",
            "--cert",
            "--group",
            "g1",
            "--group",
            "g2",
        )
        == 0
    )
    assert run("add-gateway", "--dir", str(kit.root), "gw-2", "--cert") == 0
    assert run("add-operator", "--dir", str(kit.root), "ops", "--cert") == 0
    assert run("add-central", "--dir", str(kit.root), "central", "--cert") == 0
    acl = kit.acl.read_text().splitlines()
    rules = [ln for ln in acl if ln and not ln.startswith("#")]
    first_user = next(i for i, ln in enumerate(rules) if ln.startswith("user "))
    # Nothing but patterns before the first user: anonymous clients get no topic.
    assert all(ln.startswith("pattern ") for ln in rules[:first_user])
    assert rules[:first_user] == [
        "pattern write titik/gw/%u/telemetry",
        "pattern write titik/gw/%u/telemetry/batch",
        "pattern write titik/gw/%u/status",
        "pattern write titik/gw/%u/config/reported",
        "pattern write titik/gw/%u/cmd/result",
        "pattern read titik/gw/%u/config/desired",
        "pattern read titik/gw/%u/cmd",
    ]
    block = rules[rules.index("user gw-1") + 1 : rules.index("user gw-1") + 5]
    assert block == [
        "topic read titik/group/g1/config/desired",
        "topic read titik/group/g1/cmd",
        "topic read titik/group/g2/config/desired",
        "topic read titik/group/g2/cmd",
    ]
    assert "user gw-2" not in rules  # no groups: the patterns are all it needs
    ops = rules[rules.index("user ops") + 1 : rules.index("user central")]
    assert ops == [
        "topic deny titik/gw/ops/#",  # the patterns would let it write gw/ops/telemetry
        "topic readwrite titik/gw/+/config/desired",
        "topic readwrite titik/group/+/config/desired",
        "topic write titik/gw/+/cmd",
        "topic write titik/group/+/cmd",
        "topic read titik/gw/+/status",
        "topic read titik/gw/+/config/reported",
        "topic read titik/gw/+/cmd/result",
        "topic readwrite titik/ctl/ops/#",
    ]
    central = rules[rules.index("user central") + 1 :]
    assert central[0] == "topic deny titik/gw/central/#"
    reads = [ln for ln in central[1:] if ln.startswith("topic read ")]
    writes = [ln for ln in central[1:] if not ln.startswith("topic read ")]
    assert len(reads) + len(writes) == len(central) - 1
    # Issue 18: what the web console publishes (signed in the operator's page), nothing else.
    assert writes == [
        "topic write titik/gw/+/config/desired",
        "topic write titik/group/+/config/desired",
        "topic write titik/gw/+/cmd",
        "topic write titik/group/+/cmd",
    ]


def test_central_reads_exactly_what_ingest_and_the_audit_subscribe_to(kit: KitDir) -> None:
    """The central block is ingest's subscription list and then what the broker audit adds
    (commands and their results, issue 18), read-only: a topic either adds without the kit
    granting it (or one the kit grants that nothing uses) fails here."""
    assert run("add-central", "--dir", str(kit.root), "central", "--cert") == 0
    rules = [ln for ln in kit.acl.read_text().splitlines() if ln and not ln.startswith("#")]
    block = rules[rules.index("user central") + 1 :]
    wanted = list(dict.fromkeys([*subscriptions("titik", ""), *audit_subscriptions("titik", "")]))
    assert block == [
        "topic deny titik/gw/central/#",
        *(f"topic read {t}" for t in wanted),
        # The web console's signed actions (central/actions/publish.py).
        "topic write titik/gw/+/config/desired",
        "topic write titik/group/+/config/desired",
        "topic write titik/gw/+/cmd",
        "topic write titik/group/+/cmd",
    ]


def test_operator_ctl_topics_are_its_own(kit: KitDir) -> None:
    """titik-ctl's marker and reply topics sit under the operator's own ctl/ subtree."""
    assert run("add-operator", "--dir", str(kit.root), "ops", "--cert") == 0
    acl = kit.acl.read_text().splitlines()
    args = ctl.build_parser().parse_args(["--username", "ops", "devices"])
    link = session.BrokerSession(session.settings_from(args, {}))
    assert link.sync_topic.startswith("titik/ctl/ops/") and link.sync_topic.endswith("/sync")
    assert link.reply_topic == link.sync_topic.removesuffix("sync") + "reply"
    assert "topic readwrite titik/ctl/ops/#" in acl
    assert not any(ln.startswith("topic") and "titik/ctl/#" in ln for ln in acl)
    anon = session.BrokerSession(
        session.settings_from(ctl.build_parser().parse_args(["devices"]), {})
    )
    assert anon.sync_topic.startswith("titik/ctl/anonymous/")
    odd = ctl.build_parser().parse_args(["--username", "a/b+#", "devices"])
    assert session.BrokerSession(session.settings_from(odd, {})).sync_topic.startswith(
        "titik/ctl/a_b__/"
    )


def test_prefix_is_used_everywhere(tmp_path: Path) -> None:
    d = tmp_path / "k"
    assert run("init", "--dir", str(d), "--hostname", "h", "--prefix", "acme") == 0
    assert run("add-gateway", "--dir", str(d), "gw-1", "--cert", "--group", "g") == 0
    acl = KitDir(d).acl.read_text()
    assert "titik/" not in acl and "pattern write acme/gw/%u/telemetry" in acl
    assert 'topic_prefix = "acme"' in (KitDir(d).bundle("gw-1") / "agent.toml").read_text()


@pytest.mark.parametrize("bad", ["gw/1", "gw+1", "gw#", "", ".x", "a b", "%u"])
def test_ids_that_would_break_topics_are_refused(
    kit: KitDir, bad: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert run("add-gateway", "--dir", str(kit.root), bad, "--cert") == 2
    assert run("add-gateway", "--dir", str(kit.root), "gw-1", "--cert", "--group", bad) == 2
    assert "topic level" in capsys.readouterr().err


def test_bundle_agent_toml_is_a_valid_agent_config(kit: KitDir, tmp_path: Path) -> None:
    key = tmp_path / "ops.pem"
    assert ctl.main(["keygen", "--out", str(key)]) == 0
    assert (
        run(
            "add-gateway",
            "--dir",
            str(kit.root),
            "gw-1",
            "--cert",
            "--group",
            "g1",
            "--trusted-key",
            str(key),
        )
        == 0
    )
    text = (kit.bundle("gw-1") / "agent.toml").read_text()
    cfg = parse_config(tomllib.loads(text))
    assert cfg.device.id == "gw-1"
    assert cfg.device.groups == ["g1"]
    assert cfg.mqtt.host == "broker.example.net"
    assert cfg.mqtt.port == 8883
    assert cfg.mqtt.tls.ca == Path("/etc/titik/ca.pem")
    assert cfg.mqtt.tls.cert == Path("/etc/titik/client.pem")
    assert cfg.mqtt.tls.key == Path("/etc/titik/client.key")
    assert cfg.mqtt.tls.insecure is False
    assert cfg.security.require_signature is True
    assert len(cfg.security.trusted_keys) == 1
    assert cfg.security.trusted_keys[0].startswith("ed25519:")
    uci = (kit.bundle("gw-1") / "uci.txt").read_text().splitlines()
    assert "uci set titik.device.id='gw-1'" in uci
    assert "uci add_list titik.device.groups='g1'" in uci
    assert "uci set titik.mqtt.host='broker.example.net'" in uci
    assert "uci set titik.mqtt_tls.cert='/etc/titik/client.pem'" in uci  # packaging's section name
    assert f"uci add_list titik.security.trusted_keys='{cfg.security.trusted_keys[0]}'" in uci
    assert uci[-1] == "uci commit titik"


@needs_passwd
def test_password_bundle_uses_the_password_listener_and_env(kit: KitDir) -> None:
    assert run("add-gateway", "--dir", str(kit.root), "gw-1", "--generate-password") == 0
    bundle = kit.bundle("gw-1")
    password = (bundle / "mqtt.env").read_text().strip().split("=", 1)[1]
    cfg = parse_config(
        tomllib.loads((bundle / "agent.toml").read_text()), {"TITIK_MQTT_PASSWORD": password}
    )
    assert cfg.mqtt.port == 8884
    assert cfg.mqtt.username == "gw-1"
    assert cfg.mqtt.password is not None
    assert cfg.mqtt.password.get_secret_value() == password
    assert cfg.mqtt.tls.cert is None


def test_bad_trusted_key_is_refused(kit: KitDir, capsys: pytest.CaptureFixture[str]) -> None:
    assert (
        run("add-gateway", "--dir", str(kit.root), "gw-1", "--cert", "--trusted-key", "ed25519:xx")
        == 2
    )
    assert "trusted-key" in capsys.readouterr().err


@needs_passwd
def test_revoke_removes_password_acl_bundle_and_lists_the_certificate(kit: KitDir) -> None:
    assert (
        run(
            "add-gateway",
            "--dir",
            str(kit.root),
            "gw-1",
            "--cert",
            "--generate-password",
            "--group",
            "g1",
        )
        == 0
    )
    assert run("add-gateway", "--dir", str(kit.root), "gw-2", "--generate-password") == 0
    serial = load_cert(kit.bundle("gw-1") / "client.pem").serial_number
    assert run("revoke", "--dir", str(kit.root), "gw-1") == 0
    assert [ln.split(":")[0] for ln in kit.passwd.read_text().splitlines()] == ["gw-2"]
    rules = [ln for ln in kit.acl.read_text().splitlines() if ln and not ln.startswith("#")]
    assert rules[rules.index("user gw-1") + 1 :] == ["topic deny #"]  # not even its patterns
    assert "titik/group/g1" not in kit.acl.read_text()
    assert not kit.bundle("gw-1").exists()
    crl = x509.load_pem_x509_crl(kit.crl_pem.read_bytes())
    assert crl.get_revoked_certificate_by_serial_number(serial) is not None
    assert crl.is_signature_valid(load_cert(kit.ca_pem).public_key())  # type: ignore[arg-type]
    assert run("revoke", "--dir", str(kit.root), "gw-1") == 2
    # A new gateway under the same id (new credentials) is no longer denied.
    assert run("add-gateway", "--dir", str(kit.root), "gw-1", "--cert") == 0
    assert "topic deny" not in kit.acl.read_text()


def test_missing_kit_is_a_usage_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert run("add-gateway", "--dir", str(tmp_path / "none"), "gw-1", "--cert") == 2
    assert "broker init" in capsys.readouterr().err


def test_role_change_needs_a_revoke(kit: KitDir, capsys: pytest.CaptureFixture[str]) -> None:
    assert run("add-gateway", "--dir", str(kit.root), "x1", "--cert") == 0
    assert run("add-operator", "--dir", str(kit.root), "x1", "--cert") == 2
    assert "revoke it first" in capsys.readouterr().err


def test_render_and_renew_server(kit: KitDir) -> None:
    import json

    assert run("add-gateway", "--dir", str(kit.root), "gw-1", "--cert", "--group", "g1") == 0
    data = json.loads(kit.kit_file.read_text())
    data["identities"]["gw-1"]["groups"] = ["g9"]
    data["max_queued_messages"] = 500
    kit.kit_file.write_text(json.dumps(data))
    assert run("render", "--dir", str(kit.root)) == 0
    assert "topic read titik/group/g9/cmd" in kit.acl.read_text()
    assert "titik/group/g1/" not in kit.acl.read_text()
    assert "max_queued_messages 500" in kit.conf.read_text()
    old = load_cert(kit.server_pem)
    assert run("renew-server", "--dir", str(kit.root)) == 0
    new = load_cert(kit.server_pem)
    assert new.serial_number != old.serial_number
    new.verify_directly_issued_by(load_cert(kit.ca_pem))
    assert new.extensions.get_extension_for_class(x509.SubjectAlternativeName) == (
        old.extensions.get_extension_for_class(x509.SubjectAlternativeName)
    )
    assert mode(kit.server_key) == 0o600
