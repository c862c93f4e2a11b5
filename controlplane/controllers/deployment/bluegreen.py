"""The BlueGreen strategy (Corral's extension, docs/deployment-strategies.md): the new template
runs at full size beside the old one, and the active Service's selector is switched to it
(``pod-template-hash``) once every new Pod is available; the old side is kept for
``scaleDownDelaySeconds``, then scaled to 0.

Pure core first, in code order:

- ``Settings``/``settings_of``: ``spec.strategy.blueGreen`` read; ``service_names`` and
  ``service_keys`` (the controller's index of Deployments by the Services they name).
- ``Side``: a ReplicaSet with its hash and scale-down stamp.
- ``decide``: one pass, from a ``State``: the sizes to write, else promote (stamp the old
  serving sides, then switch the active Service), pause for a manual promotion, or wait.
  Which old side serves: the one the active Service's hash names; with no hash of ours in its
  selector (the first rollout, or a Deployment that was RollingUpdate), every old one with
  replicas. An old side that does not serve goes to 0 once its stamp (if any) has passed.

Then the I/O shell, ``rollout(r)``: the Services (missing ones: a Warning ``ServiceNotFound``
once per generation, the ``ServiceFailure`` condition, and with the active one missing a hold
with back-off), the new ReplicaSet at full size, the preview Service, the ``Plan``, the status.

The invariant: the active Service is switched only to a ReplicaSet whose every replica is
available (its size is ``replicas``, as many Pods, all available). A rollback within the
scale-down delay (the new ReplicaSet still carries a stamp in the future: it was active
moments ago) is promoted at once, manual promotion or not; so is the first rollout.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta

from ...client.events import NORMAL, WARNING
from ..pods import available_in
from . import shared
from . import status as status_
from .constants import (
    ACTIVE_SERVICE,
    AWAITING_PROMOTION,
    BLUE_GREEN,
    DEFAULT_SCALE_DOWN_DELAY_SECONDS,
    MSG_AWAITING_PROMOTION,
    MSG_PREVIEW_SWITCHED,
    MSG_PROMOTED,
    MSG_SERVICE_HOLDS,
    MSG_SERVICE_NOT_FOUND,
    PAUSED_FOR,
    POD_TEMPLATE_HASH,
    PREVIEW_SWITCHED,
    PROGRESSING,
    PROMOTED,
    SCALE_DOWN_AT,
    SERVICE_FAILURE,
    SERVICE_NOT_FOUND,
    TRUE,
)
from .replicas import ReplicaSetView
from .rollout import RECHECK_SLACK, Obj, Rollout

#: Longest wait between two looks for a missing active Service (seconds); its creation brings
#: the Deployment back at once anyway (the controller watches Services).
SERVICE_BACKOFF_MAX = 30.0

# ---------------------------------------------------------------- settings


@dataclass(frozen=True)
class Settings:
    active: str
    preview: str | None = None
    auto_promotion: bool = True
    auto_promotion_seconds: int = 0
    scale_down_delay: int = DEFAULT_SCALE_DOWN_DELAY_SECONDS


def settings_of(deployment: Obj) -> Settings:
    raw = ((deployment.get("spec") or {}).get("strategy") or {}).get("blueGreen") or {}
    auto = raw.get("autoPromotionEnabled")
    delay = raw.get("scaleDownDelaySeconds")
    return Settings(active=str(raw.get("activeService") or ""),
                    preview=raw.get("previewService") or None,
                    auto_promotion=True if auto is None else bool(auto),
                    auto_promotion_seconds=int(raw.get("autoPromotionSeconds") or 0),
                    scale_down_delay=DEFAULT_SCALE_DOWN_DELAY_SECONDS if delay is None
                    else int(delay))


def is_blue_green(deployment: Obj) -> bool:
    return ((deployment.get("spec") or {}).get("strategy") or {}).get("type") == BLUE_GREEN


def service_names(deployment: Obj) -> list[str]:
    """The Services a BlueGreen Deployment names (active, then preview), and the active
    Service it last switched if that is no longer its active one (to be let go)."""
    remembered = shared.annotations(deployment).get(ACTIVE_SERVICE)
    if not is_blue_green(deployment):
        return [remembered] if remembered else []
    settings = settings_of(deployment)
    names = [name for name in (settings.active, settings.preview) if name]
    return names + [remembered] if remembered and remembered not in names else names


def service_keys(deployment: Obj) -> list[str]:
    """Index values: "namespace/name" of the Services ``deployment`` names."""
    namespace = (deployment.get("metadata") or {}).get("namespace") or ""
    return [f"{namespace}/{name}" for name in service_names(deployment)]


# ---------------------------------------------------------------- one pass, decided


@dataclass(frozen=True)
class Side:
    """A ReplicaSet of the Deployment, as the decision sees it."""

    view: ReplicaSetView
    pod_hash: str
    #: When it goes to 0, stamped as the active Service left it.
    scale_down_at: datetime | None = None

    @property
    def name(self) -> str:
        return self.view.name


@dataclass(frozen=True)
class State:
    replicas: int
    new: Side
    old: tuple[Side, ...]
    #: The pod-template-hash in the active Service's selector (None: none, or no Service).
    active_hash: str | None
    settings: Settings
    now: datetime
    service_missing: bool = False
    paused: bool = False
    #: The Deployment was paused for this new side and is not any more: promote.
    resumed: bool = False
    #: Seconds until every new Pod has been available for autoPromotionSeconds (None: not
    #: all are available).
    promotable_in: float | None = None
    #: When the autoPromotionSeconds wait under way ends (counted from the last progress:
    #: the new side becoming available); None: no such wait.
    promotion_wait_ends: datetime | None = None


@dataclass(frozen=True)
class Plan:
    sizes: list[tuple[str, int]] = field(default_factory=list)
    #: Switch the active Service to the new side, after stamping ``stamp`` with
    #: ``scale_down_at``.
    promote: bool = False
    stamp: tuple[str, ...] = ()
    scale_down_at: datetime | None = None
    #: Pause the Deployment for a manual promotion.
    pause: bool = False
    #: Look again in this many seconds (a delay or autoPromotionSeconds running).
    wait: float | None = None
    #: A wait on purpose (a delay, autoPromotionSeconds, a Deployment of 0 replicas): the
    #: progress deadline does not run out meanwhile.
    hold: bool = False


def serving(s: State) -> list[Side]:
    """The old sides the active Service selects now (see the module docstring)."""
    if s.active_hash is not None and s.active_hash == s.new.pod_hash:
        return []
    named = [o for o in s.old if o.pod_hash == s.active_hash]
    if named:
        return named
    return [o for o in s.old if o.view.replicas > 0]


def fully_available(side: Side, replicas: int) -> bool:
    view = side.view
    return view.replicas == view.available == view.pods == replicas


def _earliest(a: float | None, b: float) -> float:
    return b if a is None else min(a, b)


def decide(s: State) -> Plan:
    """The next move of a blue-green rollout: sizes first (the new side and a named serving
    side at ``replicas``, old sides that do not serve to 0 once their stamp passed), then,
    with nothing to scale, promotion or a pause for it. A Deployment of 0 replicas only
    sizes (nothing to promote: no side is fully available with nothing to run)."""
    plan = _decide(s)
    promoted = s.active_hash is not None and s.active_hash == s.new.pod_hash
    auto_wait = s.promotion_wait_ends is not None and s.now < s.promotion_wait_ends and \
        s.settings.auto_promotion and not promoted and not s.paused
    if plan.wait is not None or auto_wait or s.replicas == 0:
        return replace(plan, hold=True)
    return plan


def _decide(s: State) -> Plan:
    serves = serving(s)
    sizes = []
    wait: float | None = None
    if s.new.view.replicas != s.replicas:
        sizes.append((s.new.name, s.replicas))
    named = s.active_hash is not None and [o.pod_hash for o in serves] == [s.active_hash]
    if named and serves[0].view.replicas != s.replicas:
        sizes.append((serves[0].name, s.replicas))
    if not s.paused and not s.service_missing:
        for o in s.old:
            if o in serves or o.view.replicas == 0:
                continue
            if o.scale_down_at is not None and s.now < o.scale_down_at:
                wait = _earliest(wait, (o.scale_down_at - s.now).total_seconds())
                continue
            sizes.append((o.name, 0))
    promoted = s.active_hash is not None and s.active_hash == s.new.pod_hash
    if sizes or promoted or s.paused or s.service_missing or s.replicas == 0 or \
            not fully_available(s.new, s.replicas):
        return Plan(sizes=sizes, wait=wait)
    at = s.now + timedelta(seconds=s.settings.scale_down_delay)
    promote = Plan(promote=True, stamp=tuple(o.name for o in serves), scale_down_at=at,
                   wait=wait)
    rollback = s.new.scale_down_at is not None and s.now < s.new.scale_down_at
    if rollback or not serves:
        return promote
    if not s.settings.auto_promotion:
        return promote if s.resumed else Plan(pause=True, wait=wait)
    if s.promotable_in is None:  # a Pod's Ready time unknown: not promotable yet
        return Plan(wait=wait)
    if s.promotable_in > 0:
        return Plan(wait=_earliest(wait, s.promotable_in))
    return promote


# ---------------------------------------------------------------- the I/O shell


_annotations, _hash, paused_key = shared.annotations, shared.pod_hash, shared.paused_key


def _side(r: Rollout, rs: Obj) -> Side:
    return Side(r.view(rs), _hash(rs), status_.parse_time(_annotations(rs).get(SCALE_DOWN_AT)))


def _promotable_in(r: Rollout, rs: Obj, seconds: int) -> float | None:
    waits = [available_in(p, r.min_ready_seconds + seconds, now=lambda: r.now)
             for p in r.active_pods(rs)]
    if not waits or any(w is None for w in waits):
        return None
    return max(w for w in waits if w is not None)


def read_state(r: Rollout, settings: Settings, *, missing: bool) -> State:
    assert r.new_rs is not None
    svc = r.service(settings.active)
    selector = ((svc or {}).get("spec") or {}).get("selector") or {}
    return State(replicas=r.replicas, new=_side(r, r.new_rs),
                 old=tuple(_side(r, rs) for rs in r.old_rss),
                 active_hash=selector.get(POD_TEMPLATE_HASH), settings=settings, now=r.now,
                 service_missing=missing, paused=r.paused,
                 resumed=not r.paused and
                 _annotations(r.deployment).get(PAUSED_FOR) == paused_key(r.new_rs),
                 promotable_in=_promotable_in(r, r.new_rs, settings.auto_promotion_seconds),
                 promotion_wait_ends=_promotion_wait_ends(r, settings))


def _promotion_wait_ends(r: Rollout, settings: Settings) -> datetime | None:
    """The end of an autoPromotionSeconds wait, counted from Progressing's last update (the
    new side's last Pod becoming available is progress); None without such a wait."""
    if settings.auto_promotion_seconds <= 0:
        return None
    since = status_.parse_time((status_.get_condition(
        r.deployment.get("status"), PROGRESSING) or {}).get("lastUpdateTime"))
    return since + timedelta(seconds=settings.auto_promotion_seconds) if since else None



