"""How TensorFlow takes a page from ``from_generator``: copied, or referenced (NOTE [ Aligned page arrays ]).

One process, no JVM: the same generator pipeline as ``dh_tf.to_dataset`` (pages of ``--page-rows``
rows of 16 float32 + int32, range-sliced into batch-4096 tensors in C++, ``ds.reduce`` consumer)
fed three ways, interleaved pass by pass (A B C A B C ...):

- ``numpy_empty``: new pages from ``np.empty`` (what dh_tf used before: data 16 bytes past a
  64-byte boundary), filled from the file with ``preadv``; TensorFlow copies each page;
- ``aligned``: new pages from ``dh_tf.reading.buffers.empty_aligned``, filled the same way;
  TensorFlow references them;
- ``mapped``: each page a private mapping of the file (NOTE [ Mapped cache reads ]): no copy at all.

    .venv/bin/python -m benchmarks.aligned --out benchmarks/results/third-wave
"""

from __future__ import annotations

import argparse
import mmap
import os
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np

from benchmarks.report import machine_info, provenance, write_named_results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=20_971_520)
    parser.add_argument("--page-rows", type=int, default=524_288)
    parser.add_argument("--passes", type=int, default=7)
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/third-wave"))
    args = parser.parse_args()
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    import tensorflow as tf

    from dh_tf.reading.buffers import empty_aligned

    machine = machine_info()
    rows, page, batch = args.rows // args.page_rows * args.page_rows, args.page_rows, 4096
    with tempfile.TemporaryDirectory() as directory:
        fds = []
        for name, width in (("x", 64), ("y", 4)):
            path = os.path.join(directory, name)
            np.random.default_rng(0).integers(0, 255, rows * width, dtype=np.uint8).tofile(path)
            fds.append((os.open(path, os.O_RDWR), width))

        def filled(new):
            def read(index):
                out = []
                for fd, width in fds:
                    array = new(page * width)
                    os.preadv(fd, [memoryview(array)], index * page * width)
                    out.append(array)
                return out
            return read

        def mapped(index):
            return [np.frombuffer(mmap.mmap(fd, page * width, flags=mmap.MAP_PRIVATE,
                                            prot=mmap.PROT_READ | mmap.PROT_WRITE, offset=index * page * width),
                                  dtype=np.uint8) for fd, width in fds]

        def dataset(read):
            def pages():
                for index in range(rows // page):
                    x, y = read(index)
                    yield x.view(np.float32).reshape(page, 16), y.view(np.int32)

            signature = (tf.TensorSpec((None, 16), tf.float32), tf.TensorSpec((None,), tf.int32))

            def batches(x, y):
                count = tf.shape(x, out_type=tf.int64)[0] // batch
                return tf.data.Dataset.range(count).map(lambda i: (x[i * batch:(i + 1) * batch],
                                                                   y[i * batch:(i + 1) * batch]))

            ds = tf.data.Dataset.from_generator(pages, output_signature=signature)
            return ds.flat_map(batches).prefetch(tf.data.AUTOTUNE)

        arms = {"numpy_empty": dataset(filled(lambda n: np.empty(n, np.uint8))),
                "aligned": dataset(filled(lambda n: empty_aligned(n, np.uint8))),
                "mapped": dataset(mapped)}
        passes: dict[str, list[float]] = {name: [] for name in arms}
        for round_ in range(1 + args.passes):  # round 0: cold, not reported
            for name, ds in arms.items():
                start = time.perf_counter()
                got = int(ds.reduce(tf.constant(0, tf.int64), lambda n, e: n + tf.cast(tf.shape(e[1])[0], tf.int64)))
                seconds = time.perf_counter() - start
                assert got == rows, (name, got, rows)
                if round_:
                    passes[name].append(rows / seconds)
        for fd, _ in fds:
            os.close(fd)
    lines = [
        "# Pages into TensorFlow: copied or referenced", "",
        provenance(f"python -m benchmarks.aligned --rows {args.rows} --page-rows {args.page_rows} --passes {args.passes}", machine), "",
        f"{rows:,} rows of 16 float32 + int32 in pages of {page:,} rows, batch {batch}, `ds.reduce`; M rows/s over "
        f"{args.passes} warm passes per arm, interleaved (the cold first round is left out).", "",
        "| pages | min | median | max | best vs numpy_empty | median vs numpy_empty |", "|---|---|---|---|---|---|",
    ]
    base = passes["numpy_empty"]
    for name, values in passes.items():
        m = [v / 1e6 for v in values]
        lines.append(f"| `{name}` | {min(m):.2f} | {statistics.median(m):.2f} | {max(m):.2f} | "
                     f"{max(values) / max(base):.2f}x | {statistics.median(values) / statistics.median(base):.2f}x |")
    write_named_results(args.out, "aligned", lines, machine, args, {"rows_per_s": passes})


if __name__ == "__main__":
    main()
