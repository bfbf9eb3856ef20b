"""A swarm on one machine: one network namespace per host on a bridge, each host's egress
limited with `tc qdisc … tbf` (this kernel has tbf but no netem: no added delay).

    {p}inet  bridge br0, 198.18.0.0/15
      ├─ {p}boot  198.18.1.1   the bootstrap/DHT node (not limited)
      ├─ {p}h0    198.18.1.10  egress `rate` (tbf)
      ├─ {p}h1    198.18.1.11  …

Same conventions as rig.NatRig: veths are created inside the namespaces, names carry a
per-rig prefix, `close()` kills the processes it started by PID and deletes the namespaces.
`nat_harness.Punch(rig, "h0", name, args)` runs a punch process in a host.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from dataclasses import dataclass

from rig import NetnsRig, RigUnavailable, _run

BOOT_IP = "198.18.1.1"
BOOT_PORT = 4001


def host_ip(i: int) -> str:
    return f"198.18.1.{10 + i}"


def swarm_unavailable_reason() -> str | None:
    """Why the swarm rig cannot run here (needs root, ip and tc with tbf), or None."""
    if os.geteuid() != 0:
        return "network namespaces need root (run as root or in CI)"
    for tool in ("ip", "tc"):
        if shutil.which(tool) is None:
            return f"{tool} is not installed (iproute2)"
    probe = f"pnswprobe{os.getpid()}"
    res = subprocess.run(["ip", "netns", "add", probe], capture_output=True, text=True)
    if res.returncode != 0:
        return f"cannot create a network namespace: {res.stderr.strip() or res.returncode}"
    try:
        res = subprocess.run(["tc", "-n", probe, "qdisc", "add", "dev", "lo", "root", "tbf", "rate", "80mbit",
                              "burst", "65536", "latency", "50ms"], capture_output=True, text=True)
        if res.returncode != 0:
            return f"tc tbf is not available: {res.stderr.strip() or res.returncode}"
    finally:
        subprocess.run(["ip", "netns", "del", probe], capture_output=True)
    return None


@dataclass
class SwarmRig(NetnsRig):
    """`SwarmRig(prefix, hosts=5, rate_mbit=80)`, then `with rig:`; `rig.ns("h0")` is host 0."""

    hosts: int
    rate_mbit: float  # each host's egress (tbf); 80 mbit = 10 MB/s

    def up(self) -> None:
        self.clean_stale()
        roles = ["inet", "boot", *(f"h{i}" for i in range(self.hosts))]
        for role in roles:
            name = self.ns(role)
            _run("ip", "netns", "add", name)
            self._created.append(name)
            _run("ip", "-n", name, "link", "set", "lo", "up")
        inet = self.ns("inet")
        _run("ip", "-n", inet, "link", "add", "br0", "type", "bridge")
        _run("ip", "-n", inet, "link", "set", "br0", "up")
        for role, ip in (("boot", BOOT_IP), *((f"h{i}", host_ip(i)) for i in range(self.hosts))):
            port = f"p_{role}"
            _run("ip", "-n", inet, "link", "add", port, "type", "veth", "peer", "name", "eth0",
                 "netns", self.ns(role))
            _run("ip", "-n", inet, "link", "set", port, "master", "br0", "up")
            _run("ip", "-n", self.ns(role), "addr", "add", f"{ip}/15", "dev", "eth0")
            _run("ip", "-n", self.ns(role), "link", "set", "eth0", "up")
            if role != "boot":
                self.limit(role, self.rate_mbit)

    def limit(self, role: str, rate_mbit: float) -> None:
        """Egress of `role` at `rate_mbit` (a token bucket; the burst is ~4 ms of traffic, at least 64 KiB)."""
        burst = max(64 * 1024, int(rate_mbit * 1e6 / 8 * 0.004))
        _run("tc", "-n", self.ns(role), "qdisc", "replace", "dev", "eth0", "root", "tbf",
             "rate", f"{rate_mbit}mbit", "burst", str(burst), "latency", "50ms")


__all__ = ["BOOT_IP", "BOOT_PORT", "RigUnavailable", "SwarmRig", "host_ip", "swarm_unavailable_reason"]
