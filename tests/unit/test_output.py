"""Unit tests for entrypoint.output, on real pipes and real files."""

from __future__ import annotations

import asyncio
import json
import os
import re
import threading
import time
import zlib

import pytest

from entrypoint.cli.table import format_table
from entrypoint.output.logfile import RotatingLog
from entrypoint.output.printer import PALETTE, RUNNER_COLOR, Printer, color_for, use_color
from entrypoint.output.ring import LogRing
from entrypoint.output.stream import CUT_MARK, MAX_LINE, StreamOutput, cut_long_lines

pytestmark = pytest.mark.timeout(30)
TS = r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z"


@pytest.fixture
def pipe():
    r, w = os.pipe()
    yield r, w
    for fd in (r, w):
        try:
            os.close(fd)
        except OSError:
            pass


def read_all(r: int, w: int) -> bytes:
    """Close the write end and read everything that was written.

    Small writes to an empty pipe go out at once; the printer's private write end stays
    open, so read until the pipe is empty rather than until EOF.
    """
    os.close(w)
    os.set_blocking(r, False)
    chunks = []
    try:
        while chunk := os.read(r, 1 << 16):
            chunks.append(chunk)
    except BlockingIOError:
        pass
    return b"".join(chunks)


def in_loop(printer: Printer, feed) -> None:
    """Call `feed()` with `printer` writing from a loop, then flush and close it."""
    async def main():
        printer.writer.attach(asyncio.get_running_loop())
        feed()
        await printer.writer.finish()
        assert printer.dropped == 0
    asyncio.run(main())


class Drainer(threading.Thread):
    """Reads a pipe until EOF, from another thread."""

    def __init__(self, fd: int, delay: float = 0.0, size: int = 1 << 16):
        super().__init__(daemon=True)
        self.fd = fd
        self.delay = delay
        self.size = size
        self.chunks: list[bytes] = []

    def run(self):
        time.sleep(self.delay)
        while chunk := os.read(self.fd, self.size):
            self.chunks.append(chunk)

    @property
    def data(self) -> bytes:
        return b"".join(self.chunks)


# --- colour policy and colours -------------------------------------------------------------

@pytest.mark.parametrize("flag, env, tty, expected", [
    (None, {}, True, True),
    (None, {}, False, False),
    ("auto", {}, True, True),
    (None, {"NO_COLOR": "1"}, True, False),
    (None, {"NO_COLOR": ""}, True, True),              # empty means unset
    (None, {"FORCE_COLOR": "1"}, False, True),
    (None, {"FORCE_COLOR": ""}, False, False),
    (None, {"FORCE_COLOR": "1", "NO_COLOR": "1"}, False, True),   # FORCE beats NO
    ("never", {"FORCE_COLOR": "1"}, True, False),      # the flag beats both
    ("always", {"NO_COLOR": "1"}, False, True),
])
def test_use_color_policy(flag, env, tty, expected):
    assert use_color(flag, env, tty) is expected


def test_use_color_rejects_unknown_flag():
    with pytest.raises(ValueError, match="always, never or auto"):
        use_color("sometimes", {}, True)


def test_colors_are_stable_and_distinct_from_runner():
    names = [f"svc{i}" for i in range(200)] + ["web", "db", "worker"]
    for name in names:
        assert color_for(name) == color_for(name)
        assert color_for(name) in PALETTE
        assert color_for(name) != RUNNER_COLOR
    assert len({color_for(n) for n in names}) > 6       # actually spread over the palette
    assert color_for("entrypoint") == RUNNER_COLOR
    assert 10 <= len(PALETTE) <= 14
    # stable across runs: crc32 is not salted like hash()
    assert color_for("web") == PALETTE[zlib.crc32(b"web") % len(PALETTE)]


# --- printer -------------------------------------------------------------------------------

