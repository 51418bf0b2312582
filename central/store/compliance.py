"""Config compliance, pure: which desired documents apply to a gateway, and whether its
report says it runs them. Read by the store (``Store.compliance``) and the API."""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from agent.protocol.topics import OWN_SOURCE, group_target, gw_target
from central.store.base import ComplianceRow, DesiredDoc, DeviceState, ReportedDoc


def desired_for(groups: Iterable[str], device: str) -> list[str]:
    """The desired-document targets that apply to a gateway, in overlay order."""
    return [group_target(g) for g in groups] + [gw_target(device)]


def compliance(
    state: DeviceState, desired: Mapping[str, DesiredDoc], reported: ReportedDoc | None
) -> ComplianceRow:
    """Compliant when every desired document's version appears in ``versions``, applied."""
    want = {
        t: d.version
        for t in desired_for(state.groups, state.device)
        if (d := desired.get(t)) is not None and d.version is not None
    }
    have = reported.report.versions if reported else {}
    source_key = {OWN_SOURCE: gw_target(state.device)}
    have_keys = {source_key.get(k, k): v for k, v in have.items()}
    missing = [t for t, v in want.items() if have_keys.get(t) != v]
    applied = reported is not None and reported.report.state == "applied"
    return ComplianceRow(
        device=state.device,
        compliant=not missing and (applied or not want),
        desired=want,
        reported=dict(have),
        state=reported.report.state if reported else None,
        error=reported.report.error if reported else None,
        missing=missing,
    )
