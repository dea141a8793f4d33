"""API keys: the auth matrix over every /api/v1 route, use-case limits, the key file."""

from __future__ import annotations

import os
import stat
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
import pytest_asyncio
from click.testing import CliRunner

from istore.cli import main
from service.keys import KeyRing
from store.engine import Store
from store.errors import Unavailable
from tests.conftest import assert_error, in_process, interaction

KINDS = ("none", "wrong", "ingest", "read", "admin", "limited")


class Env:
    def __init__(self, client: httpx.AsyncClient, keys: dict[str, str], ids: dict[str, str]):
        self.client = client
        self.keys = keys
        self.ids = ids  # use case → an interaction id in it

    def headers(self, kind: str) -> dict[str, str]:
        if kind == "none":
            return {}
        if kind == "wrong":
            return {"Authorization": "Bearer isk_000000000000_nope"}
        return {"Authorization": f"Bearer {self.keys[kind]}"}


@pytest_asyncio.fixture
async def env(store: Store, data_dir: Path) -> AsyncIterator[Env]:
    ring = KeyRing(data_dir)
    keys = {kind: ring.create([kind], name=kind)[1] for kind in ("ingest", "read", "admin")}
    keys["limited"] = ring.create(["ingest", "read"], ["alpha"], name="alpha-only")[1]
    async with in_process(store) as c:
        admin = {"Authorization": f"Bearer {keys['admin']}"}
        ids = {}
        for uc in ("alpha", "beta"):
            r = await c.post(
                "/api/v1/interactions",
                json=interaction(use_case=uc, session_id=f"s-{uc}"),
                headers=admin,
            )
            assert r.status_code == 201, r.text
            ids[uc] = r.json()["completion_id"]
            fb = {"completion_id": ids[uc], "metric": "m", "value": 1}
            r = await c.post("/api/v1/feedback", json=fb, headers=admin)
            assert r.status_code == 201
        yield Env(c, keys, ids)


def _routes(env: Env, uc: str) -> list[tuple[str, str, str, dict[str, object] | None]]:
    """(scope needed, method, path, json body) of every /api/v1 route, aimed at ``uc``."""
    iid = env.ids[uc]
    return [
        ("ingest", "POST", "/api/v1/interactions", interaction(use_case=uc)),
        ("ingest", "POST", "/api/v1/feedback", {"completion_id": iid, "metric": "m", "value": 1}),
        ("ingest", "POST", "/api/v1/comparison",
         {"metric": "m", "preferred_completion": iid, "other_completion": {"text": "x"},
          "messages": interaction()["messages"]}),
        ("ingest", "POST", "/api/v1/outcome", {"session_id": f"s-{uc}", "metric": "m", "value": 1}),
        ("read", "GET", f"/api/v1/interactions?use_case={uc}", None),
        ("read", "GET", f"/api/v1/interactions/{iid}", None),
        ("read", "POST", "/api/v1/sql", {"sql": "SELECT 1 AS x"}),
        ("ingest", "PATCH", f"/api/v1/interactions/{iid}", {"labels": {"seen": "1"}}),
        ("ingest", "POST", "/api/v1/interactions/labels",
         {"filter": {"use_case": uc}, "set": {"bulk": "1"}}),
        # The app here has no gateway: an allowed replay is a 503 (after auth and lookup).
        ("ingest", "POST", f"/api/v1/interactions/{iid}/replay", {"model": "small"}),
        ("admin", "POST", "/api/v1/interactions/delete?dry_run=true",
         {"filter": {"use_case": uc}}),
        ("admin", "POST", "/api/v1/maintenance?dry_run=true", None),
    ]  # fmt: skip


def _expected(kind: str, scope: str, uc: str) -> int:
    if kind in ("none", "wrong"):
        return 401
    if kind == "admin":
        return 0
    if kind == "limited":  # ingest and read, on alpha only
        return 0 if uc == "alpha" and scope != "admin" else 403
    return 0 if kind == scope else 403


