"""Every validation rule: one broken file each, its own message, exit code 2, no traceback."""

import json
import re
import unicodedata

import jsonschema
import pytest
from conftest import DATA, INSTANCES, SMALL

from qlmio_opt import InputError, read_instance
from qlmio_opt.domain.schema import schema_text
from qlmio_opt.domain.types import ID_PATTERN, check_id
from qlmio_opt.faces.cli import EXIT_INPUT, main

INVALID = DATA / "invalid"
EXPECTED = json.loads((INVALID / "expected.json").read_text())


def test_every_invalid_file_has_an_expected_message_and_vice_versa():
    files = {p.name for p in INVALID.glob("*.json")} - {"expected.json"}
    assert files == set(EXPECTED)
    assert len(files) >= 30


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_invalid_file_fails_with_its_message(name, capsys):
    path = INVALID / name
    code = main(["validate", str(path)])
    captured = capsys.readouterr()
    assert code == EXIT_INPUT
    assert EXPECTED[name] in captured.err, captured.err
    assert str(path) in captured.err  # names the file
    assert "Traceback" not in captured.err + captured.out


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_solve_refuses_invalid_files_the_same_way(name, capsys):
    code = main(["solve", str(INVALID / name)])
    captured = capsys.readouterr()
    assert code == EXIT_INPUT
    assert EXPECTED[name] in captured.err


def test_the_base_file_the_broken_ones_come_from_is_valid():
    instance = read_instance(DATA / "base_valid.json")
    assert instance.request_ids == ("r0", "r1", "r2")


def test_error_lists_every_problem_not_just_the_first(tmp_path):
    data = json.loads((DATA / "base_valid.json").read_text())
    data["requests"][0]["images"][0]["width"] = -1
    data["requests"][2]["prompt_tokens"] = -5
    path = tmp_path / "two.json"
    path.write_text(json.dumps(data))
    with pytest.raises(InputError) as err:
        read_instance(path)
    paths = [i.path for i in err.value.issues]
    assert paths == [
        'requests[0] (request "r0").images[0].width',
        'requests[2] (request "r2").prompt_tokens',
    ]


def test_missing_file_is_a_clear_error(capsys, tmp_path):
    code = main(["validate", str(tmp_path / "nope.json")])
    assert code == EXIT_INPUT
    assert "nope.json: file not found" in capsys.readouterr().err


def test_all_committed_instances_are_valid(capsys):
    files = sorted(INSTANCES.glob("window_*.json")) + sorted(SMALL.glob("*.json"))
    assert len(files) >= 100
    assert main(["validate", *map(str, files)]) == 0
    assert "invalid" not in capsys.readouterr().err


def test_instances_are_immutable():
    instance = read_instance(SMALL / "memory.json")
    with pytest.raises(Exception, match="frozen"):
        instance.window_s = 3.0
    with pytest.raises(Exception, match="frozen"):
        instance.requests[0].prompt_tokens = 1


IDS = [
    "r0",
    "a id with inner spaces",
    "é-ü",
    "a\u00a0b",
    "x",
    "r\x00",
    "r\n",
    "\tr",
    "r\x1b[31m",
    "r\x7f",
    "r\x85",
    " r",
    "r ",
    "   ",
    "r\u3000",
    "\u2028r",
]


@pytest.mark.parametrize("ident", IDS)
def test_the_schema_pattern_for_ids_agrees_with_the_id_rule(ident):
    try:
        check_id(ident)
        accepted = True
    except ValueError:
        accepted = False
    assert accepted == (re.search(ID_PATTERN, ident) is not None)
    assert accepted == (
        ident == ident.strip() and all(unicodedata.category(c) != "Cc" for c in ident)
    )


def test_the_published_schema_refuses_a_control_character_in_an_id():
    schema = json.loads(schema_text("instance"))
    data = json.loads((DATA / "base_valid.json").read_text())
    data["requests"][0]["id"] = "r0\n"
    errors = list(jsonschema.Draft202012Validator(schema).iter_errors(data))
    assert [list(e.absolute_path) for e in errors] == [["requests", 0, "id"]]