async def rollout(r: Rollout) -> None:
    if await shared.synced_without_new(r):  # no new template while paused
        return
    settings = settings_of(r.deployment)
    missing = await _services_present(r, settings)
    new = await r.ensure_new_replica_set(replicas=r.replicas)
    new_hash = _hash(new)
    if settings.preview and r.service(settings.preview) is not None and \
            await r.switch_service(settings.preview, new_hash):
        await r.record(NORMAL, PREVIEW_SWITCHED, MSG_PREVIEW_SWITCHED.format(
            svc=settings.preview, rs=new["metadata"]["name"]))
        r.note_progress()
    plan = decide(read_state(r, settings, missing=missing))
    for name, size in plan.sizes:
        if await r.scale(r.by_name(name), size):
            r.note_progress()
    if plan.promote:
        await _promote(r, settings, plan)
    elif plan.pause:
        await r.pause({PAUSED_FOR: paused_key(new)})
        await r.record(NORMAL, AWAITING_PROMOTION, MSG_AWAITING_PROMOTION.format(
            rs=new["metadata"]["name"], svc=settings.active))
    await _unstamp_active(r, settings)
    if plan.wait is not None:
        r.requeue(plan.wait + RECHECK_SLACK)
    if plan.hold:
        r.hold_deadline()
    await shared.finish(r)


