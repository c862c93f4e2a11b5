"""The Kubernetes-compatible API server over a ``raftstore.Store``.

Flow of a request: ``server`` (aiohttp app, TLS, authentication, metrics) -> ``handlers``
(URL -> resource type, content negotiation, query parameters) -> ``registry`` (the one generic
create/get/list/update/patch/delete/watch, calling the kind's ``Strategy``) -> the Store.
Per-kind behaviour lives in ``kinds/``; the table of served kinds is ``resources``.
"""
