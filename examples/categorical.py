"""A String categorical feature: StringLookup + Embedding and Normalization, adapted by the engine.

A generated trades table (built entirely in DQL): a ``Sym`` String column with skewed (Zipf-like)
frequencies and a few nulls, an Instant ``Timestamp``, ``Price``, ``Size`` and order-book
``Imbalance``. Whether the next move is up depends on the symbol: each symbol reacts to its last
return with its own sign and strength (momentum or mean reversion), so the numbers alone cannot
tell. ``dh_tf.adapt`` sets the ``StringLookup`` vocabulary and the ``Normalization`` statistics from
engine aggregations (``count_by`` / ``avg`` / ``var``): no row is pulled into Python to adapt them.
A model with the symbol is compared with the same model on the numbers only.

Paste this file into the Deephaven IDE console, or run ``python examples/categorical.py`` (which
starts an embedded server). Environment variables: DH_TF_EXAMPLE_ROWS (default 1,000,000),
DH_TF_EXAMPLE_HEAP and DH_TF_EXAMPLE_PORT (the embedded server, plain-Python runs only).
"""

import os

from dh_tf.server import ensure_server

# The IDE console already runs the engine; plain `python` starts the embedded server first
# (deephaven can only be imported once a JVM runs).
ensure_server(
    heap=os.environ.get("DH_TF_EXAMPLE_HEAP", "512m"), port=int(os.environ.get("DH_TF_EXAMPLE_PORT", "10000"))
)
import keras
from deephaven import empty_table

import dh_tf

NUM_ROWS = int(os.environ.get("DH_TF_EXAMPLE_ROWS", "1000000"))
NUM_SYMBOLS = 100
SEED = 5

# 1. The trades, all in DQL. `update_view` computes a formula when its rows are read, so the table
#    takes no memory. H(i, k) is a deterministic hash of the row position in (-1, 1).
def H(i: str, k: float) -> str:
    return f"((Math.sin(({i} + 1) * {k}) * 43758.5453) % 1.0)"


trades = empty_table(NUM_ROWS).update_view(
    [
        "Timestamp = '2024-01-02T09:30:00 ET' + ii * 100 * MILLI",  # one trade every 100 ms
        # Symbol k is drawn about 1 / (k + 1) as often as symbol 0 (Zipf-like, as tickers are).
        f"SymId = (int)Math.floor(Math.pow({NUM_SYMBOLS} + 1.0, Math.abs({H('ii', 12.9898)})) - 1)",
        "Sym = ii % 211 == 7 ? null : `SYM` + SymId",  # ~0.5% of the symbols are missing
        f"Ret = 0.002 * {H('ii', 78.233)}",  # the last return, in (-0.2%, 0.2%)
        f"Price = (20.0 + 480.0 * Math.abs({H('SymId', 4.1414)})) * (1 + Ret)",
        f"Size = (long)(100 * Math.exp(3 * Math.abs({H('ii', 37.719)})))",
        f"Imbalance = {H('ii', 93.989)}",  # order-book imbalance in (-1, 1)
        # The label: each symbol's own reaction to its return (Beta in (-1, 1)), plus the imbalance.
        f"Beta = {H('SymId', 7.2321)}",
        f"Up = (Beta * Ret / 0.002 + 0.4 * Imbalance + 0.3 * {H('ii', 54.321)} > 0) ? 1 : 0",
        "LogSize = Math.log(Size)",
    ]
).view(["Timestamp", "Sym", "Price", "Size", "Imbalance", "Ret", "LogSize", "Up"])

# 2. Split by time with DQL: the first 80% of the session trains, the rest validates.
split = f"'2024-01-02T09:30:00 ET' + {int(0.8 * NUM_ROWS)} * 100 * MILLI"
train = trades.where(f"Timestamp < {split}")
val = trades.where(f"Timestamp >= {split}")

