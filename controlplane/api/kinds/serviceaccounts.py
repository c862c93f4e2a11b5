"""ServiceAccount strategy: an identity for pods. Nothing special to check yet; the printer
counts its secrets.
"""

from __future__ import annotations

from ..strategy import Column, Strategy
from ..table import AGE


class ServiceAccountStrategy(Strategy):
    def columns(self) -> list[Column]:
        return [Column("Secrets", lambda o, _now: len(o.get("secrets") or []),
                       description="Secrets is a list of the secrets in the same namespace "
                       "that pods running using this ServiceAccount are allowed to use."), AGE]
