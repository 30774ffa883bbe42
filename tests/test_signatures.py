"""Signatures that tell the truth: every public name shows its real parameters and defaults, the reading
options of every entry point are TableLoader's (names and defaults, but the ones each documents), misspelled
keywords name the function called and the closest names, deprecated names warn."""

from __future__ import annotations

import inspect
import warnings

import pytest

import dh_tf
from dh_tf.errors import ArgumentError, ArgumentTypeError
from dh_tf.live.follow import DEFAULT_PREFETCH
from dh_tf.reading.options import LOADER_OPTIONS, keyword_defaults
from dh_tf.tf.dataset import FOLLOW_ONLY, STATIC_ONLY
from dh_tf.tf.keras_workers import STRATEGY_OPTIONS
from dh_tf.write.predict_follow import NOT_FOLLOW_OPTIONS
from dh_tf.write.predict_table import NOT_READING_OPTIONS

PASS_THROUGH = {"fit_in_background": "fit_options", "ResumableTraining.fit": "fit_options"}
"""The only ``**kwargs`` of the public API: arguments handed to Keras' ``model.fit`` as they are."""
PLAIN_DEFAULTS = (type(None), bool, int, float, str)
FOLLOW_OPTIONS = keyword_defaults(dh_tf.follow)


def _public_callables():
    for name in dh_tf.__all__:
        value = getattr(dh_tf, name)
        if callable(value) and not (isinstance(value, type) and issubclass(value, BaseException)):
            yield name, value
            if isinstance(value, type):
                for method, function in vars(value).items():
                    if not method.startswith("_") and inspect.isfunction(function):
                        yield f"{name}.{method}", function


@pytest.mark.parametrize("name, function", list(_public_callables()), ids=lambda v: v if isinstance(v, str) else "")
def test_public_signatures_have_no_hidden_keywords_and_no_sentinels(name, function):
    parameters = inspect.signature(function).parameters.values()
    catchers = [p.name for p in parameters if p.kind == p.VAR_KEYWORD]
    assert catchers == ([PASS_THROUGH[name]] if name in PASS_THROUGH else []), name
    odd = {p.name: p.default for p in parameters if p.default is not p.empty and type(p.default) not in PLAIN_DEFAULTS}
    assert not odd, f"{name}: defaults that are not None/bool/int/float/str: {odd}"


def test_to_dataset_takes_table_loaders_and_follows_options():
    options = keyword_defaults(dh_tf.to_dataset)
    assert {k: v for k, v in options.items() if k in LOADER_OPTIONS} == {**LOADER_OPTIONS, "prefetch": None}
    assert {k: options[k] for k in FOLLOW_ONLY} == {k: FOLLOW_OPTIONS[k] for k in FOLLOW_ONLY}
    assert set(options) == set(LOADER_OPTIONS) | set(FOLLOW_OPTIONS) | {"input_context", "follow"}
    assert set(STATIC_ONLY) == set(LOADER_OPTIONS) - set(FOLLOW_OPTIONS) | {"input_context"}


def test_scoring_and_distributed_reading_options_are_table_loaders():
    scoring = keyword_defaults(dh_tf.predict_table)
    own = {"keep": None, "output": "Prediction", "batch_size": 4096, "directory": None, "overwrite": False,
           "write_path": "auto", "bind_as": None}
    assert scoring == {**own, **{k: v for k, v in LOADER_OPTIONS.items() if k not in NOT_READING_OPTIONS and k not in own}}
    assert set(NOT_READING_OPTIONS) | set(scoring) >= set(LOADER_OPTIONS)
    distributed = keyword_defaults(dh_tf.distributed_fit_dataset)
    assert distributed == {"batch_size": 32, "initial_epoch": 0,
                           **{k: v for k, v in LOADER_OPTIONS.items() if k not in STRATEGY_OPTIONS and k != "batch_size"}}


def test_follow_options_agree_everywhere():
    assert keyword_defaults(dh_tf.Follower.__init__) == {**FOLLOW_OPTIONS, "where": "follow"}
    assert keyword_defaults(dh_tf.follow_dataset) == FOLLOW_OPTIONS
    shared = set(FOLLOW_OPTIONS) & set(LOADER_OPTIONS)
    assert {k: FOLLOW_OPTIONS[k] for k in shared} == {**{k: LOADER_OPTIONS[k] for k in shared}, "prefetch": 4}
    assert DEFAULT_PREFETCH == 4 and LOADER_OPTIONS["prefetch"] == 2  # documented in follow's and to_dataset's docstrings
    scoring = keyword_defaults(dh_tf.predict_follow)
    own = {"keep": None, "output": "Prediction", "batch_size": 256, "max_wait": 0.5, "dtype": "float32", "bind_as": None}
    assert scoring == {**own, **{k: v for k, v in FOLLOW_OPTIONS.items() if k not in NOT_FOLLOW_OPTIONS and k not in own}}


