"""Train on a table that lives on a Deephaven server elsewhere: pydeephaven + dh_tf, no JVM here.

The trainer needs only ``pip install 'dh-tf[remote]' tensorflow``: the data stays on the server,
the DQL (``where``) runs there, and dh_tf streams pages of rows over Arrow Flight. Run it against
the Docker demo (``docker compose up``: its ``trainer`` service runs exactly this), or any server:

    DH_HOST=localhost DH_PORT=10000 DH_PSK=<the key> python examples/remote_trainer.py

Environment variables: DH_HOST (default localhost), DH_PORT (default 10000), DH_PSK (the server's
pre-shared key; unset: anonymous), DH_TABLE (default ``dh_tf_demo``, the Docker demo's table: ``Id``,
``X0`` .. ``X7``, a 0/1 ``Label``), DH_CONNECT_TIMEOUT (seconds to keep retrying while the server
starts up or the table is not there yet; default 0: fail at once), DH_TF_EXAMPLE_EPOCHS (default 2),
DH_TLS_ROOT_CERTS (the path of a PEM file of the CA certificates to trust: connect over TLS; the
compose demo's TLS option sets it) and DH_TLS (``1``: TLS trusting the system's CAs).
Prints the validation accuracy; exits with status 1 if it is below 0.8.
"""

import os
import sys
import time

import keras
from pydeephaven import DHError, Session

import dh_tf

FEATURES = [f"X{n}" for n in range(8)]
SEED = 7
MIN_ACCURACY = 0.8
PSK_AUTH = "io.deephaven.authentication.psk.PskAuthenticationHandler"

host = os.environ.get("DH_HOST", "localhost")
port = int(os.environ.get("DH_PORT", "10000"))
table_name = os.environ.get("DH_TABLE", "dh_tf_demo")
psk = os.environ.get("DH_PSK")
connect_options = {"auth_type": PSK_AUTH, "auth_token": psk} if psk else {"auth_type": "Anonymous"}
root_certs = os.environ.get("DH_TLS_ROOT_CERTS")
if root_certs:  # TLS: the key and the data are encrypted on the wire
    with open(root_certs, "rb") as f:
        connect_options.update(use_tls=True, tls_root_certs=f.read())
elif os.environ.get("DH_TLS") == "1":
    connect_options.update(use_tls=True)


def why(error: DHError) -> str:
    """pydeephaven's message and, from its gRPC cause, why the call failed (a refused certificate says
    CERTIFICATE_VERIFY_FAILED there; neither holds the key)."""
    details = getattr(error.__cause__, "details", None)
    return f"{error} ({details()})" if callable(details) else str(error)


def open_remote_table(deadline: float) -> tuple[Session, object]:
    """Connects and opens the table, retrying until ``deadline`` (a server that is still starting)."""
    while True:
        session = None
        try:
            session = Session(host=host, port=port, **connect_options)
            return session, session.open_table(table_name)
        except DHError as e:
            if session is not None:
                session.close()
            if time.monotonic() >= deadline:
                raise SystemExit(f"remote_trainer: cannot open table {table_name!r} on {host}:{port}: {why(e)}") from e
            time.sleep(2)


session, table = open_remote_table(time.monotonic() + float(os.environ.get("DH_CONNECT_TIMEOUT", "0")))
try:
    # DQL on the client builds server-side tables: only the rows dh_tf reads cross the network.
    train = table.where("Id % 10 != 0")
    val = table.where("Id % 10 == 0")
    train_ds = dh_tf.to_dataset(train, FEATURES, "Label", batch_size=1024, shuffle=True, seed=SEED)
    val_ds = dh_tf.to_dataset(val, FEATURES, "Label", batch_size=4096)

    keras.utils.set_random_seed(SEED)
    model = keras.Sequential(
        [
            keras.Input(shape=(len(FEATURES),)),
            keras.layers.Dense(32, activation="relu"),
            keras.layers.Dense(1, activation="sigmoid"),
        ]
    )
    model.compile(optimizer=keras.optimizers.Adam(3e-3), loss="binary_crossentropy", metrics=["accuracy"])
    start = time.perf_counter()
    # shuffle=False: the dataset already shuffles (seeded, per epoch); Keras would only warn it can't.
    epochs = int(os.environ.get("DH_TF_EXAMPLE_EPOCHS", "2"))
    history = model.fit(train_ds, validation_data=val_ds, epochs=epochs, shuffle=False, verbose=2)
    seconds = time.perf_counter() - start
    num_train, num_val = train_ds.dh_tf_loader.num_rows, val_ds.dh_tf_loader.num_rows
finally:
    session.close()

val_accuracy = history.history["val_accuracy"][-1]
print(f"rows: train {num_train:,}, validation {num_val:,} (table {table_name} on {host}:{port})")
print(f"trained {epochs} epochs in {seconds:.1f} s; validation accuracy {val_accuracy:.3f}")
if val_accuracy < MIN_ACCURACY:
    sys.exit(f"remote_trainer: validation accuracy {val_accuracy:.3f} is below {MIN_ACCURACY}")
print(f"dh_tf example OK: remote_trainer trained on {num_train:,} remote rows, validation accuracy {val_accuracy:.3f}")
