"""How this instance takes part in a cluster: its role and its leases' TTL."""

from __future__ import annotations

from typing import Literal

import msgspec

# all: serves HTTP and takes runs; api: serves HTTP and takes none; worker:
# takes runs and serves only /health, /ready and /metrics.
Role = Literal["all", "api", "worker"]
ROLES: tuple[Role, ...] = ("all", "api", "worker")
DEFAULT_LEASE_TTL_S = 15.0


class ClusterSettings(msgspec.Struct, frozen=True, kw_only=True):
    role: Role = "all"
    lease_ttl_s: float = DEFAULT_LEASE_TTL_S

    def __post_init__(self) -> None:
        if self.role not in ROLES:
            raise ValueError(f"role must be one of {', '.join(ROLES)}, not {self.role!r}")
        if not self.lease_ttl_s > 0:
            raise ValueError("the lease TTL must be positive")

    @property
    def takes_runs(self) -> bool:
        return self.role != "api"

    @property
    def serves_api(self) -> bool:
        return self.role != "worker"

    @property
    def interval_s(self) -> float:
        """Between heartbeats: three renewals fit in a TTL, so one or two lost
        to a slow database cost no lease."""
        return self.lease_ttl_s / 3
