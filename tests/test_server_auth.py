"""Authentication: JWTs and API keys, and nothing without credentials (except --dev)."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
from pathlib import Path
from typing import Any

import httpx
import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from convodb import ApiKeyService, ConversationService, Database
from convodb.server import Settings, create_app
from tests._capture import captured_statements
from tests._http import JWT_SECRET, Api, make_client, settings

ISSUER = "https://issuer.test"
AUDIENCE = "convodb"


def claims(**changes: Any) -> dict[str, Any]:
    now = int(time.time())
    return {"sub": "alice", "iss": ISSUER, "aud": AUDIENCE, "iat": now, "exp": now + 300} | changes


def hs256(**changes: Any) -> str:
    return jwt.encode(claims(**changes), JWT_SECRET, algorithm="HS256")


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


async def whoami(client: httpx.AsyncClient, headers: dict[str, str]) -> httpx.Response:
    """Create a conversation: the response says which user the request acted as."""
    return await client.post("/v1/conversations", headers=headers)


def assert_unauthorized(response: httpx.Response) -> None:
    assert response.status_code == 401, response.text
    assert response.headers["content-type"] == "application/problem+json"
    assert response.json()["type"] == "urn:convodb:problem:unauthorized"
    assert response.headers["www-authenticate"].startswith("Bearer")


@pytest.fixture
async def strict(db: Database) -> Any:
    """An app that requires iss and aud on HS256 tokens."""
    app = create_app(settings(jwt_issuer=ISSUER, jwt_audience=AUDIENCE), database=db)
    async with make_client(app) as client:
        yield client


async def test_no_credentials_is_401(api: Api) -> None:
    assert_unauthorized(await whoami(api.client, {}))
    assert_unauthorized(await api.client.get("/v1/conversations"))
    assert_unauthorized(await whoami(api.client, {"Authorization": "Basic YTpi"}))
    assert_unauthorized(await whoami(api.client, {"Authorization": "Bearer"}))


async def test_valid_jwt_acts_as_its_subject(strict: httpx.AsyncClient) -> None:
    response = await whoami(strict, bearer(hs256()))
    assert response.status_code == 201
    assert response.json()["user_id"] == "alice"


@pytest.mark.parametrize(
    "token",
    [
        pytest.param(lambda: hs256(exp=int(time.time()) - 3600), id="expired"),
        pytest.param(lambda: hs256(iss="https://evil.test"), id="wrong-issuer"),
        pytest.param(lambda: hs256(aud="someone-else"), id="wrong-audience"),
        pytest.param(
            lambda: jwt.encode(claims(), "another-secret-of-at-least-32-bytes!!", "HS256"),
            id="wrong-signature",
        ),
        pytest.param(lambda: hs256()[:-4] + "AAAA", id="tampered"),
        pytest.param(
            lambda: jwt.encode(claims(), None, algorithm="none"),  # type: ignore[arg-type]
            id="alg-none",
        ),
        pytest.param(lambda: hs256(sub=None), id="no-subject"),
        pytest.param(
            lambda: jwt.encode({k: v for k, v in claims().items() if k != "exp"}, JWT_SECRET),
            id="no-expiry",
        ),
        pytest.param(lambda: "not.a.jwt", id="garbage"),
    ],
)
async def test_bad_jwt_is_401(strict: httpx.AsyncClient, token: Any) -> None:
    assert_unauthorized(await whoami(strict, bearer(token())))


async def test_jwt_with_a_user_header_for_someone_else_is_403(strict: httpx.AsyncClient) -> None:
    response = await whoami(strict, {**bearer(hs256()), "X-Convodb-User": "bob"})
    assert response.status_code == 403
    assert response.json()["type"] == "urn:convodb:problem:forbidden"


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _hmac_token(payload: dict[str, Any], secret: bytes) -> str:
    """An HS256 JWT built by hand: PyJWT refuses to sign with a PEM key as an HMAC secret."""
    header = _b64(json.dumps({"alg": "HS256", "typ": "JWT"}).encode())
    body = _b64(json.dumps(payload).encode())
    signature = hmac.new(secret, f"{header}.{body}".encode(), hashlib.sha256).digest()
    return f"{header}.{body}.{_b64(signature)}"


def _pem(private_key: Any) -> str:
    public = private_key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return str(public.decode())


async def test_rs256_public_key_verifies_and_refuses_hs256_with_the_key_as_secret(
    db: Database, tmp_path: Path
) -> None:
    private = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = tmp_path / "public.pem"
    pem.write_text(_pem(private))
    app = create_app(
        Settings(jwt_public_key_file=pem, jwt_issuer=ISSUER, jwt_audience=AUDIENCE, api_keys=False),
        database=db,
    )
    async with make_client(app) as client:
        good = jwt.encode(claims(), private, algorithm="RS256")
        assert (await whoami(client, bearer(good))).json()["user_id"] == "alice"
        # Algorithm confusion: an HS256 token signed with the public key as its secret.
        forged = _hmac_token(claims(), pem.read_bytes())
        assert_unauthorized(await whoami(client, bearer(forged)))
        other = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        assert_unauthorized(await whoami(client, bearer(jwt.encode(claims(), other, "RS256"))))
        # A token whose algorithm does not fit the key (ES256 against an RSA key): 401, not 500.
        ec_key = ec.generate_private_key(ec.SECP256R1())
        assert_unauthorized(await whoami(client, bearer(jwt.encode(claims(), ec_key, "ES256"))))
        # API keys are off on this server.
        async with db.session() as session:
            token = (await ApiKeyService(session).create("alice")).token
        assert_unauthorized(await whoami(client, bearer(token)))


async def test_es256_jwks_picks_the_key_by_kid(db: Database, tmp_path: Path) -> None:
    private = ec.generate_private_key(ec.SECP256R1())
    jwk = json.loads(jwt.algorithms.ECAlgorithm.to_jwk(private.public_key()))
    jwks = tmp_path / "jwks.json"
    jwks.write_text(json.dumps({"keys": [{**jwk, "kid": "k1", "alg": "ES256", "use": "sig"}]}))
    app = create_app(
        Settings(jwt_jwks_file=jwks, jwt_issuer=ISSUER, jwt_audience=AUDIENCE), database=db
    )
    async with make_client(app) as client:
        good = jwt.encode(claims(sub="carol"), private, "ES256", headers={"kid": "k1"})
        assert (await whoami(client, bearer(good))).json()["user_id"] == "carol"
        unknown = jwt.encode(claims(), private, "ES256", headers={"kid": "k2"})
        assert_unauthorized(await whoami(client, bearer(unknown)))
        no_kid = jwt.encode(claims(), private, "ES256")
        assert_unauthorized(await whoami(client, bearer(no_kid)))


async def test_bound_api_key_acts_as_its_user_only(api: Api) -> None:
    token = await api.key("alice")
    assert (await whoami(api.client, bearer(token))).json()["user_id"] == "alice"
    same = await whoami(api.client, {**bearer(token), "X-Convodb-User": "alice"})
    assert same.status_code == 201
    other = await whoami(api.client, {**bearer(token), "X-Convodb-User": "bob"})
    assert other.status_code == 403


async def test_service_key_acts_as_the_named_user_and_needs_the_header(api: Api) -> None:
    token = await api.key(None, name="backend")
    for user in ("bob", "carol"):
        response = await whoami(api.client, {**bearer(token), "X-Convodb-User": user})
        assert response.json()["user_id"] == user
    assert_unauthorized(await whoami(api.client, bearer(token)))
    bad_user = await whoami(api.client, {**bearer(token), "X-Convodb-User": "x" * 300})
    assert bad_user.status_code == 422
    assert bad_user.json()["field"] == "user_id"


async def test_revoked_key_and_wrong_secret_are_401(api: Api) -> None:
    token = await api.key("alice")
    prefix, _, secret = token.rpartition("_")
    assert_unauthorized(await whoami(api.client, bearer(f"{prefix}_{'A' * len(secret)}")))
    async with api.db.session() as session:
        keys = ApiKeyService(session)
        key = await keys.verify(token)
        assert key is not None
        await keys.revoke(key.id)
    assert_unauthorized(await whoami(api.client, bearer(token)))


async def test_key_revoked_elsewhere_is_refused_on_its_next_request(api: Api) -> None:
    token = await api.key("alice")
    for _ in range(3):  # the key has verified before: nothing may remember that
        assert (await whoami(api.client, bearer(token))).status_code == 201
    key_id = token.split("_")[1]
    async with api.db.session() as session:
        assert await ApiKeyService(session).revoke(key_id) is not None
    assert_unauthorized(await whoami(api.client, bearer(token)))


async def test_a_known_key_revoked_elsewhere_fails_every_route_having_done_nothing(
    api: Api,
) -> None:
    # The server remembers a key's digest once verified; the work's statements check that
    # the key is live, so revocation by another process still takes effect at once.
    headers = {"Authorization": f"Bearer {await api.key('alice')}"}
    cid = (await api.client.post("/v1/conversations", headers=headers)).json()["id"]
    messages = f"/v1/conversations/{cid}/messages"
    turn = {"messages": [{"role": "user", "content": "hi"}]}
    requests = [
        ("POST", messages, turn),
        ("GET", messages, None),
        ("POST", f"/v1/conversations/{cid}/agent-input", {"max_messages": 5}),
        ("GET", f"/v1/conversations/{cid}", None),
        ("GET", "/v1/conversations", None),
        ("PATCH", f"/v1/conversations/{cid}", {"title": "renamed"}),
        ("DELETE", "/v1/me", None),
    ]
    for method, url, body in requests[:-1]:  # each route, with the key known
        response = await api.client.request(method, url, json=body, headers=headers)
        assert response.status_code < 300, (method, url, response.text)
    async with api.db.session() as session:
        assert await ApiKeyService(session).revoke(headers["Authorization"].split("_")[1])
        stored = await ConversationService(session).list_messages(cid, "alice")
    for method, url, body in requests:
        assert_unauthorized(await api.client.request(method, url, json=body, headers=headers))
    async with api.db.session() as session:
        assert await ConversationService(session).list_messages(cid, "alice") == stored
        assert (await ConversationService(session).get_conversation(cid, "alice")).title == (
            "renamed"
        )


async def test_erasing_oneself_with_a_known_key_erases_everything(api: Api) -> None:
    headers = await api.auth("alice")
    cid = (await whoami(api.client, headers)).json()["id"]  # the key is known from here on
    turn = {"messages": [{"role": "user", "content": "hi"}]}
    await api.client.post(f"/v1/conversations/{cid}/messages", json=turn, headers=headers)
    erased = await api.client.delete("/v1/me", headers=headers)
    assert erased.status_code == 200, erased.text
    assert erased.json()["conversations"] == 1 and erased.json()["api_keys"] == 1
    async with api.db.session() as session:
        assert (await ConversationService(session).list_conversations("alice")).items == []
    assert_unauthorized(await whoami(api.client, headers))


async def test_a_known_key_with_a_wrong_secret_is_401(api: Api) -> None:
    token = await api.key("alice")
    assert (await whoami(api.client, bearer(token))).status_code == 201
    prefix, _, secret = token.rpartition("_")
    assert_unauthorized(await whoami(api.client, bearer(f"{prefix}_{'A' * len(secret)}")))
    assert_unauthorized(await whoami(api.client, bearer(f"{prefix}_")))
    assert (await whoami(api.client, bearer(token))).status_code == 201


async def test_a_known_key_costs_its_requests_no_statement_of_their_own(api: Api) -> None:
    headers = await api.auth("alice")
    cid = (await whoami(api.client, headers)).json()["id"]
    url = f"/v1/conversations/{cid}"
    async with captured_statements(api.db) as statements:
        appended = await api.client.post(
            f"{url}/messages",
            json={"messages": [{"role": "user", "content": "hi"}]},
            headers=headers,
        )
        window = await api.client.post(f"{url}/agent-input", json={}, headers=headers)
    assert appended.status_code == 201 and window.status_code == 200
    checks = [s.sql for s in statements if "api_keys" in s.sql]
    assert len(checks) == 2, checks  # one in the append's statement, one in the window's
    assert all("conversations" in sql for sql in checks), checks


async def test_dev_mode_accepts_loopback_requests_without_credentials(db: Database) -> None:
    app = create_app(Settings(dev=True), database=db)
    async with make_client(app) as client:
        assert (await whoami(client, {})).json()["user_id"] == "dev"
        named = await whoami(client, {"X-Convodb-User": "dora"})
        assert named.json()["user_id"] == "dora"
    async with make_client(app, client=("203.0.113.7", 40000)) as remote:
        assert_unauthorized(await whoami(remote, {}))


def test_settings_refuse_unsafe_configurations() -> None:
    with pytest.raises(ValueError, match="loopback"):
        Settings(dev=True, host="0.0.0.0")
    with pytest.raises(ValueError, match="32 bytes"):
        Settings(jwt_secret="short")
    with pytest.raises(ValueError, match="no way to authenticate"):
        Settings(api_keys=False)
    assert Settings(dev=True, host="::1").dev


def test_settings_read_the_environment_and_flags_win() -> None:
    env = {
        "CONVODB_DATABASE_URL": "sqlite:///env.db",
        "CONVODB_PORT": "9001",
        "CONVODB_API_KEYS": "false",
        "CONVODB_JWT_SECRET": JWT_SECRET,
        "CONVODB_MAX_BODY_BYTES": "2048",
    }
    loaded = Settings.from_env(env, port=9002, host=None)
    assert loaded.database_url == "sqlite:///env.db"
    assert (loaded.port, loaded.host, loaded.api_keys) == (9002, "127.0.0.1", False)
    assert loaded.jwt_secret == JWT_SECRET and loaded.max_body_bytes == 2048
    with pytest.raises(ValueError, match="CONVODB_PORT"):
        Settings.from_env({"CONVODB_PORT": "eighty"})


async def test_database_settings_reach_the_database() -> None:
    env = {
        "CONVODB_DATABASE_URL": "postgresql://u@h/db",
        "CONVODB_MAX_CONNECTIONS": "8",
        "CONVODB_CONNECT_TIMEOUT": "2.5",
        "CONVODB_POOL_TIMEOUT": "3",
        "CONVODB_STATEMENT_TIMEOUT": "none",
        "CONVODB_IDLE_TIMEOUT": "60",
    }
    database = Settings.from_env(env, jwt_secret=JWT_SECRET).database()
    try:
        timeouts = database.timeouts
        assert (timeouts.connect, timeouts.pool, timeouts.statement, timeouts.idle) == (
            2.5,
            3,
            None,
            60,
        )
        # A quarter of 8 for the engine; the hot path gets the rest.
        assert (
            "Pool size: 2 " in database.engine.pool.status()
        )  # a quarter of 8; the hot path gets the rest
    finally:
        await database.dispose()
    defaults = Settings(jwt_secret=JWT_SECRET).database()
    try:
        assert defaults.timeouts.statement == 30
    finally:
        await defaults.dispose()
    with pytest.raises(ValueError, match="pool_timeout must be more than 0"):
        Settings.from_env({"CONVODB_POOL_TIMEOUT": "0"}, jwt_secret=JWT_SECRET)
    with pytest.raises(ValueError, match="max_connections must be at least 2"):
        Settings(jwt_secret=JWT_SECRET, max_connections=1)
