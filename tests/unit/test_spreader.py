"""A seed's spreader (super-seeding): offers, REJECTs, the reveal, choke, leave, stale offers."""

from __future__ import annotations

import random

from punch_net.torrent.spreader import OWNED, POOL, SENT, STALL_TICKS, Spreader


def told(s: Spreader, key: str) -> set[int]:
    return {i for i, t in enumerate(s.members[key].told) if t}


def test_alone_a_downloader_is_shown_everything_and_served_anything() -> None:
    s = Spreader(40, offer=4, rng=random.Random(1))
    assert sum(s.join("a")) == 40 and not s.spreading
    assert all(s.request("a", i) for i in range(40)) and s.take("a") == []
    s.read(5)
    assert s.request("a", 5)  # alone: a copy sent before is sent again


def test_downloaders_are_offered_distinct_pieces_one_more_per_request() -> None:
    s = Spreader(64, offer=4, rng=random.Random(2))
    s.join("a")
    bits = s.join("b")
    offered_b = {i for i, t in enumerate(bits) if t}
    assert len(offered_b) == 4 and s.spreading and s.take("b") == []  # the bitfield carries them
    c = s.join("c")
    offered_c = {i for i, t in enumerate(c) if t}
    assert len(offered_c) == 4 and not offered_b & offered_c
    first = min(offered_b)
    assert s.request("b", first) and s.state[first] == OWNED
    (new,) = s.take("b")  # one more offer for the one it asked for
    assert new not in offered_b | offered_c and s.take("b") == []
    # another's offer, or a piece already sent: REJECT, and it no longer counts on us for it
    assert not s.request("c", first) and first not in told(s, "c")
    s.read(first)
    assert s.state[first] == SENT and not s.request("c", first)
    # a, shown everything while alone, takes pieces nobody was offered and gets no offers
    free = next(i for i in range(64) if s.state[i] == POOL)
    assert s.request("a", free) and s.take("a") == []


def test_once_every_piece_left_everyone_is_told_everything() -> None:
    s = Spreader(20, offer=3, rng=random.Random(3))
    s.join("a")
    s.join("b")
    woken: list[int] = []
    s.wake = lambda: woken.append(1)
    for i in range(19):
        s.request("a", i)
        s.read(i)
    assert s.unsent == 1 and not woken
    s.take("b")
    missing = set(range(20)) - told(s, "b")
    s.read(19)
    assert woken and set(s.take("b")) == missing and told(s, "b") == set(range(20))
    assert s.request("b", 0) and not s.spreading  # a plain seed now: serves duplicates


def test_choke_and_leave_hand_pieces_to_the_others_and_the_last_leave_resets() -> None:
    s = Spreader(30, offer=5, rng=random.Random(4))
    s.join("a")
    s.join("b")
    offered = set(s.members["b"].offered)
    s.request("b", min(offered))
    s.choke("b", True)
    assert not s.members["b"].offered and s.take("b") != []  # the top-up HAVE was owed before the choke
    assert all(s.state[i] == POOL for i in offered - {min(offered)})
    s.release("b", [min(offered)])  # its queue dropped by the choke
    assert s.state[min(offered)] == POOL
    s.choke("b", False)
    assert len(s.members["b"].offered) == 5
    s.join("c")
    s.read(next(iter(s.members["c"].offered)))
    s.leave("b")
    assert all(s.owner.get(i) != "b" for i in range(30))
    s.leave("a")
    s.leave("c")
    assert s.unsent == 30 and not s.members and not any(s.state)


def test_offers_left_unrequested_go_to_others() -> None:
    s = Spreader(60, offer=4, rng=random.Random(5))
    s.join("x")  # shown everything (alone), offered nothing
    s.join("a")
    s.join("b")
    assert s.request("a", min(s.members["a"].offered))  # a has a request queued: busy
    a_offers = set(s.members["a"].offered)
    stale = set(s.members["b"].offered)
    for _ in range(3):
        s.tick()
    assert set(s.members["a"].offered) == a_offers
    fresh = set(s.members["b"].offered)
    assert len(fresh) == 4 and not fresh & stale
    assert s.request("b", min(stale))  # told before: still served while nobody else took it


def test_the_last_downloader_left_is_told_everything() -> None:
    """Two downloaders, one leaves mid-spread (killed): the one left is the only downloader,
    so nothing is spread any more. It must learn of every piece, the ones sent to the one
    that left included, or it waits for offers that never come (found as a resumed
    download that stalled when it reached the seed before the killed one's stream ended)."""
    s = Spreader(40, offer=4, rng=random.Random(6))
    s.join("old")
    s.join("new")
    woken: list[int] = []
    s.wake = lambda: woken.append(1)
    for i in range(20):  # the old downloader had these
        s.request("old", i)
        s.read(i)
    s.take("new")
    before = told(s, "new")
    s.leave("old")
    assert not s.spreading and woken
    assert set(s.take("new")) == set(range(40)) - before and told(s, "new") == set(range(40))
    assert s.request("new", 3)  # sent to the old one: served again


def test_a_downloader_that_stops_taking_pieces_loses_its_offers_and_queue() -> None:
    """A downloader with requests queued but no piece read for it in STALL_TICKS ticks (frozen,
    or gone without a FIN) holds nothing: its offers and queued pieces go to the others,
    else they would wait for the seed's idle timeout (120 s) to get them. One that is being
    served keeps its offers and queue."""
    s = Spreader(64, offer=4, rng=random.Random(7))
    s.join("first")  # shown everything (alone then)
    s.join("frozen")
    s.join("live")
    s.join("busy")
    queued = min(s.members["frozen"].offered)
    assert s.request("frozen", queued)  # queued at the seed, never read: its writer is stuck
    held = set(s.members["frozen"].offered) | {queued}
    first, second = sorted(s.members["busy"].offered)[:2]
    assert s.request("busy", first) and s.request("busy", second)
    busy_offers = set(s.members["busy"].offered)
    for tick in range(STALL_TICKS + 1):
        if tick == STALL_TICKS - 1:
            s.read(first)
            s.served("busy")  # pieces written to it now and then: not stalled
        s.tick()
    assert not s.members["frozen"].offered
    assert not any(s.state[i] == OWNED and s.owner.get(i) == "frozen" for i in range(64))
    assert set(s.members["busy"].offered) == busy_offers and s.owner[second] == "busy"
    # the live downloader is offered (and served) what the frozen one held
    assert held <= set(s.members["live"].offered) | {i for i in range(64) if s.state[i] == POOL}
    assert all(s.request("live", i) for i in held)
