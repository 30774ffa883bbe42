"""The JVM from several Python threads: entering an execution context, resolving Java types.

NOTE [ Entering an execution context ]
``deephaven.execution_context.ExecutionContext`` keeps the handle that restores the previous context
on the *wrapper object* (``__enter__`` stores ``j_exec_ctx.open()`` in ``self``, ``__exit__`` closes
it), and the Java handle restores, on the thread that closes it, the context that the opening
thread had. One wrapper entered by two threads at once (a source's context used by its reader
threads and the consumer's thread, a publisher's by its flush thread and the caller) can hand one
thread the other's handle: the main thread then gets a reader thread's "no context" and every later
query on it fails with ``ExecutionContextRegistrationException: No ExecutionContext registered``
(seen in one of three full test runs). :func:`entered` keeps the handle on the stack of the thread
that opened it, so a shared context object is safe to enter from any number of threads.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator
from typing import Any

_types: dict[str, Any] = {}
_types_lock = threading.Lock()


@contextlib.contextmanager
def entered(exec_ctx: Any) -> Iterator[None]:
    """Makes ``exec_ctx`` (a ``deephaven.execution_context.ExecutionContext``) current on this thread for the block."""
    restore = exec_ctx.j_exec_ctx.open()
    try:
        yield
    finally:
        restore.close()


def java_type(name: str) -> Any:
    """``jpy.get_type(name)``, resolved once per process under a lock.

    jpy builds a Java type's Python object on first use; two reader threads asking for the same new
    type at once were seen to get one without its static methods (``AttributeError: type object
    'io.deephaven.chunk.WritableObjectChunk' has no attribute 'writableChunkWrap'``, one full test
    run in three). Resolving each type once, under a lock, leaves no such race.
    """
    found = _types.get(name)
    if found is None:
        import jpy

        with _types_lock:
            found = _types.get(name)
            if found is None:
                found = _types[name] = jpy.get_type(name)
    return found
