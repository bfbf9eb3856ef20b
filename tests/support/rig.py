"""A small internet on one machine: network namespaces, veth pairs, a bridge and nftables NAT.

Topology (names carry a per-rig prefix so rigs can run side by side):

    {p}inet  bridge br0 = "the internet", 198.18.0.0/15 (RFC 2544 benchmark range)
      ├─ {p}relay  198.18.0.10  public relay / bootstrap host
      ├─ {p}pub    198.18.0.20  public dialer host
      ├─ {p}nata   wan0 198.18.0.11 | lan0 10.0.1.1  → {p}a  10.0.1.2
      ├─ {p}natb   wan0 198.18.0.12 | lan0 10.0.2.1  → {p}b  10.0.2.2
      ├─ (cloud=True)  {p}natc  wan0 198.18.0.13 | lan0 10.0.3.1 → {p}c 10.0.3.2, a 1:1 NAT
      │                (DNAT of everything to 198.18.0.13, SNAT back): a cloud VM's private
      │                interface behind its public IP
      ├─ (outside=N)   {p}out1, {p}out2 … 198.18.1.20, 198.18.2.20 …: public hosts in other
      │                /24 networks (observed-address votes count per network)
      └─ (upnp=True)   {p}natu  wan0 11.22.33.1 | lan0 10.0.4.1 → {p}u 10.0.4.2: a home router
                       running miniupnpd (UPnP IGD); relay and pub also get 11.22.33.10 / .20.
                       miniupnpd refuses a "reserved" external address such as 198.18/15, so
                       this corner of the isolated bridge uses an ordinary-looking one.

Each NAT router masquerades lan0 → wan0 (plain masquerade keeps the source port when it
is free: an endpoint-independent mapping; `fully-random` gives a symmetric NAT), forwards
only established/related traffic inward and drops unsolicited packets like a home router.

Every veth is created directly inside the namespaces, so nothing touches the caller's
network. `close()` kills the processes it started (by PID) and deletes the namespaces by
name; it runs on failure too (use the rig as a context manager).
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Self

PUBLIC_NET = "198.18.0.0/15"
RELAY_IP = "198.18.0.10"
PUB_IP = "198.18.0.20"
NAT_WAN = {"a": "198.18.0.11", "b": "198.18.0.12", "c": "198.18.0.13"}
LAN_HOST = {"a": "10.0.1.2", "b": "10.0.2.2", "c": "10.0.3.2"}
LAN_GW = {"a": "10.0.1.1", "b": "10.0.2.1", "c": "10.0.3.1"}


UPNP_WAN = "11.22.33.1"
UPNP_LAN_GW = "10.0.4.1"
UPNP_HOST = "10.0.4.2"
UPNP_PEERS = {"relay": "11.22.33.10", "pub": "11.22.33.20"}


def outside_ip(n: int) -> str:
    """The n-th (1-based) extra public host, each in its own /24."""
    return f"198.18.{n}.20"


class RigUnavailable(Exception):
    """Namespaces cannot be created here (not root, no iproute2/nftables, no permission)."""


def miniupnpd_unavailable_reason() -> str | None:
    if shutil.which("miniupnpd") is None:
        return "miniupnpd is not installed (make system-deps installs miniupnpd-nftables)"
    return None


def rig_unavailable_reason() -> str | None:
    """Why the rig cannot run on this machine, or None if it can."""
    if os.geteuid() != 0:
        return "network namespaces need root (run as root or in CI)"
    for tool in ("ip", "nft"):
        if shutil.which(tool) is None:
            return f"{tool} is not installed (make system-deps installs iproute2 and nftables)"
    probe = f"pnprobe{os.getpid()}"
    res = subprocess.run(["ip", "netns", "add", probe], capture_output=True, text=True)
    if res.returncode != 0:
        return f"cannot create a network namespace: {res.stderr.strip() or res.returncode}"
    subprocess.run(["ip", "netns", "del", probe], capture_output=True)
    return None


def _run(*args: str, check: bool = True, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    res = subprocess.run(list(args), capture_output=True, text=True, input=stdin, timeout=20)
    if check and res.returncode != 0:
        raise RigUnavailable(f"{' '.join(args)}: {res.stderr.strip()}")
    return res


def nat_rules(symmetric: bool, forward_to: str | None = None) -> str:
    """nftables ruleset of one NAT router (chain names prefixed: `fwd` is reserved in nft).
    `forward_to`: the LAN host that the router's TCP port 4001 is forwarded to (by hand)."""
    random = " fully-random" if symmetric else ""
    pre = (f'chain pn_pre {{ type nat hook prerouting priority dstnat; iifname "wan0" tcp dport 4001 '
           f'dnat to {forward_to}:4001; }}') if forward_to else ""
    accept_dnat = "ct status dnat accept" if forward_to else ""
    return f"""
table ip pn_nat {{
  chain pn_post {{ type nat hook postrouting priority srcnat; oifname "wan0" masquerade{random}; }}
  {pre}
}}
table inet pn_filter {{
  chain pn_forward {{
    type filter hook forward priority 0; policy drop;
    ct state established,related accept
    iifname "lan0" oifname "wan0" accept
    {accept_dnat}
  }}
  chain pn_input {{
    type filter hook input priority 0; policy accept;
    iifname "wan0" ct state new drop
  }}
}}
"""


