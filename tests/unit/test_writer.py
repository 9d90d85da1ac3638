"""output/writer.py on real pipes, terminals and files, written from a real loop.

Regression (issue 7): stdout was written with blocking writes (a poll of up to 30 s on
EAGAIN), so a reader that stalled froze the runner's loop.
"""

from __future__ import annotations

import asyncio
import fcntl
import os
import pty
import threading

import pytest

from entrypoint.output.printer import Printer
from entrypoint.output.writer import FINAL_STALL, StdoutWriter, write_now

pytestmark = pytest.mark.timeout(30)


@pytest.fixture
def pipe():
    r, w = os.pipe()
    yield r, w
    for fd in (r, w):
        try:
            os.close(fd)
        except OSError:
            pass


def read_until_eof(fd: int) -> bytes:
    chunks = []
    while chunk := os.read(fd, 1 << 16):
        chunks.append(chunk)
    return b"".join(chunks)


def test_a_stalled_reader_never_blocks_the_loop_and_loses_nothing(pipe):
    r, w = pipe
    blocks = [b"".join(b"line %d.%d %s\n" % (i, j, b"x" * (j * 7)) for j in range(10))
              for i in range(8000)]

    async def main():
        loop = asyncio.get_running_loop()
        writer = StdoutWriter(w, high_water=1 << 30)
        writer.attach(loop)
        began = loop.time()
        for block in blocks:            # ~2.8 MB into a 1 MiB pipe nobody reads yet
            writer.write(block)
        assert loop.time() - began < 0.5
        assert writer.queued > 0
        ticks = 0
        while loop.time() - began < 0.3:    # the loop keeps turning meanwhile
            await asyncio.sleep(0.01)
            ticks += 1
        assert ticks >= 10
        reader = threading.Thread(target=lambda: got.append(read_until_eof(r)), daemon=True)
        reader.start()
        await writer.finish()
        os.close(w)
        reader.join(10)
        assert writer.dropped == 0

    got: list[bytes] = []
    asyncio.run(main())
    assert got == [b"".join(blocks)]


def test_full_pauses_and_room_is_called_back_once_the_reader_drains(pipe):
    r, w = pipe

    async def main():
        loop = asyncio.get_running_loop()
        writer = StdoutWriter(w, high_water=200_000, limit=10_000_000)
        writer.attach(loop)
        while not writer.full:
            writer.write(b"z" * 999 + b"\n")
        assert writer.room == 0
        resumed = loop.create_future()
        writer.call_when_room(lambda: resumed.set_result(writer.queued))
        await asyncio.sleep(0.2)
        assert not resumed.done()           # nobody reads: still full
        reader = threading.Thread(target=read_until_eof, args=(r,), daemon=True)
        reader.start()
        queued_then = await asyncio.wait_for(resumed, 10)
        assert queued_then <= 100_000       # called back at half of high water
        await writer.finish()
        os.close(w)
        reader.join(10)

    asyncio.run(main())


def test_a_reader_that_never_comes_back_costs_at_most_the_final_stall(pipe):
    r, w = pipe

    async def main():
        loop = asyncio.get_running_loop()
        writer = StdoutWriter(w)
        writer.attach(loop)
        for i in range(2000):
            writer.write(b"%05d %s\n" % (i, b"q" * 994))    # 2 MB: ~1 MB waits
        waiting = writer.queued
        began = loop.time()
        await writer.finish(deadline=loop.time() - 5)     # the shutdown's time is up
        took = loop.time() - began
        assert FINAL_STALL - 0.1 < took < FINAL_STALL + 1
        assert 0 < writer.dropped <= waiting // 1000 + 1 and writer.queued == 0

    asyncio.run(main())


def test_the_shared_fd_is_never_made_non_blocking(pipe):
    # The CMD inherits fd 1: O_NONBLOCK on its open file would hand it EAGAINs.
    r, w = pipe
    writer = StdoutWriter(w)
    assert writer.mode == "nonblock" and writer.fd != w
    assert os.get_blocking(w)
    assert not os.get_blocking(writer.fd)
    writer.write(b"through the private fd\n")
    os.write(w, b"and the shared one\n")
    writer.close()
    os.close(w)
    assert read_until_eof(r) == b"through the private fd\nand the shared one\n"


def test_a_terminal_is_reopened_without_becoming_a_controlling_terminal():
    master, slave = pty.openpty()
    try:
        writer = StdoutWriter(slave)
        assert writer.mode == "nonblock" and os.get_blocking(slave)
        writer.write(b"on the terminal\n")
        writer.close()
        os.set_blocking(master, False)
        assert os.read(master, 1000) == b"on the terminal\r\n"
    finally:
        os.close(master)
        os.close(slave)


