"""The retrain job: fine-tune on accepted labels, gate, pseudo-masks, SAM2-FT, promote.

``retrain_job(payload)`` runs on the training queue (``rpsam2-worker --queues train``), in a
thread of the inline server, or from ``rpsam2-retrain``.  Steps, each logged and mirrored into the
RQ job's ``meta["progress"]``:

1. labels     accepted masks and click-only tasks of the project (``trainer.accepted_labels``);
              fewer than ``RPSAM2_RETRAIN_MIN_LABELS`` accepted masks -> "skipped".
2. split      deterministic train/validation split by task id, or by video for video frames, so
              neighbouring frames never sit on both sides (``RPSAM2_RETRAIN_VAL_FRACTION``).
3. shift      fine-tune the shift block from the live version (``train_shift_block``,
              ``RPSAM2_RETRAIN_STEPS`` steps); store it as a new (not live) version.
4. gate       live vs candidate on the validation split with the paper's protocol
              (``RPSAM2_RETRAIN_SEEDS`` prompts per object, "W. Avg." row): the candidate passes
              only if its mDSC beats the live one by more than ``RPSAM2_RETRAIN_MIN_GAIN`` and its
              std across prompts is at most the live std + ``RPSAM2_RETRAIN_STD_TOLERANCE``.
              A refusal is recorded (``CheckpointStore.refuse``) with the numbers and ends the job.
5. pseudo     with the passing block: pseudo-masks for click-only tasks, uploaded as predictions
              tagged with the model version that is about to go live (``trainer.pseudo_labels``).
6. decoder    SAM2-FT on accepted (train split) + pseudo-masks (``RPSAM2_DECODER_FT_STEPS``; 0 skips),
              gated against the current decoder the same way on plain clicks AND on clicks shifted by
              the passing block (``decoder_gate``: both must pass), stored in the "decoder" store.
7. promote    only now, after every step succeeded, the passing candidates become live (atomic
              pointer switches; the workers reload them before their next job).

A failure at any step promotes nothing: the candidates stay stored but not live, are recorded as
refused with the failure, and ``MODEL_DIR/retrain_status.json`` (shown in /health) says which
step failed and why; the exception propagates so RQ marks the job failed.  Only one retrain per
project runs at a time (a Redis lock with REDIS_URL, else an flock under MODEL_DIR); a second one
finds the lock taken and ends as "skipped".
"""

from __future__ import annotations

import contextlib
import logging
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

from rpsam2_backend.core.contracts import RetrainPayload
from rpsam2_backend.core.names import retrain_job_id, version_string
from rpsam2_backend.core.retrain_status import read_status, write_status
from rpsam2_backend.core.settings import Settings, get_settings
from rpsam2_backend.engine.build import resolve_device
from rpsam2_backend.engine.checkpoint_store import CheckpointStore
from rpsam2_backend.engine.decoder_weights import DecoderSwapper
from rpsam2_backend.engine.modeling.shift_block import ShiftBlock
from rpsam2_backend.engine.predictor import RPSAM2Predictor
from rpsam2_backend.engine.sam2_engine import SAM2Engine, shared_engine
from rpsam2_backend.labelstudio.images import ImageLoader
from rpsam2_backend.queue.retrain import enqueue_retrain, retrain_run_lock, schedule_retrain
from trainer import accepted_labels as al
from trainer.decoder_ft import DecoderFTConfig, private_engine, train_decoder
from trainer.eval.config import EvalConfig
from trainer.eval.methods import MethodSpec
from trainer.eval.protocol import WEIGHTED_AVG_ROW
from trainer.eval.results import EvaluationResult
from trainer.eval.run import evaluate
from trainer.feature_cache import FeatureCache
from trainer.pseudo_labels import generate_pseudo_labels
from trainer.shift.config import TrainConfig
from trainer.shift.loop import train_shift_block

log = logging.getLogger("trainer.retrain")

WORK_DIR = ".retrain-work"


class RetrainStepError(RuntimeError):
    def __init__(self, step: str, cause: BaseException) -> None:
        super().__init__(f"step '{step}' failed: {type(cause).__name__}: {cause}")
        self.step = step


# ------------------------------------------------------------------------------------ progress


class Progress:
    """Logs each step and mirrors it into the running RQ job's meta (when there is one)."""

    def __init__(self, project: str) -> None:
        from rq import get_current_job

        self.project = project
        self.job = get_current_job()
        self.step = "start"
        self.started = time.time()

    def __call__(self, step: str, message: str = "", **info: Any) -> None:
        self.step = step
        log.info("retrain project %s [%s] %s", self.project, step, message)
        if self.job is not None:
            self.job.meta["progress"] = {
                "step": step, "message": message, "elapsed_s": round(time.time() - self.started, 1), **info
            }
            with contextlib.suppress(Exception):  # progress must never break the job
                self.job.save_meta()


