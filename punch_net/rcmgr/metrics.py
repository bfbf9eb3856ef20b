"""The resource manager's Prometheus series, named and labelled as go-libp2p's
(p2p/host/resource-manager/obs), read from the manager at scrape time:

- `libp2p_rcmgr_connections{dir,scope}`: inbound connections, scope `system` (all) and
  `transient` (still in their handshake);
- `libp2p_rcmgr_streams{dir,scope,protocol}`: inbound streams, scope `system` (protocol
  "": every protocol), `transient` (protocol "": still negotiating one) and `protocol`;
- `libp2p_rcmgr_memory{scope,protocol}`: bytes of command requests in flight (`system`);
- `libp2p_rcmgr_fds{scope}`: sockets held for inbound connections (`system`, `transient`);
- `libp2p_rcmgr_blocked_resources{dir,scope,resource}`: refusals so far (a gauge that only
  grows, as in go-libp2p); resource `connection`, `stream`, `memory`, and ours, `request`.
  Scopes beyond go-libp2p's: `ip`, `protocol-peer`, `protocol-ip`, `transient-peer`,
  `transient-ip`.
- `punch_rcmgr_limit{scope,resource}`: the configured limits (Punch's own name).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import fields

from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from punch_net.rcmgr.manager import CONNS, HANDSHAKES, MEMORY, REQUESTS, STREAMS, ResourceManager

_RESOURCE_LABEL = {CONNS: "connection", HANDSHAKES: "connection", STREAMS: "stream", MEMORY: "memory",
                   REQUESTS: "request"}


class RcmgrCollector(Collector):
    def __init__(self, rcmgr: ResourceManager) -> None:
        self.rcmgr = rcmgr

    def collect(self) -> Iterator[GaugeMetricFamily]:
        rm = self.rcmgr
        conns = GaugeMetricFamily("libp2p_rcmgr_connections", "Number of Connections", labels=["dir", "scope"])
        conns.add_metric(["inbound", "system"], rm.used("system", "", CONNS))
        conns.add_metric(["inbound", "transient"], rm.used("transient", "", HANDSHAKES))
        yield conns
        fds = GaugeMetricFamily("libp2p_rcmgr_fds", "Number of file descriptors reserved", labels=["scope"])
        fds.add_metric(["system"], rm.used("system", "", CONNS))
        fds.add_metric(["transient"], rm.used("transient", "", HANDSHAKES))
        yield fds
        streams = GaugeMetricFamily("libp2p_rcmgr_streams", "Number of Streams", labels=["dir", "scope", "protocol"])
        streams.add_metric(["inbound", "system", ""], rm.used("system", "", STREAMS))
        streams.add_metric(["inbound", "transient", ""], rm.used("transient", "", STREAMS))
        memory = GaugeMetricFamily("libp2p_rcmgr_memory", "Amount of memory reserved", labels=["scope", "protocol"])
        memory.add_metric(["system", ""], rm.used("system", "", MEMORY))
        for (scope, name, resource), value in sorted(rm.usage().items()):
            if scope == "protocol" and resource == STREAMS:
                streams.add_metric(["inbound", "protocol", name], value)
        yield streams
        yield memory
        blocked = GaugeMetricFamily("libp2p_rcmgr_blocked_resources", "Number of blocked resources",
                                    labels=["dir", "scope", "resource"])
        for (direction, scope, resource), count in sorted(rm.blocked.items()):
            blocked.add_metric([direction, scope, _RESOURCE_LABEL.get(resource, resource)], count)
        yield blocked
        limit = GaugeMetricFamily("punch_rcmgr_limit", "Configured resource limits ([limits] in the config)",
                                  labels=["limit"])
        for f in fields(rm.limits):
            limit.add_metric([f.name], float(getattr(rm.limits, f.name)))
        yield limit
