"""Comparing a Docker Engine's config.json with build_spec's, and the documented differences.

The reference is Debian's Docker Engine 20.10 (the one on these machines); pydesk follows
Docker 28's defaults. Every difference the comparison tolerates is in :data:`ALLOWED`, with
its reason; anything else fails the test.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any


def _names(text: str) -> frozenset[str]:
    return frozenset(text.split())


# Why each tolerated difference exists.
ALLOWED = {
    "ociVersion": "20.10 writes runtime-spec 1.0.2-dev; Docker 28 and pydesk write 1.2.0",
    "hooks": "Docker's libnetwork-setkey prestart hook: pydesk's network layer uses none",
    "linux.resources.blockIO": "20.10 writes {weight: 0}; Docker 28 writes {} (same: unset)",
    "linux.resources.cpu.shares=0": "20.10 writes shares 0 when unset; Docker 28 omits it",
    "capabilities.non-root": "20.10 lists only the bounding set for a non-root user; Docker 28 "
                             "lists effective and permitted too (execve clears them for a "
                             "non-root uid without file capabilities: same result)",
    "capabilities.duplicates": "Docker appends --cap-add names even when already present; "
                               "pydesk lists each capability once",
    "mounts.order": "Docker orders mounts of equal depth by Go map iteration: compared by "
                    "destination",
    "seccomp.defaultErrnoRet": "Docker 28 states errno 1 (EPERM); 20.10 leaves it to runc's "
                               "default, EPERM",
    "capabilities.newer": "CAP_PERFMON, CAP_BPF, CAP_CHECKPOINT_RESTORE (38-40): 20.10's "
                          "capability table predates them; Docker 28 and pydesk grant them "
                          "with ALL/--privileged when the kernel knows them",
    "capabilities.bounding": "pydesk grants ALL/--privileged only the capabilities in the "
                             "daemon's own bounding set (moby's GetAllCapabilities reads the "
                             "daemon's bounding set); 20.10 lists every capability it knows. "
                             "This sandbox lacks CAP_SYS_RESOURCE: compared without the "
                             "capabilities the daemon does not hold",
    "network.host": "with --network host, 20.10 joins its own handle on the host netns "
                    "(exec-root/netns/default); Docker 28 and pydesk leave the network "
                    "namespace out: the same namespace",
    "devices.wildcard": "Docker writes -1 for a '*' major/minor in a device cgroup rule "
                        "(runc's wildcard); pydesk omits the field, the runtime-spec's wildcard",
    "user.group_add": "Docker orders the --group-add gids by Go map iteration (random); "
                      "the gid lists are compared sorted",
    "seccomp.duplicates": "a call unlocked by two capabilities is listed twice; compared as sets",
    "seccomp.socket": "Docker 28 refuses AF_VSOCK sockets (socket allowed if arg0 != 40); "
                      "20.10 allowed every socket family",
    "seccomp.names": "syscalls Docker 28's profile added (SEC_28_ONLY) or removed (io_uring, "
                     "SEC_20_ONLY) since 20.10",
}
# Docker 28's default profile allows these that 20.10's did not (new syscalls; ptrace's
# process_vm_* siblings on kernels >= 4.8; name_to_handle_at for everyone).
SEC_28_ONLY = _names("""
    cachestat fchmodat2 futex_requeue futex_wait futex_wake getxattrat listmount listxattrat
    map_shadow_stack mseal name_to_handle_at pkey_alloc pkey_free pkey_mprotect
    process_vm_readv process_vm_writev removexattrat riscv_hwprobe setxattrat statmount
    uretprobe clock_settime64 lsm_get_self_attr lsm_list_modules lsm_set_self_attr
    set_mempolicy_home_node""")
# io_uring: removed from Docker's default profile in 25.0 (a history of kernel exploits).
SEC_20_ONLY = frozenset(("io_uring_enter", "io_uring_register", "io_uring_setup"))
NEWER_CAPS = frozenset(("CAP_PERFMON", "CAP_BPF", "CAP_CHECKPOINT_RESTORE"))


def _unheld_caps() -> frozenset[str]:
    """Capabilities outside this process's bounding set (a daemon started from here has the
    same): no container can be given them."""
    from pydeskd.runtime.capabilities import CAPABILITIES

    with open("/proc/self/status") as status:
        bounding = next(int(line.split()[1], 16) for line in status
                        if line.startswith("CapBnd:"))
    return frozenset(name for name, number in CAPABILITIES.items()
                     if not bounding >> number & 1)


UNHELD_CAPS = _unheld_caps()


_ALLOW_RULE = json.dumps({"action": "SCMP_ACT_ALLOW", "errnoRet": None, "args": None},
                         sort_keys=True)
_VSOCK_RULE = json.dumps({"action": "SCMP_ACT_ALLOW", "errnoRet": None,
                          "args": [{"index": 0, "value": 40, "op": "SCMP_CMP_NE"}]},
                         sort_keys=True)


def _flat(obj: Any, path: str = "") -> Iterator[tuple[str, str]]:
    if isinstance(obj, dict):
        for key, value in obj.items():
            yield from _flat(value, f"{path}.{key}" if path else key)
    else:
        yield path, json.dumps(obj)


def _seccomp_rules(seccomp: dict[str, Any] | None) -> dict[str, list[str]]:
    """name -> its rules (action, errno, args), order-free: how the filter treats the call."""
    rules: dict[str, list[str]] = {}
    for rule in (seccomp or {}).get("syscalls", []):
        shape = json.dumps({k: rule.get(k) for k in ("action", "errnoRet", "args")},
                           sort_keys=True)
        for name in rule["names"]:
            rules.setdefault(name, []).append(shape)
    return {name: sorted(set(shapes)) for name, shapes in rules.items()}


def normalize(spec: dict[str, Any], *, docker: bool) -> dict[str, Any]:
    """A copy with the allowed differences taken out (see ALLOWED)."""
    spec = json.loads(json.dumps(spec))
    spec.pop("ociVersion", None)
    spec.pop("hooks", None)
    resources = spec.get("linux", {}).get("resources", {})
    resources.pop("blockIO", None)
    if resources.get("cpu") == {"shares": 0}:
        resources.pop("cpu")
    elif isinstance(resources.get("cpu"), dict) and resources["cpu"].get("shares") == 0:
        resources["cpu"].pop("shares")
    user = spec.get("process", {}).get("user", {})
    if "additionalGids" in user:
        user["additionalGids"] = sorted(user["additionalGids"])
    caps = spec.get("process", {}).get("capabilities", {})
    for key in list(caps):
        caps[key] = [c for c in dict.fromkeys(caps[key])
                     if c not in NEWER_CAPS and c not in UNHELD_CAPS]
    if spec.get("process", {}).get("user", {}).get("uid", 0) != 0:
        caps.pop("effective", None)
        caps.pop("permitted", None)
    spec["mounts"] = {m["destination"]: m for m in spec.get("mounts", [])}
    linux = spec.get("linux", {})
    linux["namespaces"] = [ns for ns in linux.get("namespaces", [])
                           if not ns.get("path", "").endswith("/netns/default")]
    for rule in resources.get("devices", []):
        for key in ("major", "minor"):
            if rule.get(key) == -1:
                del rule[key]
    if "devices" in linux:
        linux["devices"] = sorted(linux["devices"], key=lambda d: d["path"])
    seccomp = linux.pop("seccomp", None)
    if seccomp is not None:
        rules = _seccomp_rules(seccomp)
        for name in SEC_20_ONLY | SEC_28_ONLY:
            rules.pop(name, None)
        if not docker and rules.get("socket") == [_VSOCK_RULE]:
            rules["socket"] = [_ALLOW_RULE]
        linux["seccomp"] = {
            "defaultAction": seccomp["defaultAction"],
            "architectures": seccomp.get("architectures"), "rules": rules}
    return spec


def differences(docker: dict[str, Any], ours: dict[str, Any]) -> list[str]:
    a = dict(_flat(normalize(docker, docker=True)))
    b = dict(_flat(normalize(ours, docker=False)))
    return [f"{key}: docker={a.get(key, '-')} pydesk={b.get(key, '-')}"
            for key in sorted(set(a) | set(b)) if a.get(key) != b.get(key)]
