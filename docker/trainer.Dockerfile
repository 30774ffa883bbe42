# The compose demo's `trainer`: Python + TensorFlow (CPU) + dh_tf with pydeephaven, and no Java at
# all. It trains examples/remote_trainer.py against the `deephaven` service over the compose
# network and exits with its validation accuracy (see docker/README.md). Build from the repository
# root (the compose file does: context `..`, dockerfile docker/trainer.Dockerfile).

ARG PYTHON_VERSION=3.12
FROM python:${PYTHON_VERSION}-slim

# Keep these equal to the pins in requirements-dev.txt (tensorflow-cpu) and pyproject.toml (the
# `remote` extra's pydeephaven). tensorflow-cpu has Linux wheels for x86_64 only; on arm64 the
# `tensorflow` wheel is CPU-only too.
ARG TENSORFLOW_VERSION=2.21.0
ARG PYDEEPHAVEN_VERSION=42.7
ARG TARGETARCH
RUN set -eux; \
    if [ "${TARGETARCH:-amd64}" = "arm64" ]; then tf=tensorflow; else tf=tensorflow-cpu; fi; \
    pip install --no-cache-dir "${tf}==${TENSORFLOW_VERSION}" "pydeephaven==${PYDEEPHAVEN_VERSION}"

# dh_tf itself, --no-deps: a remote trainer needs only numpy, pyarrow and pydeephaven (installed
# above with pydeephaven) and TensorFlow. pip would otherwise add deephaven-core (the embedded
# engine's Python side, useless without a JVM) and the full `tensorflow` next to tensorflow-cpu.
COPY pyproject.toml README.md /src/
COPY dh_tf /src/dh_tf
RUN set -eux; \
    pip install --no-cache-dir --no-deps /src; \
    rm -rf /src; \
    python -c "import dh_tf, pydeephaven, tensorflow as tf; print('dh_tf', dh_tf.__version__, 'tensorflow', tf.__version__)"

COPY examples/remote_trainer.py /opt/dh_tf/remote_trainer.py

RUN useradd --create-home trainer
USER trainer
ENV TF_CPP_MIN_LOG_LEVEL=2 \
    PYTHONUNBUFFERED=1
CMD ["python", "/opt/dh_tf/remote_trainer.py"]