@pytest.mark.parametrize("call, message", [
    (lambda: dh_tf.to_dataset(None, "X", batchsize=64), "to_dataset: got an unexpected keyword argument 'batchsize'; "
     "did you mean 'batch_size' or 'max_batches'?"),
    (lambda: dh_tf.follow(None, "X", maxwait=1.0), "follow: got an unexpected keyword argument 'maxwait'; did you "
     "mean 'max_wait'?"),
    (lambda: dh_tf.predict_table(None, None, "X", outptu="P"), "predict_table: got an unexpected keyword argument "
     "'outptu'; did you mean 'output'?"),
    (lambda: dh_tf.predict_follow(None, None, "X", kep="Id"), "predict_follow: got an unexpected keyword argument "
     "'kep'; did you mean 'keep'"),
    (lambda: dh_tf.distributed_fit_dataset(None, None, "X", initial_epochs=1), "distributed_fit_dataset: got an "
     "unexpected keyword argument 'initial_epochs'; did you mean 'initial_epoch'"),
    (lambda: dh_tf.follow_dataset(None, "X", shufle=True), "follow_dataset: got an unexpected keyword argument "
     "'shufle'; the keyword arguments are table, features, label, batch_size, start"),
    (lambda: dh_tf.TableLoader(None, "X", batchsize=64), "TableLoader: got an unexpected keyword argument "
     "'batchsize'; did you mean 'batch_size'?"),
    (lambda: dh_tf.ResumableTraining("ckpt", evry=5), "ResumableTraining: got an unexpected keyword argument "
     "'evry'; did you mean 'every'?"),
])
def test_misspelled_keywords_name_the_function_called_and_the_closest_names(call, message):
    with pytest.raises(ArgumentTypeError, match=message.replace("?", r"\?").replace("(", r"\(")) as raised:
        call()
    assert isinstance(raised.value, TypeError)


def test_follow_mode_options_blame_to_dataset():
    with pytest.raises(ArgumentError, match=r"^to_dataset: cache does not apply with follow=True, which reads each new "
                       r"row of a live table once, in arrival order \(got cache=True\); leave it out$"):
        dh_tf.to_dataset(None, "X", follow=True, cache=True)
    with pytest.raises(ArgumentError, match=r"^to_dataset: max_wait applies with follow=True only \(following a live "
                       r"table\) \(got max_wait=1.0\); leave it out$"):
        dh_tf.to_dataset(None, "X", max_wait=1.0)
    with pytest.raises(ArgumentTypeError, match=r"to_dataset: follow must be True or False \(got 1 of type int\)"):
        dh_tf.to_dataset(None, "X", follow=1)


def test_follow_true_on_a_static_table_says_to_leave_out_follow(make_table):
    with pytest.raises(ArgumentError) as raised:
        dh_tf.to_dataset(make_table(3, "X = 1.0"), "X", follow=True)
    assert str(raised.value) == ("to_dataset: follow=True needs a live (refreshing) table, but this table is static; "
                                 "leave out follow=True to read it in epochs")


def test_interval_s_is_for_remote_append_only_tables(make_table):
    from deephaven import time_table

    with pytest.raises(ArgumentError, match=r"follow: interval_s is for remote append-only \(pydeephaven\) tables, "
                       r"which are polled \(got interval_s=0.1 for an embedded table"):
        dh_tf.follow(time_table("PT1s"), "X", interval_s=0.1)


def test_deprecated_names_warn_and_still_work(tmp_path):
    with pytest.warns(DeprecationWarning, match="ResumableTraining: save_every= is renamed every=; the old name goes"):
        run = dh_tf.ResumableTraining(tmp_path, save_every=7)
    assert run.every == 7
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert dh_tf.ResumableTraining(tmp_path).every == 100
    with pytest.raises(ArgumentError, match=r"ResumableTraining: pass every= only \(got both every= and its old name "
                       r"save_every=\)"):
        dh_tf.ResumableTraining(tmp_path, every=3, save_every=7)
    with pytest.raises(ArgumentError, match=r"^distributed_fit_dataset: num_shards must not be given \(got num_shards=2\); "
                       r"the strategy decides each worker's shard \(use dh_tf.to_dataset for your own sharding\)$"):
        dh_tf.distributed_fit_dataset(None, None, "X", num_shards=2)
