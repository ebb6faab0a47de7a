"""feedback/files.py: a JSON file replaced whole."""
import json

import pytest

from feedback.files import write_json_atomic, write_text_atomic


def test_writes_replaces_and_leaves_no_temporary_file(tmp_path):
    path = tmp_path / "sub" / "x.json"
    write_json_atomic(path, {"a": 1})
    write_json_atomic(path, {"a": 2})
    assert json.loads(path.read_text()) == {"a": 2}
    assert [p.name for p in path.parent.iterdir()] == ["x.json"]


def test_a_value_that_cannot_be_written_keeps_the_old_file(tmp_path):
    path = tmp_path / "x.json"
    write_json_atomic(path, {"a": 1})
    with pytest.raises(TypeError):
        write_json_atomic(path, {"a": object()})
    assert json.loads(path.read_text()) == {"a": 1}
    assert [p.name for p in tmp_path.iterdir()] == ["x.json"]


def test_durable_text_write_replaces_whole(tmp_path):
    path = tmp_path / "metadata.json"
    write_text_atomic(path, "first", durable=True)
    write_text_atomic(path, "second", durable=True)
    assert path.read_text() == "second"
    assert [p.name for p in tmp_path.iterdir()] == ["metadata.json"]
