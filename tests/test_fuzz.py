"""Schemathesis against the OpenAPI document of a live server (uvicorn on loopback, a
real upstream behind the gateway): every operation, valid and invalid inputs. No 5xx,
every response conforms to its documented schema, and every error has the one error
shape. ``ISTORE_FUZZ_EXAMPLES`` per operation (CI: 12, ~300 calls; ``make fuzz``:
thousands)."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis.errors import Unsatisfiable
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import response_schema_conformance

from tests.conftest import Server
from tests.test_gateway import routing_toml
from tests.upstream import Upstream

pytestmark = pytest.mark.slow  # live servers, emulators, property runs: `make test` only

EXAMPLES = int(os.environ.get("ISTORE_FUZZ_EXAMPLES", "12"))
ERROR_KEYS = {"message", "type", "param", "code"}


@pytest.fixture(scope="module")
def live_api(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    root = tmp_path_factory.mktemp("fuzz")
    with Upstream(delay_s=0.1) as up:
        config = root / "gateway.toml"
        config.write_text(routing_toml(up.base_url).replace("[models.down]", "[models.down0]"))
        server = Server(root / "data", ISTORE_GATEWAY_CONFIG=str(config),
                        ISTORE_TEST_UPSTREAM_KEY="k").start()  # fmt: skip
        try:
            schema = schemathesis.openapi.from_url(server.url + "/openapi.json")
            schema.config.generation.update(
                modes=[GenerationMode.POSITIVE, GenerationMode.NEGATIVE], max_examples=EXAMPLES
            )
            yield schema
        finally:
            server.stop()


def error_shape(response: Any) -> None:
    if response.status_code < 400:
        return
    body = response.json()
    assert set(body) == {"error"}, body
    assert set(body["error"]) == ERROR_KEYS, body
    assert isinstance(body["error"]["message"], str) and body["error"]["message"]


def test_every_operation(live_api: Any) -> None:
    """Each operation, positive and negative cases (schemathesis' pytest plugin does
    not load under pytest 9, so the strategies run under hypothesis directly)."""
    failures: list[str] = []
    calls = 0
    for result in live_api.get_all_operations():
        op = result.ok()
        for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):

            @given(case=op.as_strategy(generation_mode=mode))
            @settings(
                max_examples=EXAMPLES,
                deadline=None,
                suppress_health_check=list(HealthCheck),
                phases=[Phase.explicit, Phase.generate],
                derandomize=True,
                database=None,
            )
            def run(case: Any) -> None:
                nonlocal calls
                calls += 1
                response = case.call(timeout=60)
                case.validate_response(
                    response, checks=[not_a_server_error, response_schema_conformance]
                )
                error_shape(response)

            try:
                run()
            except Unsatisfiable:  # no parameters: nothing negative to send
                continue
            except (Exception, BaseExceptionGroup) as exc:  # collect them all, then fail
                failures.append(f"{op.method.upper()} {op.path} ({mode.value}): {exc}"[:2000])
    assert failures == [], "\n\n".join(failures)
    assert calls >= EXAMPLES * 10
    print(f"schemathesis: {calls} calls, {len(failures)} failures")


def test_the_document_names_one_error_shape(tmp_path: Path) -> None:
    from api.app import create_app
    from service.settings import Settings

    doc = create_app(Settings(data=str(tmp_path))).openapi()
    assert "HTTPValidationError" not in str(doc)
    for path, ops in doc["paths"].items():
        for method, op in ops.items():
            assert "default" in op["responses"], (method, path)
