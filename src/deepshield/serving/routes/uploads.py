"""What the routes that take an upload share: its OpenAPI body and the judgement of its type."""

from __future__ import annotations

from typing import Any

from deepshield.errors import DeepShieldError
from deepshield.media.animation import is_animation
from deepshield.media.sniff import MediaKind, sniff_media_kind
from deepshield.serving.errors import from_library_error
from deepshield.serving.uploads import FIELD_NAME, Upload

# Uploads are read from the raw request stream (serving/uploads.py), not through a FastAPI parameter,
# so the body is documented by hand.
MULTIPART_BODY: dict[str, Any] = {
    "requestBody": {
        "required": True,
        "content": {
            "multipart/form-data": {
                "schema": {
                    "type": "object",
                    "required": [FIELD_NAME],
                    "properties": {
                        FIELD_NAME: {
                            "type": "string",
                            "format": "binary",
                            "description": "the image or video (type judged by content)",
                        }
                    },
                }
            }
        },
    }
}


def sniff_upload(upload: Upload) -> MediaKind:
    """IMAGE or VIDEO by content; an animated image (GIF, APNG, WebP) is analysed as a video."""
    try:
        kind = sniff_media_kind(upload.head)
        return MediaKind.VIDEO if kind is MediaKind.IMAGE and is_animation(upload.path) else kind
    except DeepShieldError as exc:
        raise from_library_error(exc) from None
