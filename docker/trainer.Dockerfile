# The compose demo's `trainer`: Python + TensorFlow (CPU) + dh_tf with pydeephaven, and no Java at
# all. It trains examples/remote_trainer.py against the `deephaven` service over the compose
# network and exits with its validation accuracy (see docker/README.md). Build from the repository
# root (the compose file does: context `..`, dockerfile docker/trainer.Dockerfile).

ARG PYTHON_VERSION=3.12
FROM python:${PYTHON_VERSION}-slim

# Keep these equal to the pins in requirements-dev.txt (tensorflow-cpu) and pyproject.toml (the
# `remote` extra's pydeephaven). tensorflow-cpu has Linux wheels for x86_64 only; on arm64 the
# `tensorflow` wheel is CPU-only too. TensorFlow is not a dependency of dh_tf (NOTE [ Lean installs ]
# in pyproject.toml): the image picks its own, in a layer of its own.
ARG TENSORFLOW_VERSION=2.21.0
ARG PYDEEPHAVEN_VERSION=42.7
ARG TARGETARCH
RUN set -eux; \
    if [ "${TARGETARCH:-amd64}" = "arm64" ]; then tf=tensorflow; else tf=tensorflow-cpu; fi; \
    pip install --no-cache-dir "${tf}==${TENSORFLOW_VERSION}" "pydeephaven==${PYDEEPHAVEN_VERSION}"

# dh_tf itself with its `remote` extra, dependencies resolved by pip: numpy, pyarrow, pydeephaven
# (already there) and, on x86_64, pydeephaven-ticking. No deephaven-core, no JVM bridge, no second
# TensorFlow: the base install is numpy only.
COPY pyproject.toml README.md /src/
COPY dh_tf /src/dh_tf
RUN set -eux; \
    pip install --no-cache-dir "/src[remote]"; \
    rm -rf /src; \
    python -c "import dh_tf, pydeephaven, tensorflow as tf; print('dh_tf', dh_tf.__version__, 'tensorflow', tf.__version__)"; \
    python -c "import importlib.util as u, sys; found = [m for m in ('deephaven', 'jpy') if u.find_spec(m)]; sys.exit(f'no JVM bridge in the trainer: {found}' if found else 0)"

COPY examples/remote_trainer.py /opt/dh_tf/remote_trainer.py

RUN useradd --create-home trainer
USER trainer
ENV TF_CPP_MIN_LOG_LEVEL=2 \
    PYTHONUNBUFFERED=1
CMD ["python", "/opt/dh_tf/remote_trainer.py"]