@pytest.mark.slow  # a sweep or an oracle comparison: `make test` only
@pytest.mark.asyncio
@pytest.mark.parametrize("kind", KINDS)
async def test_auth_matrix(env: Env, kind: str) -> None:
    for uc in ("alpha", "beta"):
        for scope, method, path, body in _routes(env, uc):
            r = await env.client.request(method, path, json=body, headers=env.headers(kind))
            want = _expected(kind, scope, uc)
            bulk = path == "/api/v1/interactions/labels"  # a filter: 403 like the list
            refers = (path.startswith("/api/v1/interactions/") and not bulk) or path in (
                "/api/v1/feedback", "/api/v1/comparison", "/api/v1/outcome"
            )  # fmt: skip
            if kind == "limited" and uc == "beta" and refers and scope != "admin":
                want = 404  # what it names is not visible at all (not even its use case)
            if kind == "limited" and path == "/api/v1/sql":
                want = 0  # SQL is allowed; what it sees is limited (below)
            where = f"{kind} {method} {path}"
            if want:
                err = assert_error(r, want)
                if want == 401:
                    assert r.headers["www-authenticate"] == "Bearer", where
                    assert err["type"] == "authentication_error"
                if want == 403:
                    assert err["type"] == "permission_error", where
            else:
                ok = (200, 201, 503) if path.endswith("/replay") else (200, 201)
                assert r.status_code in ok, f"{where}: {r.text}"


@pytest.mark.asyncio
async def test_limited_key_sees_only_its_use_cases(env: Env) -> None:
    h = env.headers("limited")
    r = await env.client.get("/api/v1/interactions", headers=h)
    assert {x["use_case"] for x in r.json()["data"]} == {"alpha"}
    r = await env.client.get("/api/v1/interactions?use_case=beta", headers=h)
    assert_error(r, 403, "use_case")
    for view in ("interactions", "feedback", "comparisons", "outcomes"):
        sql = f"SELECT DISTINCT use_case FROM {view}"
        r = await env.client.post("/api/v1/sql", json={"sql": sql}, headers=h)
        assert r.status_code == 200, r.text
        assert {row["use_case"] for row in r.json()["data"]} <= {"alpha"}, view
    # Same query with the admin key sees both.
    r = await env.client.post(
        "/api/v1/sql",
        json={"sql": "SELECT DISTINCT use_case FROM feedback ORDER BY 1"},
        headers=env.headers("admin"),
    )
    assert [row["use_case"] for row in r.json()["data"]] == ["alpha", "beta"]
    # A batch with one other-use-case item stores nothing.
    r = await env.client.post(
        "/api/v1/interactions",
        json=[interaction(use_case="alpha", id="ok-1"), interaction(use_case="beta", id="no-1")],
        headers=h,
    )
    assert_error(r, 403, "body[1].use_case")
    r = await env.client.get("/api/v1/interactions/ok-1", headers=env.headers("admin"))
    assert r.status_code == 404


@pytest.mark.asyncio
async def test_maintenance_needs_an_admin_key_for_every_use_case(env: Env, data_dir: Path) -> None:
    secret = KeyRing(data_dir).create(["admin"], ["alpha"], name="alpha-admin")[1]
    r = await env.client.post("/api/v1/maintenance?dry_run=true",
                              headers={"Authorization": f"Bearer {secret}"})  # fmt: skip
    assert_error(r, 403)
    r = await env.client.post("/api/v1/maintenance?dry_run=true", headers=env.headers("admin"))
    assert r.status_code == 200 and r.json()["dry_run"] is True


@pytest.mark.asyncio
async def test_revoked_key_stops_working_at_once(env: Env, data_dir: Path) -> None:
    h = env.headers("read")
    assert (await env.client.get("/api/v1/interactions", headers=h)).status_code == 200
    KeyRing(data_dir).revoke("read")
    assert_error(await env.client.get("/api/v1/interactions", headers=h), 401)


@pytest.mark.asyncio
async def test_health_and_docs_need_no_key(env: Env) -> None:
    for path in ("/healthz", "/readyz", "/openapi.json"):
        assert (await env.client.get(path)).status_code == 200, path


