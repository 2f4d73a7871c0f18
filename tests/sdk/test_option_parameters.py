"""Options against a manifest's declared ``parameters`` (docs/providers.md, "Parameters"): a declared option
of the wrong type, outside its enum or range is refused naming it; an undeclared one is a warning; a model
that declares nothing takes anything."""

from __future__ import annotations

import pytest

from mediaconduit_worker.errors import InvalidInputError
from mediaconduit_worker.manifest import ProviderManifest, refuse_bad_options, undeclared_options

WHO = "provider 'p' model 'm'"
PARAMS = {"prefix": {"type": "string"}, "top": {"type": "integer", "minimum": 1, "maximum": 50},
          "temperature": {"type": "number"}, "format": {"type": "string", "enum": ["wav", "mp3"]},
          "responseFormat": {"type": ["string", "object"]}, "flag": {"type": "boolean"}, "odd": {"type": "uuid"}}


@pytest.mark.parametrize("options", [
    {}, {"prefix": "x"}, {"top": 3}, {"temperature": 0.5}, {"temperature": 1}, {"format": "mp3"},
    {"responseFormat": "json"}, {"responseFormat": {"type": "json_object"}}, {"flag": False},
    {"prefix": None}, {"odd": 42}, {"undeclared": [1, 2]},
])
def test_options_that_fit_pass(options):
    refuse_bad_options(PARAMS, options, WHO)


@pytest.mark.parametrize("options, message", [
    ({"prefix": [1, 2]}, "option 'prefix' of provider 'p' model 'm' must be string (its manifest's parameters), "
                         "got list [1, 2]"),
    ({"top": "3"}, "option 'top' of provider 'p' model 'm' must be integer (its manifest's parameters), got str '3'"),
    ({"top": True}, "must be integer (its manifest's parameters), got bool True"),
    ({"top": 2.5}, "must be integer"),
    ({"temperature": "hot"}, "must be number"),
    ({"responseFormat": 3}, "must be string or object"),
    ({"format": "ogg"}, "option 'format' of provider 'p' model 'm' must be one of ['wav', 'mp3'], got 'ogg'"),
    ({"top": 0}, "option 'top' of provider 'p' model 'm' must be at least 1, got 0"),
    ({"top": 51}, "must be at most 50, got 51"),
])
def test_a_declared_option_that_does_not_fit_is_refused_by_name(options, message):
    with pytest.raises(InvalidInputError) as caught:
        refuse_bad_options(PARAMS, options, WHO)
    assert message in str(caught.value)


def test_undeclared_options_are_warnings_with_the_closest_name():
    assert undeclared_options(PARAMS, {"prefx": "x", "prefix": "y", "zzz": 1}, WHO) == [
        "option 'prefx' is not a declared parameter of provider 'p' model 'm' (prefix, top, temperature, format, "
        "responseFormat, flag, odd), passed on as given; did you mean 'prefix'?",
        "option 'zzz' is not a declared parameter of provider 'p' model 'm' (prefix, top, temperature, format, "
        "responseFormat, flag, odd), passed on as given",
    ]


def test_a_model_that_declares_nothing_stays_loose():
    manifest = ProviderManifest.model_validate({
        "id": "p", "name": "P", "models": [{"id": "loose", "capabilities": ["text-to-text"]},
                                           {"id": "strict", "parameters": {"n": {"type": "integer"}}}]})
    assert manifest.parameters_of("loose") == {}
    refuse_bad_options(manifest.parameters_of("loose"), {"n": "anything", "x": [1]}, WHO)
    assert undeclared_options(manifest.parameters_of("loose"), {"n": "anything"}, WHO) == []
    assert manifest.parameters_of("strict") == {"n": {"type": "integer"}}


def test_dynamic_models_use_the_defaults_parameters_and_ignore_markers():
    manifest = ProviderManifest.model_validate({
        "id": "p", "name": "P", "models": {"dynamic": True, "capabilities": ["text-to-text"],
                                           "parameters": {"temperature": {"type": "number"}, "unlisted": True}}})
    assert manifest.parameters_of("any/model") == {"temperature": {"type": "number"}}
