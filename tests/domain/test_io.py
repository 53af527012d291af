"""JSON round trips and the published JSON Schemas."""

import json

import jsonschema
import pytest
from conftest import DATA, INSTANCES, SMALL

from qlmio_opt import Instance, read_instance, read_solution, solve, write_instance, write_solution
from qlmio_opt.domain.errors import InputError
from qlmio_opt.domain.io import read_json
from qlmio_opt.domain.schema import generate_schema, schema_text


@pytest.mark.parametrize("kind", ["instance", "solution"])
def test_shipped_schema_matches_the_models(kind):
    assert json.loads(schema_text(kind)) == generate_schema(kind), (
        "run `python -m qlmio_opt.domain.schema` to regenerate the shipped schema"
    )


def test_committed_instances_conform_to_the_schema():
    schema = json.loads(schema_text("instance"))
    validator = jsonschema.Draft202012Validator(schema)
    files = sorted(SMALL.glob("*.json")) + sorted(INSTANCES.glob("window_0[0-4]*.json"))
    for path in files:
        errors = list(validator.iter_errors(json.loads(path.read_text())))
        assert not errors, f"{path.name}: {errors[0].message}"


@pytest.mark.parametrize(
    "name",
    ["negative_width.json", "missing_field.json", "unknown_field.json", "bad_tier.json"],
)
def test_schema_rejects_structurally_broken_files(name):
    schema = json.loads(schema_text("instance"))
    data = json.loads((DATA / "invalid" / name).read_text())
    assert list(jsonschema.Draft202012Validator(schema).iter_errors(data))


def test_instance_round_trip(tmp_path):
    for path in [*SMALL.glob("*.json"), INSTANCES / "window_042.json"]:
        instance = read_instance(path)
        out = tmp_path / path.name
        write_instance(instance, out)
        again = read_instance(out)
        assert again == instance
        assert Instance.from_dict(instance.to_dict()) == instance


def test_solution_round_trip_and_schema(tmp_path):
    solution = solve(read_instance(SMALL / "memory.json"), "latency-greedy")
    out = tmp_path / "s.json"
    write_solution(solution, out)
    assert read_solution(out) == solution
    schema = json.loads(schema_text("solution"))
    jsonschema.validate(json.loads(out.read_text()), schema)


def test_replace_revalidates():
    instance = read_instance(SMALL / "memory.json")
    longer = instance.replace(window_s=4.0)
    assert longer.window_s == 4.0 and instance.window_s == 1.0
    with pytest.raises(Exception, match="window_s"):
        instance.replace(window_s=-1.0)


# -- what json.loads accepts but an input file may not ------------------------------------------


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ('{"a": 1, "b": {"c": 1, "c": 2}}', 'b: key "c" appears more than once'),
        ('{"assignment": {"r0": "a", "r0": "b"}}', 'assignment: key "r0" appears more than once'),
        ('{"a": 1, "a": 1}', '(top level): key "a" appears more than once'),
        ("[" * 100_000 + "]" * 100_000, "nest too deep"),
        ('{"a": ' + "7" * 5000 + "}", "Exceeds the limit"),
    ],
)
def test_parse_errors_name_the_file_and_never_crash(tmp_path, text, message):
    path = tmp_path / "x.json"
    path.write_text(text)
    with pytest.raises(InputError) as err:
        read_json(path)
    assert message in err.value.render()
    assert err.value.render().startswith(str(path))


def test_a_repeated_key_in_a_list_of_objects_is_located(tmp_path):
    path = tmp_path / "x.json"
    path.write_text('{"requests": [{"id": "a"}, {"id": "b", "site": 1, "site": 2}]}')
    with pytest.raises(InputError, match=r'requests\[1\] \(request "b"\): key "site"'):
        read_json(path)