def one_to_one_rules(public: str, private: str) -> str:
    """A cloud provider's 1:1 NAT: everything to `public` goes to `private`, and back."""
    return f"""
table ip pn_nat {{
  chain pn_pre {{ type nat hook prerouting priority dstnat; iifname "wan0" ip daddr {public} dnat to {private}; }}
  chain pn_post {{ type nat hook postrouting priority srcnat; oifname "wan0" ip saddr {private} snat to {public}; }}
}}
"""


UPNP_RULES = """
table inet pn_upnp {
  chain forward {
    type filter hook forward priority 0; policy drop;
    ct state established,related accept
    iifname "lan0" oifname "wan0" accept
    jump miniupnpd
  }
  chain miniupnpd { }
  chain prerouting { type nat hook prerouting priority -100; policy accept; jump prerouting_miniupnpd; }
  chain postrouting {
    type nat hook postrouting priority 100; policy accept;
    jump postrouting_miniupnpd
    oifname "wan0" masquerade
  }
  chain prerouting_miniupnpd { }
  chain postrouting_miniupnpd { }
  chain pn_input { type filter hook input priority 0; policy accept; iifname "wan0" ct state new drop; }
}
"""


def miniupnpd_conf(pid_file: str, lease_file: str, upnp: bool = True, natpmp: bool = True) -> str:
    return f"""ext_ifname=wan0
listening_ip=lan0
http_port=0
enable_upnp={"yes" if upnp else "no"}
enable_natpmp={"yes" if natpmp else "no"}
secure_mode=yes
system_uptime=yes
uuid=3d3cec3a-8cf0-11e0-98ee-001a6bd2d07b
lease_file={lease_file}
upnp_table_name=pn_upnp
upnp_nat_table_name=pn_upnp
upnp_forward_chain=miniupnpd
upnp_nat_chain=prerouting_miniupnpd
upnp_nat_postrouting_chain=postrouting_miniupnpd
allow 1024-65535 10.0.4.0/24 1024-65535
deny 0-65535 0.0.0.0/0 0-65535
"""


@dataclass
class Proc:
    name: str
    netns: str
    popen: subprocess.Popen[bytes]
    log: Path


