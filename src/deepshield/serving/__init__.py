"""The web app and REST API: `create_app(detector, settings)` builds it, `serve()` runs it with uvicorn."""

from deepshield.serving.settings import ServerSettings

__all__ = ["ServerSettings", "create_app", "serve"]


def __getattr__(name: str):
    # Lazy: importing the settings must not pull in FastAPI, ONNX Runtime or MediaPipe.
    if name == "create_app":
        from deepshield.serving.app import create_app

        return create_app
    if name == "serve":
        from deepshield.serving.server import serve

        return serve
    raise AttributeError(name)
