"""Image targets: flow-matching generation conditioned on every other input."""

from polymodal.tasks.image import task  # noqa: F401  (registration)
