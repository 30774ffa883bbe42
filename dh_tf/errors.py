"""Every error dh_tf raises in the caller's thread: one base, :class:`Error`, and the builtin bases kept.

NOTE [ Errors ]
Each class subclasses both :class:`Error` and the builtin exception it stands for, as
``pyarrow.ArrowInvalid`` is both an ``ArrowException`` and a ``ValueError``: ``except dh_tf.Error``
catches whatever dh_tf raised, and ``except ValueError`` keeps working. Argument checks raise
:class:`ArgumentError` (a bad value) or :class:`ArgumentTypeError` (a bad type), before any data
moves. Inside ``tf.data`` TensorFlow wraps what a generator raises into its own types
(``InvalidArgumentError`` / ``UnknownError``, the original message inside); iterate a
``TableLoader`` to get dh_tf's own types.
"""

from __future__ import annotations


class Error(Exception):
    """The base of every error dh_tf raises itself."""


class ArgumentError(Error, ValueError):
    """An argument (or a column, or a saved state) has a value dh_tf cannot take; the message says which."""


class ArgumentTypeError(Error, TypeError):
    """An argument (or a column) has a type dh_tf cannot take; the message names it and what is allowed."""


class UsageError(Error, RuntimeError):
    """An object was used in a way it does not allow: a closed loader read, a one-pass stream iterated twice."""


class MissingDependencyError(Error, ImportError):
    """An optional dependency (TensorFlow, Keras, the embedded server, pydeephaven) is not installed."""


class NullValueError(Error, ValueError):
    """A Deephaven null was found in a column whose null policy is ``"error"``."""


class ArrayLengthError(Error, ValueError):
    """A row of an array column has another length than the column's (NOTE [ Array columns ])."""


class TableChangeError(Error, ValueError):
    """A followed table modified, removed or shifted rows (NOTE [ Follow mode ])."""


class FollowError(Error, RuntimeError):
    """A followed table failed, or a blink table overflowed the queue with ``on_overflow="error"``."""


class CacheError(Error, OSError):
    """The epoch cache cannot be created, written or read (its files damaged from outside)."""


class CacheSpaceError(CacheError):
    """The cache directory's file system has no room for the cache."""


class RemoteReadError(Error, ConnectionError):
    """Reading from the Deephaven server failed: connection dropped, session closed, server error.

    The message names the server (``host:port``) and the rows being read; the cause is chained.
    """


class RemoteWriteError(Error, ConnectionError):
    """Writing results to the Deephaven server failed: connection dropped, session closed, server error.

    The message names the server (``host:port``) and what was being written; the cause is chained.
    Nothing half-written is left bound (NOTE [ Remote write-back ] in ``write/remote_sink.py``).
    """
