"""What can go wrong for a caller of facebridge, as exceptions the library raises and callers catch.

Every error names the part of the input at fault (`field`, e.g. "pairs[3].a.model") when there is one.
The service turns each into an RFC 9457 problem through one table (facebridge/problems.py), so the
library and the HTTP answers report the same failure the same way.
"""

from __future__ import annotations


class FacebridgeError(Exception):
    """Base of every error a caller can act on."""

    def __init__(self, message: str, field: str | None = None) -> None:
        super().__init__(message)
        self.field = field

    def at(self, field: str) -> FacebridgeError:
        """This error, naming `field` as the culprit (returns self, for `raise exc.at(...)`)."""
        self.field = field
        return self


class UnknownModel(FacebridgeError, LookupError):
    """No manifest entry or mapped space has this id."""


class ModelNotReady(FacebridgeError, LookupError):
    """The manifest knows the model but it is not loaded (file missing, refused, or not selected)."""


class FullNetworkUnavailable(FacebridgeError, ValueError):
    """The model has no (valid) full-network statistics, so that mode cannot be served for it."""


class NoMapPath(FacebridgeError, LookupError):
    """No map or composition of maps connects the two spaces."""


class NotCalibrated(FacebridgeError, LookupError):
    """A calibrated threshold was asked for a space that has no calibration."""


class SameSpace(FacebridgeError, ValueError):
    """Translating a space into itself: nothing to do, most likely a mistaken model id."""


class NotReady(FacebridgeError, RuntimeError):
    """The models (or maps) are still loading or failed to load."""


class BatchTooLarge(FacebridgeError, ValueError):
    """More items in one call than the configured limit."""


class InvalidEmbedding(FacebridgeError, ValueError):
    """An embedding that cannot be used (not a number matrix)."""


class EmptyBatch(InvalidEmbedding):
    """No embedding at all."""


class WrongDimension(InvalidEmbedding):
    """The embedding's length is not the space's dimension."""


class NonFinite(InvalidEmbedding):
    """NaN or Inf in an embedding."""


class ZeroVector(InvalidEmbedding):
    """The zero vector has no direction to compare."""


class NoFaceFound(FacebridgeError, ValueError):
    """The detector found no face above the score threshold."""


class InvalidNpy(FacebridgeError, ValueError):
    """A binary body that is not a usable .npy array (format, dtype, shape or length)."""


class InvalidBase64(FacebridgeError, ValueError):
    """An image field that is not valid base64."""


class ImageError(FacebridgeError, ValueError):
    """An image that cannot be used."""


class UndecodableImage(ImageError):
    """Not an image any decoder here can read."""


class ImageTooLarge(ImageError):
    """More bytes or pixels than the configured limits."""


class AccessDenied(FacebridgeError, PermissionError):
    """The caller may not do this (the service's API keys; never raised by the library itself)."""


class InvalidApiKey(AccessDenied):
    """No API key, or not a valid one: unknown, wrong, expired or revoked."""


class MissingScope(AccessDenied):
    """A valid API key that lacks the scope the route needs (`scope` names it)."""

    def __init__(self, message: str, scope: str) -> None:
        super().__init__(message)
        self.scope = scope
