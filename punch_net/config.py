"""Node settings: defaults, the TOML config file (read with tomllib, written atomically
with tomli-w) and the merge rule: built-in defaults < config file < flags."""

from __future__ import annotations

import os
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import platformdirs

from punch_net.rcmgr.limits import LIMIT_DOCS, Limits

DEFAULT_PORT = 51820
DEFAULT_BOOTSTRAP = "/ip4/127.0.0.1/tcp/51820"
DEFAULT_NAMESPACE = "simple-chat"
ROLES = ("server", "listener", "dialer")


class ConfigError(Exception):
    """The config file cannot be read or has a value of the wrong type."""


def default_data_dir() -> Path:
    return Path(os.environ.get("PUNCH_DATA_DIR") or platformdirs.user_data_dir("punch"))


def default_config_path() -> Path:
    """`$PUNCH_CONFIG` names the config *file* itself; without it, config.toml in the
    platform's config folder."""
    env = os.environ.get("PUNCH_CONFIG")
    return Path(env) if env else Path(platformdirs.user_config_dir("punch")) / "config.toml"


@dataclass
class NodeConfig:
    role: str = "listener"
    listen_addr: str = "0.0.0.0"
    port: int | None = None  # None: the role's default (51820 for server, any for others)
    bootstrap: list[str] = field(default_factory=lambda: [DEFAULT_BOOTSTRAP])
    namespace: str = DEFAULT_NAMESPACE
    data_dir: Path = field(default_factory=default_data_dir)
    identity: Path | None = None
    ephemeral: bool = False
    dht_mode: str = "auto"  # auto: server for reachable roles, client for the dialer
    # what we advertise (punch_net/p2p/addresses.py): kubo's Addresses.Announce / NoAnnounce
    announce: list[str] = field(default_factory=list)
    no_announce: list[str] = field(default_factory=list)
    port_mapping: bool = True  # NAT-PMP / UPnP IGD mapping of the listen port (reach/portmap.py)
    mdns: bool = True  # LAN discovery (listener and dialer roles)
    # dialer
    message: str = "Hello from dialer!"
    count: int | None = None
    interval: float = 2.0
    timeout: float = 30.0
    # torrent roles
    share_dir: Path | None = None
    download_dir: Path | None = None
    info_hash: str | None = None
    no_seed: bool = False
    progress_bar: bool = False  # human-mode rich progress bar (not in --json, not in the TUI)
    torrent_interactive: bool = False  # the TUI: the client stays up (no list-and-exit)
    # timeouts
    dial_timeout: float = 10.0
    request_timeout: float = 10.0
    close_timeout: float = 5.0  # how long stopping may spend closing connections (torrent-client CLI: 0.1)
    # connection manager and DHT upkeep (punch_net/routing/connmgr.py, punch_net/dht/refresh.py)
    conn_low: int = 32
    conn_high: int = 48
    dht_refresh_interval: float = 120.0
    # NAT traversal (punch_net/relay/): relay service on server/monitor, reservations, DCUtR
    relay_service: bool = True  # act as a circuit relay v2 hop (roles in RELAY_SERVICE_ROLES)
    relay_max_reservations: int = 128
    relay_max_reservations_per_ip: int = 8
    relay_reservation_ttl: int = 3600
    relay_max_circuits: int = 64
    relay_max_circuits_per_peer: int = 16
    relay_circuit_duration: int = 300
    relay_circuit_bytes: int = 1 << 20
    relays: list[str] = field(default_factory=list)  # static relays (--relay), always reserved
    auto_relay: bool = True  # when private: reserve on bootstrap peers that are relays
    hole_punch: bool = True  # DCUtR upgrades of relayed connections
    # operations (punch_net/ops/, punch_net/routing/reputation.py, selection.py, roles/monitor.py)
    metrics_port: int | None = None  # None: no metrics endpoint
    metrics_host: str = "127.0.0.1"
    control: bool = True  # headless nodes serve a control socket in the data dir
    control_socket: Path | None = None  # None: <data_dir>/control.sock
    web_port: int | None = None  # browser console (ops/web.py): None = the role's default (monitor 8080), 0 = off
    web_host: str | None = None  # None: 127.0.0.1; the token is always required
    reputation_half_life: float = 3600.0
    capabilities_interval: float = 30.0
    weight_cpu: float = 0.25
    weight_memory: float = 0.15
    weight_disk: float = 0.10
    weight_latency: float = 0.20
    weight_reputation: float = 0.30
    crawl_interval: float = 60.0
    weighted: bool = False  # dialer: one best node per message (selection.py) instead of all
    # resource limits (punch_net/rcmgr/): TOML [limits], one key per Limits field
    limits: Limits = field(default_factory=Limits)

    def effective_port(self) -> int:
        if self.port is not None:
            return self.port
        return DEFAULT_PORT if self.role == "server" else 0

    def identity_path(self) -> Path:
        return self.identity or self.data_dir / f"identity-{self.role}.key"

    def is_dht_server(self) -> bool:
        if self.dht_mode == "server":
            return True
        if self.dht_mode == "client":
            return False
        return self.role != "dialer"


