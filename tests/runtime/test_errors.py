"""short_reason: the one-line reason of a library exception."""

from runtime.errors import description, short_reason


def test_openvino_source_locations_are_skipped_for_the_reason() -> None:
    # the message OpenVINO 2026.4 raises for an IR whose .bin is missing
    exc = RuntimeError(
        "Exception from src/inference/src/cpp/core.cpp:84:\n"
        "Check 'm_weights_provider' failed at src/core/xml_util/src/xml_deserialize_util.cpp:887:\n"
        "Empty weights data in bin file or bin file cannot be found!\n\n"
    )
    assert short_reason(exc) == "Empty weights data in bin file or bin file cannot be found!"


def test_plain_messages_keep_their_first_line_and_empty_ones_their_type() -> None:
    assert short_reason(ValueError("bad header\nmore detail")) == "bad header"
    assert short_reason(KeyError()) == "KeyError"
    only_location = RuntimeError("Exception from src/x.cpp:1:")
    assert short_reason(only_location) == "Exception from src/x.cpp:1:"


def test_help_descriptions_drop_sphinx_roles() -> None:
    doc = "``python -m export``: export a model\n(see :mod:`export.export`, :func:`~runtime.x.y`).\n\nDetails."
    assert description(doc) == "python -m export: export a model (see export.export, runtime.x.y)."
