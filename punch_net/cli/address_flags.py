"""The flags that say how others reach this node (`--announce`, `--no-announce`,
`--no-port-mapping`, `--no-mdns`), shared by every role."""

from __future__ import annotations

import argparse

from punch_net.config import NodeConfig
from punch_net.p2p.addresses import AddressError, parse_announce, parse_no_announce


def _announce(text: str) -> str:
    try:
        return str(parse_announce(text))
    except AddressError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _no_announce(text: str) -> str:
    try:
        parse_no_announce(text)
    except AddressError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    return text.strip()


def add_address_flags(parser: argparse.ArgumentParser) -> None:
    g = parser.add_argument_group("reachability (what others dial)")
    g.add_argument("--announce", action="append", metavar="MULTIADDR", type=_announce,
                   help="advertise this address instead of the listen ones, e.g. a cloud VM's "
                        "public /ip4/IP/tcp/PORT (repeatable)")
    g.add_argument("--no-announce", action="append", metavar="MULTIADDR", type=_no_announce,
                   help="never advertise this address, or any in /ip4/NET/ipcidr/N (repeatable)")
    g.add_argument("--no-port-mapping", action="store_true",
                   help="do not map the listen port on the router (NAT-PMP, UPnP IGD)")
    g.add_argument("--no-mdns", action="store_true", help="do not look for peers on the LAN (mDNS)")


def configure_addresses(cfg: NodeConfig, args: argparse.Namespace) -> None:
    """Flags override the config file; the file's values are checked here too (one line)."""
    if getattr(args, "announce", None):
        cfg.announce = list(args.announce)
    if getattr(args, "no_announce", None):
        cfg.no_announce = list(args.no_announce)
    if getattr(args, "no_port_mapping", False):
        cfg.port_mapping = False
    if getattr(args, "no_mdns", False):
        cfg.mdns = False
    for text in cfg.announce:
        parse_announce(text)
    for text in cfg.no_announce:
        parse_no_announce(text)