# The keys a config file may set, by section, with a comment for `punch config init`.
CONFIG_KEYS: dict[str, dict[str, str]] = {
    "node": {
        "listen_addr": "Interface to listen on (0.0.0.0 = all IPv4 interfaces).",
        "port": "TCP port; 0 = any free port. The server defaults to 51820.",
        "bootstrap": "Bootstrap multiaddrs, with or without /p2p/<peer id>.",
        "namespace": "Namespace listeners announce and dialers look up.",
        "data_dir": "Where the identity key and state live.",
        "dht_mode": "auto, server or client.",
        "announce": "Addresses to advertise instead of the listen ones (e.g. a cloud VM's public IP).",
        "no_announce": "Addresses (or /ip4/NET/ipcidr/N networks) never to advertise.",
        "port_mapping": "Map the listen port on the router (NAT-PMP, UPnP IGD).",
        "mdns": "Find peers on the local network with mDNS (listener and dialer).",
        "dial_timeout": "Seconds before a dial to a silent peer gives up.",
        "request_timeout": "Seconds to wait for a command reply.",
        "conn_low": "Connection manager: prune down to this many connections.",
        "conn_high": "Connection manager: start pruning above this many connections.",
        "dht_refresh_interval": "Seconds between DHT routing-table refreshes (0 = off).",
    },
    "dialer": {
        "message": "Text the dialer sends (numbered: 'Message #N').",
        "interval": "Seconds between messages.",
        "timeout": "With --count: seconds to wait for replies before exiting 1.",
    },
    "relay": {
        "relay_service": "server/monitor: run a circuit relay v2 service for peers behind NATs.",
        "relay_max_reservations": "Relay: reservations held for others, in total.",
        "relay_max_reservations_per_ip": "Relay: reservations per source IP address.",
        "relay_reservation_ttl": "Relay: seconds a reservation lasts before it must be renewed.",
        "relay_max_circuits": "Relay: circuits relayed at once, in total.",
        "relay_max_circuits_per_peer": "Relay: circuits at once towards one reserved peer.",
        "relay_circuit_duration": "Relay: seconds one circuit may last (0 = unlimited).",
        "relay_circuit_bytes": "Relay: bytes one circuit may carry (0 = unlimited).",
        "relays": "Relays to reserve a slot on (multiaddrs with /p2p/ID), like --relay.",
        "auto_relay": "When found unreachable, reserve on bootstrap peers that are relays.",
        "hole_punch": "Try DCUtR hole punching to upgrade relayed connections to direct.",
    },
    "selection": {
        "weight_cpu": "Weighted routing: weight of free CPU (1 - max(cpu%, load1/cores)).",
        "weight_memory": "Weighted routing: weight of available / total memory.",
        "weight_disk": "Weighted routing: weight of free disk (full at 10 GiB).",
        "weight_latency": "Weighted routing: weight of 100 / (100 + rtt_ms).",
        "weight_reputation": "Weighted routing: weight of our reputation score of the peer.",
        "reputation_half_life": "Seconds for reputation observations to lose half their weight.",
        "capabilities_interval": "Seconds between capability re-announcements to peers that asked.",
    },
    "operations": {
        "metrics_port": "Serve Prometheus metrics on this port (unset = off).",
        "metrics_host": "Interface for the metrics endpoint.",
        "control": "Serve the control socket (punch-tui --attach) in the data dir.",
        "control_socket": "Control socket path (default <data_dir>/control.sock).",
        "web_port": "Browser console port (unset: 8080 for the monitor, off for other roles; 0 = off).",
        "web_host": "Interface for the web console (default 127.0.0.1); any other is reachable from elsewhere.",
        "crawl_interval": "monitor: seconds between crawl rounds.",
    },
    "torrent": {
        "share_dir": "torrent-server: share every regular file directly inside this directory.",
        "download_dir": "torrent-client: where downloads go (default: the current directory).",
    },
    "limits": dict(LIMIT_DOCS),
    "tui": {"theme": "Theme name for punch-tui (see themes/)."},
}
# Example values shown (commented out) for keys without a shared default.
CONFIG_EXAMPLES: dict[str, Any] = {"port": DEFAULT_PORT, "share_dir": "~/shared", "download_dir": "~/Downloads"}


