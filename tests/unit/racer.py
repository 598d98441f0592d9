"""Contenders of the registry races (threads and spawned processes); kept light, as children import it.

A contender runs ``rounds`` rounds. In each, every contender reads the champion log's seq, waits at
the barrier until all have read it, then tries one champion change against that seq: promote a new
version, or (``rollback_to`` given and a version to go back to) roll back. Each reports per round
``(round, seq seen, what it tried, outcome)``; outcome "won", "ChampionChangedError", or the error.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from mlpipe.errors import ChampionChangedError
from mlpipe.registry import ModelVersion, Registry


def rollback_target(registry: Registry, pipeline: str) -> int | None:
    """A registered version other than the champion (the oldest), to roll back to; None if none."""
    champion = registry.champion(pipeline)
    others = [v.version for v in registry.list_versions(pipeline) if champion is None or v.version != champion.version]
    return others[0] if others else None


def contend(
    url: str,
    template: ModelVersion,
    ident: int,
    rounds: int,
    barrier: Any,
    *,
    rollback: bool = False,
) -> list[tuple[int, int, str, str]]:
    """Race ``rounds`` times; promotes version ``1000 * round + ident`` or, if ``rollback``, rolls back."""
    import sqlalchemy as sa

    registry = Registry.from_url(url, create=False)
    outcomes = []
    try:
        # Connect before the start line, so contenders race on the change, not on start-up.
        with registry.engine.connect() as conn:
            conn.execute(sa.text("SELECT 1"))
        for round_ in range(rounds):
            barrier.wait(timeout=60)  # every contender finished the previous round
            seq = registry.champion_seq(template.pipeline)
            target = rollback_target(registry, template.pipeline) if rollback else None
            barrier.wait(timeout=60)  # every contender has read the same seq
            try:
                if target is not None:
                    tried = f"rollback v{target}"
                    registry.rollback(
                        template.pipeline, target, reason="race", actor=f"racer {ident}", expected_seq=seq
                    )
                else:
                    number = 1000 * (round_ + 1) + ident
                    tried = f"promote v{number}"
                    new = dataclasses.replace(template, version=number, run_id=f"manual__racer_{number}")
                    registry.register_and_promote(
                        new,
                        expected_seq=seq,
                        action="promote" if seq else "first",
                        reason="race",
                        actor=f"racer {ident}",
                    )
                outcomes.append((round_, seq, tried, "won"))
            except ChampionChangedError:
                outcomes.append((round_, seq, tried, "ChampionChangedError"))
            except Exception as exc:
                outcomes.append((round_, seq, tried, f"{type(exc).__name__}: {exc}"))
    finally:
        registry.dispose()
    return outcomes


def contender(
    url: str, template: ModelVersion, ident: int, rounds: int, barrier: Any, results: Any, rollback: bool
) -> None:
    """A spawned process's entry: :func:`contend`, its outcomes put on ``results``."""
    try:
        results.put((ident, contend(url, template, ident, rounds, barrier, rollback=rollback)))
    except Exception as exc:
        results.put((ident, f"{type(exc).__name__}: {exc}"))
