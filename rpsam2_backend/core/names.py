"""Names every layer agrees on: job dotted paths, Redis keys, fixed TTLs and timeouts, versions.

Jobs are named, never imported, by the side that enqueues them: RQ (or the inline dispatcher)
resolves the dotted path where the job runs, so the web process never imports torch and nothing
in ``rpsam2_backend`` imports ``trainer``.  Like rq's ``defaults.py``, the fixed numbers live here
so that a reader finds every TTL in one place; the tunable ones are settings.
"""

from __future__ import annotations

from pathlib import Path

# --- jobs (resolved by dotted path where they run) -------------------------------------------
SEGMENT_JOB = "rpsam2_backend.jobs.click.segment_job"
PREENCODE_JOB = "rpsam2_backend.jobs.click.preencode_job"
# Kept at this path although the trainer was reorganised: scheduled retrains sit in Redis for
# RPSAM2_RETRAIN_INTERVAL seconds and must still resolve after an upgrade.
RETRAIN_JOB = "trainer.retrain.retrain_job"
# The inline dispatcher reaches the process runtime through these (web never imports jobs/).
WARM_RUNTIME = "rpsam2_backend.jobs.runtime.warm_runtime"
INLINE_HEALTH = "rpsam2_backend.jobs.runtime.inline_health"
LOAD_WORKER_RUNTIME = "rpsam2_backend.jobs.runtime.load_worker_runtime"
WORKER_RUNTIME_STATS = "rpsam2_backend.jobs.runtime.runtime_stats"
# Video propagation of a submitted frame's masks (trainer/video/job.py).
PROPAGATE_JOB = "trainer.video.job.propagate_job"

# --- Redis keys ----------------------------------------------------------------------------------
PRESENCE_PREFIX = "rpsam2:worker:"
PRESENCE_INDEX = "rpsam2:workers"  # names that published; readers prune the dead ones
RETRAIN_COUNT_KEY = "rpsam2:retrain:count:{project}"
RETRAIN_ENQUEUE_LOCK_KEY = "rpsam2:retrain:enqueue:{project}"
RETRAIN_RUN_LOCK_KEY = "rpsam2:retrain:running:{project}"
RETRAIN_SCHEDULE_PREFIX = "rpsam2-retrain-{project}-at-"
PROPAGATE_ENQUEUE_LOCK_KEY = "rpsam2:propagate:enqueue:{project}:{task}"
PROPAGATE_VIDEO_LOCK_KEY = "rpsam2:propagate:video:{project}:{video}"


def retrain_job_id(project: int | str) -> str:
    """The fixed RQ job id of a project's triggered retrain (rq's ``unique=True`` refuses a second)."""
    return f"rpsam2-retrain-{project}"


def propagate_job_ids(project: int | str, task: int | str) -> tuple[str, str]:
    """The two fixed RQ job ids of a task's propagation: one may run while the other waits for it,
    so a submission made during a run is propagated after it (never beside it, never lost)."""
    base = f"rpsam2-propagate-{project}-{task}"
    return base, f"{base}-next"


# --- fixed TTLs and timeouts (seconds) -----------------------------------------------------------
PRESENCE_TTL_BEATS = 5  # a worker is dead after missing this many heartbeats
RQ_WORKER_TTL = 60  # rq's own registration; liveness for routing comes from presence keys
CLICK_POLL_S = 0.5  # how often a waiting click checks that its worker is still alive
ROUTING_CACHE_S = 1.0  # how long the web process reuses its list of live click workers
PREENCODE_TTL_S = 60  # a pre-encode nobody ran within a minute is stale: the annotator moved on
CLICK_QUEUE_GRACE_S = 5  # a click job outlives the web's wait by this much, then leaves the queue
RETRAIN_ENQUEUE_LOCK_S = 30  # held only around "clear a finished job, enqueue a new one"
RETRAIN_ENQUEUE_WAIT_S = 10
RETRAIN_RUN_LOCK_GRACE_S = 60  # the run lock outlives RPSAM2_RETRAIN_TIMEOUT by this much
PROPAGATE_VIDEO_LOCK_GRACE_S = 60  # the video lock outlives RPSAM2_PROPAGATE_TIMEOUT by this much
URL_KEY_MEMORY = 10_000  # task URLs whose image key a runtime remembers (skips re-downloads)
DECODED_MASK_MEMORY = 32  # masks a runtime keeps for replaying click contexts (2 MB each at 1920x1080)

# --- files under MODEL_DIR --------------------------------------------------------------------------
LIVE_FILE = "LIVE"  # MODEL_DIR/<kind>/LIVE holds the live version's name
RETRAIN_STATUS_FILE = "retrain_status.json"
RETRAIN_COUNTS_FILE = "retrain_counts.json"
PROPAGATION_STATUS_FILE = "propagation_status.json"

# --- SAM2 checkpoints ------------------------------------------------------------------------------
# Meta's released file name for each packaged sam2.1 config (what `make checkpoints` fetches).
CHECKPOINT_FOR_CONFIG = {
    "sam2.1_hiera_t": "sam2.1_hiera_tiny.pt",
    "sam2.1_hiera_s": "sam2.1_hiera_small.pt",
    "sam2.1_hiera_b+": "sam2.1_hiera_base_plus.pt",
    "sam2.1_hiera_l": "sam2.1_hiera_large.pt",
}


def config_stem(sam2_config: str) -> str:
    """'configs/sam2.1/sam2.1_hiera_l.yaml' -> 'sam2.1_hiera_l'."""
    return Path(sam2_config).name.removesuffix(".yaml")


def version_string(sam2_config: str, shift_version: str, decoder_version: str, random_weights: bool) -> str:
    """What Label Studio shows as model_version: method, SAM2 size, shift and decoder versions.

    e.g. ``rpsam2/sam2.1_hiera_l/shift-v0003/decoder-v0001``; plain SAM2 says ``sam2/...``.
    """
    parts = ["rpsam2" if shift_version else "sam2", config_stem(sam2_config)]
    if shift_version:
        parts.append(f"shift-{shift_version}")
    if decoder_version:
        parts.append(f"decoder-{decoder_version}")
    if random_weights:
        parts.append("RANDOM-WEIGHTS")
    return "/".join(parts)


def live_version(model_dir: str | Path, kind: str) -> str | None:
    """The live version's name of a checkpoint kind ("shift" or "decoder"), or None.

    The web process reads it without the engine's CheckpointStore (which owns writing it)."""
    try:
        name = (Path(model_dir) / kind / LIVE_FILE).read_text().strip()
    except FileNotFoundError:
        return None
    return name or None


# --- video propagation ------------------------------------------------------------------------------
PROPAGATED_PREFIX = "propagated from task"  # model_version of every propagated prediction starts so


def propagation_version(task: int | str, annotation: int | str, sam2_config: str, random_weights: bool) -> str:
    """The model_version of predictions propagated from a task's annotation, e.g.
    ``propagated from task 12 (annotation 34) by sam2.1_hiera_l``: Label Studio's Data Manager
    shows where a suggestion came from, and a newer submission finds the ones it supersedes."""
    version = f"{PROPAGATED_PREFIX} {task} (annotation {annotation}) by {config_stem(sam2_config)}"
    return version + (" RANDOM-WEIGHTS" if random_weights else "")


def propagated_from(model_version: str | None) -> str | None:
    """The source task id of a propagated prediction's model_version, None for any other prediction."""
    text = str(model_version or "")
    if not text.startswith(PROPAGATED_PREFIX + " "):
        return None
    return text[len(PROPAGATED_PREFIX) + 1 :].split(" ", 1)[0] or None
