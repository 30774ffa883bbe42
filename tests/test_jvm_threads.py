"""One execution context object entered by several threads (NOTE [ Entering an execution context ])."""

from __future__ import annotations

import threading

import pytest

from dh_tf.sources.jvm_threads import entered, java_type


def interleave(enter, exit_):
    """Main enters, a worker enters, main leaves, the worker leaves: the order that broke full runs."""
    errors = []
    worker_in, main_out = threading.Event(), threading.Event()

    def worker():
        try:
            enter("worker")
            worker_in.set()
            assert main_out.wait(30)
            exit_("worker")
        except BaseException as e:  # reported to the test thread
            errors.append(e)
            worker_in.set()

    enter("main")
    thread = threading.Thread(target=worker, daemon=True)
    thread.start()
    assert worker_in.wait(30)
    exit_("main")
    main_out.set()
    thread.join(30)
    assert not errors


def main_thread_can_query() -> bool:
    from deephaven import empty_table

    try:
        empty_table(1).update("X = i")
    except Exception as e:  # the engine wraps the Java exception in RuntimeError
        assert "No ExecutionContext registered" in str(e)
        return False
    return True


def test_a_context_shared_by_two_threads_leaves_the_main_thread_its_own(server):
    from deephaven.execution_context import get_exec_ctx

    shared = get_exec_ctx()
    blocks = {}
    interleave(lambda who: blocks.setdefault(who, entered(shared)).__enter__(),
               lambda who: blocks[who].__exit__(None, None, None))
    assert main_thread_can_query()


def test_the_deephaven_wrapper_shared_by_two_threads_is_what_broke(server):
    """The same interleaving through ``with shared:`` loses the main thread's context (why ``entered`` exists)."""
    from deephaven.execution_context import get_exec_ctx

    main_context = get_exec_ctx()
    shared = get_exec_ctx()
    interleave(lambda who: shared.__enter__(), lambda who: shared.__exit__(None, None, None))
    try:
        assert not main_thread_can_query()
    finally:
        main_context.j_exec_ctx.open()  # give the main thread its context back for the other tests
    assert main_thread_can_query()


def test_java_types_are_resolved_once_with_their_static_methods(server):
    name = "io.deephaven.chunk.WritableObjectChunk"
    found = []
    threads = [threading.Thread(target=lambda: found.append(java_type(name))) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert len(found) == 8 and all(t is found[0] for t in found)
    assert callable(found[0].writableChunkWrap)


@pytest.mark.parametrize("name", ["no.such.Type"])
def test_an_unknown_java_type_is_the_jpy_error(server, name):
    with pytest.raises(ValueError):
        java_type(name)
