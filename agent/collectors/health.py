"""Health: CPU, load, memory, disk, temperature, uptime, kernel boot id.

Readers take the filesystem root so tests can point them at fixture trees; the parsing is
pure. psutil supplies CPU times, memory and disk usage.
"""

from __future__ import annotations

from pathlib import Path
from typing import NamedTuple

import psutil

from agent.protocol import Health

#: Readings outside this range are broken sensors, not temperatures.
TEMP_RANGE_C = (-40.0, 150.0)


class CpuTimes(NamedTuple):
    busy: float
    total: float


def cpu_times() -> CpuTimes:
    t = psutil.cpu_times()
    idle = t.idle + getattr(t, "iowait", 0.0)
    total = sum(t)
    # guest time is already counted in user on Linux (psutil docs)
    total -= getattr(t, "guest", 0.0) + getattr(t, "guest_nice", 0.0)
    return CpuTimes(total - idle, total)


def cpu_pct(prev: CpuTimes | None, cur: CpuTimes) -> float | None:
    """Busy share between two readings; None on the first sample or if counters went back."""
    if prev is None:
        return None
    d_total = cur.total - prev.total
    d_busy = cur.busy - prev.busy
    if d_total <= 0 or d_busy < 0:
        return None
    return round(min(100.0, 100.0 * d_busy / d_total), 1)


def parse_uptime(text: str) -> int:
    """``/proc/uptime``: "350735.47 234388.90" -> 350735."""
    first = text.split()
    if not first:
        raise ValueError("/proc/uptime: empty")
    return int(float(first[0]))


def parse_millidegrees(text: str) -> float | None:
    """A sysfs temperature (millidegrees C) -> °C, or None when the sensor reports nonsense."""
    try:
        value = int(text.strip()) / 1000.0
    except ValueError:
        return None
    lo, hi = TEMP_RANGE_C
    return round(value, 1) if lo <= value <= hi else None


def read_temperature(sys_root: Path) -> float | None:
    """Hottest sensor among thermal zones and hwmon inputs; None when the board has none."""
    candidates = [
        *sys_root.glob("class/thermal/thermal_zone*/temp"),
        *sys_root.glob("class/hwmon/hwmon*/temp*_input"),
    ]
    best: float | None = None
    for path in candidates:
        try:
            value = parse_millidegrees(path.read_text())
        except OSError:
            continue  # some zones return EIO/ENODATA when the sensor is off
        if value is not None and (best is None or value > best):
            best = value
    return best


def read_boot_id(proc_root: Path) -> str | None:
    try:
        return (proc_root / "sys/kernel/random/boot_id").read_text().strip() or None
    except OSError:
        return None


def read_health(
    sys_root: Path, uptime_file: Path, disk_path: str, prev_cpu: CpuTimes | None
) -> tuple[Health, CpuTimes]:
    """One health reading. The paths are the caller's, built once (see LinuxPlatform)."""
    cur = cpu_times()
    load1, load5, load15 = psutil.getloadavg()
    mem = psutil.virtual_memory()
    try:
        disk_pct: float | None = round(psutil.disk_usage(disk_path).percent, 1)
    except OSError:
        disk_pct = None
    health = Health(
        cpu_pct=cpu_pct(prev_cpu, cur),
        load1=round(load1, 2),
        load5=round(load5, 2),
        load15=round(load15, 2),
        mem_used_pct=round(100.0 * (mem.total - mem.available) / mem.total, 1),
        mem_avail_b=mem.available,
        disk_used_pct=disk_pct,
        temp_c=read_temperature(sys_root),
        uptime_s=parse_uptime(uptime_file.read_text()),
    )
    return health, cur
