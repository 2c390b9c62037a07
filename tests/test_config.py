"""Config file parsing: defaults, every section, and one-line errors that name the field."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from kscand.config import (
    DEFAULT_STATE_DIR,
    Config,
    check_config_file,
    config_from_text,
    load_config,
    parse_metrics_address,
)
from kscand.core.tunables import GiB, MiB, Tunables, tunable_fields
from kscand.errors import ConfigError

REPO = Path(__file__).resolve().parents[1]


def test_empty_file_gives_defaults() -> None:
    config = config_from_text("")
    assert config == Config()
    assert config.tunables == Tunables()
    assert config.daemon.state_dir == DEFAULT_STATE_DIR
    assert config.scan.access_source == "auto"
    assert config.topology.top_tier_nodes is None


def test_every_section_is_read() -> None:
    config = config_from_text(
        """
        [tunables]
        scan_sleep_ms = 50
        scan_size_bytes = "256MiB"
        target_free_min_pct = 5
        scan_enabled = false
        [scan]
        pids = [1, 42]
        cgroups = ["/system.slice/redis.service"]
        comm_patterns = ["redis*", "postgres"]
        access_source = "damon"
        [topology]
        top_tier_nodes = [0]
        slow_nodes = [2, 3]
        [daemon]
        state_dir = "/run/kscand-test"
        log_level = "debug"
        trace = "stderr"
        status_interval_ms = 500
        """
    )
    assert config.tunables.scan_sleep_ms == 50
    assert config.tunables.scan_size_bytes == 256 * MiB
    assert config.tunables.target_free_min_pct == 5.0
    assert config.tunables.scan_enabled is False
    assert config.scan.pids == (1, 42)
    assert config.scan.cgroups == ("/system.slice/redis.service",)
    assert config.scan.comm_patterns == ("redis*", "postgres")
    assert config.scan.access_source == "damon"
    assert config.topology.top_tier_nodes == (0,)
    assert config.topology.slow_nodes == (2, 3)
    assert config.daemon.state_dir == Path("/run/kscand-test")
    assert config.daemon.log_level == "debug"
    assert config.daemon.trace == "stderr"
    assert config.daemon.status_interval_ms == 500


def test_every_tunable_is_accepted_in_config() -> None:
    lines = []
    for f in tunable_fields():
        value = f.default
        text = str(value).lower() if isinstance(value, bool) else repr(value)
        lines.append(f"{f.name} = {text}")
    config = config_from_text("[tunables]\n" + "\n".join(lines))
    assert config.tunables == Tunables()


@pytest.mark.parametrize(
    ("text", "field"),
    [
        ("[tunables]\nscan_sleep_ms = -1", "tunables.scan_sleep_ms:"),
        ("[tunables]\nscan_sleep_ms = 1.5", "tunables.scan_sleep_ms:"),
        ("[tunables]\nscan_enabled = 1", "tunables.scan_enabled:"),
        ("[tunables]\nscan_size_bytes = \"lots\"", "tunables.scan_size_bytes:"),
        ("[tunables]\nscan_size_bytes = 2097153", "tunables.scan_size_bytes:"),
        ("[tunables]\nhot_history_depth = 9", "tunables.hot_history_depth:"),
        ("[tunables]\ntarget_node = \"0\"", "tunables.target_node:"),
        ("[tunables]\nmigrate_batch_folios = 0", "tunables.migrate_batch_folios:"),
        ("[tunables]\nno_such_knob = 1", "tunables.no_such_knob:"),
        ("tunables = 3", "tunables:"),
        ("[scan]\npids = 5", "scan.pids:"),
        ("[scan]\npids = [1, \"two\"]", "scan.pids[1]:"),
        ("[scan]\npids = [0]", "scan.pids[0]:"),
        ("[scan]\npids = [7, 7]", "scan.pids:"),
        ("[scan]\ncgroups = [\"system.slice\"]", "scan.cgroups[0]:"),
        ("[scan]\ncgroups = [\"/a/../b\"]", "scan.cgroups[0]:"),
        ("[scan]\ncomm_patterns = [\"\"]", "scan.comm_patterns[0]:"),
        ("[scan]\ncomm_patterns = [\"a-very-long-command\"]", "scan.comm_patterns[0]:"),
        ("[scan]\naccess_source = \"perf\"", "scan.access_source:"),
        ("[scan]\npid = [1]", "scan.pid:"),
        ("[topology]\nslow_nodes = [-1]", "topology.slow_nodes[0]:"),
        ("[topology]\ntop_tier_nodes = []", "topology.top_tier_nodes:"),
        ("[topology]\ntop_tier_nodes = [0]\nslow_nodes = [0]", "topology.slow_nodes:"),
        ("[daemon]\nstate_dir = \"run/kscand\"", "daemon.state_dir:"),
        ("[daemon]\nstate_dir = 1", "daemon.state_dir:"),
        ("[daemon]\nlog_level = \"loud\"", "daemon.log_level:"),
        ("[daemon]\ntrace = \"file.json\"", "daemon.trace:"),
        ("[daemon]\nstatus_interval_ms = 1", "daemon.status_interval_ms:"),
        ("[deamon]\nlog_level = \"info\"", "deamon:"),
        ("[tunables\n", "not valid TOML:"),
    ],
)
def test_bad_field_is_one_line_naming_it(text: str, field: str) -> None:
    with pytest.raises(ConfigError) as info:
        config_from_text(text)
    message = str(info.value)
    assert message.startswith(field), message
    assert "\n" not in message


def test_load_config_prefixes_the_path(tmp_path: Path) -> None:
    path = tmp_path / "kscand.toml"
    path.write_text("[tunables]\nscan_sleep_ms = 100000\n")
    path.chmod(0o644)
    with pytest.raises(ConfigError, match=rf"^{path}: tunables.scan_sleep_ms: 100000 is out"):
        load_config(path)


def test_load_config_missing_and_not_utf8(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot open"):
        load_config(tmp_path / "absent.toml")
    path = tmp_path / "bin.toml"
    path.write_bytes(b"\xff\xfe")
    path.chmod(0o600)
    with pytest.raises(ConfigError, match="not UTF-8"):
        load_config(path)


def test_load_config_refuses_a_file_others_can_write(tmp_path: Path) -> None:
    path = tmp_path / "kscand.toml"
    path.write_text("")
    path.chmod(0o666)
    with pytest.raises(ConfigError, match="writable by group or others"):
        load_config(path)


def test_check_config_file_owner_and_kind(tmp_path: Path) -> None:
    st = os.stat(tmp_path)
    assert check_config_file(st, os.geteuid()) == "is not a regular file"
    path = tmp_path / "f"
    path.write_text("")
    path.chmod(0o644)
    st = os.stat(path)
    assert check_config_file(st, os.geteuid()) is None
    other = os.stat_result((st.st_mode, 0, 0, 1, 4242, 0, 0, 0, 0, 0))
    assert "owned by uid 4242" in (check_config_file(other, 4243) or "")


def test_contrib_example_config_is_valid_and_has_every_tunable() -> None:
    path = REPO / "contrib" / "kscand.toml"
    text = path.read_text()
    config = config_from_text(text)
    assert config.daemon.state_dir == DEFAULT_STATE_DIR
    for f in tunable_fields():
        assert f"{f.name} =" in text, f"contrib/kscand.toml does not document {f.name}"
    # The example keeps the defaults, so it documents them without changing them.
    assert config.tunables == Tunables()
    assert config.tunables.scan_size_bytes == 4 * GiB


def test_contrib_rule_examples_parse_when_uncommented() -> None:
    text = (REPO / "contrib" / "kscand.toml").read_text()
    start = text.index("# [[process]]")
    example = "\n".join(line[2:] for line in text[start:].splitlines() if line.startswith("# "))
    rules = config_from_text(example).process_rules
    assert [r.scale for r in rules] == [0, 1]
    assert rules[0].cgroup == "/system.slice/backup.service" and rules[1].comm == "redis-server"
    metrics_line = next(line for line in text.splitlines() if line.startswith("# metrics ="))
    assert str(config_from_text("[daemon]\n" + metrics_line[2:]).daemon.metrics) == (
        "127.0.0.1:9477")


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("9477", "127.0.0.1:9477"),
        ("127.0.0.1:0", "127.0.0.1:0"),
        ("0.0.0.0:9477", "0.0.0.0:9477"),
        ("[::1]:9477", "[::1]:9477"),
        (" 10.1.2.3:80 ", "10.1.2.3:80"),
    ],
)
def test_metrics_address_defaults_to_loopback(text: str, expected: str) -> None:
    assert str(parse_metrics_address(text, "--metrics")) == expected


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("localhost:9477", "--metrics: expected PORT, IP:PORT or [IPv6]:PORT"),
        ("::1:9477", "--metrics: write an IPv6 address in brackets"),
        ("127.0.0.1:65536", "--metrics: port 65536 is out of range"),
        ("127.0.0.1:-1", "--metrics: port -1 is out of range"),
        ("", "--metrics: expected PORT"),
        ("1.2.3.4:", "--metrics: expected PORT"),
        ("1.2.3.4:http", "--metrics: expected PORT"),
    ],
)
def test_bad_metrics_address_is_one_line(text: str, message: str) -> None:
    with pytest.raises(ConfigError) as info:
        parse_metrics_address(text, "--metrics")
    assert str(info.value).startswith(message) and "\n" not in str(info.value)


def test_daemon_trace_level_and_metrics_keys() -> None:
    config = config_from_text('[daemon]\ntrace_level = "mm"\nmetrics = "9100"\n')
    assert config.daemon.trace_level == "mm"
    assert str(config.daemon.metrics) == "127.0.0.1:9100"
    assert config_from_text('[daemon]\nmetrics = ""\n').daemon.metrics is None
    for text, field in (('trace_level = "verbose"', "daemon.trace_level:"),
                        ('metrics = 9100', "daemon.metrics: expected a string"),
                        ('state_dir = "/run/a\\u0000b"', "daemon.state_dir: a path cannot")):
        with pytest.raises(ConfigError, match=f"^{field}"):
            config_from_text(f"[daemon]\n{text}\n")


def test_config_through_another_users_symlink_is_refused(tmp_path: Path) -> None:
    if os.geteuid() != 0:
        pytest.skip("needs root to give a symlink to another user")
    target = tmp_path / "real.toml"
    target.write_text("[tunables]\nscan_sleep_ms = 30\n")
    target.chmod(0o644)
    ours = tmp_path / "ours.toml"
    ours.symlink_to(target)
    assert load_config(ours).tunables.scan_sleep_ms == 30  # root's own symlink: followed
    planted = tmp_path / "planted.toml"
    planted.symlink_to(target)
    os.lchown(planted, 65534, 65534)
    with pytest.raises(ConfigError, match=r"planted.toml is a symlink owned by uid 65534; "
                                          r"refusing to follow it"):
        load_config(planted)
    # A planted directory symlink anywhere on the path is refused the same way.
    (tmp_path / "etc").mkdir()
    (tmp_path / "etc" / "kscand.toml").write_text("")
    (tmp_path / "etc" / "kscand.toml").chmod(0o644)
    (tmp_path / "link").symlink_to(tmp_path / "etc")
    os.lchown(tmp_path / "link", 65534, 65534)
    with pytest.raises(ConfigError, match="link is a symlink owned by uid 65534"):
        load_config(tmp_path / "link" / "kscand.toml")
    with pytest.raises(ConfigError, match="a path cannot hold a NUL byte"):
        load_config(Path("/etc/kscand\0.toml"))
