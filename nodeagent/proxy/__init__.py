"""The Service proxy (kube-proxy's iptables mode): ``rules`` builds the iptables-restore input
from Services and Endpoints (pure), ``iptables`` applies it, ``proxier`` keeps it in step with
the API. See ``proxier``'s docstring for how the agent runs it."""

from nodeagent.proxy.iptables import IptablesApplier
from nodeagent.proxy.proxier import Applier, Proxier, RecordingApplier
from nodeagent.proxy.rules import ProxyRules, build

__all__ = ["Applier", "IptablesApplier", "Proxier", "ProxyRules", "RecordingApplier", "build"]
