"""What bench_agent.py measures with: /proc readers (memory, CPU ticks), the size of a PUBLISH
on the wire, and the subscriber that counts what the agent sent (bench_rss_spread.py reads
memory the same way)."""

from __future__ import annotations

import contextlib
import os
import threading
from dataclasses import dataclass, field
from typing import Any

import paho.mqtt.client as paho
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode

from agent.protocol.client import make_client
from agent.protocol.topics import STATUS, TELEMETRY, device_of, gw_filter

# -- /proc readers ------------------------------------------------------------------------


def read_mem_kib(pid: int) -> dict[str, int]:
    """VmRSS, VmHWM (and friends) of ``pid`` in KiB, from /proc/<pid>/status."""
    out: dict[str, int] = {}
    with open(os.path.join("/proc", str(pid), "status")) as fh:
        for line in fh:
            key, _, rest = line.partition(":")
            if key.startswith(("Vm", "Rss")) and rest.strip().endswith("kB"):
                out[key] = int(rest.split()[0])
    return out


@dataclass(frozen=True)
class CpuTicks:
    utime: int
    stime: int
    cutime: int
    cstime: int

    @property
    def own(self) -> int:
        return self.utime + self.stime

    @property
    def children(self) -> int:
        return self.cutime + self.cstime


def read_cpu_ticks(pid: int) -> CpuTicks:
    """utime, stime, cutime, cstime of ``pid`` (clock ticks), from /proc/<pid>/stat."""
    with open(f"/proc/{pid}/stat") as fh:
        stat = fh.read()
    # comm (field 2) may contain spaces and parentheses: split after the last ')'.
    fields = stat[stat.rindex(")") + 2 :].split()
    # fields[0] is field 3 (state); utime..cstime are fields 14..17.
    utime, stime, cutime, cstime = (int(v) for v in fields[11:15])
    return CpuTicks(utime, stime, cutime, cstime)


# -- MQTT wire size -----------------------------------------------------------------------


def varint_len(n: int) -> int:
    """Bytes of an MQTT variable byte integer (remaining length, property length)."""
    size = 1
    while n >= 128:
        n //= 128
        size += 1
    return size


def publish_wire_size(topic: str, payload_len: int, *, qos: int, v5: bool) -> int:
    """Size of the PUBLISH packet the agent sends: fixed + variable header + payload.

    Variable header: 2-byte topic length + topic, a 2-byte packet id for QoS > 0 and, for
    MQTT 5, the properties length (one byte: the agent sends no publish properties).
    Fixed header: one type/flags byte + the remaining length (1-4 bytes).
    """
    remaining = 2 + len(topic.encode()) + (2 if qos > 0 else 0) + (1 if v5 else 0) + payload_len
    return 1 + varint_len(remaining) + remaining


# -- the subscriber -----------------------------------------------------------------------


@dataclass
class Traffic:
    """What the subscriber saw; updated on paho's network thread, read under ``lock``."""

    prefix: str
    lock: threading.Lock = field(default_factory=threading.Lock)
    messages: int = 0
    bytes: int = 0
    telemetry: int = 0
    telemetry_payload: list[int] = field(default_factory=list)
    telemetry_topics: set[str] = field(default_factory=set)
    status: int = 0

    def add(self, topic: str, payload_len: int, telemetry: bool) -> None:
        with self.lock:
            self.messages += 1
            self.bytes += payload_len
            if telemetry:
                self.telemetry += 1
                self.telemetry_payload.append(payload_len)
                self.telemetry_topics.add(topic)
            elif device_of(topic, self.prefix, STATUS) is not None:
                self.status += 1

    def telemetry_count(self) -> int:
        with self.lock:
            return self.telemetry


class Subscriber:
    def __init__(self, host: str, port: int, prefix: str) -> None:
        self.traffic = Traffic(prefix)
        self._telemetry_filter = gw_filter(prefix, TELEMETRY)
        self._subscribed = threading.Event()
        self.client = make_client("titik-bench-sub")
        self.client.on_connect = self._on_connect
        self.client.on_subscribe = self._on_subscribe
        self.client.on_message = self._on_message
        self.client.connect(host, port, keepalive=60)
        self.client.loop_start()
        if not self._subscribed.wait(10):
            self.stop()
            raise RuntimeError(f"subscriber: no SUBACK from {host}:{port} within 10 s")

    def _on_connect(
        self,
        client: paho.Client,
        userdata: Any,
        flags: paho.ConnectFlags,
        reason: ReasonCode,
        props: Properties | None,
    ) -> None:
        if not reason.is_failure:
            client.subscribe(f"{self.traffic.prefix}/#", qos=1)

    def _on_subscribe(
        self,
        client: paho.Client,
        userdata: Any,
        mid: int,
        reasons: list[ReasonCode],
        props: Properties | None,
    ) -> None:
        self._subscribed.set()

    def _on_message(self, client: paho.Client, userdata: Any, msg: paho.MQTTMessage) -> None:
        topic = msg.topic
        telemetry = paho.topic_matches_sub(self._telemetry_filter, topic)
        self.traffic.add(topic, len(msg.payload), telemetry)

    def stop(self) -> None:
        with contextlib.suppress(Exception):
            self.client.disconnect()
        with contextlib.suppress(Exception):
            self.client.loop_stop()
