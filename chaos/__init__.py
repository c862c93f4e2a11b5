"""chaos: ``corral chaos``, fault scenarios against a lab with a Jepsen-style check (issue 8).

The pure core: clients record every read, write and compare-and-swap they send through the API
as an ``Operation`` (``history``); after the run each key's history is checked against a
sequential model (``model``, a register per ConfigMap) for linearizability with Wing & Gong's
search and Lowe's memoisation (``linearizability``), every acknowledged write against the state
read after healing (``lostwrites``), and the time to recover from each fault is measured
(``recovery``). None of these does I/O or reads a clock (the checker's budget is injected).

The shell around it: ``workload`` (the clients, over HTTP), ``faults`` and ``scenarios`` (kill,
pause and partition hosts of a ``corral lab``, always healed), ``replicas`` (the controllers'
state digests compared after healing), ``report`` (JSON, summary, PNG timeline) and ``run`` (the
command).
"""