async def _promote(r: Rollout, settings: Settings, plan: Plan) -> None:
    """Stamp the sides the active Service leaves, then switch it (both compare-and-swaps: a
    lost one ends the pass before the switch, and the next pass stamps again)."""
    assert r.new_rs is not None and plan.scale_down_at is not None
    stamp = status_.timestamp_after(plan.scale_down_at)
    for name in plan.stamp:
        await r.annotate(r.by_name(name), {SCALE_DOWN_AT: stamp})
    await r.annotate_deployment({ACTIVE_SERVICE: settings.active})  # to be let go one day
    await r.switch_service(settings.active, _hash(r.new_rs))
    await r.record(NORMAL, PROMOTED, MSG_PROMOTED.format(svc=settings.active,
                                                         rs=r.new_rs["metadata"]["name"]))
    r.note_progress()


async def _unstamp_active(r: Rollout, settings: Settings) -> None:
    """The side the active Service selects carries no scale-down stamp (one a rollback left)."""
    new = r.new_rs
    svc = r.service(settings.active)
    if new is None or svc is None or SCALE_DOWN_AT not in _annotations(new):
        return
    if ((svc.get("spec") or {}).get("selector") or {}).get(POD_TEMPLATE_HASH) == _hash(new):
        await r.annotate(new, {SCALE_DOWN_AT: None})


