"""overlay: WireGuard's protocol in Python, one module per concern (see ../shared/DESIGN.md).

Pure and tested without a network: ``crypto`` (the primitives), ``messages`` (wire formats,
TAI64N), ``noise`` (the Noise_IKpsk2 handshake), ``cookie`` (mac1/mac2 and cookie replies),
``replay`` (the 8128-packet window), ``allowedips`` (cryptokey routing), ``keypairs`` (key
slots, nonces, indices), ``timers`` (rekey, keepalive, retransmission), ``uapi`` (the ``wg``
control socket), ``gro`` (merging a batch's TCP segments for one TUN write). Around them:
``tun`` (the TUN file descriptor, with the kernel's offload header), ``udp`` (the socket, with
UDP GSO/GRO), ``device`` (the asyncio device joining them: UDP in, TUN out, timers, a batch per
wake-up) and ``main`` (``corral wg <ifname>``, shaped like wireguard-go's command).
The agent's use of it (one peer per node) is ``nodeagent/network/overlay.py``."""
