"""A promotion contender for the multi-process registry race; kept light, as spawned children import it."""

from __future__ import annotations

from typing import Any

from mlpipe.errors import ChampionChangedError
from mlpipe.registry import ModelVersion, Registry


def contender(url: str, new: ModelVersion, expected_seq: int, barrier: Any, results: Any) -> None:
    """Connect, wait for every contender at the barrier, then try to promote ``new``; report the outcome."""
    import sqlalchemy as sa

    registry = Registry.from_url(url, create=False)
    try:
        # Connect before the start line, so the processes race on the promotion, not on start-up.
        with registry.engine.connect() as conn:
            conn.execute(sa.text("SELECT 1"))
        barrier.wait(timeout=60)
        registry.register_and_promote(
            new, expected_seq=expected_seq, action="promote", reason="race", actor=f"process {new.version}"
        )
        results.put((new.version, "won"))
    except ChampionChangedError:
        results.put((new.version, "ChampionChangedError"))
    except Exception as exc:
        results.put((new.version, f"{type(exc).__name__}: {exc}"))
    finally:
        registry.dispose()