@dataclass
class NetnsRig:
    """What every namespace rig shares: `prefix` names its namespaces (`ns(role)`), `up()`
    (the subclass's) builds them on `with rig:`, and processes started with `spawn` die by
    PID when it closes."""

    prefix: str
    log_dir: Path = field(default_factory=lambda: Path("/tmp"), kw_only=True)
    procs: list[Proc] = field(default_factory=list, kw_only=True)
    _created: list[str] = field(default_factory=list, kw_only=True)

    def ns(self, role: str) -> str:
        return f"{self.prefix}{role}"

    def up(self) -> None:
        raise NotImplementedError

    def __enter__(self) -> Self:
        try:
            self.up()
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def clean_stale(self) -> None:
        """Delete namespaces left with our prefix by a crashed earlier run."""
        res = _run("ip", "netns", "list", check=False)
        for line in res.stdout.splitlines():
            name = line.split()[0] if line.split() else ""
            if name.startswith(self.prefix):
                _kill_netns_pids(name)
                _run("ip", "netns", "del", name, check=False)

    def close(self) -> None:
        for proc in self.procs:
            self.kill(proc)
        self.procs.clear()
        for name in reversed(self._created):
            _kill_netns_pids(name)
            _run("ip", "netns", "del", name, check=False)
        self._created.clear()

    # ------------------------------------------------------------------ processes

    def spawn(self, role: str, name: str, argv: Sequence[str], env: dict[str, str] | None = None) -> Proc:
        """Start `argv` inside namespace `role`; stdout to a pipe, stderr to a log file."""
        log = self.log_dir / f"{self.prefix}{name}.stderr"
        with log.open("wb") as err:
            popen = subprocess.Popen(
                ["ip", "netns", "exec", self.ns(role), *argv],
                stdout=subprocess.PIPE, stderr=err, stdin=subprocess.DEVNULL,
                env={**os.environ, **(env or {})},
            )
        proc = Proc(name, self.ns(role), popen, log)
        self.procs.append(proc)
        return proc

    def kill(self, proc: Proc, timeout: float = 5.0) -> None:
        """SIGTERM, then SIGKILL after `timeout`, by PID (ip netns exec execs the program)."""
        p = proc.popen
        if p.poll() is None:
            try:
                p.send_signal(signal.SIGTERM)
                p.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait(timeout=timeout)
            except ProcessLookupError:
                pass
        if p.stdout is not None:
            p.stdout.close()