def test_prefix_padding(pipe):
    r, w = pipe
    p = Printer(w)
    assert p.prefix("web") == b"web        | "           # "entrypoint" sets the minimum width
    p.set_names(["web", "a-long-service-name"])
    assert p.prefix("web") == b"web".ljust(19) + b" | "
    assert p.prefix("entrypoint") == b"entrypoint".ljust(19) + b" | "
    p.write_lines("web", "stdout", b"one\ntwo\n")
    p.write_lines("a-long-service-name", "stderr", b"three\n")
    assert read_all(r, w).decode().splitlines() == [
        "web                 | one",
        "web                 | two",
        "a-long-service-name | three",
    ]


def test_color_prefix_visible_text(pipe):
    r, w = pipe
    p = Printer(w, color=True)
    p.set_names(["web", "db"])
    raw = p.prefix("web")
    assert raw.startswith(color_for("web").encode())
    assert re.sub(rb"\x1b\[[0-9;]*m", b"", raw) == b"web".ljust(10) + b" | "
    p.write_lines("web", "stdout", b"hi\n")
    p.system("boom", "error")
    out = read_all(r, w)
    assert b"\x1b[31mboom\x1b[0m" in out
    assert re.sub(rb"\x1b\[[0-9;]*m", b"", out) == (
        b"web        | hi\nentrypoint | boom\n")


def test_no_color_means_no_escapes(pipe):
    r, w = pipe
    p = Printer(w, color=False)
    p.write_lines("web", "stdout", b"hi\n")
    p.system("bad", "error")
    assert b"\x1b" not in read_all(r, w)


def test_system_lines(pipe):
    r, w = pipe
    p = Printer(w)
    p.system("started web (pid 12)\nsecond line\n")
    assert read_all(r, w) == (b"entrypoint | started web (pid 12)\n"
                              b"entrypoint | second line\n")


def test_timestamps(pipe):
    r, w = pipe
    p = Printer(w, timestamps=True)
    p.clock = lambda: 1795309323.4567   # 2026-11-22T01:02:03.456Z
    p.write_lines("web", "stdout", b"a\nb\n")
    p.system("hello")
    assert read_all(r, w).decode().splitlines() == [
        "2026-11-22T01:02:03.456Z web        | a",
        "2026-11-22T01:02:03.456Z web        | b",
        "2026-11-22T01:02:03.456Z entrypoint | hello",
    ]


def test_timestamps_real_clock(pipe):
    r, w = pipe
    Printer(w, timestamps=True).write_lines("x", "stdout", b"line\n")
    assert re.fullmatch(TS + rb" x {10}\| line\n".decode(), read_all(r, w).decode())


def test_json_lines(pipe):
    r, w = pipe
    p = Printer(w, log_format="json", color=True)       # colour is ignored in json
    p.write_lines("web", "stderr", 'caf\u00e9 "q" \\ \t\x01\r end\nsecond\n'.encode()
                  + b"bad \xff byte\n")
    p.system("oops", "error")
    out = read_all(r, w)
    assert b"\x1b" not in out
    records = [json.loads(line) for line in out.decode().splitlines()]
    assert len(records) == 4
    for rec in records[:3]:
        assert set(rec) == {"ts", "service", "stream", "line"}
        assert re.fullmatch(TS, rec["ts"])
        assert rec["service"] == "web" and rec["stream"] == "stderr"
    assert [rec["line"] for rec in records[:3]] == [
        'caf\u00e9 "q" \\ \t\x01\r end', "second", "bad \ufffd byte"]
    assert records[3]["service"] == "entrypoint"
    assert records[3]["stream"] == "system"
    assert records[3]["line"] == "oops" and records[3]["level"] == "error"


def test_invalid_log_format():
    with pytest.raises(ValueError):
        Printer(1, log_format="xml")


def test_epipe_is_silent(pipe):
    r, w = pipe
    os.close(r)
    p = Printer(w)
    p.write_lines("web", "stdout", b"lost\n")           # SIGPIPE is ignored by pytest too
    assert p.gone
    p.write_lines("web", "stdout", b"lost again\n")
    p.system("still fine")


