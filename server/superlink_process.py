"""The coordinator's SuperLink: flower-superlink with its state in memory, its nodes on disk.

``medfed-server start`` runs ``python -m server.superlink_process --node-registry FILE`` and
flower-superlink's own options but ``--database``; server/superlink_state.py says why.
"""

import argparse
import sys
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # the coordinator's commands import this module for the option's name only
    from flwr.server.superlink.linkstate import LinkStateFactory
    from flwr.supercore.object_store import ObjectStoreFactory
    from flwr.superlink.federation import FederationManager

    from server.superlink_state import NodeRegistry

__all__ = ["NODE_REGISTRY_OPTION", "main", "use_registered_nodes_state"]

#: The option naming the node registry file; every other argument is flower-superlink's.
NODE_REGISTRY_OPTION = "--node-registry"


def use_registered_nodes_state(registry: "NodeRegistry") -> None:
    """Make this process's SuperLink keep its state in memory and its nodes in ``registry``."""
    from flwr.server.superlink.linkstate import LinkStateFactory  # noqa: PLC0415
    from flwr.supercore.constant import FLWR_IN_MEMORY_DB_NAME  # noqa: PLC0415
    from flwr.supercore.object_store import ObjectStoreFactory  # noqa: PLC0415
    from flwr.superlink import main as superlink_main  # noqa: PLC0415

    from server.superlink_state import RegisteredNodesLinkState  # noqa: PLC0415

    def factories(
        database: str,  # noqa: ARG001 (Flower's signature; the state is always in memory)
        federation_manager: "FederationManager",
    ) -> tuple["ObjectStoreFactory", "LinkStateFactory"]:
        objects = ObjectStoreFactory(FLWR_IN_MEMORY_DB_NAME)
        state = LinkStateFactory(FLWR_IN_MEMORY_DB_NAME, federation_manager, objects)
        state.state_instance = RegisteredNodesLinkState(
            registry, federation_manager, objects.store()
        )
        return objects, state

    superlink_main.get_objectstore_linkstate_factories = factories


def main() -> None:
    """Run flower-superlink with the registered-nodes state."""
    from flwr.superlink.cli import flower_superlink  # noqa: PLC0415

    from server.superlink_state import NodeRegistry  # noqa: PLC0415

    parser = argparse.ArgumentParser(add_help=False)
    parser.add_argument(NODE_REGISTRY_OPTION, type=Path, required=True)
    parser.add_argument("--database")  # refused: the state is always the one above
    known, flower_args = parser.parse_known_args()
    if known.database is not None:
        sys.exit(f"{NODE_REGISTRY_OPTION} keeps the nodes, runs stay in memory: no --database")
    use_registered_nodes_state(NodeRegistry(known.node_registry))
    sys.argv = ["flower-superlink", *flower_args]
    flower_superlink()


if __name__ == "__main__":
    main()