async def _services_present(r: Rollout, settings: Settings) -> bool:
    """Tell of missing Services (a Warning once per generation and message, the
    ServiceFailure condition; cleared once they exist). True when the active one is missing:
    the rollout holds, looked at again with back-off (as long again as it has been missing,
    1 to SERVICE_BACKOFF_MAX seconds)."""
    names: Sequence[str] = [n for n in (settings.active, settings.preview) if n]
    missing = [n for n in names if r.service(n) is None]
    status = r.deployment.get("status") or {}
    current = status_.get_condition(status, SERVICE_FAILURE)
    if not missing:
        if current is not None:
            r.clear_condition(SERVICE_FAILURE)
        return False
    message = "; ".join(
        (MSG_SERVICE_HOLDS if n == settings.active else MSG_SERVICE_NOT_FOUND).format(svc=n)
        for n in missing)
    same = current is not None and current.get("reason") == SERVICE_NOT_FOUND and \
        current.get("message") == message
    observed = int(status.get("observedGeneration") or 0) >= \
        int(r.deployment["metadata"].get("generation") or 0)
    if not (same and observed):
        await r.record(WARNING, SERVICE_NOT_FOUND, message)
    if current is not None and not same:
        r.clear_condition(SERVICE_FAILURE)
    r.set_condition(SERVICE_FAILURE, TRUE, SERVICE_NOT_FOUND, message)
    if settings.active not in missing:
        return False
    since = status_.parse_time((current or {}).get("lastTransitionTime")) if same else None
    missing_for = (r.now - since).total_seconds() if since is not None else 0.0
    r.requeue(min(max(missing_for, 1.0), SERVICE_BACKOFF_MAX))
    return True


async def let_go(r: Rollout) -> None:
    """A Deployment that is no longer BlueGreen, or whose activeService changed: the active
    Service it last switched selects all its Pods again (``pod-template-hash`` removed from its
    selector, a compare-and-swap), then the Deployment forgets it."""
    name = _annotations(r.deployment).get(ACTIVE_SERVICE)
    if not name or is_blue_green(r.deployment) and name == settings_of(r.deployment).active:
        return
    await r.unswitch_service(name)
    await r.annotate_deployment({ACTIVE_SERVICE: None})
