"""Ports found together are distinct and free: one found after another's release may repeat."""

import socket

from common.flower_processes import free_ports


def test_ports_found_together_are_distinct_and_each_can_be_bound() -> None:
    ports = free_ports(8)
    assert len(set(ports)) == 8
    held = []
    try:
        for port in ports:  # all free at once: a coordinator binds its Fleet and Control ports
            probe = socket.socket()
            held.append(probe)
            probe.bind(("127.0.0.1", port))
    finally:
        for probe in held:
            probe.close()
