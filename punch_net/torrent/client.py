"""Client side of `/punch/torrent/1.0.0`: one-shot catalogue and metainfo requests, and a
message reader over a stream (trio adapter around the pure `wire` codec)."""

from __future__ import annotations

import hashlib
from collections.abc import Awaitable, Callable
from typing import Any

import trio
from libp2p.abc import IHost, INetStream
from libp2p.custom_types import TProtocol
from libp2p.network.stream.exceptions import StreamEOF
from libp2p.peer.id import ID

from punch_net.p2p.streams import open_with
from punch_net.torrent import PROTOCOL_ID, wire
from punch_net.torrent.metainfo import Metainfo, MetainfoError, decode
from punch_net.torrent.names import UnsafeName, check_name

READ_SIZE = 1 << 20
COALESCE_BELOW = 256 * 1024
MAX_CATALOGUE_ENTRIES = 10_000


class PeerError(Exception):
    """A peer failed us: unreachable, protocol error, wrong or unsafe data."""


class BadMetainfo(PeerError):
    """The peer's metainfo does not hash to the info hash, or is unsafe (e.g. its name)."""


class NotServing(PeerError):
    """The peer answered that it does not serve the torrent (wire.UNKNOWN_TORRENT)."""


class MessageStream:
    """Reads whole messages from a stream; EOF -> PeerError. With `coalesce` (seconds), a
    read that returned little is followed by a short sleep, for bulk transfers."""

    def __init__(self, stream: INetStream, coalesce: float = 0.0) -> None:
        self.stream = stream
        self.coalesce = coalesce
        self.decoder = wire.Decoder(wire.SERVER_TYPES)
        self.pending: list[wire.Message] = []

    async def read_batch(self) -> list[wire.Message]:
        """At least one message (all those that arrived together)."""
        while not self.pending:
            try:
                data = await self.stream.read(READ_SIZE)
            except StreamEOF:
                data = b""
            if not data:
                raise PeerError("peer closed the stream")
            self.pending = self.decoder.feed(data)
            if self.coalesce and len(data) < COALESCE_BELOW:
                await trio.sleep(self.coalesce)  # let frames pile up: one read (and window update) for many
        out, self.pending = self.pending, []
        return out

    async def read_one(self) -> wire.Message:
        batch = await self.read_batch()
        first, self.pending = batch[0], batch[1:]
        return first


async def open_stream(host: IHost, peer: ID, timeout: float, first: bytes,
                      prepare: Callable[[INetStream], Awaitable[None]] | None = None) -> INetStream:
    """A torrent stream to `peer`; `first` (our opening message) goes out with the protocol
    proposal, so its answer comes a round trip sooner (`open_with`)."""
    try:
        with trio.fail_after(timeout):
            return await open_with(host, peer, TProtocol(PROTOCOL_ID), first, prepare)
    except trio.TooSlowError:
        raise PeerError(f"open stream to {peer}: timed out") from None
    except Exception as exc:
        raise PeerError(f"open stream to {peer}: {exc or type(exc).__name__}") from None


async def _close(stream: INetStream) -> None:
    try:
        await stream.close()
    except Exception:
        pass


def check_catalogue(entries: list[Any]) -> list[dict[str, Any]]:
    """Keep only well-formed entries with safe names (names from the network are data)."""
    out: list[dict[str, Any]] = []
    for e in entries[:MAX_CATALOGUE_ENTRIES]:
        if not isinstance(e, dict):
            continue
        name, size, ih = e.get("name"), e.get("size"), e.get("info_hash")
        if not (isinstance(name, str) and isinstance(size, int) and isinstance(ih, str)):
            continue
        if size < 0 or len(ih) != 64 or any(c not in "0123456789abcdef" for c in ih):
            continue
        try:
            check_name(name)
        except UnsafeName:
            continue
        out.append({"name": name, "size": size, "info_hash": ih})
    return out


async def _ask(host: IHost, peer: ID, request: bytes, what: str, timeout: float) -> wire.Message:
    """One request on a fresh stream, one message back; every failure is a PeerError."""
    stream = await open_stream(host, peer, timeout, first=request)
    try:
        with trio.fail_after(timeout):
            return await MessageStream(stream).read_one()
    except trio.TooSlowError:
        raise PeerError(f"{what} from {peer}: no answer within {timeout:g}s") from None
    except wire.ProtocolError as exc:
        raise PeerError(f"{what} from {peer}: {exc}") from None
    except PeerError:
        raise
    except Exception as exc:
        raise PeerError(f"{what} from {peer}: {exc or type(exc).__name__}") from None
    finally:
        await _close(stream)


async def fetch_catalogue(host: IHost, peer: ID, timeout: float) -> list[dict[str, Any]]:
    msg = await _ask(host, peer, wire.encode_list(), "catalogue", timeout)
    if msg.type != wire.CATALOGUE:
        raise PeerError(f"catalogue from {peer}: unexpected answer 0x{msg.type:02x}")
    return check_catalogue(msg.json())


async def fetch_metainfo(host: IHost, peer: ID, info_hash: bytes, timeout: float) -> Metainfo:
    """Metainfo whose SHA-256 is `info_hash` and whose name is safe, or PeerError."""
    msg = await _ask(host, peer, wire.encode_get_meta(info_hash), "metainfo", timeout)
    if msg.type == wire.ERROR:
        raise PeerError(f"metainfo from {peer}: {msg.data.decode(errors='replace')}")
    if msg.type != wire.META or msg.info_hash != info_hash:
        raise PeerError(f"metainfo from {peer}: unexpected answer")
    if hashlib.sha256(msg.data).digest() != info_hash:
        raise BadMetainfo(f"metainfo from {peer} does not match the info hash")
    try:
        return decode(msg.data)
    except MetainfoError as exc:
        raise BadMetainfo(f"metainfo from {peer}: {exc}") from None