# ------------------------------------------------------------------------------------ the gate


def metric_cell(result: EvaluationResult, method: str) -> dict:
    """The gate's numbers: the "W. Avg." Dice cell -- ``std`` is the paper's ± (count-weighted mean of the
    class stds across prompts), ``std_of_mean`` the std across prompts of the per-prompt W. Avg."""
    table = result.tables["table1"]
    cell = table.cell(method, WEIGHTED_AVG_ROW, "dice")
    return {"mdsc": cell.mean, "std": cell.std, "std_of_mean": cell.std_of_mean,
            "per_seed": {str(k): v for k, v in cell.per_seed.items()}}


def gate(live: dict, candidate: dict, min_gain: float, std_tolerance: float) -> tuple[bool, str]:
    """Promote only when mDSC improves by more than ``min_gain`` and std grows at most ``std_tolerance``."""
    gain = candidate["mdsc"] - live["mdsc"]
    std_growth = candidate["std"] - live["std"]
    numbers = (f"mDSC {candidate['mdsc']:.4f} vs live {live['mdsc']:.4f} (gain {gain:+.4f}), "
               f"std {candidate['std']:.4f} vs {live['std']:.4f}")
    if not gain > min_gain:
        return False, f"mDSC did not improve by more than {min_gain:g}: {numbers}"
    if std_growth > std_tolerance:
        return False, f"std across prompts grew by {std_growth:.4f} > tolerance {std_tolerance:g}: {numbers}"
    return True, f"improved: {numbers}"


def decoder_gate(
    val_ds: Any, engine: SAM2Engine, block: ShiftBlock, decoder_dir: Path, config: EvalConfig, out_dir: Path,
    features: FeatureCache, min_gain: float, std_tolerance: float,
) -> tuple[dict, bool, str]:
    """Gate a SAM2-FT decoder on plain clicks AND on clicks shifted by ``block``, in one evaluation pass.

    The decoder serves both: the shifted first click of RP-SAM2 and every click SAM2 decodes as given
    (later clicks, negative clicks, a backend without a live shift block).  It is promoted only when
    ``gate`` passes for both; the metrics of both are recorded."""
    methods = {
        "plain_current": MethodSpec("plain, current decoder"),
        "plain_candidate": MethodSpec("plain, candidate decoder", decoder_dir=decoder_dir),
        "shifted_current": MethodSpec("shifted, current decoder", shift_block=block),
        "shifted_candidate": MethodSpec("shifted, candidate decoder", shift_block=block, decoder_dir=decoder_dir),
    }
    evaluation = evaluate(val_ds, engine, methods, config, out_dir, feature_cache=features)
    metrics: dict[str, Any] = {}
    verdicts = []
    for clicks in ("plain", "shifted"):
        live, candidate = metric_cell(evaluation, f"{clicks}_current"), metric_cell(evaluation, f"{clicks}_candidate")
        ok, reason = gate(live, candidate, min_gain, std_tolerance)
        metrics[clicks] = {"live": live, "candidate": candidate, "passed": ok, "reason": reason}
        verdicts.append((clicks, ok, reason))
    passed = all(ok for _, ok, _ in verdicts)
    reason = "; ".join(f"{clicks} clicks: {reason}" for clicks, _, reason in verdicts)
    return metrics, passed, reason


# ------------------------------------------------------------------------------------ the job


def _engine(settings: Settings, engine: SAM2Engine | None) -> SAM2Engine:
    """A private copy of this process's SAM2 (shared with the click runtime of a worker that serves
    both queues) with the live SAM2-FT decoder loaded, so evaluation can swap decoders safely."""
    if engine is None:
        model = settings.model
        engine = shared_engine(model.sam2_config, settings.resolved_checkpoint(), resolve_device(model.device))
    engine = private_engine(engine)
    pinned = settings.model.decoder_checkpoint
    live = Path(pinned) if pinned else CheckpointStore(settings.model.model_dir, "decoder").live_path()
    if live is not None:
        DecoderSwapper(engine).load(live)
        engine = private_engine(engine)  # "no decoder swapped in" now means the live decoder
    return engine


def _client_and_loader(settings: Settings, payload: RetrainPayload) -> tuple[al.LabelStudioClient, ImageLoader]:
    ls = payload.get("label_studio")
    if not settings.label_studio.url and ls and ls.get("url"):
        settings = settings.with_("label_studio", url=ls["url"], api_key=ls.get("token", ""))
    return al.LabelStudioClient.from_settings(settings), ImageLoader(settings)


