"""TurnSender: the client's request socket, sending what one event-loop turn produced as one message.

The items of one batched `/generate` (or SGLang `select`'s choices, or the n samples of a request) are sent by
separate tasks, but in the same event-loop turn. Sent one by one, the first could wake an idle engine and run
alone: its prompt logprobs, computed in a batch of its own, then differed from its siblings' in the last bits,
and SGLang's greedy `select`, which compares them for equality, picked by that noise. Here they leave as one
multipart ZMQ message (one frame per message; rank 0 reads all frames at once, engine/rank_process.py), so they
are scheduled in one step.
"""

from __future__ import annotations

import asyncio

import zmq
import zmq.asyncio


class TurnSender:
    def __init__(self, socket: zmq.asyncio.Socket) -> None:
        self.socket = socket
        # This turn's frames and the future their multipart send resolves; None between turns.
        self._turn: tuple[list[bytes], asyncio.Future] | None = None

    def send(self, data: bytes) -> asyncio.Future:
        """Adds `data` to this turn's message. The future resolves once ZMQ has taken the message, with the
        ZMQError as its exception if it could not (a stop() closed the socket), or cancelled with pyzmq's send."""
        if self._turn is None:
            loop = asyncio.get_running_loop()
            self._turn = ([], loop.create_future())
            loop.call_soon(self._flush)
        frames, sent = self._turn
        frames.append(data)
        return sent

    def _flush(self) -> None:
        assert self._turn is not None
        frames, sent = self._turn
        self._turn = None
        try:
            zmq_send = asyncio.ensure_future(self.socket.send_multipart(frames))
        except zmq.ZMQError as exc:  # the socket was closed by a stop() that raced this send
            sent.set_exception(exc)
            return
        zmq_send.add_done_callback(lambda done: _settle(sent, done))


def _settle(sent: asyncio.Future, done: asyncio.Future) -> None:
    """Passes the ZMQ send's outcome on to the turn's future."""
    if sent.done():
        return
    if done.cancelled():
        sent.cancel()
    elif done.exception() is not None:
        sent.set_exception(done.exception())
    else:
        sent.set_result(None)
