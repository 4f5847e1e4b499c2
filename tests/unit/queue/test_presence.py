"""Rendezvous hashing moves only the images of a worker that left."""

from __future__ import annotations

from rpsam2_backend.queue.presence import pick_worker


def test_rendezvous_moves_only_the_images_of_a_worker_that_left():
    keys = [f"/data/upload/1/{i}.png" for i in range(400)]
    before = {k: pick_worker(k, ["a", "b", "c"]) for k in keys}
    after = {k: pick_worker(k, ["a", "c"]) for k in keys}
    moved = [k for k in keys if before[k] != after[k]]
    assert moved and all(before[k] == "b" for k in moved)
    assert {before[k] for k in keys} == {"a", "b", "c"}
    assert all(pick_worker(k, ["c", "b", "a"]) == before[k] for k in keys)  # order of names is irrelevant