def retrain_job(
    payload: RetrainPayload, settings: Settings | None = None, engine: SAM2Engine | None = None
) -> dict[str, Any]:
    """{"project": id, "reason": str, ["label_studio": {url, token}]} -> the retrain's status dict."""
    settings = settings or get_settings()
    if not isinstance(payload, dict) or payload.get("project") in (None, ""):
        raise ValueError("retrain payload needs a 'project'")
    project = str(payload["project"])
    progress = Progress(project)
    base = {"project": project, "job_id": progress.job.id if progress.job else retrain_job_id(project),
            "trigger": payload.get("reason", "")}
    try:
        with retrain_run_lock(settings, project) as got:
            if not got:
                status = {**base, "status": "skipped", "reason": "another retrain of this project is running"}
                log.info("retrain project %s skipped: %s", project, status["reason"])
                return status  # the running one owns retrain_status.json
            running = {**base, "status": "running", "reason": "", "previous": _last(settings)}
            write_status(settings.model.model_dir, running)
            return _run(settings, payload, project, progress, base, engine)
    finally:
        with contextlib.suppress(Exception):
            schedule_retrain(settings, payload)


def _last(settings: Settings) -> dict | None:
    last = read_status(settings.model.model_dir)
    return {k: last.get(k) for k in ("status", "time", "reason")} if last else None


