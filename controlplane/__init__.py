"""controlplane: see ../shared/DESIGN.md (not built yet)."""
