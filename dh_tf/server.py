"""Start the embedded Deephaven server (pip extra ``dh-tf[server]``) for plain-Python use.

One JVM per process: the first call starts it, later calls return the same server.
"""

from __future__ import annotations

import os
import sys
import threading
from collections.abc import Sequence
from typing import Any

from dh_tf.errors import ArgumentError, ArgumentTypeError, MissingDependencyError

_lock = threading.Lock()
_server: Any = None

ANONYMOUS_AUTH = "-DAuthHandlers=io.deephaven.auth.AnonymousAuthenticationHandler"
STREAMING_JVM_ARGS = ("-XX:SoftRefLRUPolicyMSPerMB=0",)
"""JVM flags set by default (each unless ``jvm_args`` sets the same option).

NOTE [ Soft references ]
Deephaven caches decoded Parquet pages through SoftReferences. Streaming a table bigger than the
heap evicts them anyway, but by default the GC keeps soft references alive for a while per free
MiB, so full GCs thrash; ``-XX:SoftRefLRUPolicyMSPerMB=0`` lets them go at once (docs/design.md section
4: cold reads 1.5-1.7x faster; benchmarks/ measures it on both Parquet writers). The cost: a
table that fits the heap is re-decoded sooner. Override with ``jvm_args=["-XX:SoftRefLRUPolicyMSPerMB=1000"]``.
"""


def start_server(
    *,
    heap: str = "1g",
    port: int = 10000,
    host: str = "127.0.0.1",
    psk: str | None = None,
    anonymous: bool = False,
    jvm_args: Sequence[str] = (),
    tls: tuple[str | os.PathLike[str], str | os.PathLike[str]] | None = None,
) -> Any:
    """Starts the embedded server once per process and returns it (later calls return the same one).

    Args:
        heap: the JVM's ``-Xmx`` (the embedded server needs it set explicitly); 1-2 GB reads any
            table size, since pages are read a slice at a time.
        port: the web IDE / gRPC port.
        host: the address to bind; the loopback default keeps the console off the network.
        psk: the pre-shared key for the IDE; None lets the server pick a random one (it prints it).
        anonymous: no authentication at all. Only for a local, loopback-bound server.
        jvm_args: more JVM flags; they replace a default of :data:`STREAMING_JVM_ARGS` with the
            same option name.
        tls: ``(certificate_chain, private_key)``, paths of PEM files: the server's certificate
            (then any intermediates) and its unencrypted private key. The port then speaks TLS only
            (gRPC, Arrow Flight and the IDE at ``https://``); clients connect with
            ``Session(..., use_tls=True, tls_root_certs=<the CA's PEM bytes>)``. Sets the engine's
            ``ssl.identity.*`` properties (:func:`tls_jvm_args`). None: plain TCP.

    Raises:
        ImportError: ``deephaven-server`` is not installed.
        ValueError: ``anonymous`` with a host that is not loopback; ``tls`` not two paths of
            existing files.
        TypeError: ``tls`` not a tuple or list of paths.
    """
    global _server
    tls_args = [] if tls is None else tls_jvm_args(tls)  # checked even when a server already runs
    with _lock:
        if _server is not None:
            return _server
        if anonymous and host not in ("127.0.0.1", "localhost", "::1"):
            raise ArgumentError(f"start_server: anonymous=True needs a loopback host (got host={host!r})")
        try:
            from deephaven_server import Server
        except ImportError as e:
            raise MissingDependencyError("start_server needs the embedded server: pip install 'dh-tf[server]'") from e
        if Server.instance is not None:  # started by the caller's own code
            _server = Server.instance
            return _server
        limit_malloc_arenas()
        args = [f"-Xmx{heap}", *_defaults_not_in(jvm_args), *jvm_args]
        args.extend(tls_args)
        if psk is not None:
            args.append(f"-Dauthentication.psk={psk}")
        if anonymous:
            args.append(ANONYMOUS_AUTH)
        server = Server(host=host, port=port, jvm_args=args)
        server.start()
        _server = server
        return server


