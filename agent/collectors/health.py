"""Health: CPU, load, memory, disk, temperature, uptime, kernel boot id.

Readers take paths under the filesystem root so tests can point them at fixture trees; the
parsing is pure. psutil supplies CPU times, load and disk usage. Memory is two fields of
``/proc/meminfo``, read directly: ``psutil.virtual_memory()`` parses all ~55 fields into a dict
every call (~360 allocations against ~15), and per-sample churn is what made the agent's RSS
creep (see :mod:`agent.collectors.files`). psutil remains the fallback for kernels without
``MemAvailable`` (before 3.14), where it estimates the figure.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path
from typing import NamedTuple

import psutil

from agent.collectors.base import (
    Collector,
    Context,
    LinuxHost,
    SimHost,
    paths_under,
    recalled,
    remember,
)
from agent.collectors.files import list_dir, read_file
from agent.protocol import Health

#: Readings outside this range are broken sensors, not temperatures.
TEMP_RANGE_C = (-40.0, 150.0)


class CpuTimes(NamedTuple):
    """Busy and total CPU time in clock ticks (1/100 s: USER_HZ, as ``/proc/stat`` counts)."""

    busy: int
    total: int


def _ticks(seconds: float) -> int:
    return round(seconds * 100)


def cpu_times() -> CpuTimes:
    """Now, in whole ticks: psutil gives seconds as floats, and two float sums that differ only in
    rounding made a busy delta of -1e-12 between samples 0.2 s apart on an idle CPU, which read as
    "counters went back" and gave no figure (seen in tests/integration/test_agent_broker.py)."""
    t = psutil.cpu_times()
    idle = _ticks(t.idle) + _ticks(getattr(t, "iowait", 0.0))
    # guest time is already counted in user on Linux (psutil docs)
    guest = _ticks(getattr(t, "guest", 0.0)) + _ticks(getattr(t, "guest_nice", 0.0))
    total = sum(_ticks(x) for x in t) - guest
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


def parse_uptime(text: str | bytes) -> int:
    """``/proc/uptime``: "350735.47 234388.90" -> 350735."""
    first = text.split()
    if not first:
        raise ValueError("/proc/uptime: empty")
    return int(float(first[0]))


def parse_millidegrees(text: str | bytes) -> float | None:
    """A sysfs temperature (millidegrees C) -> °C, or None when the sensor reports nonsense."""
    try:
        value = int(text.strip()) / 1000.0
    except ValueError:
        return None
    lo, hi = TEMP_RANGE_C
    return round(value, 1) if lo <= value <= hi else None


def find_sensors(sys_root: str | os.PathLike[str]) -> list[str]:
    """The temperature inputs of thermal zones (``class/thermal/thermal_zone*/temp``) and hwmon
    chips (``class/hwmon/hwmon*/temp*_input``) under ``sys_root``; none on many boards."""
    thermal = f"{os.fspath(sys_root)}/class/thermal"
    hwmon = f"{os.fspath(sys_root)}/class/hwmon"
    found = [
        f"{thermal}/{zone}/temp" for zone in list_dir(thermal) if zone.startswith("thermal_zone")
    ]
    for chip in list_dir(hwmon):
        if chip.startswith("hwmon"):
            found += [
                f"{hwmon}/{chip}/{name}"
                for name in list_dir(f"{hwmon}/{chip}")
                if name.startswith("temp") and name.endswith("_input")
            ]
    return sorted(path for path in found if os.path.exists(path))


def read_temperature(sensors: Iterable[str]) -> float | None:
    """Hottest of ``sensors`` (from :func:`find_sensors`); None when there is none or none reads."""
    best: float | None = None
    for path in sensors:
        try:
            value = parse_millidegrees(read_file(path))
        except OSError:
            continue  # some zones return EIO/ENODATA when the sensor is off; a gone hwmon too
        if value is not None and (best is None or value > best):
            best = value
    return best


def _kib_field(data: bytes, key: bytes) -> int | None:
    """``key`` (e.g. b"MemTotal:") at the start of a complete line of kB -> bytes."""
    start = 0
    while (i := data.find(key, start)) > 0 and data[i - 1] != 0x0A:  # not at a line start
        start = i + 1
    end = data.find(b"\n", i)
    if i < 0 or end < 0:  # missing, or the last line was cut short
        return None
    fields = data[i + len(key) : end].split()
    if len(fields) != 2 or fields[1] != b"kB" or not fields[0].isdigit():
        return None
    return int(fields[0]) * 1024


def parse_meminfo(data: bytes) -> tuple[int, int] | None:
    """``/proc/meminfo`` -> (MemTotal, MemAvailable) in bytes, or None when either is missing
    (kernels before 3.14 have no MemAvailable) or unreadable."""
    total = _kib_field(data, b"MemTotal:")
    available = _kib_field(data, b"MemAvailable:")
    if not total or available is None:
        return None
    return total, available


def read_memory(meminfo_file: str) -> tuple[int, int]:
    """(total, available) in bytes: from ``meminfo_file``, else psutil's estimate."""
    try:
        mem = parse_meminfo(read_file(meminfo_file))
    except OSError:
        mem = None
    if mem is None:
        vm = psutil.virtual_memory()
        return vm.total, vm.available
    return mem


