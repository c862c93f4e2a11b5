"""overlay: WireGuard's protocol in Python, one module per concern (see ../shared/DESIGN.md).

Built so far, all pure and tested without a network: ``crypto`` (the primitives), ``messages``
(wire formats, TAI64N), ``noise`` (the Noise_IKpsk2 handshake), ``cookie`` (mac1/mac2 and cookie
replies), ``replay`` (the 8128-packet window), ``allowedips`` (cryptokey routing), ``keypairs``
(key slots, nonces, indices), ``timers`` (rekey, keepalive, retransmission) and ``uapi`` (the
``wg`` control socket). The TUN/UDP device loop that joins them comes next."""
