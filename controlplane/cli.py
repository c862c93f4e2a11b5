"""The ``corral`` command. Subcommands are added as the packages behind them land."""

from __future__ import annotations

import sys

USAGE = """usage: corral <command> [args]

commands:
  up             a one-machine cluster in the foreground: controller + agent (corral up --help)
  down           remove the pods and pod network `corral up` left (corral down --help)
  lab            a multi-host lab on this machine, one namespace per host (corral lab --help)
  chaos          fault scenarios against a lab, with a linearizability check (corral chaos --help)
  wg             a WireGuard interface, as wireguard-go runs one (corral wg [-f] <ifname>)
  join           get this node's credentials from a controller (corral join --help)
  agent          run the node agent on this host (corral agent --help)
  controller     run one controller: store member + Kubernetes API (corral controller --help)
  store serve    run one member of the replicated store (see: corral store serve --help)
  image build-base
                 build the local base image corral/base:latest from busybox-static
"""


def main(argv: list[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if args[:1] == ["up"]:
        from controlplane.up import main as up

        return up(args[1:])
    if args[:1] == ["down"]:
        from controlplane.up import down_main

        return down_main(args[1:])
    if args[:1] == ["lab"]:
        from controlplane.lab import main as lab

        return lab(args[1:])
    if args[:1] == ["chaos"]:
        from chaos.run import main as chaos

        return chaos(args[1:])
    if args[:1] == ["wg"]:
        from overlay.main import main as wg

        return wg(args[1:])
    if args[:1] == ["join"]:
        from controlplane.auth.join import join_main

        return join_main(args[1:])
    if args[:1] == ["agent"]:
        from nodeagent.main import main as agent

        return agent(args[1:])
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