def _run(settings: Settings, payload: RetrainPayload, project: str, progress: Progress, base: dict,
         engine: SAM2Engine | None) -> dict:
    learning, model_dir = settings.learning, settings.model.model_dir
    shift_store = CheckpointStore(model_dir, "shift")
    decoder_store = CheckpointStore(model_dir, "decoder")
    pending: list[tuple[CheckpointStore, str, str]] = []  # (store, version, reason) to promote at the end
    report: dict[str, Any] = {}
    work_root = Path(model_dir) / WORK_DIR
    work_root.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=f"{project}-", dir=work_root))
    try:
        progress("labels", "reading accepted labels from Label Studio")
        client, loader = _client_and_loader(settings, payload)
        labels = al.fetch_project_labels(client, project, (learning.video_key, learning.frame_key))
        report["labels"] = {"accepted": len(labels.accepted), "click_only": len(labels.click_only),
                            "reviewed": labels.reviewed}
        if len(labels.accepted) < max(2, learning.retrain_min_labels):
            reason = (f"only {len(labels.accepted)} accepted masks; RPSAM2_RETRAIN_MIN_LABELS="
                      f"{learning.retrain_min_labels} (and at least 2) are needed")
            return write_status(model_dir, {**base, "status": "skipped", "reason": reason, **report})

        progress("split")
        train_items, val_items = al.split_train_val(labels.accepted, learning.retrain_val_fraction)
        train_ds = al.to_dataset(train_items, loader, f"project-{project}-train")
        val_ds = al.to_dataset(val_items, loader, f"project-{project}-val")
        report["split"] = {"train_tasks": [t.task_id for t in train_items], "val_tasks": [t.task_id for t in val_items]}

        engine = _engine(settings, engine)
        cache_dir = work / "cache"
        features = FeatureCache(engine, cache_dir)
        live_name = shift_store.live()
        live_block = ShiftBlock.load(shift_store.path(live_name), engine.device) if live_name else None

        progress("shift", f"fine-tuning the shift block from {live_name or 'scratch'}",
                 train=len(train_items), val=len(val_items))
        config = TrainConfig(steps=max(1, learning.retrain_steps), val_seeds=min(learning.retrain_seeds, 3),
                             cache_dir=str(cache_dir), progress=False, keep_resume_state=False)
        result = train_shift_block(train_ds, val_ds, engine, config, work / "shift",
                                   init_from=shift_store.path(live_name) if live_name else None)
        candidate_block = ShiftBlock.load(work / "shift", engine.device)

        progress("gate", "evaluating live vs candidate shift block on the validation split")
        methods = {"live": MethodSpec("live", shift_block=live_block),
                   "candidate": MethodSpec("candidate", shift_block=candidate_block)}
        gate_config = EvalConfig(seeds=learning.retrain_seeds, progress=False)
        evaluation = evaluate(val_ds, engine, methods, gate_config, work / "eval-shift", feature_cache=features)
        metrics = {"live": metric_cell(evaluation, "live"), "candidate": metric_cell(evaluation, "candidate")}
        ok, reason = gate(metrics["live"], metrics["candidate"], learning.retrain_min_gain,
                          learning.retrain_std_tolerance)
        meta = {
            "kind": "shift", "project": project, "base": live_name, "job_id": base["job_id"],
            "hyper_params": config.to_dict(), "metrics": metrics, "gate": {"passed": ok, "reason": reason},
            "train_result": {"best_val_mdsc": result.best_val_mdsc, "steps": result.steps},
            "annotation_ids": labels.annotation_ids,
            "train_annotations": [t.annotation_id for t in train_items],
            "val_annotations": [t.annotation_id for t in val_items], **report["split"],
        }
        shift_name = shift_store.add(work / "shift", meta)
        report["shift"] = {"version": shift_name, "passed": ok, "reason": reason, "metrics": metrics}
        if not ok:
            shift_store.refuse(shift_name, reason)
            progress("done", f"shift {shift_name} refused: {reason}")
            return write_status(model_dir, {**base, "status": "refused", "reason": reason, **report})
        pending.append((shift_store, shift_name, reason))

        decoder_live = decoder_store.live() or ""
        model_version = version_string(engine.config, shift_name, decoder_live, engine.random_weights)
        progress("pseudo", f"pseudo-masks for {len(labels.click_only)} click-only tasks as {model_version}")
        predictor = RPSAM2Predictor(engine, candidate_block, shift_version=shift_name, decoder_version=decoder_live)
        pseudo = generate_pseudo_labels(
            labels, predictor, features, loader, client, model_version, batch=max(1, learning.pseudo_batch),
            progress=lambda done, total: progress("pseudo", f"{done}/{total} tasks"),
        )
        report["pseudo"] = {"model_version": model_version, **pseudo.to_dict()}

        if learning.decoder_ft_steps > 0:
            progress("decoder", f"SAM2-FT on {len(train_ds)} accepted + {len(pseudo.samples)} pseudo-labelled images")
            ft_config = DecoderFTConfig(steps=learning.decoder_ft_steps)
            summary = train_decoder([*train_ds, *pseudo.samples], engine, features, ft_config, work / "decoder")
            dmetrics, dok, dreason = decoder_gate(val_ds, engine, candidate_block, work / "decoder", gate_config,
                                                  work / "eval-decoder", features, learning.retrain_min_gain,
                                                  learning.retrain_std_tolerance)
            dmeta = {
                "kind": "decoder", "project": project, "base": decoder_live or None, "shift": shift_name,
                "job_id": base["job_id"], "hyper_params": ft_config.to_dict(), "metrics": dmetrics,
                "gate": {"passed": dok, "reason": dreason}, "train_summary": summary,
                "annotation_ids": [t.annotation_id for t in train_items],
                "pseudo_tasks": [s.meta["task_id"] for s in pseudo.samples], "pseudo_model_version": model_version,
            }
            decoder_name = decoder_store.add(work / "decoder", dmeta)
            report["decoder"] = {"version": decoder_name, "passed": dok, "reason": dreason, "metrics": dmetrics}
            if dok:
                pending.append((decoder_store, decoder_name, dreason))
            else:
                decoder_store.refuse(decoder_name, dreason)

        progress("promote", ", ".join(f"{s.kind} {n}" for s, n, _ in pending))
        for store, name, why in pending:
            store.promote(name, f"retrain {base['job_id']}: {why}")
        pending.clear()
        promoted = [report["shift"]["version"]] + (
            [report["decoder"]["version"]] if report.get("decoder", {}).get("passed") else [])
        final_version = version_string(engine.config, shift_store.live() or "", decoder_store.live() or "",
                                       engine.random_weights)
        reason = "promoted " + ", ".join(promoted) + (
            f"; decoder refused: {report['decoder']['reason']}" if report.get("decoder") and
            not report["decoder"]["passed"] else "")
        progress("done", reason)
        return write_status(model_dir, {**base, "status": "promoted", "reason": reason,
                                                 "model_version": final_version, **report})
    except Exception as exc:
        error = RetrainStepError(progress.step, exc)
        for store, name, _ in pending:
            with contextlib.suppress(Exception):
                store.refuse(name, f"retrain failed before promotion: {error}")
        write_status(model_dir, {**base, "status": "failed", "step": progress.step, "reason": str(error),
                                          **report})
        log.exception("retrain of project %s failed at step %s", project, progress.step)
        raise error from exc
    finally:
        shutil.rmtree(work, ignore_errors=True)


def enqueue(settings: Settings, project: str, reason: str = "manual") -> dict:
    """Put a retrain on the training queue (the CLI's ``--enqueue``)."""
    return enqueue_retrain(settings, {"project": str(project), "reason": reason})
