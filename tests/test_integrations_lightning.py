"""CurvecastCallback in real Lightning training (tiny torch model, CPU) against the real server."""

from __future__ import annotations

import pytest
from conftest import free_port

torch = pytest.importorskip("torch")
pl = pytest.importorskip("lightning.pytorch")

from torch.utils.data import DataLoader, TensorDataset  # noqa: E402

from curvecast_client.integrations.lightning import CurvecastCallback  # noqa: E402

MAX_EPOCHS = 12
pytestmark = pytest.mark.filterwarnings("ignore:.*LeafSpec")  # Lightning vs torch 2.13


@pytest.fixture(autouse=True, scope="module")
def one_torch_thread():
    """Tiny models on a shared 2-core box: extra intra-op threads only spin and fight (10x slower)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


class Regressor(pl.LightningModule):
    """Linear regression with plain SGD: a large learning rate makes it blow up for real."""

    def __init__(self, lr: float) -> None:
        super().__init__()
        self.lr = lr
        self.net = torch.nn.Linear(4, 1)

    def _loss(self, batch):
        x, y = batch
        return torch.nn.functional.mse_loss(self.net(x), y)

    def training_step(self, batch, batch_idx):
        return self._loss(batch)

    def validation_step(self, batch, batch_idx):
        self.log("val_loss", self._loss(batch), prog_bar=False)

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=self.lr)


def loaders():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(64, 4, generator=g)
    y = x @ torch.tensor([[1.0], [-2.0], [0.5], [3.0]]) + 0.1 * torch.randn(64, 1, generator=g)
    data = TensorDataset(x, y)
    return DataLoader(data, batch_size=16), DataLoader(data, batch_size=64)


def fit(callback: CurvecastCallback, lr: float) -> pl.Trainer:
    pl.seed_everything(0, verbose=False)
    trainer = pl.Trainer(max_epochs=MAX_EPOCHS, accelerator="cpu", devices=1, logger=False,
                         enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
                         num_sanity_val_steps=1, callbacks=[callback])
    train, val = loaders()
    trainer.fit(Regressor(lr), train, val)
    return trainer


def test_diverging_run_stops_early(server):
    callback = CurvecastCallback(server.address, monitor="val_loss", timeout=5, stop_on={"stop_diverged"})
    trainer = fit(callback, lr=1.5)  # SGD on this problem blows up for lr >~ 1
    assert callback.tracker.stopped_by is not None
    assert callback.tracker.stopped_by.action == "stop_diverged"
    assert trainer.current_epoch < 6
    assert trainer.should_stop
    # the sanity check is not part of the history: one point per real validation, x = global step
    assert callback.tracker.x == [4.0 * (i + 1) for i in range(len(callback.tracker.x))]


def test_target_reached_stops_after_that_epoch(server):
    callback = CurvecastCallback(server.address, monitor="val_loss", x="epoch", target=100.0, timeout=5)
    trainer = fit(callback, lr=0.05)
    assert callback.tracker.stopped_by.action == "target_reached"
    assert callback.tracker.x == [1.0]
    assert trainer.current_epoch == 1


def test_healthy_run_trains_to_the_end(server):
    callback = CurvecastCallback(server.address, monitor="val_loss", x="epoch", timeout=5,
                                 stop_on={"stop_diverged"})
    trainer = fit(callback, lr=0.05)
    assert callback.tracker.stopped_by is None
    assert callback.tracker.last.answered
    assert trainer.current_epoch == MAX_EPOCHS
    assert callback.tracker.total_steps is None and callback._budget(trainer) == MAX_EPOCHS


def test_unreachable_service_keeps_training(caplog):
    callback = CurvecastCallback(f"127.0.0.1:{free_port()}", monitor="val_loss", cooldown_s=0)
    with caplog.at_level("WARNING", logger="curvecast_client.integrations"):
        trainer = fit(callback, lr=1.5)  # even a diverging run: no answer means no stop
    assert trainer.current_epoch == MAX_EPOCHS
    assert callback.tracker.stopped_by is None and not callback.tracker.last.answered
    assert sum("did not answer" in r.getMessage() for r in caplog.records) == 1  # logged once


def test_history_survives_a_checkpoint_round_trip(server, tmp_path):
    callback = CurvecastCallback(server.address, monitor="val_loss", timeout=5, stop_on={"stop_diverged"})
    trainer = fit(callback, lr=1.5)
    trainer.save_checkpoint(tmp_path / "run.ckpt")
    saved = torch.load(tmp_path / "run.ckpt", weights_only=False)["callbacks"][callback.state_key]
    restored = CurvecastCallback(server.address, monitor="val_loss")
    restored.load_state_dict(saved)
    assert len(restored.tracker.x) >= 5
    assert restored.tracker.x == callback.tracker.x and restored.tracker.y == callback.tracker.y


class EpochRecorder(pl.Callback):
    """Writes each rank's last epoch to a file: forked ranks cannot hand their trainer state back."""

    def __init__(self, folder) -> None:
        self.folder = folder

    def on_train_end(self, trainer, pl_module) -> None:
        (self.folder / f"rank{trainer.global_rank}").write_text(str(trainer.current_epoch))


def test_two_process_ddp_stops_every_rank_at_the_same_epoch(server, tmp_path):
    """Rank 0 asks, the broadcast reaches rank 1: both processes leave fit() after the same epoch.

    ddp_spawn, not ddp_fork: this test process already holds gRPC channels, which do not survive a fork."""
    callback = CurvecastCallback(server.address, monitor="val_loss", x="epoch", target=100.0, timeout=5)
    pl.seed_everything(0, verbose=False)
    trainer = pl.Trainer(max_epochs=MAX_EPOCHS, accelerator="cpu", devices=2, strategy="ddp_spawn", logger=False,
                         enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
                         num_sanity_val_steps=0, callbacks=[callback, EpochRecorder(tmp_path)])
    train, val = loaders()
    trainer.fit(Regressor(0.05), train, val)
    assert (tmp_path / "rank0").read_text() == "1" and (tmp_path / "rank1").read_text() == "1"
