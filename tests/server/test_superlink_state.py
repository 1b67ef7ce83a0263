"""The SuperLink's node registry: nodes, IDs and unregistrations survive a restarted state."""

import inspect
from pathlib import Path

import pytest
from flwr.server.superlink.linkstate import SqlLinkState
from flwr.supercore.constant import NodeStatus
from flwr.supercore.object_store import ObjectStoreFactory
from flwr.superlink import main as superlink_main
from flwr.superlink.federation import NoOpFederationManager

from common.errors import MedfedError
from server.coordinator import CoordinatorPaths, prepare_node_registry
from server.superlink_process import use_registered_nodes_state
from server.superlink_state import NodeRegistry, RegisteredNodesLinkState

OWNER = ("account-id", "coordinator")


def _state(registry: Path) -> RegisteredNodesLinkState:
    """A fresh SuperLink state on ``registry``, as a restarted coordinator builds it."""
    return RegisteredNodesLinkState(
        NodeRegistry(registry), NoOpFederationManager(), ObjectStoreFactory().store()
    )


def _register(state: object, key: bytes, name: str) -> int:
    return state.create_node(*OWNER, key, 10.0, name=name)  # type: ignore[attr-defined]


def test_a_restarted_state_keeps_node_ids_keys_names_and_unregistrations(tmp_path: Path) -> None:
    registry = tmp_path / "nodes.json"
    first = _state(registry)
    kept, revoked = _register(first, b"key-a", "hospital-a"), _register(first, b"key-b", "b")
    assert first.acknowledge_node_heartbeat(kept, 10.0)  # online now; not after a restart
    first.delete_node(OWNER[0], revoked)

    restarted = _state(registry)
    assert restarted.get_node_id_by_public_key(b"key-a") == kept
    assert restarted.get_node_id_by_public_key(b"key-b") is None  # stays refused
    (node,) = restarted.get_node_info(node_ids=[kept])
    assert (node.status, node.name, node.owner_name) == (
        NodeStatus.REGISTERED,
        "hospital-a",
        OWNER[1],
    )
    (gone,) = restarted.get_node_info(node_ids=[revoked])
    assert gone.status == NodeStatus.UNREGISTERED and gone.unregistered_at
    with pytest.raises(ValueError, match="already in use"):  # as with Flower's own states
        _register(restarted, b"key-b", "b-again")
    # A running site node's next heartbeat, under its old node ID, brings it back online.
    assert restarted.acknowledge_node_heartbeat(kept, 10.0)
    assert not restarted.acknowledge_node_heartbeat(revoked, 10.0)
    assert {n.node_id for n in restarted.get_node_info(statuses=[NodeStatus.ONLINE])} == {kept}


def test_a_change_the_file_cannot_take_is_undone(tmp_path: Path) -> None:
    registry = tmp_path / "state" / "nodes.json"  # its folder does not exist: writing fails
    state = _state(registry)
    with pytest.raises(OSError):
        _register(state, b"key-a", "hospital-a")
    assert state.get_node_id_by_public_key(b"key-a") is None
    assert not state.get_node_info()

    registry.parent.mkdir()
    node_id = _register(state, b"key-a", "hospital-a")
    registry.unlink()
    registry.parent.rmdir()  # writing fails again
    with pytest.raises(OSError):
        state.delete_node(OWNER[0], node_id)
    # Still registered in memory, as on disk: the operator's retry can unregister it.
    assert state.get_node_id_by_public_key(b"key-a") == node_id
    registry.parent.mkdir()
    state.delete_node(OWNER[0], node_id)
    assert _state(registry).get_node_id_by_public_key(b"key-a") is None


def test_a_damaged_registry_is_refused_naming_the_file_before_the_superlink_starts(
    tmp_path: Path,
) -> None:
    paths = CoordinatorPaths(tmp_path)
    paths.node_registry.write_text('{"1": "not a node"}', encoding="utf-8")
    with pytest.raises(MedfedError, match="superlink-nodes.json: not a node registry.*backup"):
        prepare_node_registry(paths)
    with pytest.raises(MedfedError, match="not a node registry"):
        _state(paths.node_registry)  # nor does the SuperLink start on it


def test_an_earlier_coordinators_sqlite_nodes_are_kept_once(tmp_path: Path) -> None:
    paths = CoordinatorPaths(tmp_path)
    earlier = SqlLinkState(
        str(paths.earlier_database), NoOpFederationManager(), ObjectStoreFactory().store()
    )
    earlier.initialize()
    kept, revoked = _register(earlier, b"key-a", "hospital-a"), _register(earlier, b"key-b", "b")
    earlier.delete_node(OWNER[0], revoked)

    prepare_node_registry(paths)
    state = _state(paths.node_registry)
    assert state.get_node_id_by_public_key(b"key-a") == kept
    assert state.get_node_id_by_public_key(b"key-b") is None
    _register(state, b"key-c", "hospital-c")
    prepare_node_registry(paths)  # the registry exists now: nothing is read again
    assert _state(paths.node_registry).get_node_id_by_public_key(b"key-c") is not None


def test_the_superlink_builds_its_state_through_the_factory_the_coordinator_replaces(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """server/superlink_process.py replaces flwr 1.41's factory, which create_app calls."""
    assert "get_objectstore_linkstate_factories(" in inspect.getsource(superlink_main.create_app)
    monkeypatch.setattr(  # restored after the test
        superlink_main,
        "get_objectstore_linkstate_factories",
        superlink_main.get_objectstore_linkstate_factories,
    )
    use_registered_nodes_state(NodeRegistry(tmp_path / "nodes.json"))
    _, factory = superlink_main.get_objectstore_linkstate_factories(
        "ignored", NoOpFederationManager()
    )
    state = factory.state()
    assert isinstance(state, RegisteredNodesLinkState)
    node_id = _register(state, b"key-a", "hospital-a")
    assert _state(tmp_path / "nodes.json").get_node_id_by_public_key(b"key-a") == node_id