def read_boot_id(proc_root: Path) -> str | None:
    try:
        return (proc_root / "sys/kernel/random/boot_id").read_text().strip() or None
    except OSError:
        return None


def read_health(
    meminfo_file: str,
    uptime_file: str,
    sensors: Iterable[str],
    disk_path: str,
    prev_cpu: CpuTimes | None,
) -> tuple[Health, CpuTimes]:
    """One health reading. The paths are the caller's, built once (see :func:`collect`)."""
    cur = cpu_times()
    pct = cpu_pct(prev_cpu, cur)
    load1, load5, load15 = psutil.getloadavg()
    total, available = read_memory(meminfo_file)
    try:
        disk_pct: float | None = round(psutil.disk_usage(disk_path).percent, 1)
    except OSError:
        disk_pct = None
    health = Health(
        cpu_pct=pct,
        load1=round(load1, 2),
        load5=round(load5, 2),
        load15=round(load15, 2),
        mem_used_pct=round(100.0 * (total - available) / total, 1),
        mem_avail_b=available,
        disk_used_pct=disk_pct,
        temp_c=read_temperature(sensors),
        uptime_s=parse_uptime(read_file(uptime_file)),
    )
    # A reading whose counters went back is not kept as the next sample's baseline: one odd
    # read of /proc/stat then costs one sample its CPU figure, not two.
    return health, cur if pct is not None or prev_cpu is None else prev_cpu


def collect(host: LinuxHost, ctx: Context) -> Health:
    """The reading on any Linux."""
    meminfo, uptime, sys_root = paths_under(
        ctx, "health.paths", host.root, "proc/meminfo", "proc/uptime", "sys"
    )
    sensors = recalled(ctx, "sensors")
    if sensors is None:
        sensors = remember(ctx, "sensors", find_sensors(sys_root))
    sample, cur = read_health(meminfo, uptime, sensors, host.disk_path(), ctx.memo.get("cpu"))
    ctx.memo["cpu"] = cur
    return sample


def simulate(sim: SimHost, ctx: Context) -> Health:
    """Plausible figures that follow the site's day."""
    r = sim.rng
    busy = sim.busy(ctx.wall)
    load = round(0.2 + 1.5 * busy * r.uniform(0.7, 1.3), 2)
    return Health(
        cpu_pct=round(min(100.0, 8 + 55 * busy * r.uniform(0.6, 1.4)), 1),
        load1=load,
        load5=round(load * 0.9, 2),
        load15=round(load * 0.8, 2),
        mem_used_pct=round(35 + 25 * busy + r.uniform(-3, 3), 1),
        mem_avail_b=int(256 * 2**20 * (0.6 - 0.25 * busy)),
        disk_used_pct=round(22 + r.uniform(0, 0.5), 1),
        temp_c=round(44 + 18 * busy + r.uniform(-1.5, 1.5), 1),
        uptime_s=max(0, int(ctx.wall - sim.boot_wall)),
    )


COLLECTOR = Collector("health", {"linux": collect, "simulated": simulate})
