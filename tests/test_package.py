"""The package imports without a JVM and without TensorFlow loaded."""

from __future__ import annotations

from conftest import run_python


def test_import_needs_no_jvm_and_loads_neither_deephaven_nor_tensorflow():
    proc = run_python(
        "import sys, dh_tf; print(dh_tf.__version__, 'deephaven' in sys.modules, 'tensorflow' in sys.modules, "
        "'jpy' in sys.modules)"
    )
    assert proc.returncode == 0, proc.stderr
    version, *loaded = proc.stdout.split()
    assert version.count(".") == 2 and loaded == ["False", "False", "False"]


def test_loader_without_a_jvm_says_what_to_do():
    proc = run_python("import dh_tf\ntry:\n    dh_tf.TableLoader([1, 2], 'A')\nexcept TypeError as e:\n    print(e)")
    assert proc.returncode == 0, proc.stderr
    assert "TableLoader: table must be a deephaven.table.Table (got list)" in proc.stdout
    assert "start the Deephaven server or embedded server first" in proc.stdout


def test_every_error_class_is_exported():
    """``except dh_tf.CacheError`` works like every other error: each class in ``dh_tf.errors`` is public."""
    import dh_tf
    import dh_tf.errors as errors

    classes = {name for name, obj in vars(errors).items() if isinstance(obj, type) and issubclass(obj, Exception)}
    assert "CacheError" in classes
    assert classes <= set(dh_tf.__all__)
    assert all(getattr(dh_tf, name) is getattr(errors, name) for name in classes)
