"""drain.py on real pipes: batching reads, and the partial-line timer.

Regression (found by scripts/bench.py's line check): the partial-line timer was armed for
one partial line and, when it fired, flushed whatever partial line was pending THEN — in a
steady stream, a younger line, cut in two. A partial line is now flushed only after
PARTIAL_LINE_DELAY without any read.
"""

from __future__ import annotations

import asyncio
import os
import threading

import pytest

from entrypoint.core.drain import PARTIAL_LINE_DELAY, Drain
from entrypoint.output.stream import StreamOutput

pytestmark = pytest.mark.timeout(30)


class Lines:
    """A Printer stand-in that keeps the blocks it is given."""

    def __init__(self) -> None:
        self.blocks: list[bytes] = []

    def write_lines(self, name: str, stream: str, block: bytes) -> None:
        self.blocks.append(block)

    @property
    def lines(self) -> list[bytes]:
        return b"".join(self.blocks).split(b"\n")[:-1]


async def _drain(writes: list[tuple[float, bytes]]) -> Lines:
    """Write each chunk at its time (seconds from now) into a pipe drained by a Drain."""
    loop = asyncio.get_running_loop()
    r, w = os.pipe()
    os.set_blocking(r, False)
    printer = Lines()
    drain = Drain(loop, {"stdout": r}, {"stdout": StreamOutput(printer, "svc")})
    began = loop.time()
    for at, data in writes:
        await asyncio.sleep(max(0.0, began + at - loop.time()))
        os.write(w, data)
    os.close(w)
    await asyncio.wait_for(drain.done, 5)
    return printer


def test_a_steady_stream_of_split_lines_is_never_cut():
    # Every line arrives in two writes 30 ms apart, for well over PARTIAL_LINE_DELAY, so a
    # partial line is pending at almost every instant.
    writes, t = [], 0.0
    for n in range(30):
        writes.append((t, b"line-%02d-first-half" % n))
        writes.append((t + 0.03, b"-second-half\n"))
        t += 0.04
    assert t > 3 * PARTIAL_LINE_DELAY
    printer = asyncio.run(_drain(writes))
    assert printer.lines == [b"line-%02d-first-half-second-half" % n for n in range(30)]


def test_a_quiet_partial_line_is_flushed_after_the_delay():
    async def scenario() -> tuple[list[bytes], list[bytes]]:
        loop = asyncio.get_running_loop()
        r, w = os.pipe()
        os.set_blocking(r, False)
        printer = Lines()
        drain = Drain(loop, {"stdout": r}, {"stdout": StreamOutput(printer, "svc")})
        os.write(w, b"done\nPassword: ")
        await asyncio.sleep(PARTIAL_LINE_DELAY / 2)
        early = list(printer.lines)
        await asyncio.sleep(PARTIAL_LINE_DELAY * 2)
        late = list(printer.lines)
        os.close(w)
        await asyncio.wait_for(drain.done, 5)
        return early, late

    early, late = asyncio.run(scenario())
    assert early == [b"done"]
    assert late == [b"done", b"Password: "]


def test_everything_buffered_is_fed_as_one_block():
    async def scenario() -> Lines:
        loop = asyncio.get_running_loop()
        r, w = os.pipe()
        os.set_blocking(r, False)
        data = b"".join(b"line %06d\n" % i for i in range(20000))   # > one 64 KiB read
        os.write(w, data[:60000])
        printer = Lines()
        drain = Drain(loop, {"stdout": r}, {"stdout": StreamOutput(printer, "svc")})
        await asyncio.sleep(0.05)
        first_blocks = len(printer.blocks)
        view = memoryview(data)[60000:]
        while view:
            view = view[os.write(w, view[:32768]):]
            await asyncio.sleep(0)
        os.close(w)
        await asyncio.wait_for(drain.done, 5)
        assert first_blocks == 1
        return printer

    printer = asyncio.run(scenario())
    assert printer.lines == [b"line %06d" % i for i in range(20000)]


def test_a_full_stdout_pauses_reading_and_never_cuts_a_line():
    # Back-pressure (issue 7): while stdout's queue is full the service's pipe is not read,
    # so the service blocks; the line half-read when the pause began is not flushed as if
    # the service had gone quiet, and once the reader resumes every line is whole.
    from entrypoint.output.printer import Printer
    from entrypoint.output.writer import StdoutWriter

    lines = [b"line %05d %s\n" % (i, b"w" * (i % 97)) for i in range(40000)]   # ~2.3 MB

    async def scenario() -> bytes:
        loop = asyncio.get_running_loop()
        out_r, out_w = os.pipe()            # the runner's stdout, read late
        src_r, src_w = os.pipe()            # the service's pipe
        os.set_blocking(src_r, False)
        os.set_blocking(src_w, False)
        writer = StdoutWriter(out_w, high_water=50_000)
        writer.attach(loop)
        printer = Printer(writer=writer)
        printer.set_names(["svc"])
        drain = Drain(loop, {"stdout": src_r}, {"stdout": StreamOutput(printer, "svc")})
        data = memoryview(b"".join(lines))
        for _ in range(100):                # write what fits, as a blocked service would
            try:
                data = data[os.write(src_w, data):]
            except BlockingIOError:
                pass
            await asyncio.sleep(0.01)
        assert data, "the service never blocked: nothing paused the drain"
        assert writer.queued < 50_000 + 70_000 and writer.dropped == 0
        got = []
        reader = threading.Thread(target=lambda: got.append(_read_to_eof(out_r)), daemon=True)
        reader.start()
        while data:
            try:
                data = data[os.write(src_w, data):]
            except BlockingIOError:
                await asyncio.sleep(0.005)
        os.close(src_w)
        await asyncio.wait_for(drain.done, 10)
        await writer.finish()
        os.close(out_w)
        reader.join(10)
        assert writer.dropped == 0
        return got[0]

    out = asyncio.run(scenario())
    assert out == b"".join(b"svc        | " + line for line in lines)


def _read_to_eof(fd: int) -> bytes:
    chunks = []
    while chunk := os.read(fd, 1 << 16):
        chunks.append(chunk)
    return b"".join(chunks)
