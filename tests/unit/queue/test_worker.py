"""The worker serves its sticky queue first and the training queue last."""

from __future__ import annotations

from rpsam2_backend.core.settings import Settings
from rpsam2_backend.queue.worker import queue_names


def test_worker_queue_order_puts_sticky_first_and_training_last():
    s = Settings()
    assert queue_names("train,click", s, "w1") == ["rpsam2-click@w1", "rpsam2-click", "rpsam2-train"]
    assert queue_names("train", s, "w1") == ["rpsam2-train"]
    assert queue_names("click,extra", s, "w1") == ["rpsam2-click@w1", "rpsam2-click", "extra"]
