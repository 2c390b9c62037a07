"""cgroup v2 paths as kscand compares them: the one definition of "in a cgroup".

Both users, the [scan] cgroups selection (kscand.live.processes) and the
[[process]] rules' cgroup field (kscand.daemon.rules), match through in_cgroup(), so
a path given as "/sys/fs/cgroup/system.slice", "system.slice/" or
"/system.slice" selects the same processes in both.
"""

from __future__ import annotations

CGROUP_MOUNT = "/sys/fs/cgroup"


def normalize_cgroup(path: str) -> str:
    """A cgroup v2 path as /proc/PID/cgroup shows it: "/a/b" (mount prefix removed)."""
    path = path.strip()
    if path.startswith(CGROUP_MOUNT + "/") or path == CGROUP_MOUNT:
        path = path[len(CGROUP_MOUNT) :]
    return "/" + path.strip("/")


def in_cgroup(proc_cgroup: str, selected: str) -> bool:
    """Whether the cgroup v2 path proc_cgroup is the selected cgroup or below it
    ("/" selects every process)."""
    selected = normalize_cgroup(selected)
    if selected == "/":
        return True
    return proc_cgroup == selected or proc_cgroup.startswith(selected + "/")
