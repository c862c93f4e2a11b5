"""The ``corral`` command. Subcommands are added as the packages behind them land."""

from __future__ import annotations

import sys

USAGE = """usage: corral <command> [args]

commands:
  controller     run one controller: store member + Kubernetes API (corral controller --help)
  store serve    run one member of the replicated store (see: corral store serve --help)
  image build-base
                 build the local base image corral/base:latest from busybox-static
"""


def main(argv: list[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if args[:1] == ["controller"]:
        from controlplane.controller import main as controller

        return controller(args[1:])
    if args[:2] == ["store", "serve"]:
        from raftstore.member import main as serve

        return serve(args[2:])
    if args[:2] == ["image", "build-base"]:
        from nodeagent.images import main as build_base

        return build_base(args[2:])
    if args in ([], ["-h"], ["--help"]):
        sys.stdout.write(USAGE)
        return 0
    sys.stderr.write(f"corral: unknown command {' '.join(args[:2])!r}; see 'corral --help'\n")
    return 2


if __name__ == "__main__":
    sys.exit(main())