@pytest.mark.asyncio
async def test_malformed_authorization_headers(env: Env) -> None:
    good = env.keys["admin"]
    values: list[str | bytes] = [
        "", "Bearer", f"Basic {good}", good, f"Bearer {good}x", f"Bearer {good[:-1]}",
        "Bearer isk_", "Bearer isk_zzzzzzzzzzzz_" + "a" * 43, "Bearer \u00e9".encode("latin-1"),
    ]  # fmt: skip
    for value in values:
        r = await env.client.get("/api/v1/interactions", headers={"Authorization": value})
        assert_error(r, 401)


@pytest.mark.asyncio
async def test_no_keys_means_open(client: httpx.AsyncClient) -> None:
    r = await client.get("/api/v1/interactions")
    assert r.status_code == 200


def test_keys_cli(tmp_path: Path) -> None:
    data = str(tmp_path / "d")
    runner = CliRunner()
    r = runner.invoke(
        main, ["keys", "create", "--data", data, "--scope", "read", "--use-case", "a",
               "--name", "analyst"],
    )  # fmt: skip
    assert r.exit_code == 0, r.output
    secret = r.stdout.strip().splitlines()[-1]
    assert secret.startswith("isk_")
    key_file = Path(data) / "keys.json"
    assert stat.S_IMODE(os.stat(key_file).st_mode) == 0o600
    assert secret.split("_", 2)[2] not in key_file.read_text()  # only a hash is stored
    r = runner.invoke(main, ["keys", "list", "--data", data, "--json"])
    assert r.exit_code == 0 and secret not in r.output and "hash" not in r.output
    assert '"analyst"' in r.output and '"read"' in r.output
    ring = KeyRing(data)
    assert ring.authenticate(f"Bearer {secret}").use_cases == frozenset({"a"})
    r = runner.invoke(main, ["keys", "revoke", "--data", data, "analyst"])
    assert r.exit_code == 0, r.output
    with pytest.raises(Exception, match="invalid API key"):
        ring.authenticate(f"Bearer {secret}")
    r = runner.invoke(main, ["keys", "create", "--data", data, "--scope", "root"])
    assert r.exit_code == 2
    r = runner.invoke(main, ["keys", "revoke", "--data", data, "nobody"])
    assert r.exit_code == 1 and "no API key" in r.output


def test_last_used_is_recorded(tmp_path: Path) -> None:
    ring = KeyRing(tmp_path)
    record, secret = ring.create(["read"])
    ring.authenticate(f"Bearer {secret}")
    ring.save_usage()
    (row,) = KeyRing(tmp_path).describe()
    assert row["id"] == record["id"] and row["last_used_at"] is not None


def test_revoke_during_first_verification_wins(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import service.keys as keys_module

    server = KeyRing(tmp_path)
    _, secret = server.create(["read"], name="a")
    server.create(["admin"], name="other")
    real = keys_module._hash

    def slow_hash(secret: str, salt: bytes) -> bytes:
        KeyRing(tmp_path).revoke("a")  # the CLI revokes while the server hashes
        return real(secret, salt)

    monkeypatch.setattr(keys_module, "_hash", slow_hash)
    with pytest.raises(Exception, match="invalid API key"):
        server.authenticate(f"Bearer {secret}")
    monkeypatch.setattr(keys_module, "_hash", real)
    with pytest.raises(Exception, match="invalid API key"):
        server.authenticate(f"Bearer {secret}")


@pytest.mark.parametrize("content", [b"", b'{"keys": [', b'{"keys": [{"id": "x"}]}', b"[]"])
def test_unreadable_key_file_fails_closed(tmp_path: Path, content: bytes) -> None:
    (tmp_path / "keys.json").write_bytes(content)
    with pytest.raises(Exception, match="cannot be read") as info:
        KeyRing(tmp_path).authenticate(None)
    assert isinstance(info.value, Unavailable)  # a 503 (api.errors.STATUS)
