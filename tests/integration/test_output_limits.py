"""Long lines and log files on real processes (issue 7).

Regressions: a 100 KB line came out split in two (a partial line was flushed at 64 KiB),
and a `log_file` that is a symlink in a world-writable directory was followed by a root
runner, so anyone able to write there could make it append to any file.
"""

from __future__ import annotations

import os

import pytest

from conftest import PYTHON, service_lines

pytestmark = pytest.mark.timeout(60)

MIB = 1 << 20
SIZES = {"a": 100_000, "b": MIB, "c": MIB + MIB // 2}     # the last one is cut, once
WRITER = ("import sys\\n"
          "for c, n in ((\'a\', 100000), (\'b\', 1048576), (\'c\', 1572864)):\\n"
          "    sys.stdout.write(c * n + \'\\\\n\')\\n"
          "    sys.stdout.flush()\\n")


@pytest.mark.parametrize("tty", ["true", "false"])
def test_lines_up_to_1_mib_whole_longer_cut_at_1_mib_marked(run_entrypoint, write_config,
                                                             tmp_path, tty):
    log = tmp_path / "long.log"
    cfg = write_config(f"""
        [[services]]
        name = "long"
        command = "{PYTHON}"
        args = ["-c", "{WRITER}"]
        tty = {tty}
        oneshot = true
        log_file = "{log}"
    """)
    r = run_entrypoint("-c", cfg)
    assert r.wait(40) == 0, r.stderr
    expected = ["a" * SIZES["a"], "b" * MIB, "c" * MIB + " [cut]", "c" * (MIB // 2)]
    got = service_lines(r, "long")
    assert [len(line) for line in got] == [len(line) for line in expected]
    assert got == expected
    assert log.read_text().split("\n") == [*expected, ""]


def test_a_log_file_symlink_in_a_world_writable_dir_is_refused(run_entrypoint, write_config,
                                                               tmp_path):
    if os.geteuid() != 0:
        pytest.skip("the refusal is for a root runner")
    shared = tmp_path / "shared"
    shared.mkdir()
    shared.chmod(0o1777)                    # like /tmp: anyone may plant a file there
    victim = tmp_path / "victim"
    victim.write_text("precious\n")
    (shared / "app.log").symlink_to(victim)
    cfg = write_config(f"""
        [[services]]
        name = "app"
        command = "echo"
        args = ["hello"]
        oneshot = true
        log_file = "{shared / 'app.log'}"
    """)
    r = run_entrypoint("-c", cfg)
    assert r.wait(20) == 0, r.stderr
    assert victim.read_text() == "precious\n"
    assert service_lines(r, "app") == ["hello"]      # the service still runs, unlogged
    refusal = [line for line in r.lines if "symbolic link" in line]
    assert refusal and "app: log_file:" in refusal[0] and str(shared / "app.log") in refusal[0]