def test_ebadf_is_silent():
    r, w = os.pipe()
    os.close(r)
    os.close(w)
    p = Printer(w)
    p.system("nobody listens")
    assert p.gone


def test_other_write_errors_drop_the_block_only():
    if not os.path.exists("/dev/full"):
        pytest.skip("no /dev/full")
    fd = os.open("/dev/full", os.O_WRONLY)
    try:
        p = Printer(fd)
        p.write_lines("web", "stdout", b"no space\n")    # ENOSPC
        p.system("still no space")
        assert p.dropped == 2 and not p.gone
    finally:
        os.close(fd)


# --- stream output -------------------------------------------------------------------------

def make_stream(w, **kw):
    p = Printer(w)
    p.set_names(["svc"])
    ring = LogRing(100)
    return StreamOutput(p, "svc", "stdout", ring=ring, **kw), ring


def test_partial_lines_across_feeds(pipe):
    r, w = pipe
    s, ring = make_stream(w)
    s.feed(b"hel")
    assert s.has_partial
    s.feed(b"lo\nwor")
    s.feed(b"ld\nlast")
    assert s.has_partial
    s.flush_partial()
    assert not s.has_partial
    s.flush_partial()               # nothing pending: nothing printed
    assert read_all(r, w) == b"svc        | hello\nsvc        | world\nsvc        | last\n"
    assert ring.tail(10) == ["hello", "world", "last"]


def test_crlf_normalised_even_split_across_chunks(pipe):
    r, w = pipe
    s, ring = make_stream(w)
    s.feed(b"a\r\nb\r")
    s.feed(b"\nc\rd\r\n")           # a lone \r inside a line is kept
    s.feed(b"e\r")
    s.flush_partial()               # the idle timer fired between \r and \n
    s.feed(b"\nf\n")
    s.feed(b"\r")
    s.close()
    assert read_all(r, w) == (b"svc        | a\nsvc        | b\nsvc        | c\rd\n"
                              b"svc        | e\nsvc        | f\nsvc        | \n")


def test_a_line_of_up_to_1_mib_is_never_cut(pipe):
    # Regression: a partial line was flushed at 64 KiB, so 100 KB lines came out in two.
    r, w = pipe
    s, ring = make_stream(w)
    drainer = Drainer(r)
    drainer.start()

    def feed():
        for size in (100_000, MAX_LINE):
            line = b"%d:" % size + b"x" * (size - len(b"%d:" % size))
            for i in range(0, size, 4096):         # a PTY hands it over 4 KiB at a time
                s.feed(line[i:i + 4096])
            s.feed(b"\r\n")
        s.close()
    in_loop(s.printer, feed)
    os.close(w)
    drainer.join(10)
    lines = drainer.data.split(b"\n")[:-1]
    assert [len(line) - 13 for line in lines] == [100_000, MAX_LINE]
    assert not any(line.endswith(CUT_MARK) for line in lines)


def test_a_longer_line_is_cut_at_1_mib_and_marked(pipe):
    r, w = pipe
    s, ring = make_stream(w)
    drainer = Drainer(r)
    drainer.start()

    def feed():
        s.feed(b"start\n" + b"x" * 40000)
        for _ in range(300):            # 3 MB without a newline: memory stays bounded
            s.feed(b"q" * 10000)
            assert len(s._pending) <= MAX_LINE
        s.feed(b"end\n")
        s.close()
    in_loop(s.printer, feed)
    os.close(w)
    drainer.join(10)
    lines = [line[13:] for line in drainer.data.split(b"\n")[:-1]]
    assert lines[0] == b"start"
    assert [len(line) for line in lines[1:]] == [MAX_LINE + len(CUT_MARK)] * 2 + [
        40000 + 3_000_000 + 3 - 2 * MAX_LINE]
    assert lines[1].endswith(CUT_MARK) and lines[2].endswith(CUT_MARK)
    assert b"".join(line.removesuffix(CUT_MARK) for line in lines[1:]) == (
        b"x" * 40000 + b"q" * 3_000_000 + b"end")


