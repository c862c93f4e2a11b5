"""nodeagent: see ../shared/DESIGN.md. So far: hollow (simulated) nodes for tests and benches,
the local base image (``corral image build-base``), and the agent's pure core: the ``runtime``
boundary (CRI in small, with an in-memory fake) and ``podsync`` (what to run, what to report)."""
