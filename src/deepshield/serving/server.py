"""`serve()`: load the model once and run the app with uvicorn."""

from __future__ import annotations

import logging
from pathlib import Path

from deepshield.errors import DeepShieldError
from deepshield.serving.app import create_app
from deepshield.serving.settings import ServerSettings

__all__ = ["create_app", "serve"]

log = logging.getLogger("deepshield.serving")


def serve(host: str = "127.0.0.1", port: int = 8000, model: str | Path | None = None, settings: ServerSettings | None = None) -> None:
    """Serve the web page and the REST API until interrupted. model None: the shipped default bundle."""
    import uvicorn

    from deepshield.inference.analysis import Detector

    if settings is None:
        try:
            settings = ServerSettings.from_env()
        except ValueError as exc:
            raise DeepShieldError(f"invalid server setting in the environment: {exc}") from None
    detector = Detector.from_bundle(model)
    app = create_app(detector, settings)
    print(f"Deepfake Shield: model {detector.model_name}; web page http://{host}:{port}/ , API docs http://{host}:{port}/docs", flush=True)
    if settings.api_key:
        print("Deepfake Shield: API key required on /v1 (header X-API-Key)", flush=True)
    uvicorn.run(
        app,
        host=host,
        port=port,
        log_level="info",
        timeout_keep_alive=5,
        # Connections beyond this get uvicorn's own 503; the app's gate answers JSON 503s well before it.
        limit_concurrency=max(64, 4 * (settings.max_concurrency + settings.max_queue + settings.max_pending_jobs)),
        server_header=False,
    )
