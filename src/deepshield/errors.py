"""The errors a user can meet. Each carries a message meant to be shown as-is."""


class DeepShieldError(Exception):
    """Base class: anything the product refuses on purpose, with a message for the user."""


class UnsupportedMediaError(DeepShieldError):
    """The bytes are not an image or video type we read."""


class CorruptMediaError(DeepShieldError):
    """The file claims a supported type but cannot be decoded."""


class MediaTooLargeError(DeepShieldError):
    """The file exceeds a byte, pixel or duration limit."""


class BundleError(DeepShieldError):
    """A model bundle is missing, incomplete or inconsistent with its model card."""
