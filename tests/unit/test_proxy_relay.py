"""The relay of upgraded plain-TCP connections (``coder_migrate.proxy.relay.SocketRelay``):
bytes pass both ways unchanged with half-closes, a destination that does not read makes
the relay hold at most one read (counted in the buffer budget) and stop reading, and an
exhausted budget stops it until the budget has room. Socket pairs on one event loop."""

from __future__ import annotations

import asyncio
import os
import socket

import pytest
import uvloop

from coder_migrate.proxy.admission import BufferBudget
from coder_migrate.proxy.relay import READ_SIZE, SocketRelay


class _Pairs:
    """The client's socket and the upstream's, each paired with the relay's end."""

    def __init__(self, loop: asyncio.AbstractEventLoop, budget: BufferBudget) -> None:
        self.client, client_end = socket.socketpair()
        self.upstream, upstream_end = socket.socketpair()
        for sock in (self.client, self.upstream):
            sock.setblocking(False)
        self.totals: list[tuple[int, int]] = []
        self.relay = SocketRelay(
            loop,
            client_end.detach(),
            upstream_end.detach(),
            budget,
            lambda up, down: self.totals.append((up, down)),
        )
        self.relay.start()

    def close(self) -> None:
        self.relay.close()
        self.client.close()
        self.upstream.close()


async def _read_all(loop: asyncio.AbstractEventLoop, sock: socket.socket) -> bytes:
    chunks = []
    while data := await loop.sock_recv(sock, 1 << 16):
        chunks.append(data)
    return b"".join(chunks)


def test_bytes_pass_both_ways_unchanged_and_half_closes_reach_the_other_side() -> None:
    to_upstream, to_client = os.urandom(3 * READ_SIZE + 17), os.urandom(READ_SIZE // 3)

    async def scenario() -> None:
        loop = asyncio.get_running_loop()
        budget = BufferBudget(64 << 20)
        pairs = _Pairs(loop, budget)
        received_up = asyncio.create_task(_read_all(loop, pairs.upstream))
        received_down = asyncio.create_task(_read_all(loop, pairs.client))
        await loop.sock_sendall(pairs.client, to_upstream)
        pairs.client.shutdown(socket.SHUT_WR)
        assert await asyncio.wait_for(received_up, 10) == to_upstream
        # The client's half-close reached the upstream, which can still answer.
        await loop.sock_sendall(pairs.upstream, to_client)
        pairs.upstream.shutdown(socket.SHUT_WR)
        assert await asyncio.wait_for(received_down, 10) == to_client
        await asyncio.sleep(0.05)
        assert pairs.relay.closed  # both directions ended: the relay closed itself
        assert pairs.totals == [(len(to_upstream), len(to_client))]
        assert budget.used == 0
        pairs.close()

    uvloop.run(scenario())


def test_a_destination_that_does_not_read_holds_at_most_one_read_then_gets_everything() -> None:
    payload = os.urandom(24 * READ_SIZE)

    async def scenario() -> None:
        loop = asyncio.get_running_loop()
        budget = BufferBudget(64 << 20)
        pairs = _Pairs(loop, budget)
        sending = asyncio.create_task(loop.sock_sendall(pairs.client, payload))
        await asyncio.sleep(0.3)  # the upstream reads nothing: everything fills up
        assert not sending.done()  # the relay stopped reading: the client is held back
        assert 0 < budget.used <= READ_SIZE  # what the upstream's socket did not take
        received = asyncio.create_task(_read_all(loop, pairs.upstream))
        await asyncio.wait_for(sending, 10)
        pairs.client.shutdown(socket.SHUT_WR)
        assert await asyncio.wait_for(received, 10) == payload
        assert budget.used == 0
        pairs.close()

    uvloop.run(scenario())


def test_an_exhausted_budget_stops_the_relay_until_it_has_room() -> None:
    async def scenario() -> None:
        loop = asyncio.get_running_loop()
        budget = BufferBudget(1024)
        budget.take(1024)  # another connection holds the whole budget
        pairs = _Pairs(loop, budget)
        await loop.sock_sendall(pairs.client, b"held back")
        await asyncio.sleep(0.2)
        with pytest.raises(BlockingIOError):  # nothing passed while the budget was exhausted
            pairs.upstream.recv(64)
        budget.give(1024)
        assert await asyncio.wait_for(loop.sock_recv(pairs.upstream, 64), 5) == b"held back"
        pairs.close()
        assert budget.used == 0

    uvloop.run(scenario())
