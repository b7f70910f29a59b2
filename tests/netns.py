"""A network namespace joined to the host by a veth pair, for tests that cut a
process off from the host (its PostgreSQL) as a network partition would.

Making one needs root (CI runs the tests as root) and iproute2's ``ip``
(``.ci/run`` installs it where it is missing); without either, a test that
asks for one is skipped, or fails under CI=true (tests/ci.py).

Each namespace has a /30 of 10.213.0.0/16 to itself: the host's end of the
pair takes the first address (:attr:`NetworkNamespace.host_address`, where a
process inside reaches the host), the namespace's end the second. Nothing is
routed beyond the pair: inside there is no default route, so a process there
reaches the host at that address and nothing else. A server on the host that
such a process must reach listens on the host's address, which exists only
while the namespace does: enter the namespace first, and leave it last.
"""

from __future__ import annotations

import ipaddress
import os
import secrets
import shutil
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager

from tests.ci import missing

IP = shutil.which("ip") or "/usr/sbin/ip"
# Each `ip` command returns in milliseconds; a hung one is a broken machine.
IP_GUARD_S = 10.0
# Private addresses no one else here uses, in /30s: a network for each pair.
RANGE = ipaddress.IPv4Network("10.213.0.0/16")
PAIRS = RANGE.num_addresses // 4
CLAIM_ATTEMPTS = 20
# A neighbour entry no frame gets past: no interface has the all-zero MAC
# (the kernel never gives it), and a permanent entry is never looked up anew.
PINNED = "lladdr 00:00:00:00:00:00 nud permanent"


class NetworkNamespace:
    """A namespace, by the index of its /30 in :data:`RANGE`."""

    def __init__(self, index: int) -> None:
        self.name = f"laneway-{index}"
        self.network = ipaddress.IPv4Network((RANGE.network_address + 4 * index, 30))
        self.host_address = str(self.network.network_address + 1)
        self.address = str(self.network.network_address + 2)
        # Interface names have 15 characters at most.
        self.host_veth = f"lw{index}h"
        self.veth = f"lw{index}n"

    @property
    def host_interface(self) -> str:
        """The host's address with its network's prefix ("10.213.0.1/30"), as
        ``postgres_server(listen=...)`` takes it."""
        return f"{self.host_address}/{self.network.prefixlen}"

    def command(self, *argv: str) -> list[str]:
        """``argv`` as a command that runs inside the namespace."""
        return [IP, "netns", "exec", self.name, *argv]

    def cut(self) -> None:
        """Drop every packet between the namespace and the host, both ways,
        until :meth:`restore`: connections in flight hang and new ones time
        out, as across a real partition, rather than fail at once.

        Each end's neighbour entry for the other is pinned to a MAC no
        interface has, so the frames still cross the pair and the receiving
        end drops them as meant for another host. The links stay up, and so do
        the routes. The obvious ways are worse: with the host's end down, the
        host's route to the namespace is gone and packets for it follow the
        default route out of this machine; with the namespace's end down, a
        connect inside fails at once with "network is unreachable".
        """
        _ip(f"neigh replace {self.address} {PINNED} dev {self.host_veth}")
        _ip(f"-n {self.name} neigh replace {self.host_address} {PINNED} dev {self.veth}")

    def restore(self) -> None:
        """Undo :meth:`cut`: ARP finds each end again on the next packet, and a
        connection in flight resumes at its next retransmission."""
        _ip(f"neigh del {self.address} dev {self.host_veth}")
        _ip(f"-n {self.name} neigh del {self.host_address} dev {self.veth}")


@contextmanager
def network_namespace() -> Iterator[NetworkNamespace]:
    """A new namespace with its veth pair, both ends up, and loopback up inside;
    gone on leaving, however the body left."""
    if os.geteuid() != 0:
        missing("a network namespace needs root (CI runs the tests as root)")
    if not os.access(IP, os.X_OK):
        missing("iproute2's ip is missing (apt-get install -y iproute2, as .ci/run does)")
    ns = _claim()
    try:
        # The peer is made inside the namespace: no moment with both on the host.
        _ip(f"link add {ns.host_veth} type veth peer name {ns.veth} netns {ns.name}")
        _ip(f"addr add {ns.host_interface} dev {ns.host_veth}")
        _ip(f"link set {ns.host_veth} up")
        _ip(f"-n {ns.name} addr add {ns.address}/{ns.network.prefixlen} dev {ns.veth}")
        _ip(f"-n {ns.name} link set {ns.veth} up")
        # A process inside may serve on, or reach, its own 127.0.0.1.
        _ip(f"-n {ns.name} link set lo up")
        yield ns
    finally:
        try:
            # Deleting one end deletes both, now: the namespace's own teardown
            # runs after `ip netns del` returns, and would leave the pair a while.
            _ip(f"link del {ns.host_veth}", check=False)
        finally:
            # A process still inside keeps the namespace, but with no link.
            _ip(f"netns del {ns.name}", check=False)


def _claim() -> NetworkNamespace:
    """A new namespace whose name, and so whose /30, no other has: ``ip netns
    add`` refuses a name that exists, so two sessions never share either."""
    for _ in range(CLAIM_ATTEMPTS):
        # Not `random`, which tests may seed alike in every process.
        ns = NetworkNamespace(secrets.randbelow(PAIRS))
        added = _ip(f"netns add {ns.name}", check=False)
        if added.returncode == 0:
            return ns
        if "exists" not in added.stderr:
            missing(f"cannot make a network namespace here: {added.stderr.strip()}")
    raise RuntimeError(f"no free network namespace name in {CLAIM_ATTEMPTS} tries")


def _ip(command: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    """Run ``ip`` with ``command``'s words (no name here has a space)."""
    argv = [IP, *command.split()]
    done = subprocess.run(argv, capture_output=True, text=True, timeout=IP_GUARD_S, check=False)
    if check and done.returncode != 0:
        raise RuntimeError(f"ip {command}: {done.stderr.strip()}")
    return done
