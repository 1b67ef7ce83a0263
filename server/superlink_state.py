"""The coordinator's SuperLink state: Flower's in-memory state, with the enrolled sites on disk.

Flower's SQLite state costs the SuperLink about twice the CPU per Fleet call of its in-memory
state (docs/results.md), but the in-memory state forgets its nodes when the coordinator
restarts: every kit would need a new node ID and no running site node would rejoin. So the
SuperLink keeps runs and messages in memory and only its node registry, the enrolled sites'
public keys, IDs and unregistrations, in a JSON file that every change rewrites atomically.
A restarted coordinator restores it: its sites keep their node IDs and reconnect by
themselves, and an unregistered key stays refused.
"""

import base64
import json
import os
import sqlite3
from pathlib import Path

from flwr.proto.node_pb2 import NodeInfo  # pylint: disable=no-name-in-module
from flwr.server.superlink.linkstate import InMemoryLinkState
from flwr.supercore.constant import NodeStatus
from flwr.supercore.object_store import ObjectStore
from flwr.supercore.utils import int64_to_uint64
from flwr.superlink.federation import FederationManager
from google.protobuf.message import DecodeError  # type: ignore[import-untyped]

from common.atomic_file import replaced_atomically
from common.errors import MedfedError

__all__ = ["NodeRegistry", "RegisteredNodesLinkState", "nodes_of_sqlite_state"]


def _kept(node: NodeInfo) -> NodeInfo:
    """The node as a restarted SuperLink knows it: registered (or unregistered), not online."""
    kept = NodeInfo()
    kept.CopyFrom(node)
    kept.status = NodeStatus.UNREGISTERED if node.unregistered_at else NodeStatus.REGISTERED
    for moment in ("online_until", "last_activated_at", "last_deactivated_at"):
        kept.ClearField(moment)
    return kept


class NodeRegistry:
    """The SuperLink's enrolled nodes in one JSON file: node ID -> its serialised NodeInfo."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def load(self) -> list[NodeInfo]:
        """The nodes written so far; none when the file does not exist yet."""
        if not self.path.is_file():
            return []
        try:
            entries = json.loads(self.path.read_text(encoding="utf-8"))
            return [NodeInfo.FromString(base64.b64decode(entry)) for entry in entries.values()]
        except (ValueError, TypeError, AttributeError, DecodeError) as exc:
            raise MedfedError(
                f"{self.path}: not a node registry written by the coordinator ({exc})"
            ) from exc

    def save(self, nodes: list[NodeInfo]) -> None:
        """Replace the file with ``nodes``, atomically (a crash leaves the old or the new)."""
        entries = {
            str(node.node_id): base64.b64encode(_kept(node).SerializeToString()).decode("ascii")
            for node in nodes
        }
        with replaced_atomically(self.path) as partial, partial.open("w", encoding="utf-8") as file:
            json.dump(entries, file, indent=1)
            file.flush()
            os.fsync(file.fileno())


class RegisteredNodesLinkState(InMemoryLinkState):
    """Flower's in-memory link state whose node registry survives a restart (``registry``)."""

    def __init__(
        self,
        registry: NodeRegistry,
        federation_manager: FederationManager,
        object_store: ObjectStore,
    ) -> None:
        super().__init__(federation_manager, object_store)
        self._registry = registry
        for node in registry.load():  # saved registered or unregistered, never online
            self._restore(node)

    def _restore(self, node: NodeInfo) -> None:
        self.nodes[node.node_id] = node
        self.node_public_key_to_node_id[node.public_key] = node.node_id
        self.owner_to_node_ids.setdefault(node.owner_aid, set()).add(node.node_id)

    def _forget(self, node_id: int) -> None:
        node = self.nodes.pop(node_id)
        self.node_public_key_to_node_id.pop(node.public_key, None)
        self.owner_to_node_ids.get(node.owner_aid, set()).discard(node_id)

    def _save(self) -> None:
        self._registry.save(list(self.nodes.values()))

    def create_node(  # noqa: PLR0913 (Flower's signature)
        self,
        owner_aid: str,
        owner_name: str,
        public_key: bytes,
        heartbeat_interval: float,
        *,
        location: str | None = None,
        name: str | None = None,
    ) -> int:
        """Register the node as Flower does, then write the registry (or undo and raise)."""
        with self.lock:
            node_id = super().create_node(
                owner_aid,
                owner_name,
                public_key,
                heartbeat_interval,
                location=location,
                name=name,
            )
            if node_id:
                try:
                    self._save()
                except OSError:
                    self._forget(node_id)
                    raise
            return node_id

    def delete_node(self, owner_aid: str, node_id: int) -> None:
        """Unregister the node as Flower does, then write the registry (or undo and raise)."""
        with self.lock:
            before = NodeInfo()
            if node_id in self.nodes:
                before.CopyFrom(self.nodes[node_id])
            super().delete_node(owner_aid, node_id)
            try:
                self._save()
            except OSError:
                self.nodes[node_id].CopyFrom(before)  # still registered, as the file says
                raise


def nodes_of_sqlite_state(database: Path) -> list[NodeInfo]:
    """The nodes of an earlier coordinator's Flower SQLite state (``superlink.db``), read-only.

    Their statuses are set when they are saved to a registry.
    """
    with sqlite3.connect(f"file:{database}?mode=ro", uri=True) as db:
        rows = db.execute(
            "SELECT node_id, owner_aid, owner_name, registered_at, unregistered_at, "
            "heartbeat_interval, public_key, name FROM node"
        ).fetchall()
    nodes = []
    for node_id, owner, owner_name, registered, unregistered, heartbeat, key, name in rows:
        node = NodeInfo(
            node_id=int64_to_uint64(node_id),
            owner_aid=owner or "",
            owner_name=owner_name or "",
            registered_at=registered or "",
            heartbeat_interval=heartbeat or 0.0,
            public_key=key or b"",
        )
        if unregistered:
            node.unregistered_at = unregistered
        if name:
            node.name = name
        nodes.append(node)
    return nodes
