"""The node's Pod network: what a CNI bridge plugin with host-local IPAM does.

``base`` is the boundary the runtime calls (``PodNetwork``: attach, detach, ip_of) with its
in-memory ``FakePodNetwork``; ``bridge`` is the real one (a bridge, a veth per Pod, NAT);
``ipam`` keeps who holds which address on disk; ``addresses`` is the pure podCIDR arithmetic;
``command`` runs ``ip`` and friends.
"""

from nodeagent.network.base import FakePodNetwork, PodNetwork, PodNetworkError
from nodeagent.network.bridge import BridgeNetwork
from nodeagent.network.ipam import HostLocalIPAM

__all__ = ["BridgeNetwork", "FakePodNetwork", "HostLocalIPAM", "PodNetwork", "PodNetworkError"]
