"""Music targets: melodies written by the text decoder over a REMI-like token vocabulary."""

from polymodal.tasks.music import task  # noqa: F401  (registration)
