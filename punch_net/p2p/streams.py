"""Small helpers for py-libp2p streams, used by every protocol adapter."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from libp2p.abc import IHost, INetStream
from libp2p.custom_types import TProtocol
from libp2p.host.exceptions import StreamFailure
from libp2p.network.stream.exceptions import StreamEOF
from libp2p.peer.id import ID
from libp2p.protocol_muxer.exceptions import MultiselectCommunicatorError
from libp2p.protocol_muxer.multiselect_client import MULTISELECT_PROTOCOL_ID
from libp2p.protocol_muxer.multiselect_communicator import MultiselectCommunicator
from libp2p.utils.varint import encode_delim

READ_CHUNK = 64 * 1024


async def read_some(stream: INetStream, n: int = READ_CHUNK) -> bytes:
    """One read; b"" at a clean end of stream (py-libp2p raises StreamEOF instead)."""
    try:
        return await stream.read(n)
    except StreamEOF:
        return b""


async def reset_quietly(stream: INetStream) -> None:
    """Reset a stream we are giving up on; it may be gone already, which is fine."""
    try:
        await stream.reset()
    except Exception:
        pass


async def open_with(host: IHost, peer: ID, protocol: TProtocol, first: bytes,
                    prepare: Callable[[INetStream], Awaitable[None]] | None = None) -> INetStream:
    """A new stream on which `protocol` is proposed and `first`, the protocol's opening
    message, sent in the same flight (multistream's "lazy" client, as go-libp2p and
    rust-libp2p do it); back once the peer has accepted the protocol, by which time its
    answer to `first` is on its way: one round trip where `new_stream` then `write` take
    two. `prepare` runs on the stream before anything is sent (e.g. to grow its window).
    A peer that refuses the protocol raises StreamFailure (it reads `first` as garbage)."""
    stream = await host.get_network().new_stream(peer)
    try:
        if prepare is not None:
            await prepare(stream)
        await stream.write(encode_delim(MULTISELECT_PROTOCOL_ID.encode()) + encode_delim(protocol.encode()) + first)
        answers = MultiselectCommunicator(stream)  # reads exactly its lines: `first`'s answer stays
        try:
            header, answer = await answers.read(), await answers.read()
        except MultiselectCommunicatorError as exc:
            raise StreamFailure(f"{protocol}: no protocol answer ({exc})") from None
        if header != MULTISELECT_PROTOCOL_ID or answer != protocol:
            raise StreamFailure(f"{protocol} refused: {answer!r}")
        stream.set_protocol(protocol)
        return stream
    except BaseException:
        await reset_quietly(stream)
        raise
