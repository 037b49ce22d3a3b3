"""The package version, in a module of its own: modules inside polymodal read it from here,
never from the package root, whose lazy `Model` import would make a circle."""

__version__ = "0.1.0"
