"""The fuzz harness (tests/fuzz_harness.py) over every file and socket input, briefly, in a
subprocess under a 1.5 GiB address-space limit; `make fuzz` runs it for longer."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

HARNESS = Path(__file__).resolve().parent / "fuzz_harness.py"
TARGETS = ("config", "scenario", "trace", "reply", "request")


@pytest.mark.parametrize("target", TARGETS)
def test_fuzzed_input_is_a_value_or_a_one_line_error(target: str) -> None:
    env = {**os.environ, "OPENBLAS_NUM_THREADS": "1"}
    done = subprocess.run(
        [sys.executable, str(HARNESS), "--examples", "30", "--memory-mib", "1536",
         "--target", target],
        capture_output=True, text=True, timeout=600, env=env, check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert f"fuzz {target}: 30 examples, ok" in done.stdout


def test_the_memory_limit_is_real() -> None:
    """Under the harness's limit, an allocation past it is a MemoryError, not swapping."""
    code = ("import resource; limit = 512 << 20; "
            "resource.setrlimit(resource.RLIMIT_AS, (limit, limit))\n"
            "try:\n    bytearray(1 << 30)\nexcept MemoryError:\n    print('MemoryError')")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=60, check=False)
    assert done.stdout.strip() == "MemoryError"
