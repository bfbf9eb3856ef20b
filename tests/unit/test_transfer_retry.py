"""When a download tries a provider again (torrent/transfer.py `retry_after`)."""

from __future__ import annotations

from punch_net.torrent.transfer import RETRY_DEAD_PEER_MAX, RETRY_PEER_AFTER, retry_after


def test_a_peer_that_answered_is_tried_again_after_the_base_wait() -> None:
    assert retry_after(0) == retry_after(1) == RETRY_PEER_AFTER


def test_failed_dials_in_a_row_double_the_wait_up_to_the_cap() -> None:
    waits = [retry_after(n) for n in range(1, 12)]
    assert waits[:4] == [RETRY_PEER_AFTER * k for k in (1, 2, 4, 8)]
    assert waits == sorted(waits)
    assert waits[-1] == RETRY_DEAD_PEER_MAX and max(waits) == RETRY_DEAD_PEER_MAX
