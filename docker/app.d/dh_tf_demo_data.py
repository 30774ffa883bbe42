"""Application-mode start-up script of the dh_tf demo image (see dh_tf_demo.app and docker/README.md).

At server start it:

1. writes a small demo data set once, as Parquet: ``DH_TF_DEMO_ROWS`` rows (default 200,000) of
   ``Id`` (long), ``X0`` .. ``X7`` (float) and ``Label`` (int, 0/1, a learnable function of the
   features), under ``DH_TF_DEMO_DIR`` (default ``/data/dh_tf_demo``, on the data volume);
2. reads it back with ``deephaven.parquet.read`` as the global table ``dh_tf_demo`` (also an
   application field, listed in the IDE's Panels menu);
3. copies the dh_tf examples baked into the image (``DH_TF_EXAMPLES_SRC``, default
   ``/opt/dh_tf/examples``) into the IDE's file explorer (``DH_TF_NOTEBOOK_DIR``, default
   ``/data/storage/notebooks``) under ``dh_tf_examples/``, file by file, only where a file is
   missing: edits made in the IDE survive restarts and image upgrades.

An exception raised here would abort the server's start-up, so each step catches everything and
prints it instead: a broken demo never takes the IDE down with it.
"""

import os
import shutil
import traceback

from deephaven import empty_table, parquet


def _demo_table(demo_dir, num_rows):
    """Writes the demo Parquet file under ``demo_dir`` unless it exists, and returns it read back."""
    path = os.path.join(demo_dir, f"dh_tf_demo-{num_rows}.parquet")
    if not os.path.exists(path):
        os.makedirs(demo_dir, exist_ok=True)
        # Features: a deterministic hash of the row position in (-1, 1), the same on every machine.
        # `update_view` formulas are computed as the writer reads them: nothing is held in the heap.
        features = [
            f"X{n} = (float) ((Math.sin((i + 1) * {12.9898 + 7.233 * n}) * 43758.5453) % 1.0)" for n in range(8)
        ]
        generated = empty_table(num_rows).update_view(
            ["Id = ii", *features, "Label = (X0 + X1 * X2 - 0.5 * X3 + 0.25 * X4 > 0) ? 1 : 0"]
        )
        parquet.write(generated, path)  # Deephaven writes a shadow file and renames it when done
        print(f"dh_tf demo: wrote {num_rows:,} rows to {path}")
    return parquet.read(path)


def _seed_examples(src_dir, notebook_dir):
    """Copies each example missing from ``notebook_dir/dh_tf_examples``; returns how many it copied."""
    if not os.path.isdir(src_dir):
        return 0
    dst_dir = os.path.join(notebook_dir, "dh_tf_examples")
    os.makedirs(dst_dir, exist_ok=True)
    copied = 0
    for name in sorted(os.listdir(src_dir)):
        src, dst = os.path.join(src_dir, name), os.path.join(dst_dir, name)
        if name.endswith(".py") and os.path.isfile(src) and not os.path.exists(dst):
            shutil.copy2(src, dst)
            copied += 1
    return copied


def _publish(name, value):
    """Makes ``value`` an application field (Panels menu) when run by application mode."""
    from deephaven import DHError
    from deephaven.appmode import get_app_state

    try:
        app = get_app_state()
    except DHError:  # not run by application mode (e.g. pasted into a console): the global is enough
        return
    app[name] = value


try:
    dh_tf_demo = _demo_table(
        os.environ.get("DH_TF_DEMO_DIR") or "/data/dh_tf_demo", int(os.environ.get("DH_TF_DEMO_ROWS") or 200_000)
    )
    _publish("dh_tf_demo", dh_tf_demo)
    print(f"dh_tf demo: table dh_tf_demo ready ({dh_tf_demo.size:,} rows)")
except Exception:  # never abort the server's start-up: see the module docstring
    traceback.print_exc()
    print("dh_tf demo: could not create the demo table dh_tf_demo (the server runs on without it)")

try:
    _copied = _seed_examples(
        os.environ.get("DH_TF_EXAMPLES_SRC") or "/opt/dh_tf/examples",
        os.environ.get("DH_TF_NOTEBOOK_DIR") or "/data/storage/notebooks",
    )
    if _copied:
        print(f"dh_tf demo: copied {_copied} example(s) into the file explorer, folder dh_tf_examples")
    del _copied
except Exception:  # as above
    traceback.print_exc()
    print("dh_tf demo: could not copy the examples into the file explorer")

del _demo_table, _seed_examples, _publish