# 3. The preprocessing layers, adapted by the engine on the training rows (nulls left out).
NUMBERS = ["Ret", "LogSize", "Imbalance"]
lookup = dh_tf.adapt(keras.layers.StringLookup(), train, "Sym")  # the vocabulary by descending count
top = [str(v) for v in lookup.get_vocabulary()[1:6]]
print(f"vocabulary: {lookup.vocabulary_size()} entries (OOV first), most frequent {top}")

# A dict of features: "sym" is a tf.string [batch], "num" float32 [batch, 3]. A null symbol becomes
# "[UNK]", StringLookup's OOV token.
FEATURES = {"sym": "Sym", "num": NUMBERS}
options = dict(label_dtype="float32", nulls={"Sym": "[UNK]"})
train_ds = dh_tf.to_dataset(train, FEATURES, "Up", batch_size=256, shuffle=True, seed=SEED, **options)
val_ds = dh_tf.to_dataset(val, FEATURES, "Up", batch_size=4096, **options)


def build(with_symbol: bool) -> keras.Model:
    """The same small network on the numbers, with or without the symbol's embedding."""
    num_in = keras.Input(shape=(len(NUMBERS),), name="num")
    inputs = {"num": num_in}
    parts = [dh_tf.adapt(keras.layers.Normalization(), train, NUMBERS)(num_in)]
    if with_symbol:
        inputs["sym"] = keras.Input(shape=(), dtype="string", name="sym")
        parts.append(keras.layers.Embedding(lookup.vocabulary_size(), 8)(lookup(inputs["sym"])))
    hidden = keras.layers.Concatenate()(parts) if with_symbol else parts[0]
    hidden = keras.layers.Dense(32, activation="relu")(hidden)
    output = keras.layers.Dense(1, activation="sigmoid", name="up")(hidden)
    model = keras.Model(inputs=inputs, outputs=output)
    model.compile(optimizer=keras.optimizers.Adam(3e-3), loss="binary_crossentropy", metrics=["accuracy"])
    return model


# The numeric-only model reads only its own columns: a dataset of {"num": ...}.
num_train_ds = dh_tf.to_dataset(train, {"num": NUMBERS}, "Up", batch_size=256, shuffle=True, seed=SEED, **options)
num_val_ds = dh_tf.to_dataset(val, {"num": NUMBERS}, "Up", batch_size=4096, **options)

keras.utils.set_random_seed(SEED)
numeric_model = build(with_symbol=False)
# shuffle=False: the datasets already shuffle (seeded, per epoch); Keras would only warn it can't.
numeric_history = numeric_model.fit(num_train_ds, validation_data=num_val_ds, epochs=2, shuffle=False, verbose=2)
keras.utils.set_random_seed(SEED)
model = build(with_symbol=True)
history = model.fit(train_ds, validation_data=val_ds, epochs=2, shuffle=False, verbose=2)

numeric_loss, numeric_accuracy = (numeric_history.history[k][-1] for k in ("val_loss", "val_accuracy"))
val_loss, val_accuracy = (history.history[k][-1] for k in ("val_loss", "val_accuracy"))
print(f"rows: train {train.size:,}, validation {val.size:,}; {NUM_SYMBOLS} symbols")
print(f"numbers only:           validation loss {numeric_loss:.4f}, accuracy {numeric_accuracy:.3f}")
print(f"numbers + Sym embedding: validation loss {val_loss:.4f}, accuracy {val_accuracy:.3f}")
assert train.size + val.size == trades.size
assert val_loss < numeric_loss, "the symbol did not lower the validation loss"
assert val_accuracy > numeric_accuracy + 0.05, f"the symbol did not help: {val_accuracy:.3f} vs {numeric_accuracy:.3f}"
print(f"dh_tf example OK: categorical trained on {train.size:,} rows, validation accuracy {val_accuracy:.3f} "
      f"with the symbol vs {numeric_accuracy:.3f} without")
