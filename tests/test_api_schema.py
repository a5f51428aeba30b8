"""The OpenAPI schema at /api/schema/ is valid and says what the API answers.

Clients and the schema-driven fuzz run (tests/test_schema_fuzz.py) trust it: every status
an operation gives is documented, each error in the one error shape, and every body with
the fields it really has (the bulk endpoint's ``items`` among them).
"""

from __future__ import annotations

from typing import Any

import pytest
from drf_spectacular.validation import validate_schema

from tests.support.api import Api

pytestmark = pytest.mark.django_db

ERROR = {"$ref": "#/components/schemas/Error"}


@pytest.fixture
def schema(alice: Api) -> dict[str, Any]:
    response = alice.client.get("/api/schema/", HTTP_ACCEPT="application/vnd.oai.openapi+json")
    assert response.status_code == 200
    return response.json()


def operations(schema: dict[str, Any]) -> list[tuple[str, str, dict[str, Any]]]:
    return [
        (method.upper(), path, operation)
        for path, item in schema["paths"].items()
        for method, operation in item.items()
    ]


def json_schema(response: dict[str, Any]) -> dict[str, Any]:
    return response["content"]["application/json"]["schema"]


def test_the_schema_is_valid_openapi(schema: dict[str, Any]) -> None:
    validate_schema(schema)


def test_the_bulk_body_documents_items_as_up_to_1000_todos(schema: dict[str, Any]) -> None:
    body = schema["paths"]["/api/v1/todos/bulk/"]["post"]["requestBody"]
    component = json_schema(body)["$ref"].rsplit("/", 1)[1]
    bulk = schema["components"]["schemas"][component]

    assert bulk["required"] == ["items"]
    assert bulk["additionalProperties"] is False
    assert bulk["properties"]["items"] == {
        "type": "array",
        "items": {"$ref": "#/components/schemas/TodoInput"},
        "minItems": 1,
        "maxItems": 1000,
    }


def test_the_bulk_results_are_documented_for_each_status(schema: dict[str, Any]) -> None:
    responses = schema["paths"]["/api/v1/todos/bulk/"]["post"]["responses"]
    output = {"$ref": "#/components/schemas/BulkOutput"}

    assert json_schema(responses["201"]) == output
    assert json_schema(responses["207"]) == output
    refused = {"$ref": "#/components/schemas/BulkRefused"}
    assert json_schema(responses["400"]) == {"anyOf": [refused, ERROR]}  # atomic, or unparseable
    detail = schema["components"]["schemas"]["BulkRefusedDetail"]
    assert {"code", "message", "fields", "mode", "results", "error_summary"} <= set(
        detail["required"]
    )
    results = schema["components"]["schemas"]["BulkOutput"]["properties"]["results"]
    assert results["items"] == {"$ref": "#/components/schemas/BulkRow"}


def test_every_operation_documents_its_errors_in_the_error_shape(schema: dict[str, Any]) -> None:
    missing = []
    for method, path, operation in operations(schema):
        expected = {"429", "503"}
        if any(requirement for requirement in operation.get("security", [])):
            expected.add("401")
        if "{" in path:
            expected.add("404")
        if "requestBody" in operation:
            expected |= {"400", "413", "415"}
        for status in sorted(expected):
            documented = operation["responses"].get(status)
            if documented is None or ERROR not in _alternatives(json_schema(documented)):
                missing.append(f"{method} {path} {status}")
    assert missing == []
    assert schema["components"]["schemas"]["Error"]["required"] == ["error"]


def _alternatives(documented: dict[str, Any]) -> list[dict[str, Any]]:
    return documented.get("anyOf", [documented])


@pytest.mark.parametrize(
    ("path", "component"),
    [("/api/v1/todos/{todo_id}/", "TodoOutput"), ("/api/v1/reminders/{reminder_id}/", "Reminder")],
)
def test_a_delete_documents_the_200_and_body_it_answers_with(
    schema: dict[str, Any], path: str, component: str
) -> None:
    responses = schema["paths"][path]["delete"]["responses"]

    assert "204" not in responses
    assert json_schema(responses["200"]) == {"$ref": f"#/components/schemas/{component}"}


def test_the_list_documents_its_paging_and_a_todos_events_are_not_paged(
    schema: dict[str, Any],
) -> None:
    listing = schema["paths"]["/api/v1/todos/"]["get"]
    events = schema["paths"]["/api/v1/todos/{todo_id}/events/"]["get"]

    assert {"ordering", "page_size", "cursor"} <= {p["name"] for p in listing["parameters"]}
    filters = {"status", "priority", "tag", "due_before", "due_after", "overdue", "search"}
    assert filters <= {p["name"] for p in listing["parameters"]}  # the filter set, too
    assert sorted(p["name"] for p in events["parameters"]) == ["related", "todo_id"]
    assert json_schema(events["responses"]["200"])["type"] == "array"


def test_if_match_documents_the_versions_it_takes(schema: dict[str, Any]) -> None:
    complete = schema["paths"]["/api/v1/todos/{todo_id}/complete/"]["post"]
    [if_match] = [p for p in complete["parameters"] if p["name"] == "If-Match"]

    assert "start at 1" in if_match["description"]
    assert if_match["schema"]["pattern"]
