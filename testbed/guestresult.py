"""What a guest boot returns: each command's status and output files, the console log
(cleaned of terminal escapes) and timing (testbed.guest boots it)."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

_ANSI_ESCAPE = re.compile(rb"\x1b(\[[0-9;?]*[ -/]*[@-~]|[()][A-Za-z0-9]|[=>78])")


@dataclass(frozen=True)
class StepResult:
    """One command run in the guest: its exit status and captured output files."""

    command: str
    status: int | None  # None: the guest never reported (crash, timeout, earlier hang)
    stdout_path: Path
    stderr_path: Path

    @property
    def ok(self) -> bool:
        return self.status == 0

    def stdout(self) -> str:
        return read_text_file(self.stdout_path)

    def stderr(self) -> str:
        return read_text_file(self.stderr_path)


@dataclass(frozen=True)
class GuestResult:
    """A guest boot: per-command results, the console log and timing."""

    kernel: str
    rwdir: Path
    steps: list[StepResult]
    console_path: Path
    elapsed_s: float
    timed_out: bool
    accel: str
    vng_status: int | None = None
    extra: dict[str, str] = field(default_factory=dict)
    failed_boots: tuple[Path, ...] = ()  # consoles of boots that died before the script ran

    @property
    def status(self) -> int | None:
        """Status of the last command (the only one for run_in_guest)."""
        return self.steps[-1].status if self.steps else None

    @property
    def ok(self) -> bool:
        return not self.timed_out and all(step.ok for step in self.steps)

    def path(self, name: str) -> Path:
        """A file the guest commands wrote into rwdir (relative name)."""
        return self.rwdir / name

    def read_text(self, name: str) -> str:
        """Text of a file the guest commands wrote into rwdir; "" when absent."""
        return read_text_file(self.path(name))

    def console(self) -> str:
        """The console log with carriage returns and terminal escapes removed."""
        if not self.console_path.exists():
            return ""
        return clean_console(self.console_path.read_bytes())

    def describe(self) -> str:
        """A multi-line summary for assertion messages: statuses, output tails, console."""
        lines = [
            f"kernel={self.kernel} accel={self.accel} elapsed={self.elapsed_s:.1f}s "
            f"timed_out={self.timed_out} rwdir={self.rwdir}"
        ]
        if self.failed_boots:
            names = ", ".join(path.name for path in self.failed_boots)
            lines.append(f"retried after {len(self.failed_boots)} boot(s) that died early: {names}")
        for step in self.steps:
            lines.append(f"$ {step.command}  -> status {step.status}")
            lines += ["  " + line for line in _tail(step.stdout(), 20)]
            lines += ["  [stderr] " + line for line in _tail(step.stderr(), 20)]
        lines.append("--- console (tail) ---")
        lines += _tail(self.console(), 30)
        return "\n".join(lines)


def read_text_file(path: Path) -> str:
    return path.read_text(errors="replace") if path.exists() else ""


def _tail(text: str, nr_lines: int) -> list[str]:
    return text.splitlines()[-nr_lines:]


def clean_console(raw: bytes) -> str:
    """Decode a serial console capture: drop terminal escapes and carriage returns."""
    text = _ANSI_ESCAPE.sub(b"", raw).replace(b"\r\n", b"\n").replace(b"\r", b"\n")
    return text.decode(errors="replace")