def test_cut_long_lines_is_the_same_in_one_block_or_many():
    text = b"a\n" + b"y" * (MAX_LINE + 10) + b"\n" + b"b" * MAX_LINE + b"\r"
    once = cut_long_lines(text)
    assert once == (b"a\n" + b"y" * MAX_LINE + CUT_MARK + b"\n" + b"y" * 10 + b"\n"
                    + b"b" * MAX_LINE + b"\r")    # the final \r is half of a \r\n: no cut
    assert cut_long_lines(b"short\n") == b"short\n"
    # a cut never splits a UTF-8 character
    euro = "\u20ac".encode()
    cut = cut_long_lines(b"z" + euro * (MAX_LINE // 3 + 5) + b"\n")
    first = cut.split(b"\n")[0]
    first.removesuffix(CUT_MARK).decode()       # would raise on a split character
    assert len(first) - len(CUT_MARK) <= MAX_LINE


def test_log_file_and_ring_get_raw_lines(pipe, tmp_path):
    r, w = pipe
    p = Printer(w, color=True)
    log = RotatingLog(str(tmp_path / "svc.log"), 0, 0)
    ring = LogRing(10)
    s = StreamOutput(p, "svc", "stderr", log=log, ring=ring)
    s.feed(b"one\r\ntwo\nthr")
    s.close()
    log.close()
    assert (tmp_path / "svc.log").read_bytes() == b"one\ntwo\nthr\n"
    assert ring.tail() == ["one", "two", "thr"]
    assert read_all(r, w).count(b"\x1b[0m") == 3


# --- rotating log --------------------------------------------------------------------------

def test_rotation_sizes_and_names(tmp_path):
    path = tmp_path / "app.log"
    log = RotatingLog(str(path), 100, 2)
    umask = os.umask(0)
    os.umask(umask)
    assert path.stat().st_mode & 0o777 == 0o644 & ~umask
    blocks = [(b"%02d" % i) * 15 + b"\n" for i in range(10)]     # 31 bytes each
    for block in blocks:
        log.write(block)
    log.close()
    # 3 blocks (93 bytes) fit in 100; the 4th would pass it and rotates first
    assert path.read_bytes() == blocks[9]
    assert (tmp_path / "app.log.1").read_bytes() == b"".join(blocks[6:9])
    assert (tmp_path / "app.log.2").read_bytes() == b"".join(blocks[3:6])
    assert not (tmp_path / "app.log.3").exists()
    for f in tmp_path.iterdir():
        assert f.stat().st_size <= 100 and f.read_bytes().endswith(b"\n")


def test_rotation_appends_to_existing_file(tmp_path):
    path = tmp_path / "app.log"
    path.write_bytes(b"x" * 90 + b"\n")
    log = RotatingLog(str(path), 100, 1)
    log.write(b"new\n" * 5)         # 91 + 20 > 100: rotate first
    log.close()
    assert path.read_bytes() == b"new\n" * 5
    assert (tmp_path / "app.log.1").read_bytes() == b"x" * 90 + b"\n"


def test_rotation_block_bigger_than_max(tmp_path):
    path = tmp_path / "app.log"
    log = RotatingLog(str(path), 10, 1)
    log.write(b"0123456789abcdef\n")    # never cut: an oversized block stands alone
    log.write(b"z\n")
    log.close()
    assert path.read_bytes() == b"z\n"
    assert (tmp_path / "app.log.1").read_bytes() == b"0123456789abcdef\n"


def test_rotation_backups_zero_truncates_in_place(tmp_path):
    path = tmp_path / "app.log"
    log = RotatingLog(str(path), 20, 0)
    log.write(b"aaaaaaaaa\n")
    log.write(b"bbbbbbbbb\n")
    log.write(b"ccccccccc\n")
    log.close()
    assert path.read_bytes() == b"ccccccccc\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["app.log"]


def test_rotation_disabled_with_zero_max(tmp_path):
    path = tmp_path / "app.log"
    log = RotatingLog(str(path), 0, 3)
    for _ in range(100):
        log.write(b"0123456789\n")
    log.close()
    assert path.stat().st_size == 1100


def test_log_errors_reported_once_never_raised(tmp_path):
    errors = []
    d = tmp_path / "gone"
    d.mkdir()
    log = RotatingLog(str(d / "app.log"), 10, 2, on_error=errors.append)
    log.write(b"123456789\n")
    (d / "app.log").unlink()
    d.rmdir()
    for _ in range(5):
        log.write(b"rotate me\n")   # rotation fails: the directory is gone
    log.close()
    assert len(errors) == 1 and isinstance(errors[0], OSError)
    missing = []
    RotatingLog(str(tmp_path / "nope" / "x.log"), 10, 1, on_error=missing.append).write(b"a\n")
    assert len(missing) == 1


def test_log_disk_full_reported(tmp_path):
    if not os.path.exists("/dev/full"):
        pytest.skip("no /dev/full")
    errors = []
    log = RotatingLog("/dev/full", 0, 0, on_error=errors.append)
    log.write(b"x\n")
    log.write(b"y\n")
    assert len(errors) == 1
    log.close()


# --- ring ----------------------------------------------------------------------------------

def test_ring_tail_and_eviction():
    ring = LogRing(5)
    assert ring.tail(3) == []
    ring.append(b"1\n2\n")
    ring.append(b"3\n")
    ring.append(b"4\n5\n6\n")
    assert ring.tail(2) == ["5", "6"]
    assert ring.tail(100) == ["2", "3", "4", "5", "6"]      # "1" cut out of its block
    ring.append(b"7\n8\n")
    assert len(ring) == 5
    assert ring.tail() == ["4", "5", "6", "7", "8"]
    assert ring.tail(0) == []
    ring.append(b"x\xff\n")
    assert ring.tail(1) == ["x\ufffd"]


def test_ring_keeps_max_lines_even_of_one_burst():
    # Regression: a block was never split, so `--log-lines 10` kept 5,000 lines of a burst.
    ring = LogRing(3)
    for i in range(50):
        ring.append(b"%d\n" % i)
        assert len(ring) == min(i + 1, 3)
    assert ring.tail(10) == ["47", "48", "49"]
    big = LogRing(10)
    big.append(b"".join(b"%d\n" % i for i in range(5000)))
    assert len(big) == 10 and big.tail() == [str(i) for i in range(4990, 5000)]
    big.append(b"".join(b"n%d\n" % i for i in range(4)))
    assert big.tail() == [str(i) for i in range(4994, 5000)] + ["n0", "n1", "n2", "n3"]


def test_ring_is_bounded_in_bytes():
    # Regression: 1,000 lines of 100 KB held the runner at 125 MB.
    ring = LogRing(1000, max_bytes=1_000_000)
    for i in range(300):
        ring.append(b"%04d" % i + b"x" * 99_995 + b"\n")     # 100 KB lines, one per block
    assert ring._bytes <= 1_000_000 and len(ring) == 10
    assert ring.tail()[0].startswith("0290") and ring.tail()[-1].startswith("0299")
    ring.append(b"".join(b"%04d" % i + b"y" * 49_995 + b"\n" for i in range(100)))
    assert ring._bytes <= 1_000_000 and len(ring) == 20     # one burst, cut at the front
    assert ring.tail()[0].startswith("0080") and ring.tail()[-1].startswith("0099")
    huge = b"z" * 3_000_000 + b"\n"
    ring.append(huge)                   # the newest line is kept, even alone over the bound
    assert ring.tail() == ["z" * 3_000_000] and ring._bytes == len(huge)
    assert LogRing().max_bytes == 1 << 20                   # the default bound


def test_ring_subscribe_unsubscribe():
    ring = LogRing(10)
    got = []
    unsubscribe = ring.subscribe(got.append)

    def broken(block):
        raise RuntimeError("client went away")

    ring.subscribe(broken)
    ring.append(b"a\n")
    ring.append(b"b\nc\n")
    unsubscribe()
    unsubscribe()                   # idempotent
    ring.append(b"d\n")
    assert got == [b"a\n", b"b\nc\n"]
    assert ring._subscribers == []


def test_ring_survives_restart(pipe):
    r, w = pipe
    p = Printer(w)
    ring = LogRing(10)
    first = StreamOutput(p, "svc", ring=ring)
    first.feed(b"run 1\n")
    first.close()
    second = StreamOutput(p, "svc", ring=ring)
    second.feed(b"run 2\n")
    assert ring.tail() == ["run 1", "run 2"]


# --- table ---------------------------------------------------------------------------------

def test_format_table():
    text = format_table(["NAME", "STATE", "PID"],
                        [["web", "RUNNING", "12"], ["database", "STOPPED", ""]])
    assert text.splitlines() == [
        "NAME      STATE    PID",
        "web       RUNNING  12",
        "database  STOPPED",
    ]
    assert format_table(["A", "B"], []) == "A  B"


# --- volume --------------------------------------------------------------------------------

def test_throughput_sanity_many_services(pipe):
    """200,000 lines from 4 services in 64 KiB chunks: all arrive, whole and in order."""
    r, w = pipe
    names = ["web", "worker", "db", "cache"]
    p = Printer(w, color=True)
    p.set_names(names)
    streams = {n: StreamOutput(p, n) for n in names}
    payloads = {}
    for n in names:
        data = b"".join(b"%s line %06d %s\r\n" % (n.encode(), i, b"." * (i % 50))
                        for i in range(50_000))
        payloads[n] = [data[i:i + 65536] for i in range(0, len(data), 65536)]
    drainer = Drainer(r)
    drainer.start()

    def feed():
        for k in range(max(map(len, payloads.values()))):
            for n in names:
                if k < len(payloads[n]):
                    streams[n].feed(payloads[n][k])
        for s in streams.values():
            s.close()
    in_loop(p, feed)
    os.close(w)
    drainer.join(20)
    plain = re.sub(rb"\x1b\[[0-9;]*m", b"", drainer.data)
    lines = plain.split(b"\n")
    assert lines.pop() == b""
    assert len(lines) == 200_000
    counters = dict.fromkeys(names, 0)
    pat = re.compile(rb"(\w+) +\| (\w+) line (\d{6}) (\.*)")
    for line in lines:
        m = pat.fullmatch(line)
        assert m, line
        n = m[1].decode()
        assert m[2] == m[1] and int(m[3]) == counters[n] and len(m[4]) == counters[n] % 50
        counters[n] += 1
    assert counters == dict.fromkeys(names, 50_000)


def test_rotating_log_splits_a_large_block_at_line_ends(tmp_path):
    path = tmp_path / "big.log"
    log = RotatingLog(str(path), max_bytes=1000, backups=3)
    block = b"".join(b"line %04d " % i + b"z" * 39 + b"\n" for i in range(60))  # 60 x 50 bytes
    log.write(block)
    log.close()
    files = [path, *(tmp_path / f"big.log.{i}" for i in (1, 2))]
    assert not (tmp_path / "big.log.3").exists()
    for f in files:
        data = f.read_bytes()
        assert 0 < len(data) <= 1000 and data.endswith(b"\n")
    assert b"".join(f.read_bytes() for f in reversed(files)) == block


def test_rotating_log_writes_an_overlong_line_alone(tmp_path):
    path = tmp_path / "long.log"
    log = RotatingLog(str(path), max_bytes=100, backups=2)
    log.write(b"short\n" + b"x" * 300 + b"\n" + b"tail\n")
    log.close()
    assert (tmp_path / "long.log.2").read_bytes() == b"short\n"
    assert (tmp_path / "long.log.1").read_bytes() == b"x" * 300 + b"\n"
    assert path.read_bytes() == b"tail\n"
