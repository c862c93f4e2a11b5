"""The dispatch table: ``spec.strategy.type`` -> the coroutine that rolls a Deployment out.

A strategy is ``async def rollout(r: Rollout) -> None`` (see the package docstring); add one
by adding its module and its row here. A type with no row is left alone by the controller,
which records a Warning Event once per generation and an Unknown Progressing condition.

``SCALES_ITSELF``: the strategies the controller also hands a paused or resized Deployment
(they check ``r.paused`` and size their sides by their own rules); the others then go through
``scaling.sync``, whose proportional scaling is RollingUpdate's. ``named_services``: the
Services a Deployment's strategy reads and writes, which the controller watches for it
(with the one a former BlueGreen Deployment still holds); ``let_go``: what the controller runs
each pass before the strategy, undoing what a strategy left behind.
"""

from __future__ import annotations

from . import bluegreen, canary, recreate, rolling
from .constants import BLUE_GREEN, CANARY, RECREATE, ROLLING_UPDATE
from .rollout import Obj, Rollout, Strategy

STRATEGIES: dict[str, Strategy] = {
    ROLLING_UPDATE: rolling.rollout,
    RECREATE: recreate.rollout,
    BLUE_GREEN: bluegreen.rollout,
    CANARY: canary.rollout,
}

SCALES_ITSELF = frozenset({BLUE_GREEN, CANARY})


def named_services(deployment: Obj) -> list[str]:
    """Names (in the Deployment's namespace) of the Services its strategy names."""
    return bluegreen.service_names(deployment)


async def let_go(r: Rollout) -> None:
    """Undo what a strategy the Deployment left behind still holds: the active Service a
    former BlueGreen Deployment switched selects all its Pods again."""
    await bluegreen.let_go(r)


def service_keys(deployment: Obj) -> list[str]:
    """Index values of ``named_services``: "namespace/name"."""
    return bluegreen.service_keys(deployment)
