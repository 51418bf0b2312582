"""Where central keeps samples, fleet state, rollups, configs and alerts."""

from central.store.base import (
    Alert,
    AlertChange,
    ComplianceRow,
    DesiredDoc,
    DevicePage,
    DeviceState,
    HistoryPoint,
    RegionPublic,
    ReportedDoc,
    Sample,
    Store,
    Summary,
    WriteBatch,
    WriteResult,
)

__all__ = [
    "Alert",
    "AlertChange",
    "ComplianceRow",
    "DesiredDoc",
    "DevicePage",
    "DeviceState",
    "HistoryPoint",
    "RegionPublic",
    "ReportedDoc",
    "Sample",
    "Store",
    "Summary",
    "WriteBatch",
    "WriteResult",
]
