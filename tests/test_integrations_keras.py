"""Keras 3 CurvecastCallback in real model.fit runs (torch backend, CPU) against the real server."""

from __future__ import annotations

import os
import sys

import pytest
from conftest import free_port

if "keras" not in sys.modules:
    os.environ["KERAS_BACKEND"] = "torch"  # Keras reads it once, at first import
torch = pytest.importorskip("torch")
keras = pytest.importorskip("keras", minversion="3.0")
if keras.backend.backend() != "torch":
    pytest.skip(f"Keras already imported with the {keras.backend.backend()} backend", allow_module_level=True)

import numpy as np  # noqa: E402

from curvecast_client.integrations.keras import CurvecastCallback, _infer_mode  # noqa: E402

EPOCHS = 12
pytestmark = pytest.mark.filterwarnings("ignore:__array__ implementation:DeprecationWarning")  # keras vs numpy 2


@pytest.fixture(autouse=True, scope="module")
def one_torch_thread():
    """Tiny models on a shared 2-core box: extra intra-op threads only spin and fight (10x slower)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def fit(callback: CurvecastCallback, lr: float, metrics=()) -> keras.callbacks.History:
    keras.utils.set_random_seed(0)
    rng = np.random.default_rng(0)
    x = rng.normal(size=(64, 4)).astype("float32")
    w = np.array([[1.0], [-2.0], [0.5], [3.0]], dtype="float32")
    y = (x @ w + 0.1 * rng.normal(size=(64, 1))).astype("float32")
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(1)])
    model.compile(optimizer=keras.optimizers.SGD(learning_rate=lr), loss="mse", metrics=list(metrics))
    return model.fit(x, y, batch_size=16, epochs=EPOCHS, validation_data=(x, y), verbose=0, callbacks=[callback])


def test_diverging_run_stops_early(server):
    callback = CurvecastCallback(server.address, monitor="val_loss", timeout=5, stop_on={"stop_diverged"})
    history = fit(callback, lr=1.5)  # SGD on this problem blows up for lr >~ 1
    assert callback.tracker.stopped_by is not None and callback.tracker.stopped_by.action == "stop_diverged"
    assert len(history.history["val_loss"]) == callback.stopped_epoch + 1 < EPOCHS // 2
    assert callback.tracker.x == [float(e) for e in range(1, callback.stopped_epoch + 2)]  # epochs completed


def test_run_that_cannot_beat_the_incumbent_stops(server):
    callback = CurvecastCallback(server.address, monitor="val_loss", incumbent=0.01, timeout=5,
                                 policy={"min_points": 4})
    history = fit(callback, lr=0.002)  # crawls down from ~10: no chance to reach 0.01 within 12 epochs
    assert callback.tracker.stopped_by.action == "stop_unpromising"
    assert 4 <= len(history.history["val_loss"]) < EPOCHS // 2  # not before the min_points guard allows


def test_healthy_run_trains_all_epochs(server):
    callback = CurvecastCallback(server.address, monitor="val_loss", stop_on={"stop_diverged"}, timeout=5)
    history = fit(callback, lr=0.05)
    assert len(history.history["val_loss"]) == EPOCHS
    assert callback.tracker.last.answered and callback.stopped_epoch is None


def test_unreachable_service_keeps_training():
    callback = CurvecastCallback(f"127.0.0.1:{free_port()}", monitor="val_loss", cooldown_s=0)
    history = fit(callback, lr=1.5)
    assert len(history.history["val_loss"]) == EPOCHS
    assert not callback.tracker.last.answered and callback.stopped_epoch is None


def test_mode_auto_follows_the_metric_name():
    assert _infer_mode("val_loss") == "min" and _infer_mode("val_mae") == "min"
    assert _infer_mode("val_accuracy") == "max" and _infer_mode("val_auc") == "max"
    assert CurvecastCallback("127.0.0.1:1", monitor="val_accuracy").tracker.goal == "maximize"
