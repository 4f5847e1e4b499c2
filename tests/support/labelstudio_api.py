"""Thin helpers over Label Studio 1.23's REST API (plain requests, each checked against a live server).

Every helper raises LabelStudioAPIError with the response body and the server's log tail, so a
failing end-to-end test says why without digging.
"""

from __future__ import annotations

import mimetypes
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

import requests

DEFAULT_TIMEOUT_S = 120.0


class LabelStudioAPIError(AssertionError):
    pass


class LabelStudioAPI:
    def __init__(
        self, url: str, session: requests.Session, diagnostics: Callable[[], str] | None = None
    ) -> None:
        self.url = url.rstrip("/")
        self.session = session
        self._diagnostics = diagnostics or (lambda: "")

    # -- transport -----------------------------------------------------------------------------

    def request(self, method: str, path: str, expect: Iterable[int] = (200, 201), **kwargs: Any) -> Any:
        kwargs.setdefault("timeout", DEFAULT_TIMEOUT_S)
        response = self.session.request(method, f"{self.url}{path}", **kwargs)
        if response.status_code not in tuple(expect):
            raise LabelStudioAPIError(
                f"{method} {path} -> {response.status_code}: {response.text[:2000]}\n"
                f"--- Label Studio log tail ---\n{self._diagnostics()}"
            )
        if not response.content:
            return None
        return response.json()

    # -- projects and tasks ----------------------------------------------------------------------

    def create_project(self, title: str, label_config: str, **fields: Any) -> int:
        body = {"title": title, "label_config": label_config, **fields}
        return self.request("POST", "/api/projects", json=body)["id"]

    def get_project(self, project_id: int) -> dict:
        return self.request("GET", f"/api/projects/{project_id}")

    def upload_image(self, project_id: int, path: str | Path) -> tuple[int, str]:
        """Multipart upload of one image file -> (task id, image URL as stored in task.data).

        Label Studio stores it as MEDIA/upload/<project>/<8 hex>-<name> and the task's data is
        {"<the config's value key, e.g. image>": "/data/upload/<project>/<8 hex>-<name>"}.
        """
        path = Path(path)
        content_type = mimetypes.guess_type(path.name)[0] or "application/octet-stream"
        with path.open("rb") as handle:
            body = self.request(
                "POST", f"/api/projects/{project_id}/import", params={"return_task_ids": "true"},
                files={path.name: (path.name, handle, content_type)},
            )
        (task_id,) = body["task_ids"]
        data = self.get_task(task_id)["data"]
        (url,) = [value for value in data.values() if isinstance(value, str) and "/data/upload/" in value]
        return task_id, url

    def import_tasks(self, project_id: int, tasks: list[Mapping[str, Any]]) -> list[int]:
        """JSON import; each item is {"data": {...}} and may carry "annotations"/"predictions"."""
        body = self.request(
            "POST", f"/api/projects/{project_id}/import", params={"return_task_ids": "true"}, json=list(tasks)
        )
        return body["task_ids"]

    def get_task(self, task_id: int) -> dict:
        return self.request("GET", f"/api/tasks/{task_id}")

    def list_tasks(self, project_id: int) -> list[dict]:
        body = self.request("GET", "/api/tasks", params={"project": project_id, "page_size": 1000})
        return body["tasks"] if isinstance(body, dict) else body

    def add_local_files_storage(
        self, project_id: int, path: str | Path, sync: bool = False, regex_filter: str = r".*\.(png|jpe?g)$"
    ) -> int:
        """Local files storage over an absolute directory strictly below the document root.

        Label Studio serves /data/local-files/?d=<path relative to the root> only for files inside
        such a storage's directory (404 otherwise). sync=True creates one task per matching file
        with data {"<value key>": "<LABEL_STUDIO_HOST>/data/local-files/?d=<relative path>"}.
        """
        body = {
            "project": project_id, "path": str(path), "title": Path(path).name, "use_blob_urls": True,
            "regex_filter": regex_filter,
        }
        storage_id = self.request("POST", "/api/storages/localfiles", json=body)["id"]
        if sync:
            self.request("POST", f"/api/storages/localfiles/{storage_id}/sync", json={})
        return storage_id

    # -- ML backend ------------------------------------------------------------------------------

    def connect_ml_backend(
        self, project_id: int, url: str, title: str = "rpsam2", is_interactive: bool = True, **fields: Any
    ) -> int:
        """POST /api/ml: Label Studio calls GET {url}/health and POST {url}/setup before it answers."""
        body = {"url": url, "project": project_id, "title": title, "is_interactive": is_interactive, **fields}
        return self.request("POST", "/api/ml", json=body)["id"]

    def get_ml_backend(self, ml_id: int) -> dict:
        """Reading it makes Label Studio re-run /health + /setup and store state and model_version."""
        return self.request("GET", f"/api/ml/{ml_id}")

    def list_ml_backends(self, project_id: int) -> list[dict]:
        return self.request("GET", "/api/ml", params={"project": project_id})

    def interactive_annotating(self, ml_id: int, task_id: int, context: Mapping[str, Any] | None) -> dict:
        """What the editor sends on a smart-tool click. Label Studio always answers 200: the body is
        {"data": <results[0] of the backend>} on success or {"errors": [...]} on failure."""
        body = {"task": task_id, "context": dict(context) if context is not None else None}
        return self.request("POST", f"/api/ml/{ml_id}/interactive-annotating", json=body)

    def train(self, ml_id: int) -> Any:
        return self.request("POST", f"/api/ml/{ml_id}/train", json={})

    # -- annotations and predictions -------------------------------------------------------------

    def create_annotation(self, task_id: int, result: list[Mapping[str, Any]], **fields: Any) -> dict:
        body = {"result": list(result), **fields}
        return self.request("POST", f"/api/tasks/{task_id}/annotations", json=body)

    def list_annotations(self, task_id: int) -> list[dict]:
        return self.request("GET", f"/api/tasks/{task_id}/annotations")

    def list_predictions(self, task_id: int | None = None, project_id: int | None = None) -> list[dict]:
        pairs = (("task", task_id), ("project", project_id))
        params = {key: value for key, value in pairs if value is not None}
        return self.request("GET", "/api/predictions", params=params)

    def retrieve_predictions(self, project_id: int, task_ids: list[int] | None = None) -> dict:
        """Data Manager action "Retrieve predictions": one batched /predict (no context) per call."""
        selected = {"all": True, "excluded": []} if task_ids is None else {"all": False, "included": task_ids}
        return self.request(
            "POST", "/api/dm/actions", params={"id": "retrieve_tasks_predictions", "project": project_id},
            json={"selectedItems": selected},
        )

    # -- webhooks and export ---------------------------------------------------------------------

    def create_webhook(
        self, project_id: int, url: str, actions: Iterable[str] | None = None, send_payload: bool = True,
        headers: Mapping[str, str] | None = None,
    ) -> dict:
        """actions None -> send_for_all_actions. Label Studio POSTs {"action": ..., <payload>} to url."""
        body: dict[str, Any] = {
            "project": project_id, "url": url, "send_payload": send_payload,
            "send_for_all_actions": actions is None, "actions": list(actions or []),
            "headers": dict(headers or {}),
        }
        return self.request("POST", "/api/webhooks", json=body)

    def list_webhooks(self, project_id: int) -> list[dict]:
        return self.request("GET", "/api/webhooks", params={"project": project_id})

    def export(self, project_id: int, export_type: str = "JSON") -> list[dict]:
        return self.request("GET", f"/api/projects/{project_id}/export", params={"exportType": export_type})
