import pytest

from polymodal.registry import Registry


def test_register_create_list_and_unknown_names():
    registry = Registry("widget")

    @registry.register("small", size=1)
    class Small:
        def __init__(self, value):
            self.value = value

    assert registry.create("small", 3).value == 3
    assert registry.names() == ["small"] and registry.names(size=2) == []
    with pytest.raises(KeyError, match="unknown widget 'big'; known: small"):
        registry.get("big")
    with pytest.raises(ValueError, match="twice"):
        registry.register("small")(Small)
