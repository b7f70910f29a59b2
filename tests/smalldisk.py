"""A real, small file system for tests of a full disk: a tmpfs the test fills.

Mounting needs root, which CI has; elsewhere the tests that use it are skipped
with the reason.
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path

SIZE = "4m"
_CHUNK = b"\0" * 65536


class SmallDisk:
    def __init__(self, root: Path) -> None:
        self.root = root
        self._filler = root / "filler"

    def fill(self) -> None:
        """Take every free byte, as a log file growing out of hand would."""
        fd = os.open(self._filler, os.O_WRONLY | os.O_CREAT | os.O_APPEND)
        try:
            for size in (len(_CHUNK), 4096, 1):
                with suppress(OSError):
                    while True:
                        os.write(fd, _CHUNK[:size])
        finally:
            os.close(fd)
        assert self.free_bytes() < 4096

    def free(self) -> None:
        self._filler.unlink(missing_ok=True)

    def free_bytes(self) -> int:
        stat = os.statvfs(self.root)
        return stat.f_bavail * stat.f_frsize


@contextmanager
def small_disk(parent: Path) -> Iterator[SmallDisk]:
    import pytest

    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs for a full disk needs root (CI runs the tests as root)")
    root = parent / "disk"
    root.mkdir()
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={SIZE}", "tmpfs", str(root)],
        capture_output=True,
        text=True,
        check=False,
    )
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {mounted.stderr.strip()}")
    try:
        yield SmallDisk(root)
    finally:
        # Lazy: a file a failed test left open must not keep the mount.
        subprocess.run(["umount", "-l", str(root)], check=False)
