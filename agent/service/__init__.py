"""The service-health report (issue 20): what a citizen meets at this access point.

- :mod:`~agent.service.neighbours`: other APs heard, from ``iw dev <if> scan dump``
- :mod:`~agent.service.stations`: client quality per SSID from ``iw dev <if> station dump``
  (or ``ubus call hostapd.<if> get_clients``), aggregates only
- :mod:`~agent.service.events`: association, authentication and DHCP events from hostapd's and
  dnsmasq's log lines (logread on OpenWrt, the journal elsewhere)
- :mod:`~agent.service.probes`: DNS, captive portal, Internet reachability, bounded in time
- :mod:`~agent.service.report`: :class:`~agent.service.report.ServiceReporter`, which makes the
  report on its own schedule

The agent imports this package only when ``[service] enabled = true`` (docs/architecture.md,
"Service health on its own topic"). Client MACs, IPs and host names are read to count and to
match a station with its counters between two reports, in memory; none leaves this package.
"""
