"""testbed/guest.py without booting anything: QEMU topology options, the vng
command line, and the generated guest script (run here with the host's sh)."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from testbed import guest
from testbed.guest import Guest, Topology, guest_script, step_paths, vng_argv
from testbed.guestresult import clean_console


def test_topology_qemu_opts_describe_two_hmat_nodes() -> None:
    opts = Topology(node0_mib=512, node1_mib=2048, nr_cpus=4).qemu_opts()
    joined = " ".join(opts)
    assert "memory-backend-ram,id=m0,size=512M" in joined
    assert "memory-backend-ram,id=m1,size=2048M" in joined
    assert "node,nodeid=0,cpus=0-3,memdev=m0" in joined
    assert "node,nodeid=1,memdev=m1,initiator=0" in joined
    assert "hmat=on" in joined
    assert "target=0,hierarchy=memory,data-type=access-latency,latency=80" in joined
    assert "target=1,hierarchy=memory,data-type=access-latency,latency=300" in joined
    assert Topology(node0_mib=512, node1_mib=2048).total_mib == 2560


def test_vng_argv_uses_tcg_total_memory_and_equals_form(tmp_path: Path) -> None:
    topology = Topology()
    argv = vng_argv(tmp_path / "bzImage", tmp_path, tmp_path / "run.sh", topology, "tcg")
    assert "--disable-kvm" in argv
    assert "--disable-microvm" in argv
    assert argv[argv.index("--memory") + 1] == "2048M"
    assert argv[argv.index("--cpus") + 1] == "2"
    qemu_opts = [arg for arg in argv if arg.startswith("--qemu-opts=")]
    assert len(qemu_opts) == 1 and "hmat=on" in qemu_opts[0]
    kvm_argv = vng_argv(tmp_path / "bzImage", tmp_path, tmp_path / "run.sh", topology, "kvm")
    assert "--disable-kvm" not in kvm_argv


def test_guest_script_records_each_status_and_output(tmp_path: Path) -> None:
    commands = ["echo out; echo err >&2; exit 3", "pwd", 'echo "$KSCAND_RWDIR"']
    script = tmp_path / "run.sh"
    script.write_text(guest_script(commands, tmp_path, tmp_path, None))
    subprocess.run(["sh", str(script)], check=True, timeout=30)
    statuses = []
    for index in range(len(commands)):
        out, err, status = step_paths(tmp_path, index)
        statuses.append(int(status.read_text()))
        assert out.exists() and err.exists()
    assert statuses == [3, 0, 0]
    out0, err0, _ = step_paths(tmp_path, 0)
    assert out0.read_text() == "out\n" and err0.read_text() == "err\n"
    assert step_paths(tmp_path, 1)[0].read_text().strip() == str(tmp_path)
    assert step_paths(tmp_path, 2)[0].read_text().strip() == str(tmp_path)


def test_clean_console_drops_escapes_and_carriage_returns() -> None:
    raw = b"\x1b[?7l\x1b[2J[    0.1] Linux version 6.12\r\nvirtme-ng-init: done\r\n"
    assert clean_console(raw) == "[    0.1] Linux version 6.12\nvirtme-ng-init: done\n"


def test_missing_kernel_is_named(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KSCAND_CACHE", str(tmp_path))
    reasons = guest.missing_prerequisites("idle", venv=tmp_path / "novenv")
    assert any("no idle kernel" in reason and "build-kernel.sh" in reason for reason in reasons)
    assert any("vng" in reason for reason in reasons)
    with pytest.raises(ValueError, match="unknown kernel"):
        guest.kernel_path("bogus")


def test_guest_run_without_kernel_raises_unavailable(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("KSCAND_CACHE", str(tmp_path))
    with pytest.raises(guest.GuestUnavailable):
        Guest(kernel="stock", accel="tcg").run("true", tmp_path / "out")


def test_cli_rejects_missing_command(capsys: pytest.CaptureFixture[str]) -> None:
    assert guest.main(["run", "--rwdir", "/tmp/x", "--"]) == 2
    assert "no command given" in capsys.readouterr().err


class ScriptedBoots:
    """Guest._boot stand-in: each boot writes a console; boot i runs the script unless
    it is listed in `panics` (then it dies before the first command, or after it)."""

    def __init__(self, rwdir: Path, panics: dict[int, str]) -> None:
        self.rwdir = rwdir
        self.panics = panics  # boot index -> "early" | "late"
        self.nr_boots = 0

    def __call__(self, argv: list[str], console_path: Path) -> tuple[int | None, bool]:
        index = self.nr_boots
        self.nr_boots += 1
        out, _, status = step_paths(self.rwdir, 0)
        when = self.panics.get(index)
        if when != "early":
            out.write_text("ran\n")
        if when is None:
            status.write_text("0\n")
        text = f"boot {index}\n" + ("Oops: int3: 0000 [#2]\nKernel panic\n" if when else "")
        console_path.write_text(text)
        return 0, False


@pytest.mark.parametrize(
    ("panics", "nr_boots", "ok"),
    [
        ({}, 1, True),
        ({0: "early"}, 2, True),  # retried once, then the script ran
        ({0: "early", 1: "early", 2: "early"}, guest.BOOT_ATTEMPTS, False),  # bounded
        ({0: "late"}, 1, False),  # a panic while the test ran is a result, never retried
    ],
)
def test_boots_that_die_before_the_script_are_retried(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, panics: dict[int, str], nr_boots: int, ok: bool
) -> None:
    rwdir = tmp_path / "out"
    rwdir.mkdir()
    boots = ScriptedBoots(rwdir.resolve(), panics)
    monkeypatch.setattr(guest, "kernel_path", lambda kind: tmp_path / "vmlinuz")
    monkeypatch.setattr(Guest, "_boot", lambda self, argv, console: boots(argv, console))
    result = Guest(kernel="stock", accel="tcg").run("true", rwdir)
    assert boots.nr_boots == nr_boots
    assert result.ok is ok
    assert len(result.failed_boots) == nr_boots - 1
    for index, path in enumerate(result.failed_boots):
        assert path.read_text().startswith(f"boot {index}\n")  # every dead boot's console kept
    assert result.console().startswith(f"boot {nr_boots - 1}\n")
    if result.failed_boots:
        assert "died early" in result.describe()
