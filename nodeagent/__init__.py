"""nodeagent: see ../shared/DESIGN.md. So far: hollow (simulated) nodes for tests and benches,
and the local base image (``corral image build-base``)."""
