"""reuseport.py against the kernel: steering a port's SO_REUSEPORT group, reading an accept queue's length."""

from __future__ import annotations

import os
import socket
import time

import pytest

from wsgistack.addresses import bind, parse_address, remove_socket_file
from wsgistack.reuseport import (queue_length, queued_connections, refuse_new_connections, refuses_new_connections,
                                 steer)
from wsgistack.unix_queue import queued_unix_connections


@pytest.fixture
def group():
    """Three listening sockets on one loopback port, in the order they started listening."""
    sockets: list[socket.socket] = []
    try:
        for _ in range(3):
            sock = socket.socket()
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
            sock.bind(("127.0.0.1", sockets[0].getsockname()[1] if sockets else 0))
            sock.listen(64)
            sockets.append(sock)
        yield sockets
    finally:
        for sock in sockets:
            sock.close()


def connect(port: int, count: int) -> list[socket.socket]:
    return [socket.create_connection(("127.0.0.1", port), timeout=5) for _ in range(count)]


def queues(group: list[socket.socket], total: int) -> list[int]:
    """Each socket's queue once `total` handshakes are queued in all (the last ACKs may still be in flight)."""
    deadline = time.monotonic() + 5
    while True:
        queued = [queued_connections(sock) for sock in group]
        if sum(queued) >= total or time.monotonic() > deadline:
            return queued
        time.sleep(0.01)


@pytest.mark.parametrize("indexes", [[2], [0, 2], [1, 0]])
def test_steer_sends_new_connections_only_to_the_chosen_sockets(group, indexes):
    steer(group[0], indexes)
    clients = connect(group[0].getsockname()[1], 40)
    try:
        queued = queues(group, 40)
        assert sum(queued) == 40
        assert all(count == 0 for index, count in enumerate(queued) if index not in indexes), queued
        if len(indexes) == 2:       # random choice: both get some (chance of failing: 2 in 2**40)
            assert all(queued[index] > 0 for index in indexes), queued
    finally:
        for client in clients:
            client.close()


def test_queued_connections_counts_until_accepted(group):
    steer(group[1], [1])          # any socket of the group sets the group's program
    clients = connect(group[0].getsockname()[1], 5)
    try:
        assert queues(group, 5) == [0, 5, 0]
        group[1].accept()[0].close()
        assert queued_connections(group[1]) == 4
    finally:
        for client in clients:
            client.close()


def test_refused_new_connections_leave_the_queued_ones_to_accept(group):
    """What a stopping master applies: new SYNs dropped (refused once the socket closes), the queue kept intact."""
    sock = group[0]
    port = sock.getsockname()[1]
    steer(sock, [0])
    queued = connect(port, 2)
    for client in queued:
        client.sendall(b"request")
    assert not refuses_new_connections(sock)
    refuse_new_connections(sock)
    assert refuses_new_connections(sock) and not refuses_new_connections(group[1])
    late = socket.socket()
    late.settimeout(0.5)
    with pytest.raises(TimeoutError):
        late.connect(("127.0.0.1", port))
    for _ in queued:
        conn, _ = sock.accept()
        with conn:
            assert conn.recv(16) == b"request"
    for client in queued + [late]:
        client.close()


def test_a_unix_sockets_queue_is_counted_until_accepted(tmp_path):
    """sock_diag (unix_queue.py) tells a listening unix socket's queue, which TCP_INFO cannot."""
    path = str(tmp_path / "app.sock")
    listener = bind(parse_address(path, "http", "http"), 16, "", "http")
    clients = [socket.socket(socket.AF_UNIX) for _ in range(3)]
    try:
        assert queued_unix_connections(listener) == 0
        for client in clients:
            client.connect(path)
        assert queued_unix_connections(listener) == queue_length(listener) == 3
        listener.accept()[0].close()
        assert queue_length(listener) == 2
    finally:
        for client in clients:
            client.close()
        listener.close()


def test_only_the_socket_file_this_server_bound_is_removed(tmp_path):
    """A graceful stop removes a unix socket's file (no new connection comes) and --vacuum removes it at exit:
    neither may remove the file a newer server bound at the same path meanwhile."""
    path = str(tmp_path / "app.sock")
    ours = bind(parse_address(path, "uwsgi", "socket"), 16, "", "socket")
    newer = socket.socket(socket.AF_UNIX)
    try:
        assert remove_socket_file(path) and not os.path.exists(path)
        newer.bind(path)
        assert not remove_socket_file(path) and os.path.exists(path)
    finally:
        ours.close()
        newer.close()
