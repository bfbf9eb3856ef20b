"""Opening a stream costs two round trips of protocol negotiation before any data.

Bug: `MultiselectClient.select_one_of` writes the multistream header, waits for its echo,
then writes the protocol and waits again: 2 RTTs for every stream (a DHT query, a torrent
stream, a dialer's command) and for the security and muxer choice of every new connection.
Fix (what go-libp2p's `SelectProtoOrFail` does): the header and the first protocol go out
in one flight, then both answers are read: 1 RTT. A peer that says "na" to it is offered
the other protocols one at a time, as before; the wire is the same, so any multistream
listener understands it. Process-wide; idempotent.
Upstream: https://github.com/libp2p/py-libp2p/blob/v0.8.1/libp2p/protocol_muxer/multiselect_client.py#L60
(`select_one_of`); no upstream issue found.
"""

from __future__ import annotations

from collections.abc import Sequence

import trio
from libp2p.abc import IMultiselectCommunicator
from libp2p.custom_types import TProtocol
from libp2p.protocol_muxer import multiselect_client as ms
from libp2p.protocol_muxer.exceptions import (
    MultiselectClientError,
    MultiselectCommunicatorError,
    ProtocolNotSupportedError,
)

ORIGINAL_SELECT_ONE_OF = ms.MultiselectClient.select_one_of


async def _select_in_one_flight(client: ms.MultiselectClient, protocols: Sequence[TProtocol],
                                communicator: IMultiselectCommunicator, timeout: int) -> TProtocol:
    first = protocols[0]
    wanted = first if first is not None else ""  # py-libp2p writes a None protocol as ""
    try:
        await communicator.write(ms.MULTISELECT_PROTOCOL_ID)
        await communicator.write(wanted)  # before the header's echo: the RTT saved
    except MultiselectCommunicatorError as error:
        raise MultiselectClientError(f"handshake write failed: {error}") from error
    try:
        header = await communicator.read()
    except MultiselectCommunicatorError as error:
        raise MultiselectClientError(f"handshake read failed: {error}") from error
    if not ms.is_valid_handshake(header):
        raise MultiselectClientError(
            f"multiselect protocol ID mismatch: expected {ms.MULTISELECT_PROTOCOL_ID}, got {header!r}")
    try:
        response = await communicator.read()
    except MultiselectCommunicatorError as error:
        raise MultiselectClientError(f"protocol read failed: {error}, protocol={first}") from error
    if response == wanted:
        return first
    if response == ms.MULTISELECT_PROTOCOL_ID:  # the peer restarted the handshake: py-libp2p's path copes
        return await client.try_select(communicator, first)
    if response != ms.PROTOCOL_NOT_FOUND_MSG:
        raise MultiselectClientError(
            f"unrecognized response: {response!r}, expected {wanted!r} or "
            f"{ms.PROTOCOL_NOT_FOUND_MSG!r}, protocol={first}")
    errors = [f"protocol not supported: {first}, response={response!r}"]
    for protocol in protocols[1:]:
        try:
            return await client.try_select(communicator, protocol)
        except ProtocolNotSupportedError as error:
            errors.append(str(error))
    raise MultiselectClientError(
        f"protocols not supported: tried {list(protocols)}, timeout={timeout}s. Last error: {errors[-1]}")


def install() -> None:
    cls = ms.MultiselectClient
    if cls.select_one_of is not ORIGINAL_SELECT_ONE_OF:
        return

    async def select_one_of(self: ms.MultiselectClient, protocols: Sequence[TProtocol],
                            communicator: IMultiselectCommunicator,
                            negotiate_timeout: int = ms.DEFAULT_NEGOTIATE_TIMEOUT) -> TProtocol:
        protocols = list(protocols)
        if not protocols:
            return await ORIGINAL_SELECT_ONE_OF(self, protocols, communicator, negotiate_timeout)
        with trio.move_on_after(negotiate_timeout):
            return await _select_in_one_flight(self, protocols, communicator, negotiate_timeout)
        raise MultiselectClientError(
            f"response timed out after {negotiate_timeout}s, protocols tried: {protocols}")

    cls.select_one_of = select_one_of  # type: ignore[method-assign]
