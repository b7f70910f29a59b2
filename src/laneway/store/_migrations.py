"""Which schema migrations a database lacks, the same rule for every store:
migration N (1-based) brings a database from version N-1 to N."""

from __future__ import annotations

from collections.abc import Sequence


def pending(
    version: int, migrations: Sequence[tuple[str, ...]]
) -> list[tuple[int, tuple[str, ...]]]:
    """The migrations above ``version``, with their numbers; a database newer
    than this laneway is refused."""
    if version > len(migrations):
        raise RuntimeError(
            f"database schema version {version} is newer than this laneway "
            f"understands ({len(migrations)})"
        )
    return [(number, migrations[number - 1]) for number in range(version + 1, len(migrations) + 1)]
