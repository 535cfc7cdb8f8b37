"""Connecting a corpus job to Ray: :func:`connect` (a new local Ray, ``$RAY_ADDRESS`` or a head node's address),
failing fast on an address that is no Ray head node."""

import os
import signal
import socket
import threading
from contextlib import contextmanager
from urllib.parse import urlsplit

from ..config import RAY_CONNECT_TIMEOUT_S, RAY_PROBE_TIMEOUT_S
from ..errors import E5OnnxError
from ..runtime.cpu import available_cpus
from ._ray import ray

#: What an HTTP/2 client sends first (RFC 9113 §3.4), then an empty SETTINGS frame: a gRPC server (Ray's GCS and
#: its client server are gRPC) answers with its own SETTINGS frame (type 4).
_H2_PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + bytes([0, 0, 0, 4, 0, 0, 0, 0, 0])


def _probe(address, timeout_s):
    """Fail fast on an address that is not a Ray head node: malformed, nobody listening, or a listener that does
    not speak gRPC (``ray.init`` retries those for minutes). Skipped for ``"auto"``/``"local"`` and with
    ``RAY_USE_TLS`` (the handshake is then TLS first)."""
    if address in ("auto", "local"):
        return
    parts = urlsplit(address if "://" in address else "tcp://" + address)
    try:
        host, port = parts.hostname, parts.port
    except ValueError:
        host = port = None
    if not host or not port:
        raise E5OnnxError(f"Ray address {address!r} is not host:port, ray://host:port or 'auto'")
    try:
        sock = socket.create_connection((host, port), timeout=timeout_s)
    except OSError as exc:
        raise E5OnnxError(f"cannot reach a Ray cluster at {address!r}: {exc.strerror or exc} (is the head node "
                          "running? `ray start --head` prints its address)") from None
    with sock:
        if os.environ.get("RAY_USE_TLS", "0").lower() in ("1", "true"):
            return
        head = b""
        try:
            sock.sendall(_H2_PREFACE)
            while len(head) < 9:
                chunk = sock.recv(9 - len(head))
                if not chunk:
                    break
                head += chunk
        except OSError:
            pass
    if len(head) < 9 or head[3] != 4:
        raise E5OnnxError(f"{address!r} accepts connections but is not a Ray head node (no gRPC answer within "
                          f"{timeout_s:g} s): give the address `ray start --head` printed, e.g. host:6379")


@contextmanager
def _python_sigterm_kept():
    """Put back a Python SIGTERM handler that ``ray.init`` replaces with its own (a C++ failure handler that logs
    "SIGTERM received" and ends the process at once): a caller that turns SIGTERM into an exception (``e5onnx
    corpus``) then still stops cleanly, keeping its shards and shutting Ray down. Main thread only."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    handler = signal.getsignal(signal.SIGTERM)
    try:
        yield
    finally:
        if callable(handler):
            signal.signal(signal.SIGTERM, handler)


def connect(address=None, timeout_s=RAY_CONNECT_TIMEOUT_S):
    """Make sure this process is connected to Ray; returns True when this call connected (the caller then
    shuts Ray down when done), False when Ray was already initialised (the caller's: left running).

    Args:
        address: None: the cluster in ``$RAY_ADDRESS`` if set, else a new local Ray with this machine's CPUs
            (:func:`~e5onnx.runtime.cpu.available_cpus`, no dashboard); or ``"auto"``, ``"host:port"`` (a head
            node's GCS). An already initialised Ray is reused whatever ``address`` says (after ``address`` is
            checked).
        timeout_s: most seconds ``ray.init`` may take.

    Raises:
        E5OnnxError: the address is malformed or unreachable, or Ray did not connect within ``timeout_s``.
    """
    address = address or os.environ.get("RAY_ADDRESS") or None
    if address is not None:
        _probe(str(address), min(RAY_PROBE_TIMEOUT_S, timeout_s))
    if ray.is_initialized():
        return False
    kwargs = {"include_dashboard": False}
    if address is None:
        kwargs.update(address="local", num_cpus=available_cpus())
    else:
        kwargs["address"] = str(address)
    outcome = {}

    def init():
        try:
            with _python_sigterm_kept():
                ray.init(**kwargs)
            outcome["ok"] = True
        except BaseException as exc:  # noqa: BLE001 - reported in the caller's thread
            outcome["error"] = exc

    where = "a local Ray" if address is None else f"Ray at {address!r}"
    if address is None or threading.current_thread() is threading.main_thread():
        # ray.init from another thread leaves the driver unable to reach its own GCS ("Failed to connect to GCS
        # within 60 seconds", then the process exits): tried with `e5onnx corpus --ray` on Ray 2.60. A remote
        # address was probed above, so the main thread is not left waiting on a dead one.
        init()
        thread = None
    else:
        thread = threading.Thread(target=init, name="e5onnx-ray-init", daemon=True)
        thread.start()
        thread.join(timeout_s)
    if thread is not None and thread.is_alive():
        raise E5OnnxError(f"could not connect to {where} within {timeout_s:g} s (is it a Ray head node's "
                          "address, e.g. host:6379?)")
    if "error" in outcome:
        exc = outcome["error"]
        raise E5OnnxError(f"could not connect to {where}: {type(exc).__name__}: {exc}") from exc
    return True
