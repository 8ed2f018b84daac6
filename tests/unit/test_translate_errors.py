"""translate/errors.py: each_object, the request translators' walk over a list whose items must be objects."""

from __future__ import annotations

import pytest

from deepseek_proxy.translate.errors import RequestError, each_object


def test_each_object_yields_index_place_and_item():
    items = [{"a": 1}, {"b": 2}]
    assert list(each_object(items, "tools.{}")) == [(0, "tools.0", {"a": 1}), (1, "tools.1", {"b": 2})]
    assert [place for _, place, _ in each_object(items, "contents[{}]")] == ["contents[0]", "contents[1]"]


def test_each_object_refuses_the_first_non_object_where_it_stands():
    seen = []
    with pytest.raises(RequestError) as caught:
        for _, place, _ in each_object([{}, "x", 3], "messages.{}"):
            seen.append(place)
    assert seen == ["messages.0"]  # the items before it were walked
    assert caught.value.message == "messages.1: an object is required"
    assert caught.value.param == "messages.1" and caught.value.status == 400
