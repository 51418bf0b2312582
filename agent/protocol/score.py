"""An access point's health score, 0 to 100, from its service report: one pure function,
the same wherever the score is computed or shown (the gateway's log, central, the dashboard).

The score starts at 100 and loses each deduction that applies, named, down to 0. Each rule
looks at one thing a citizen feels; a rule whose inputs are unknown (absent in the report)
deducts nothing, so a gateway that cannot see something is not punished for it, and the
reasons say only what was seen. The table below is :data:`RULES`; docs/protocol.md ("The
health score") lists it for operators, and a test keeps the two the same.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, NamedTuple

if TYPE_CHECKING:
    from agent.protocol.service import ServiceReport


class Deduction(NamedTuple):
    """One named reason the score is lower, and by how much."""

    name: str
    points: int
    detail: str


class Score(NamedTuple):
    score: int
    deductions: list[Deduction]


def _worst(values: list[float | None]) -> float | None:
    known = [v for v in values if v is not None]
    return max(known) if known else None


def _busy(r: ServiceReport) -> float | None:
    return _worst([radio.busy_pct for radio in r.radios.values()])


def _weak_share(r: ServiceReport) -> float | None:
    """Share of stations below -70 dBm (the histogram's two lowest buckets), percent."""
    total = sum(q.sta for q in r.ssids.values())
    if not total:
        return None
    weak = sum(q.rssi[0] + q.rssi[1] for q in r.ssids.values())
    return 100.0 * weak / total


def _retry(r: ServiceReport) -> float | None:
    return _worst([q.retry_pct for q in r.ssids.values()])


def _fail(r: ServiceReport) -> float | None:
    return _worst([q.fail_pct for q in r.ssids.values()])


def _auth_fail(r: ServiceReport) -> float | None:
    counts = [q.ev[2] for q in r.ssids.values() if q.ev is not None]
    return float(sum(counts)) if counts else None


def _no_address(r: ServiceReport) -> float | None:
    return float(r.dhcp.no_address) if r.dhcp is not None else None


def _nak(r: ServiceReport) -> float | None:
    return float(r.dhcp.nak) if r.dhcp is not None else None


def _dns_failed(r: ServiceReport) -> float | None:
    if r.probes is None or r.probes.dns is None:
        return None
    return 0.0 if r.probes.dns in ("ok", "nxdomain") else 1.0


def _dns_ms(r: ServiceReport) -> float | None:
    return r.probes.dns_ms if r.probes is not None and r.probes.dns == "ok" else None


def _portal(value: str) -> Callable[[ServiceReport], float | None]:
    def check(r: ServiceReport) -> float | None:
        if r.probes is None or r.probes.portal is None:
            return None
        return 1.0 if r.probes.portal == value else 0.0

    return check


def _loss(r: ServiceReport) -> float | None:
    return r.probes.loss_pct if r.probes is not None else None


def _inet_ms(r: ServiceReport) -> float | None:
    return r.probes.inet_ms if r.probes is not None else None


def _jitter(r: ServiceReport) -> float | None:
    return r.probes.jitter_ms if r.probes is not None else None


def _broker_ms(r: ServiceReport) -> float | None:
    return r.probes.broker_ms if r.probes is not None else None


def _citizen(step: str) -> Callable[[ServiceReport], float | None]:
    def check(r: ServiceReport) -> float | None:
        if r.citizen_path is None:
            return None
        return 1.0 if r.citizen_path.fail == step else 0.0

    return check


def _citizen_why(r: ServiceReport) -> str:
    return f" ({r.citizen_path.why})" if r.citizen_path is not None and r.citizen_path.why else ""


class Rule(NamedTuple):
    """``name`` deducts ``points`` when ``measure(report)`` is at least ``threshold``; ``why``
    adds to the detail what the report says of the cause."""

    name: str
    points: int
    threshold: float
    what: str  # the measure, with its unit, for the reason's detail and the docs
    measure: Callable[[ServiceReport], float | None]
    why: Callable[[ServiceReport], str] | None = None


#: The rules, in the order their deductions are listed. Where two rules share a name, the
#: first that applies wins (the stronger is listed first).
RULES: tuple[Rule, ...] = (
    Rule("channel_busy", 20, 80, "busiest radio's channel busy, %", _busy),
    Rule("channel_busy", 10, 60, "busiest radio's channel busy, %", _busy),
    Rule("weak_signal", 10, 30, "stations below -70 dBm, % of all", _weak_share),
    Rule("retries", 10, 20, "worst SSID's tx retries per frame, %", _retry),
    Rule("tx_failures", 10, 5, "worst SSID's tx failures per frame, %", _fail),
    Rule("auth_failures", 10, 5, "failed authentications in the interval", _auth_fail),
    Rule("dhcp_pool_exhausted", 25, 1, "DHCP requests refused for lack of addresses", _no_address),
    Rule("dhcp_naks", 5, 5, "DHCP requests refused (DHCPNAK)", _nak),
    Rule("dns_failed", 25, 1, "the DNS probe failed or timed out (1 = yes)", _dns_failed),
    Rule("dns_slow", 5, 200, "DNS probe time, ms", _dns_ms),
    Rule(
        "portal_broken",
        25,
        1,
        "the portal check saw neither portal nor Internet (1 = yes)",
        _portal("broken"),
    ),
    Rule(
        "portal_upstream",
        10,
        1,
        "the AP itself is behind a captive portal (1 = yes)",
        _portal("portal"),
    ),
    Rule("internet_loss", 25, 20, "Internet connects lost, %", _loss),
    Rule("internet_loss", 10, 5, "Internet connects lost, %", _loss),
    Rule("internet_slow", 5, 150, "median Internet connect time, ms", _inet_ms),
    Rule("internet_jitter", 5, 30, "Internet connect jitter, ms", _jitter),
    Rule("broker_slow", 5, 2000, "MQTT publish to PUBACK, ms", _broker_ms),
    *(
        Rule(
            f"citizen_{step}",
            25,
            1,
            f"the citizen path failed at its {step} step (1 = yes; the reason follows)",
            _citizen(step),
            _citizen_why,
        )
        for step in ("dhcp", "dns", "portal", "inet")
    ),
)


def score(report: ServiceReport) -> Score:
    """The AP's score and the deductions that made it, in :data:`RULES` order."""
    deductions: list[Deduction] = []
    taken: set[str] = set()
    for rule in RULES:
        if rule.name in taken:
            continue
        value = rule.measure(report)
        if value is not None and value >= rule.threshold:
            taken.add(rule.name)
            why = rule.why(report) if rule.why is not None else ""
            deductions.append(
                Deduction(rule.name, rule.points, f"{rule.what}: {round(value, 1):g}{why}")
            )
    return Score(max(0, 100 - sum(d.points for d in deductions)), deductions)


def rules_table() -> str:
    """The rules as the Markdown table docs/protocol.md carries (a test compares them)."""
    lines = ["| deduction | points | when | measure |", "| --- | --- | --- | --- |"]
    lines += [f"| `{r.name}` | {r.points} | >= {r.threshold:g} | {r.what} |" for r in RULES]
    return "\n".join(lines) + "\n"
