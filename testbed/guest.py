"""Boot a QEMU guest with virtme-ng on a two-tier NUMA topology and run commands in it.

The guest shares the host's filesystem (virtme-ng mounts / over 9p), so it runs the
project's own `.venv/bin/python`. Node 0 holds the CPUs and is fast (HMAT latency
80 ns); node 1 is CPU-less and slow (300 ns, initiator 0), so the kernel's memory-tier
code puts node 1 in a lower tier than node 0.

virtme-ng's script I/O needs udev in the guest, which the host does not have; it then
falls back to the serial console, whose text is mangled by terminal control codes and
whose exit status is lost. So every command runs from a generated shell script that
redirects its stdout/stderr to files in the `--rwdir` directory and writes its exit
status there too; the console goes to `console.log` in the same directory.

Kernels (see testbed/setup.sh and testbed/build-kernel.sh):
  stock  Debian's 6.12 image: DAMON, NUMA balancing, no page_idle.
  idle   the minimal kernel built from testbed/kscand.config: page_idle and DAMON.

Library: Guest(kernel="idle").run_commands(["cmd1", "cmd2"], rwdir) -> GuestResult
CLI:     python -m testbed.guest run --kernel idle --rwdir /tmp/out -- cat /proc/vmstat
"""

from __future__ import annotations

import argparse
import functools
import os
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from testbed.guestresult import GuestResult, StepResult, read_text_file

REPO_ROOT = Path(__file__).resolve().parent.parent
KERNEL_KINDS = ("stock", "idle")
# File a kernel kind's cache directory names its boot image by.
KERNEL_IMAGE_NAMES = {"stock": "vmlinuz", "idle": "bzImage"}
GUEST_SCRIPT_NAME = ".guest-run.sh"
CONSOLE_LOG_NAME = "console.log"
# Exit status the CLI uses when the guest never reported one (crash, timeout).
EXIT_NO_STATUS = 125
EXIT_TIMEOUT = 124
KILL_GRACE_S = 5.0
# Boots that die before the guest script starts are retried: Debian's 6.12 kernel under
# TCG with 2 vCPUs sometimes oopses in early boot ("Oops: int3" while patching a static
# key; seen at 2 s, before init). A panic after the script started is never retried.
BOOT_ATTEMPTS = 3
BOOT_PANIC_MARKERS = ("Kernel panic", "Oops:")

# QEMU 7.2's TCG mis-emulates an AVX2 instruction numpy's argsort uses (x86-simd-sort):
# in the guest np.argsort / np.unique(return_inverse=True) return unsorted indices for
# most arrays, so every numpy in the guest runs without its AVX2/AVX-512 kernels. Names
# for numpy >= 2.4 (X86_V3 ...) and older releases (AVX2 ...); unknown ones are ignored.
NUMPY_DISABLED_CPU_FEATURES = (
    "X86_V3 X86_V4 AVX512_ICL AVX512_SPR AVX2 FMA3 AVX512F AVX512CD AVX512_SKX AVX512_CLX "
    "AVX512_CNL"
)



class GuestUnavailable(RuntimeError):
    """Something the guest needs (qemu, virtme-ng, a kernel image) is missing."""


@dataclass(frozen=True)
class Topology:
    """Two NUMA nodes: node 0 with every CPU (fast), node 1 CPU-less (slow)."""

    node0_mib: int = 1024
    node1_mib: int = 1024
    nr_cpus: int = 2
    node0_latency_ns: int = 80
    node1_latency_ns: int = 300
    node0_bandwidth: str = "20G"
    node1_bandwidth: str = "5G"

    @property
    def total_mib(self) -> int:
        """Guest RAM: the sum of both nodes (QEMU requires -m to match)."""
        return self.node0_mib + self.node1_mib

    def qemu_opts(self) -> list[str]:
        """QEMU arguments for the memory backends, NUMA nodes and HMAT entries."""
        opts = [
            "-object", f"memory-backend-ram,id=m0,size={self.node0_mib}M",
            "-object", f"memory-backend-ram,id=m1,size={self.node1_mib}M",
            "-numa", f"node,nodeid=0,cpus=0-{self.nr_cpus - 1},memdev=m0",
            "-numa", "node,nodeid=1,memdev=m1,initiator=0",
            "-machine", "hmat=on",
        ]  # fmt: skip
        hmat = (
            (0, "access-latency", f"latency={self.node0_latency_ns}"),
            (1, "access-latency", f"latency={self.node1_latency_ns}"),
            (0, "access-bandwidth", f"bandwidth={self.node0_bandwidth}"),
            (1, "access-bandwidth", f"bandwidth={self.node1_bandwidth}"),
        )
        for target, data_type, value in hmat:
            opts += [
                "-numa",
                f"hmat-lb,initiator=0,target={target},hierarchy=memory,"
                f"data-type={data_type},{value}",
            ]
        return opts