def read_config_file(path: Path) -> dict[str, Any]:
    import tomllib  # here: a node started without --config does not load it (~2 ms)

    try:
        with path.open("rb") as fh:
            data = tomllib.load(fh)
    except FileNotFoundError:
        raise ConfigError(f"config file {path} does not exist") from None
    except OSError as exc:
        raise ConfigError(f"cannot read config file {path}: {exc.strerror}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"config file {path} is not valid TOML: {exc}") from None
    for section, values in data.items():
        if section not in CONFIG_KEYS or not isinstance(values, dict):
            raise ConfigError(f"config file {path}: unknown section [{section}]")
        for key in values:
            if key not in CONFIG_KEYS[section]:
                raise ConfigError(f"config file {path}: unknown key {key!r} in [{section}]")
    return data


def apply_config(cfg: NodeConfig, data: dict[str, Any]) -> NodeConfig:
    """Copy a config file's values (every section but [tui]) into `cfg`, checking types."""
    types = {f.name: f.type for f in fields(NodeConfig)}
    for section in ("node", "dialer", "relay", "selection", "operations", "torrent"):
        for key, value in data.get(section, {}).items():
            want = str(types[key])
            ok = (
                ("list" in want and isinstance(value, list) and all(isinstance(v, str) for v in value))
                or ("Path" in want and isinstance(value, str))
                or ("int" in want and isinstance(value, int) and not isinstance(value, bool))
                or ("float" in want and isinstance(value, int | float) and not isinstance(value, bool))
                or (want == "str" and isinstance(value, str))
                or (want == "bool" and isinstance(value, bool))
            )
            if not ok:
                raise ConfigError(f"config: [{section}] {key} has the wrong type ({value!r})")
            setattr(cfg, key, Path(value).expanduser() if "Path" in want else value)
    limits = data.get("limits", {})
    if limits:
        merged = {f.name: getattr(cfg.limits, f.name) for f in fields(Limits)}
        for key, value in limits.items():
            if isinstance(value, bool) or not isinstance(value, int | float) or (
                    isinstance(value, float) and isinstance(merged[key], int)):
                raise ConfigError(f"config: [limits] {key} has the wrong type ({value!r})")
            merged[key] = value
        try:
            cfg.limits = Limits(**merged)
        except ValueError as exc:
            raise ConfigError(f"config: {exc}") from None
    return cfg


def make_private_dir(path: Path) -> None:
    """Create `path` (and missing parents) if needed; the directory itself gets mode 0700:
    it holds the node's key, its reputation records and its control socket."""
    path.mkdir(parents=True, exist_ok=True, mode=0o700)


def prepare_data_dir(cfg: NodeConfig) -> None:
    """Before a node starts: create its data dir (0700) and make sure it can write there
    and read or create its key, so a bad `--data-dir` or `--identity` is one line
    (ConfigError) instead of a traceback from whichever file is touched first."""
    if cfg.ephemeral:
        return
    _writable_dir(cfg.data_dir, "data dir")
    key = cfg.identity_path()
    try:
        exists = key.exists()
        if exists:
            key.open("rb").close()
    except OSError as exc:
        raise ConfigError(f"cannot read identity key {key}: {exc.strerror or exc}") from None
    if not exists and key.parent != cfg.data_dir:
        _writable_dir(key.parent, "directory for the identity key")


def _writable_dir(place: Path, what: str) -> None:
    try:
        if place.exists() and not place.is_dir():
            raise ConfigError(f"{what} {place} is not a directory")
        make_private_dir(place)
        probe = place / f".punch-write-test.{os.getpid()}"
        # a real write: access() says yes to root on a read-only mount
        os.close(os.open(probe, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
        probe.unlink()
    except OSError as exc:
        raise ConfigError(f"cannot write in {what} {place}: {exc.strerror or exc}") from None


def atomic_write(path: Path, data: bytes, mode: int = 0o644) -> None:
    """Write via a temp file and rename, so a crash never leaves a half-written file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    try:
        os.write(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)


def default_config_text() -> str:
    """A commented default config: each value written by tomli-w under its comment."""
    import tomli_w  # only `punch config init` writes TOML

    defaults = NodeConfig()
    values: dict[str, dict[str, Any]] = {  # None = commented out
        "node": {
            "listen_addr": defaults.listen_addr,
            "port": None,
            "bootstrap": defaults.bootstrap,
            "namespace": defaults.namespace,
            "data_dir": str(defaults.data_dir),
            "dht_mode": defaults.dht_mode,
            "dial_timeout": defaults.dial_timeout,
            "request_timeout": defaults.request_timeout,
        },
        "dialer": {
            "message": defaults.message,
            "interval": defaults.interval,
            "timeout": defaults.timeout,
        },
        "relay": {
            "relay_service": defaults.relay_service,
            "relay_max_reservations": defaults.relay_max_reservations,
            "relay_max_reservations_per_ip": defaults.relay_max_reservations_per_ip,
            "relay_reservation_ttl": defaults.relay_reservation_ttl,
            "relay_max_circuits": defaults.relay_max_circuits,
            "relay_max_circuits_per_peer": defaults.relay_max_circuits_per_peer,
            "relay_circuit_duration": defaults.relay_circuit_duration,
            "relay_circuit_bytes": defaults.relay_circuit_bytes,
            "relays": defaults.relays,
            "auto_relay": defaults.auto_relay,
            "hole_punch": defaults.hole_punch,
        },
        "torrent": {"share_dir": None, "download_dir": None},
        "limits": {f.name: getattr(defaults.limits, f.name) for f in fields(Limits)},
        "tui": {"theme": "punch-dark"},
    }
    out = ["# Punch configuration. Flags given on the command line override these values.\n"]
    for section, items in values.items():
        out.append(f"\n[{section}]\n")
        for key, value in items.items():
            out.append(f"# {CONFIG_KEYS[section][key]}\n")
            if value is None:  # no sensible shared default: shown, left commented out
                out.append(f"# {tomli_w.dumps({key: CONFIG_EXAMPLES[key]})}")
            else:
                out.append(tomli_w.dumps({key: value}))
    return "".join(out)


def update_config_file(path: Path, section: str, key: str, value: Any) -> None:
    """Set one value (e.g. the TUI theme) and rewrite the file atomically."""
    import tomli_w

    data: dict[str, Any] = {}
    if path.exists():
        data = read_config_file(path)
    data.setdefault(section, {})[key] = value
    atomic_write(path, tomli_w.dumps(data).encode())
