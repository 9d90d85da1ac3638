"""Every config in tests/fixtures/ runs end to end and exits as its first line says."""

import re
from pathlib import Path

import pytest

FIXTURES = sorted(p for p in (Path(__file__).parent.parent / "fixtures").iterdir()
                  if p.suffix == ".toml" or "Procfile" in p.name)


@pytest.mark.timeout(60)
@pytest.mark.parametrize("path", FIXTURES, ids=lambda p: p.name)
def test_fixture_runs_end_to_end(run_entrypoint, path):
    first = path.read_text().splitlines()[0]
    expected = int(re.fullmatch(r"# expect-exit: (\d+)", first).group(1))
    option = "--procfile" if "Procfile" in path.name else "-c"
    check = run_entrypoint("check", option, str(path))
    assert check.wait() == 0, check.stderr
    r = run_entrypoint(option, str(path))
    assert r.wait(45) == expected, r.output + r.stderr
    assert "Traceback" not in r.output + r.stderr