MALLOC_ARENAS = 2
"""glibc malloc arenas for a process that embeds the engine (NOTE [ Malloc arenas ])."""
_M_ARENA_MAX = -8  # mallopt's parameter number in glibc's malloc.h


def limit_malloc_arenas(arenas: int = MALLOC_ARENAS) -> bool:
    """Caps glibc's malloc arenas at ``arenas`` for this process, unless ``MALLOC_ARENA_MAX`` is set.

    NOTE [ Malloc arenas ]
    glibc gives threads their own malloc arenas, up to 8 per core. A process that embeds the engine
    has dozens of JVM threads besides dh_tf's reader threads and TensorFlow's pools; after one
    epoch read from the engine, TensorFlow's own file reads and decodes in that process ran at a
    third of their speed (7.3 vs 21.4 M rows/s median, 5M x 16 float32 as batch-4096 records, on
    the 2-core development machine; ``benchmarks/malloc_arenas.py`` measures it, and dh_tf's cached
    epochs beside it). With at most 2 arenas, set before the JVM and the threads start, the same
    reads ran at full speed. Only arenas made later are capped, so this is done in
    :func:`start_server` before the engine starts; set ``MALLOC_ARENA_MAX`` yourself (in the
    environment, before Python starts) to choose another value, e.g. in the Deephaven server
    image, where the engine starts before dh_tf is imported (the compose file sets it to 2).

    Returns True if the cap was set (glibc, and no ``MALLOC_ARENA_MAX`` in the environment).
    """
    if "MALLOC_ARENA_MAX" in os.environ or not sys.platform.startswith("linux"):
        return False
    import ctypes

    try:
        libc = ctypes.CDLL("libc.so.6")
        return bool(libc.mallopt(_M_ARENA_MAX, arenas))
    except (OSError, AttributeError):  # not glibc
        return False


def tls_jvm_args(tls: tuple[str | os.PathLike[str], str | os.PathLike[str]]) -> list[str]:
    """The JVM flags that make the engine serve TLS with ``tls = (certificate_chain, private_key)``.

    Deephaven reads its server identity from the ``ssl.identity.*`` configuration properties (set
    here as system properties; the Docker image takes the same flags in ``START_OPTS``). The paths
    are made absolute, so a server started from another directory finds them.

    Raises:
        TypeError: ``tls`` is not a tuple or list of paths (``str`` or ``os.PathLike``).
        ValueError: ``tls`` does not hold two paths, or one of them is not an existing file.
    """
    expected = f"start_server: tls must be a pair (certificate_chain, private_key) of PEM file paths (got {tls!r}"
    if not isinstance(tls, (tuple, list)) or not all(isinstance(p, (str, os.PathLike)) for p in tls):
        raise ArgumentTypeError(f"{expected} of type {type(tls).__name__})")
    if len(tls) != 2:
        raise ArgumentError(f"{expected})")
    chain, key = (os.path.abspath(os.fspath(path)) for path in tls)
    for what, path in (("certificate_chain", chain), ("private_key", key)):
        if not os.path.isfile(path):
            raise ArgumentError(f"start_server: tls {what} must be an existing PEM file (got {path!r})")
    return [
        "-Dssl.identity.type=privatekey",
        f"-Dssl.identity.certChainPath={chain}",
        f"-Dssl.identity.privateKeyPath={key}",
    ]


def ensure_server(**options: Any) -> Any:
    """Starts the embedded server unless this Python already runs inside a Deephaven JVM.

    Inside the IDE console or an application-mode script the engine is already there: returns None.
    Otherwise ``start_server(**options)``. Lets one script run both pasted into the console and as
    ``python script.py``.
    """
    jpy = sys.modules.get("jpy")  # importing jpy without a JVM fails, so only look
    if jpy is not None and jpy.has_jvm():
        return _server
    return start_server(**options)


def _defaults_not_in(jvm_args: Sequence[str]) -> list[str]:
    """The default flags whose option (the part before ``=``) ``jvm_args`` does not set itself."""
    given = {arg.split("=", 1)[0] for arg in jvm_args}
    return [flag for flag in STREAMING_JVM_ARGS if flag.split("=", 1)[0] not in given]