def cache_root() -> Path:
    """$KSCAND_CACHE, else $XDG_CACHE_HOME/kscand, else ~/.cache/kscand (as common.sh)."""
    if env := os.environ.get("KSCAND_CACHE"):
        return Path(env)
    xdg = os.environ.get("XDG_CACHE_HOME")
    return (Path(xdg) if xdg else Path.home() / ".cache") / "kscand"


def kernel_path(kind: str) -> Path:
    """Boot image of kernel `kind` ("stock" or "idle"); GuestUnavailable if absent."""
    if kind not in KERNEL_KINDS:
        raise ValueError(f"unknown kernel {kind!r}: expected one of {', '.join(KERNEL_KINDS)}")
    path = cache_root() / "kernels" / kind / KERNEL_IMAGE_NAMES[kind]
    if not path.exists():
        script = "setup.sh" if kind == "stock" else "build-kernel.sh"
        raise GuestUnavailable(f"no {kind} kernel at {path}: run testbed/{script}")
    return path


def venv_bin(venv: Path | None = None) -> Path:
    """The project venv's bin directory (vng calls virtme-run from its own PATH)."""
    return (venv or REPO_ROOT / ".venv") / "bin"


def missing_prerequisites(kind: str, venv: Path | None = None) -> list[str]:
    """Reasons the guest cannot boot kernel `kind` here; empty when it can."""
    reasons = []
    if shutil.which("qemu-system-x86_64") is None:
        reasons.append("qemu-system-x86_64 not installed (run testbed/setup.sh)")
    vng = venv_bin(venv) / "vng"
    if not vng.exists():
        reasons.append(f"{vng} missing (run testbed/setup.sh)")
    try:
        kernel_path(kind)
    except GuestUnavailable as err:
        reasons.append(str(err))
    return reasons


def guest_script(commands: Sequence[str], rwdir: Path, cwd: Path, venv: Path | None) -> str:
    """The shell script the guest runs: each command's output and status go to rwdir.

    Step i writes step-i.out, step-i.err and, once it has finished, step-i.status.
    """
    bin_dir = venv_bin(venv)
    lines = [
        "#!/bin/sh",
        f"cd {shlex.quote(str(cwd))} || exit 1",
        f'export PATH={shlex.quote(str(bin_dir))}:"$PATH"',
        "export KSCAND_GUEST=1",
        f"export KSCAND_RWDIR={shlex.quote(str(rwdir))}",
        f"export NPY_DISABLE_CPU_FEATURES={shlex.quote(NUMPY_DISABLED_CPU_FEATURES)}",
    ]
    for index, command in enumerate(commands):
        out, err, status = (shlex.quote(str(p)) for p in step_paths(rwdir, index))
        lines += [
            f"( {command}\n) > {out} 2> {err} < /dev/null",
            f"echo $? > {status}.tmp && mv {status}.tmp {status}",
        ]
    lines.append("sync")
    return "\n".join(lines) + "\n"


def step_paths(rwdir: Path, index: int) -> tuple[Path, Path, Path]:
    """(stdout, stderr, status) files of step `index` in rwdir."""
    stem = rwdir / f"step-{index}"
    return stem.with_suffix(".out"), stem.with_suffix(".err"), stem.with_suffix(".status")


def vng_argv(
    kernel: Path,
    rwdir: Path,
    script: Path,
    topology: Topology,
    accel: str,
    venv: Path | None = None,
) -> list[str]:
    """The vng command line that boots `kernel` and runs `script` (pure)."""
    argv = [str(venv_bin(venv) / "vng"), "--verbose", "--disable-microvm"]
    if accel == "tcg":
        argv.append("--disable-kvm")
    argv += [
        "--run", str(kernel),
        "--memory", f"{topology.total_mib}M",
        "--cpus", str(topology.nr_cpus),
        "--rwdir", str(rwdir),
        f"--qemu-opts={shlex.join(topology.qemu_opts())}",
        "--exec", f"sh {shlex.quote(str(script))}",
    ]  # fmt: skip
    return argv