def test_a_regular_file_keeps_the_shared_append_offset(tmp_path):
    path = tmp_path / "out"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND)
    try:
        writer = StdoutWriter(fd)
        assert writer.mode == "file"
        writer.write(b"runner 1\n")
        os.write(fd, b"cmd\n")
        writer.write(b"runner 2\n")
        writer.close()
    finally:
        os.close(fd)
    assert path.read_bytes() == b"runner 1\ncmd\nrunner 2\n"


def test_a_closed_reader_makes_it_gone_and_drops_are_counted(pipe):
    r, w = pipe
    os.close(r)
    printer = Printer(w)                # the private open itself finds no reader
    printer.write_lines("web", "stdout", b"one\ntwo\n")
    printer.system("three")
    assert printer.gone and printer.dropped == 3 and not printer.writer.full


def test_past_the_limit_new_output_is_dropped_and_counted(pipe):
    r, w = pipe
    warned = []
    writer = StdoutWriter(w, high_water=1000, limit=100_000)
    writer.on_first_drop = lambda: warned.append(True)
    fcntl.fcntl(w, 1031, 4096)          # F_SETPIPE_SZ: a small pipe fills at once
    for _ in range(200):
        writer.write(b"x" * 999 + b"\n")
    assert writer.queued <= 100_000
    assert writer.dropped >= 200 - 100 - 5 and warned == [True]
    writer.close()


def test_write_now_never_blocks(pipe):
    r, w = pipe
    sent = 0
    while write_now(w, b"message %06d\n" % sent):     # until the pipe is full
        sent += 1
    assert 1000 < sent < 200_000
    os.close(w)
    assert read_until_eof(r) == b"".join(b"message %06d\n" % i for i in range(sent))


def test_a_stdout_pipe_is_grown_to_hold_a_burst(pipe):
    r, w = pipe
    StdoutWriter(w).close()
    assert fcntl.fcntl(w, 1032) >= 1 << 20         # F_GETPIPE_SZ


GUARDED = r'''
import asyncio, os, sys, threading
from entrypoint.output.writer import StdoutWriter
assert not os.path.exists("/proc/self/fd")
r, w = os.pipe()
blocks = [b"%06d %s\n" % (i, b"g" * (i % 300)) for i in range(20000)]
got = []
async def main():
    loop = asyncio.get_running_loop()
    writer = StdoutWriter(w)
    assert writer.mode == "guarded", writer.mode
    writer.attach(loop)
    began = loop.time()
    for block in blocks:
        writer.write(block)
    assert loop.time() - began < 0.5 and writer.queued > 0
    threading.Thread(target=lambda: got.append(b"".join(iter(lambda: os.read(r, 65536), b""))),
                     daemon=True).start()
    await writer.finish()
    assert writer.dropped == 0
asyncio.run(main())
assert os.get_blocking(w)
os.close(w)
for _ in range(100):
    if got:
        break
    import time; time.sleep(0.05)
assert got == [b"".join(blocks)], "lost or reordered"
print("ok")
'''


def test_without_proc_a_pipe_is_written_only_when_it_has_room(tmp_path):
    # No /proc (a private open is impossible): the shared fd stays blocking, and writes
    # of at most PIPE_BUF go out only when poll says the pipe has room.
    import shutil
    import subprocess
    import sys
    if os.geteuid() != 0 or not shutil.which("unshare"):
        pytest.skip("needs root and unshare for a mount namespace without /proc")
    script = tmp_path / "guarded.py"
    script.write_text(GUARDED)
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    done = subprocess.run(["unshare", "--mount", "--propagation", "private", "sh", "-c",
                           f"umount -l /proc && exec {sys.executable} {script}"],
                          capture_output=True, text=True, timeout=20,
                          env={**os.environ, "PYTHONPATH": root})
    assert done.returncode == 0 and done.stdout == "ok\n", done.stderr


def test_a_socket_is_written_with_msg_dontwait_and_keeps_its_flags():
    # journald and some log drivers give a socket as stdout: it cannot be re-opened.
    import socket
    a, b = socket.socketpair()
    blocks = [b"%06d %s\n" % (i, b"s" * (i % 200)) for i in range(30000)]   # ~3.2 MB
    got: list[bytes] = []

    async def main():
        loop = asyncio.get_running_loop()
        writer = StdoutWriter(a.fileno())
        assert writer.mode == "socket"
        writer.attach(loop)
        began = loop.time()
        for block in blocks:
            writer.write(block)
        assert loop.time() - began < 0.5 and writer.queued > 0
        reader = threading.Thread(target=lambda: got.append(read_until_eof(b.fileno())),
                                  daemon=True)
        reader.start()
        await writer.finish()
        a.shutdown(socket.SHUT_WR)
        reader.join(10)
        assert writer.dropped == 0

    try:
        asyncio.run(main())
        assert a.getblocking()
    finally:
        a.close()
        b.close()
    assert got == [b"".join(blocks)]
