"""SAM2's video predictor (sam2 1.1.0) with what tracking needs and upstream does not expose.

- ``ScoredVideoPredictor`` keeps the mask decoder's predicted IoU of the chosen mask
  (``best_iou``) in every stored frame output (upstream drops it in ``track_step``).  hydra builds
  it in place of ``SAM2VideoPredictor`` through a ``_target_`` override: no monkey-patching.
- ``track_frame`` is one step of upstream's ``propagate_in_video`` loop for a chosen subset of
  objects, so an object that drifted stops costing memory attention while the others go on; with
  every object it computes exactly what ``propagate_in_video`` yields (a test compares them).
- ``new_state`` is ``init_state`` without its file loading: frames come from ``LazyFrames``.
- ``prune_behind`` drops outputs the memory bank can no longer reach, so a long video's state
  stays bounded: the tracker reads the conditioning frames, the last ``num_maskmem - 1`` frames'
  memories and the last ``max_obj_ptrs_in_encoder - 1`` frames' object pointers (stride 1), so
  keeping ``max(num_maskmem, max_obj_ptrs_in_encoder)`` (16) frames changes no output bit
  (checked over 28 frames; 6 does change them).

All of it reads and writes ``inference_state`` keys of sam2 1.1.0 (pinned in requirements.txt).
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Iterable
from typing import Any

import torch
from sam2.sam2_video_predictor import SAM2VideoPredictor

from rpsam2_backend.engine.video.frames import LazyFrames

TARGET = "rpsam2_backend.engine.video.predictor.ScoredVideoPredictor"


class ScoredVideoPredictor(SAM2VideoPredictor):
    """``SAM2VideoPredictor`` whose stored frame outputs also hold ``best_iou`` ([1, 1])."""

    def _track_step(self, *args: Any, **kwargs: Any):
        current_out, sam_outputs, high_res_features, pix_feat = super()._track_step(*args, **kwargs)
        ious = sam_outputs[2]  # [B, 3] with multimask tracking (the argmax is kept), else [B, 1]
        current_out["best_iou"] = ious.max(dim=-1, keepdim=True).values.float()
        return current_out, sam_outputs, high_res_features, pix_feat

    def track_step(self, *args: Any, **kwargs: Any):
        out = super().track_step(*args, **kwargs)
        self._last_best_iou = out.get("best_iou")
        return out

    def _run_single_frame_inference(self, *args: Any, **kwargs: Any):
        self._last_best_iou = None
        compact, pred_masks = super()._run_single_frame_inference(*args, **kwargs)
        compact["best_iou"] = self._last_best_iou
        return compact, pred_masks


def new_state(predictor: SAM2VideoPredictor, images: LazyFrames, offload_state: bool = False) -> dict[str, Any]:
    """The dict ``SAM2VideoPredictor.init_state`` builds (every key sam2 1.1.0 reads), over ``images``.

    ``offload_state`` keeps the per-frame memories and masks on the CPU (sam2's
    ``offload_state_to_cpu``; object pointers stay on the device)."""
    device = predictor.device
    height, width = images.video_hw
    return {
        "images": images, "num_frames": len(images),
        "offload_video_to_cpu": images.device.type == "cpu", "offload_state_to_cpu": offload_state,
        "video_height": height, "video_width": width, "device": device,
        "storage_device": torch.device("cpu") if offload_state else device,
        "point_inputs_per_obj": {}, "mask_inputs_per_obj": {}, "cached_features": {}, "constants": {},
        "obj_id_to_idx": OrderedDict(), "obj_idx_to_id": OrderedDict(), "obj_ids": [],
        "output_dict_per_obj": {}, "temp_output_dict_per_obj": {}, "frames_tracked_per_obj": {},
    }


def memory_reach(predictor: SAM2VideoPredictor) -> int:
    """How many frames back the tracker reads non-conditioning outputs (see the module docstring)."""
    stride = max(1, int(predictor.memory_temporal_stride_for_eval))
    return max(int(predictor.num_maskmem) * stride, int(predictor.max_obj_ptrs_in_encoder))


@torch.inference_mode()
def track_frame(
    predictor: SAM2VideoPredictor, state: dict[str, Any], frame_idx: int, obj_idxs: Iterable[int], reverse: bool
) -> dict[int, tuple[torch.Tensor, float, float]]:
    """Track the objects ``obj_idxs`` into ``frame_idx``: obj_idx -> (logits at video size [H, W],
    object score logit, predicted IoU).  Upstream's ``propagate_in_video`` body for one frame."""
    tracked: list[tuple[int, torch.Tensor, float, float]] = []
    for obj_idx in obj_idxs:
        outputs = state["output_dict_per_obj"][obj_idx]
        if frame_idx in outputs["cond_frame_outputs"]:  # a prompted frame: its stored output
            current = outputs["cond_frame_outputs"][frame_idx]
            pred_masks = current["pred_masks"].to(state["device"], non_blocking=True)
        else:
            current, pred_masks = predictor._run_single_frame_inference(
                inference_state=state, output_dict=outputs, frame_idx=frame_idx, batch_size=1,
                is_init_cond_frame=False, point_inputs=None, mask_inputs=None, reverse=reverse,
                run_mem_encoder=True,
            )
            outputs["non_cond_frame_outputs"][frame_idx] = current
        state["frames_tracked_per_obj"][obj_idx][frame_idx] = {"reverse": reverse}
        iou = current.get("best_iou")
        tracked.append((obj_idx, pred_masks, float(current["object_score_logits"].reshape(-1)[0]),
                        1.0 if iou is None else float(iou.reshape(-1)[0])))
    if not tracked:
        return {}
    _, video_res = predictor._get_orig_video_res_output(state, torch.cat([t[1] for t in tracked], dim=0))
    return {obj_idx: (video_res[row, 0].float(), score, iou)
            for row, (obj_idx, _, score, iou) in enumerate(tracked)}


def prune_behind(state: dict[str, Any], current_idx: int, keep: int, reverse: bool = False) -> int:
    """Drop non-conditioning outputs more than ``keep`` frames behind ``current_idx`` (in the
    direction of travel); returns how many were dropped."""
    dropped = 0
    for outputs in state["output_dict_per_obj"].values():
        stored = outputs["non_cond_frame_outputs"]
        far = [t for t in stored if (t > current_idx + keep if reverse else t < current_idx - keep)]
        for t in far:
            del stored[t]
        dropped += len(far)
    return dropped


def forget_tracking(state: dict[str, Any]) -> None:
    """Forget every tracked (non-conditioning) output, keeping the prompts: the backward pass then
    starts from the seed alone, as if the forward pass had never run (sam2's reverse memory would
    otherwise read the forward pass's frames on the other side of the seed)."""
    for obj_idx, outputs in state["output_dict_per_obj"].items():
        outputs["non_cond_frame_outputs"].clear()
        tracked = state["frames_tracked_per_obj"][obj_idx]
        for t in [t for t in tracked if t not in outputs["cond_frame_outputs"]]:
            del tracked[t]