def died_in_boot(rwdir: Path, console_path: Path) -> bool:
    """The kernel panicked before the guest script ran its first command (a boot to retry)."""
    first_out, _, _ = step_paths(rwdir, 0)
    if first_out.exists():
        return False
    console = read_text_file(console_path)
    return any(marker in console for marker in BOOT_PANIC_MARKERS)


def _read_status(path: Path) -> int | None:
    try:
        return int(path.read_text().strip())
    except (FileNotFoundError, ValueError):
        return None


def _stop(proc: subprocess.Popen[bytes]) -> None:
    """End vng and its qemu (their own process group, started by us)."""
    for sig, wait_s in ((signal.SIGTERM, KILL_GRACE_S), (signal.SIGKILL, None)):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            return
        try:
            proc.wait(timeout=wait_s)
            return
        except subprocess.TimeoutExpired:
            continue


@dataclass(frozen=True)
class Guest:
    """How to boot a guest: kernel kind, topology, time limit, accelerator, venv, cwd.

    Each run_* call boots a fresh guest, runs its commands in order (a failing one
    does not stop the next) and powers off. Outputs land in `rwdir`, created if
    needed; files the commands write there stay for the caller to collect.
    """

    kernel: str = "stock"
    topology: Topology = field(default_factory=Topology)
    timeout_s: float = 600.0
    accel: str | None = None  # None: default_accel()
    venv: Path | None = None  # None: the repo's .venv
    cwd: Path = REPO_ROOT

    @property
    def python(self) -> Path:
        """The venv's python, as the guest sees it (same path as on the host)."""
        return venv_bin(self.venv) / "python"

    def run_commands(self, commands: Sequence[str], rwdir: Path | str) -> GuestResult:
        """Boot once and run each shell command in `sh`; one StepResult per command."""
        rwdir = Path(rwdir).resolve()
        rwdir.mkdir(parents=True, exist_ok=True)
        image = kernel_path(self.kernel)
        accel = self.accel or default_accel(self.venv)
        script = rwdir / GUEST_SCRIPT_NAME
        script.write_text(guest_script(commands, rwdir, self.cwd.resolve(), self.venv))
        for index in range(len(commands)):
            for path in step_paths(rwdir, index):
                path.unlink(missing_ok=True)
        console_path = rwdir / CONSOLE_LOG_NAME
        argv = vng_argv(image, rwdir, script, self.topology, accel, self.venv)
        started = time.monotonic()
        failed_boots: list[Path] = []
        while True:
            vng_status, timed_out = self._boot(argv, console_path)
            if len(failed_boots) + 1 >= BOOT_ATTEMPTS or not died_in_boot(rwdir, console_path):
                break
            kept = console_path.with_name(f"console.boot-{len(failed_boots) + 1}.log")
            console_path.rename(kept)
            failed_boots.append(kept)
        elapsed_s = time.monotonic() - started
        steps = []
        for index, command in enumerate(commands):
            out, err, status = step_paths(rwdir, index)
            steps.append(StepResult(command, _read_status(status), out, err))
        return GuestResult(
            kernel=self.kernel,
            rwdir=rwdir,
            steps=steps,
            console_path=console_path,
            elapsed_s=elapsed_s,
            timed_out=timed_out,
            accel=accel,
            vng_status=vng_status,
            extra={"argv": shlex.join(argv)},
            failed_boots=tuple(failed_boots),
        )

    def run(self, command: str, rwdir: Path | str) -> GuestResult:
        """Boot and run one shell command."""
        return self.run_commands([command], rwdir)

    def run_python(
        self, script: Path | str, rwdir: Path | str, args: Sequence[str] = ()
    ) -> GuestResult:
        """Boot and run a Python script file with the venv's python."""
        command = shlex.join([str(self.python), str(Path(script).resolve()), *args])
        return self.run_commands([command], rwdir)

    def _boot(self, argv: list[str], console_path: Path) -> tuple[int | None, bool]:
        """Run vng to completion or timeout; (vng's exit status, timed out)."""
        env = dict(os.environ, PATH=f"{venv_bin(self.venv)}:{os.environ.get('PATH', '')}")
        with console_path.open("wb") as console:
            proc = subprocess.Popen(
                argv,
                stdin=subprocess.DEVNULL,
                stdout=console,
                stderr=subprocess.STDOUT,
                env=env,
                cwd=self.cwd,
                start_new_session=True,
            )
            try:
                return proc.wait(timeout=self.timeout_s), False
            except subprocess.TimeoutExpired:
                _stop(proc)
                return None, True


