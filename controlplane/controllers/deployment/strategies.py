"""The dispatch table: ``spec.strategy.type`` -> the coroutine that rolls a Deployment out.

A strategy is ``async def rollout(r: Rollout) -> None`` (see the package docstring); add one
by adding its module and its row here. A type with no row is left alone by the controller,
which records a Warning Event once per generation and an Unknown Progressing condition.
"""

from __future__ import annotations

from . import recreate, rolling
from .constants import RECREATE, ROLLING_UPDATE
from .rollout import Strategy

STRATEGIES: dict[str, Strategy] = {
    ROLLING_UPDATE: rolling.rollout,
    RECREATE: recreate.rollout,
}
