"""HF CurvecastCallback in a real Trainer run (tiny GPT-2 built from a config, CPU, no downloads)."""

from __future__ import annotations

import pytest
from conftest import free_port

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")
pytest.importorskip("accelerate")  # Trainer needs it with torch

from transformers import (  # noqa: E402
    GPT2Config,
    GPT2LMHeadModel,
    Trainer,
    TrainerControl,
    TrainerState,
    TrainingArguments,
)

from curvecast_client.integrations.transformers import CurvecastCallback  # noqa: E402

MAX_STEPS = 16
EVAL_EVERY = 2


@pytest.fixture(autouse=True, scope="module")
def one_torch_thread():
    """Tiny models on a shared 2-core box: extra intra-op threads only spin and fight (10x slower)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def dataset(n: int = 32, length: int = 8, vocab: int = 16) -> list[dict]:
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(0, vocab, (n, length), generator=g)
    return [{"input_ids": row, "labels": row} for row in ids]


def train(callback: CurvecastCallback, tmp_path, lr: float = 1e-3) -> Trainer:
    torch.manual_seed(0)
    model = GPT2LMHeadModel(GPT2Config(vocab_size=16, n_positions=8, n_embd=8, n_layer=1, n_head=1))
    args = TrainingArguments(output_dir=str(tmp_path), max_steps=MAX_STEPS, eval_strategy="steps",
                             eval_steps=EVAL_EVERY, per_device_train_batch_size=8, per_device_eval_batch_size=32,
                             learning_rate=lr, save_strategy="no", report_to=[], use_cpu=True, disable_tqdm=True,
                             logging_strategy="no", seed=0, dataloader_num_workers=0)
    data = dataset()
    trainer = Trainer(model=model, args=args, train_dataset=data, eval_dataset=data, callbacks=[callback])
    trainer.train()
    return trainer


def test_target_reached_stops_at_the_first_evaluation(server, tmp_path):
    callback = CurvecastCallback(server.address, target=100.0, timeout=5)  # eval_loss starts near ln(16)
    trainer = train(callback, tmp_path)
    assert callback.tracker.stopped_by.action == "target_reached"
    assert trainer.state.global_step == EVAL_EVERY
    assert callback.tracker.metric == "eval_loss" and callback.tracker.goal == "minimize"


def test_run_that_cannot_beat_the_incumbent_stops_early(server, tmp_path):
    callback = CurvecastCallback(server.address, incumbent=0.01, timeout=5)
    trainer = train(callback, tmp_path, lr=1e-4)  # barely moves from ~2.8: hopeless against 0.01
    assert callback.tracker.stopped_by.action == "stop_unpromising"
    assert trainer.state.global_step < MAX_STEPS
    assert callback.tracker.x == [float(EVAL_EVERY * (i + 1)) for i in range(len(callback.tracker.x))]
    assert callback.tracker.total_steps is None  # budget came from state.max_steps


def test_unreachable_service_keeps_training(tmp_path):
    callback = CurvecastCallback(f"127.0.0.1:{free_port()}", target=100.0, cooldown_s=0)
    trainer = train(callback, tmp_path)
    assert trainer.state.global_step == MAX_STEPS
    assert not callback.tracker.last.answered and callback.tracker.stopped_by is None


def test_resumed_run_sends_earlier_evaluations_and_only_rank_zero_asks(server, tmp_path):
    args = TrainingArguments(output_dir=str(tmp_path), report_to=[], use_cpu=True, metric_for_best_model="accuracy",
                             greater_is_better=True)
    state = TrainerState(global_step=30, max_steps=100)
    state.log_history = [{"eval_accuracy": v, "step": s} for s, v in ((10, 0.5), (20, 0.3))]
    callback = CurvecastCallback(server.address, timeout=5)

    other_rank = TrainerState(global_step=30, max_steps=100, is_world_process_zero=False)
    control = TrainerControl()
    callback.on_evaluate(args, other_rank, control, metrics={"eval_accuracy": 0.1})
    assert callback.tracker is None and not control.should_training_stop  # not rank zero: never asks

    callback.on_evaluate(args, state, control, metrics={"eval_accuracy": 0.1})
    assert callback.tracker.goal == "maximize"
    assert callback.tracker.x == [10.0, 20.0, 30.0] and callback.tracker.y == [0.5, 0.3, 0.1]
    assert callback.tracker.last.answered
    assert control.should_training_stop == callback.tracker.last.stop


def _evaluate_on_rank(rank: int, port: int, address: str, args: TrainingArguments, out) -> None:
    import torch.distributed as dist

    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=2)
    try:
        state = TrainerState(global_step=EVAL_EVERY, max_steps=MAX_STEPS, is_world_process_zero=rank == 0)
        control = TrainerControl()
        callback = CurvecastCallback(address, target=100.0, timeout=5)
        callback.on_evaluate(args, state, control, metrics={"eval_loss": 3.0})
        (out / f"rank{rank}").write_text(f"{control.should_training_stop} {callback.tracker is not None}")
    finally:
        dist.destroy_process_group()


def test_rank_zero_decision_is_broadcast_under_torch_distributed(server, tmp_path):
    import multiprocessing

    args = TrainingArguments(output_dir=str(tmp_path), report_to=[], use_cpu=True)
    port = free_port()
    # spawn, not fork: this process already holds gRPC channels from other tests, and gRPC does not
    # survive a fork (children can hang inside the inherited channel state)
    ctx = multiprocessing.get_context("spawn")
    # rank 1 points at a closed port: if it asked, it would fail open and keep training
    procs = [ctx.Process(target=_evaluate_on_rank, args=(rank, port, address, args, tmp_path))
             for rank, address in ((0, server.address), (1, f"127.0.0.1:{free_port()}"))]
    for p in procs:
        p.start()
    for p in procs:
        p.join(180)
    for p in procs:
        if p.is_alive():
            p.kill()
    assert [p.exitcode for p in procs] == [0, 0]
    assert (tmp_path / "rank0").read_text() == "True True"  # asked and stopped
    assert (tmp_path / "rank1").read_text() == "True False"  # never asked, stopped by the broadcast