@dataclass
class NatRig(NetnsRig):
    """Create with `NatRig(prefix)`, then `with rig:`; `rig.ns("a")` is host A's namespace."""

    symmetric: Sequence[str] = ()  # which NATs ("a", "b") map symmetrically (fully-random)
    forward: Sequence[str] = ()  # which NATs ("a", "b") forward TCP 4001 to their host by hand
    cloud: bool = False  # add natc + c: a 1:1 NAT (cloud VM)
    outside: int = 0  # extra public hosts out1..outN, each in its own /24
    upnp: bool = False  # add natu + u: a home router with UPnP (start it with start_miniupnpd)

    def up(self) -> None:
        self.clean_stale()
        roles = ["inet", "relay", "pub", "nata", "natb", "a", "b"]
        roles += ["natc", "c"] if self.cloud else []
        roles += [f"out{n}" for n in range(1, self.outside + 1)]
        roles += ["natu", "u"] if self.upnp else []
        for role in roles:
            name = self.ns(role)
            _run("ip", "netns", "add", name)
            self._created.append(name)
            _run("ip", "-n", name, "link", "set", "lo", "up")
        inet = self.ns("inet")
        _run("ip", "-n", inet, "link", "add", "br0", "type", "bridge")
        _run("ip", "-n", inet, "link", "set", "br0", "up")
        # public hosts and NAT WAN sides on the bridge
        public = [("relay", RELAY_IP, "eth0"), ("pub", PUB_IP, "eth0"),
                  ("nata", NAT_WAN["a"], "wan0"), ("natb", NAT_WAN["b"], "wan0")]
        public += [("natc", NAT_WAN["c"], "wan0")] if self.cloud else []
        public += [(f"out{n}", outside_ip(n), "eth0") for n in range(1, self.outside + 1)]
        for role, ip, ifname in public:
            port = f"p_{role}"
            _run("ip", "-n", inet, "link", "add", port, "type", "veth", "peer", "name", ifname,
                 "netns", self.ns(role))
            _run("ip", "-n", inet, "link", "set", port, "master", "br0", "up")
            _run("ip", "-n", self.ns(role), "addr", "add", f"{ip}/15", "dev", ifname)
            _run("ip", "-n", self.ns(role), "link", "set", ifname, "up")
        # LANs behind each NAT
        for side in ("a", "b", "c") if self.cloud else ("a", "b"):
            nat, host = self.ns(f"nat{side}"), self.ns(side)
            _run("ip", "-n", nat, "link", "add", "lan0", "type", "veth", "peer", "name", "eth0",
                 "netns", host)
            _run("ip", "-n", nat, "addr", "add", f"{LAN_GW[side]}/24", "dev", "lan0")
            _run("ip", "-n", nat, "link", "set", "lan0", "up")
            _run("ip", "-n", host, "addr", "add", f"{LAN_HOST[side]}/24", "dev", "eth0")
            _run("ip", "-n", host, "link", "set", "eth0", "up")
            _run("ip", "-n", host, "route", "add", "default", "via", LAN_GW[side])
            _run("ip", "netns", "exec", nat, "sysctl", "-qw", "net.ipv4.ip_forward=1")
            rules = one_to_one_rules(NAT_WAN[side], LAN_HOST[side]) if side == "c" else \
                nat_rules(side in self.symmetric, LAN_HOST[side] if side in self.forward else None)
            _run("ip", "netns", "exec", nat, "nft", "-f", "-", stdin=rules)

        if self.upnp:
            self._up_upnp()

    def _up_upnp(self) -> None:
        inet, nat, host = self.ns("inet"), self.ns("natu"), self.ns("u")
        _run("ip", "-n", inet, "link", "add", "p_natu", "type", "veth", "peer", "name", "wan0", "netns", nat)
        _run("ip", "-n", inet, "link", "set", "p_natu", "master", "br0", "up")
        _run("ip", "-n", nat, "addr", "add", f"{UPNP_WAN}/24", "dev", "wan0")
        _run("ip", "-n", nat, "link", "set", "wan0", "up")
        for role, ip in UPNP_PEERS.items():
            _run("ip", "-n", self.ns(role), "addr", "add", f"{ip}/24", "dev", "eth0")
        _run("ip", "-n", nat, "link", "add", "lan0", "type", "veth", "peer", "name", "eth0", "netns", host)
        _run("ip", "-n", nat, "addr", "add", f"{UPNP_LAN_GW}/24", "dev", "lan0")
        _run("ip", "-n", nat, "link", "set", "lan0", "up")
        _run("ip", "-n", host, "addr", "add", f"{UPNP_HOST}/24", "dev", "eth0")
        _run("ip", "-n", host, "link", "set", "eth0", "up")
        _run("ip", "-n", host, "route", "add", "default", "via", UPNP_LAN_GW)
        _run("ip", "netns", "exec", nat, "sysctl", "-qw", "net.ipv4.ip_forward=1")
        _run("ip", "netns", "exec", nat, "nft", "-f", "-", stdin=UPNP_RULES)

    def start_miniupnpd(self, upnp: bool = True, natpmp: bool = True) -> Proc:
        """miniupnpd in the UPnP router's namespace, in the foreground (killed by close());
        `upnp=False`: a router that speaks NAT-PMP only."""
        conf = self.log_dir / f"{self.prefix}miniupnpd.conf"
        conf.write_text(miniupnpd_conf(str(self.log_dir / f"{self.prefix}miniupnpd.pid"),
                                       str(self.log_dir / f"{self.prefix}miniupnpd.leases"), upnp, natpmp))
        return self.spawn("natu", "miniupnpd", ["miniupnpd", "-d", "-f", str(conf), "-P",
                                                str(self.log_dir / f"{self.prefix}miniupnpd.pid")])

    def upnp_redirects(self) -> str:
        """The router's current port-forwarding rules (miniupnpd's chain), as nft lists them."""
        return _run("ip", "netns", "exec", self.ns("natu"), "nft", "list", "chain", "inet", "pn_upnp",
                    "prerouting_miniupnpd", check=False).stdout

    def conntrack_count(self, side: str) -> int:
        """Entries in a NAT router's conntrack table (for debugging)."""
        res = _run("ip", "netns", "exec", self.ns(f"nat{side}"), "cat",
                   "/proc/sys/net/netfilter/nf_conntrack_count", check=False)
        return int(res.stdout.strip() or 0)


def _kill_netns_pids(name: str) -> None:
    res = _run("ip", "netns", "pids", name, check=False)
    for pid in res.stdout.split():
        try:
            os.kill(int(pid), signal.SIGKILL)
        except (ProcessLookupError, ValueError):
            pass
    deadline = time.monotonic() + 2
    while time.monotonic() < deadline and _run("ip", "netns", "pids", name, check=False).stdout.strip():
        time.sleep(0.05)