@functools.cache
def default_accel(venv: Path | None = None) -> str:
    """ "kvm" if $KSCAND_GUEST_ACCEL says so or a probe boot under KVM works, else "tcg".

    On these machines /dev/kvm opens but guests die at once ("failed to set MSR",
    "emulation failure"), so KVM is used only when a real boot succeeds.
    """
    choice = os.environ.get("KSCAND_GUEST_ACCEL", "auto")
    if choice in ("tcg", "kvm"):
        return choice
    return "kvm" if probe_kvm(venv) else "tcg"


def probe_kvm(venv: Path | None = None, timeout_s: float = 90.0) -> bool:
    """Boot the stock (else idle) kernel under KVM running `true`; True if it worked."""
    if not os.access("/dev/kvm", os.R_OK | os.W_OK):
        return False
    for kind in KERNEL_KINDS:
        if missing_prerequisites(kind, venv):
            continue
        with tempfile.TemporaryDirectory(prefix="kscand-kvm-probe-") as tmp:
            guest = Guest(
                kernel=kind,
                topology=Topology(node0_mib=256, node1_mib=256, nr_cpus=1),
                timeout_s=timeout_s,
                accel="kvm",
                venv=venv,
            )
            return guest.run("true", Path(tmp)).ok
    return False


def _parse_args(argv: Sequence[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m testbed.guest",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = parser.add_subparsers(dest="action", required=True)
    run = sub.add_parser("run", help="boot a guest and run a shell command in it")
    run.add_argument("--kernel", choices=KERNEL_KINDS, default="stock")
    run.add_argument("--rwdir", type=Path, required=True, help="output directory")
    run.add_argument("--timeout", type=float, default=600.0, help="seconds (default 600)")
    run.add_argument("--node0-mib", type=int, default=1024)
    run.add_argument("--node1-mib", type=int, default=1024)
    run.add_argument("--cpus", type=int, default=2)
    run.add_argument("--accel", choices=("auto", "tcg", "kvm"), default="auto")
    run.add_argument("command", nargs=argparse.REMAINDER, help="shell command (after --)")
    sub.add_parser("kernels", help="print the boot image of each kernel, or why it is missing")
    sub.add_parser("probe-kvm", help="say whether a KVM guest boots here")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = _parse_args(sys.argv[1:] if argv is None else argv)
    if args.action == "kernels":
        for kind in KERNEL_KINDS:
            try:
                print(f"{kind}: {kernel_path(kind)}")
            except GuestUnavailable as err:
                print(f"{kind}: missing: {err}")
        return 0
    if args.action == "probe-kvm":
        works = probe_kvm()
        print("kvm: works" if works else "kvm: does not work here (guests use TCG)")
        return 0 if works else 1
    command = args.command[1:] if args.command[:1] == ["--"] else args.command
    if not command:
        print(
            "error: no command given (python -m testbed.guest run ... -- COMMAND)", file=sys.stderr
        )
        return 2
    if args.node0_mib <= 0 or args.node1_mib <= 0 or args.cpus <= 0:
        print("error: --node0-mib, --node1-mib and --cpus must be positive", file=sys.stderr)
        return 2
    if reasons := missing_prerequisites(args.kernel):
        print(f"error: {'; '.join(reasons)}", file=sys.stderr)
        return 2
    guest = Guest(
        kernel=args.kernel,
        topology=Topology(node0_mib=args.node0_mib, node1_mib=args.node1_mib, nr_cpus=args.cpus),
        timeout_s=args.timeout,
        accel=None if args.accel == "auto" else args.accel,
    )
    result = guest.run(" ".join(command), args.rwdir)
    step = result.steps[0]
    sys.stdout.write(step.stdout())
    sys.stderr.write(step.stderr())
    print(
        f"[guest] kernel={result.kernel} accel={result.accel} status={step.status} "
        f"elapsed={result.elapsed_s:.1f}s rwdir={result.rwdir}",
        file=sys.stderr,
    )
    if result.timed_out:
        print(
            f"[guest] timed out after {args.timeout:.0f}s; console: {result.console_path}",
            file=sys.stderr,
        )
        return EXIT_TIMEOUT
    if step.status is None:
        print(
            f"[guest] the guest never reported a status; console: {result.console_path}",
            file=sys.stderr,
        )
        return EXIT_NO_STATUS
    return step.status


if __name__ == "__main__":
    sys.exit(main())
