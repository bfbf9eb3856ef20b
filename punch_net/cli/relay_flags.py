"""The NAT traversal flags every role shares (`punch ROLE --relay MA`, `--no-relay`, limits)."""

from __future__ import annotations

import argparse

from punch_net.config import ConfigError, NodeConfig
from punch_net.p2p.addresses import AddressError, parse_dial_target

LIMIT_FLAGS = {
    # flag suffix -> (NodeConfig field, help)
    "max-reservations": ("relay_max_reservations", "reservations held for others, in total (128)"),
    "max-reservations-per-ip": ("relay_max_reservations_per_ip", "reservations per source IP (8)"),
    "reservation-ttl": ("relay_reservation_ttl", "seconds a reservation lasts (3600)"),
    "max-circuits": ("relay_max_circuits", "circuits relayed at once, in total (64)"),
    "max-circuits-per-peer": ("relay_max_circuits_per_peer", "circuits at once towards one peer (16)"),
    "circuit-duration": ("relay_circuit_duration", "seconds one circuit may last, 0 = unlimited (300)"),
    "circuit-bytes": ("relay_circuit_bytes", "bytes one circuit may carry, 0 = unlimited (1048576)"),
}


def _non_negative_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"invalid integer {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"{text} must be 0 or more")
    return value


def _relay_addr(text: str) -> str:

    try:
        target = parse_dial_target(text)
    except AddressError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    return str(target)


def add_relay_flags(parser: argparse.ArgumentParser, role: str) -> None:
    g = parser.add_argument_group("NAT traversal (relay, hole punching)")
    g.add_argument("--relay", action="append", metavar="MULTIADDR", type=_relay_addr, dest="relays",
                   help="relay to reserve a slot on and advertise /p2p-circuit addresses through (repeatable)")
    g.add_argument("--no-relay", action="store_true",
                   help="do not run the relay service (server), and reserve on no relay")
    g.add_argument("--no-auto-relay", action="store_true",
                   help="when unreachable, do not reserve on bootstrap peers that are relays")
    g.add_argument("--no-hole-punch", action="store_true", help="keep relayed connections relayed (no DCUtR)")
    for suffix, (_, text) in LIMIT_FLAGS.items():
        g.add_argument(f"--relay-{suffix}", type=_non_negative_int, metavar="N", help=f"relay service: {text}")


def configure_relay(cfg: NodeConfig, args: argparse.Namespace) -> None:
    """Flags override the config file."""
    if getattr(args, "relays", None):
        cfg.relays = list(args.relays)
    if getattr(args, "no_relay", False):
        cfg.relay_service = False
        cfg.auto_relay = False
        cfg.relays = []
    if getattr(args, "no_auto_relay", False):
        cfg.auto_relay = False
    if getattr(args, "no_hole_punch", False):
        cfg.hole_punch = False
    for suffix, (name, _) in LIMIT_FLAGS.items():
        value = getattr(args, f"relay_{suffix.replace('-', '_')}", None)
        if value is not None:
            setattr(cfg, name, value)
    if cfg.relay_max_reservations < 1 or cfg.relay_reservation_ttl < 1 or cfg.relay_max_circuits < 1:

        raise ConfigError("relay limits: max reservations, reservation TTL and max circuits must be at least 1")
