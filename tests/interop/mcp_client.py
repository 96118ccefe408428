"""Interop checks for protected resource metadata, driven by tests/interop/mcp.sh: the Python MCP
SDK (`mcp`, the official SDK; nobody here wrote it) as the client, tollgate in front of an MCP
server, `tollgate dev` as the authorization server.

  free-ports N                    print N free loopback ports
  wait URL                        wait (up to 30 s) until URL answers at all
  server PORT                     run an MCP server (the SDK's own MCPServer, streamable HTTP at
                                  /mcp) whose tool `whoami` returns the identity headers it got
  discover URL ISSUER             the SDK's discovery functions, one by one, from tollgate's 401 at
                                  URL: resource_metadata → the protected resource metadata → the
                                  authorization server metadata of ISSUER, with what each URL
                                  answered
  connect URL CLIENT_ID SECRET    the SDK's OAuthClientProvider and streamable HTTP client: a
                                  session with the MCP server behind tollgate, the whole OAuth
                                  flow run by the SDK (discovery, authorization code with PKCE
                                  and RFC 8707 `resource`, token, retry); the sign-in page of
                                  `tollgate dev` is answered as a browser would post it
  refused URL TOKEN_FILE          a token for another audience: 401 bad_audience, with the
                                  challenge naming the metadata

It never prints a token.
"""

import argparse
import asyncio
import json
import socket
import sys
import time
import urllib.error
import urllib.parse
import urllib.request

USER = "ada@contoso.example"


def fail(message):
    print(f"FAIL: {message}", file=sys.stderr)
    sys.exit(1)


def free_ports(count):
    sockets = [socket.socket() for _ in range(count)]
    for s in sockets:
        s.bind(("127.0.0.1", 0))
    print(" ".join(str(s.getsockname()[1]) for s in sockets))
    for s in sockets:
        s.close()


def request(url, data=None, headers=None, method=None):
    """(status, headers, body) without following redirects; HTTP errors are answers."""

    class NoRedirect(urllib.request.HTTPRedirectHandler):
        def redirect_request(self, *args, **kwargs):
            return None

    req = urllib.request.Request(url, data=data, headers=headers or {}, method=method)
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}), NoRedirect)
    try:
        with opener.open(req, timeout=10) as resp:
            return resp.status, resp.headers, resp.read().decode()
    except urllib.error.HTTPError as err:
        return err.code, err.headers, err.read().decode()


def wait(url):
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            request(url)
            return
        except OSError:
            time.sleep(0.2)
    fail(f"{url} did not answer")


def server(port):
    from mcp.server.mcpserver import Context, MCPServer
    from mcp.server.transport_security import TransportSecuritySettings

    mcp = MCPServer("tollgate-interop")

    @mcp.tool()
    def whoami(ctx: Context) -> str:
        """The caller, as the identity headers tollgate set say."""
        request = ctx.request_context.request
        headers = getattr(request, "headers", {}) or {}
        return json.dumps(
            {
                "name": headers.get("x-ms-client-principal-name"),
                "roles": headers.get("x-user-roles"),
                "authorized": "authorization" in headers,
            }
        )

    # tollgate forwards the client's Host (127.0.0.1:<tollgate's port>): the check against DNS
    # rebinding is tollgate's business here, as the only way in.
    mcp.run(
        transport="streamable-http",
        host="127.0.0.1",
        port=port,
        streamable_http_path="/mcp",
        transport_security=TransportSecuritySettings(enable_dns_rebinding_protection=False),
    )


async def discover(url, issuer):
    """The discovery chain, with the SDK's own functions, as OAuthClientProvider runs it."""
    import httpx2
    from mcp.client.auth.utils import (
        build_oauth_authorization_server_metadata_discovery_urls,
        build_protected_resource_metadata_discovery_urls,
        create_oauth_metadata_request,
        extract_resource_metadata_from_www_auth,
        extract_scope_from_www_auth,
        handle_auth_metadata_response,
        handle_protected_resource_response,
        validate_metadata_issuer,
    )

    async with httpx2.AsyncClient(follow_redirects=False, trust_env=False) as http:
        initialize = {"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {}}
        first = await http.post(
            url, json=initialize, headers={"accept": "application/json, text/event-stream"}
        )
        if first.status_code != 401:
            fail(f"an unauthenticated call got {first.status_code}, not 401")
        metadata_url = extract_resource_metadata_from_www_auth(first)
        print(f"   401 from tollgate; resource_metadata={metadata_url}")
        if not metadata_url:
            fail(f"no resource_metadata in {first.headers.get('www-authenticate')!r}")
        if extract_scope_from_www_auth(first) is not None:
            fail("a 401 without a token names no scope")

        prm = None
        for candidate in build_protected_resource_metadata_discovery_urls(metadata_url, url):
            response = await http.send(create_oauth_metadata_request(candidate))
            print(f"   {response.status_code} {candidate}")
            prm = await handle_protected_resource_response(response)
            if prm:
                if candidate != metadata_url:
                    fail("the SDK had to fall back past the URL tollgate named")
                break
        if prm is None:
            fail("no protected resource metadata found")
        if str(prm.resource) != url:
            fail(f"resource {prm.resource} is not {url}")
        servers = [str(s) for s in prm.authorization_servers]
        if servers != [issuer]:
            fail(f"authorization_servers {servers}, expected [{issuer}]")
        print(f"   resource {prm.resource}; authorization_servers {servers}; scopes {prm.scopes_supported}")

        asm = None
        tried = []
        for candidate in build_oauth_authorization_server_metadata_discovery_urls(servers[0], url):
            response = await http.send(create_oauth_metadata_request(candidate))
            tried.append((candidate, response.status_code))
            print(f"   {response.status_code} {candidate}")
            ok, asm = await handle_auth_metadata_response(response)
            if not ok or asm:
                break
        if asm is None:
            fail(f"no authorization server metadata: {tried}")
        validate_metadata_issuer(asm, servers[0])
        print(
            f"   issuer {asm.issuer}; authorize {asm.authorization_endpoint}; token {asm.token_endpoint}; "
            f"PKCE {asm.code_challenge_methods_supported}"
        )
        print(f"   authorization server metadata from {tried[-1][0]}")


class MemoryStorage:
    """The SDK's TokenStorage, in memory, holding a pre-registered client (tollgate dev's web
    app: Entra, like tollgate dev, has no dynamic client registration)."""

    def __init__(self, client_info):
        self.tokens = None
        self.client_info = client_info

    async def get_tokens(self):
        return self.tokens

    async def set_tokens(self, tokens):
        self.tokens = tokens

    async def get_client_info(self):
        return self.client_info

    async def set_client_info(self, client_info):
        self.client_info = client_info


async def connect(url, client_id, secret):
    import httpx2
    from mcp import ClientSession
    from mcp.client.auth import AuthorizationCodeResult, OAuthClientProvider
    from mcp.client.streamable_http import streamable_http_client
    from mcp.shared.auth import OAuthClientInformationFull, OAuthClientMetadata

    redirect_uri = "http://127.0.0.1:9/.auth/login/aad/callback"
    storage = MemoryStorage(
        OAuthClientInformationFull(
            client_id=client_id,
            client_secret=secret,
            redirect_uris=[redirect_uri],
            token_endpoint_auth_method="client_secret_post",
            grant_types=["authorization_code", "refresh_token"],
        )
    )
    callback = {}

    async def redirect_handler(authorization_url):
        # The browser's part: tollgate dev's sign-in page, posted as its form would be.
        parsed = urllib.parse.urlsplit(authorization_url)
        query = dict(urllib.parse.parse_qsl(parsed.query))
        callback["asked"] = query
        form = dict(query, name="Ada", preferred_username=USER, oid="", roles="Tools.Call",
                    groups="", action="sign_in")
        status, headers, body = await asyncio.to_thread(
            request,
            urllib.parse.urlunsplit(parsed._replace(query="")),
            urllib.parse.urlencode(form).encode(),
            {"content-type": "application/x-www-form-urlencoded"},
            "POST",
        )
        if status != 302:
            fail(f"the sign-in form got {status}: {body[:300]}")
        callback["location"] = headers["location"]

    async def callback_handler():
        params = dict(urllib.parse.parse_qsl(urllib.parse.urlsplit(callback["location"]).query))
        if "code" not in params:
            fail(f"no code in the redirect: {params}")
        return AuthorizationCodeResult(code=params["code"], state=params.get("state"), iss=params.get("iss"))

    provider = OAuthClientProvider(
        server_url=url,
        client_metadata=OAuthClientMetadata(
            client_name="tollgate interop",
            redirect_uris=[redirect_uri],
            grant_types=["authorization_code", "refresh_token"],
            token_endpoint_auth_method="client_secret_post",
        ),
        storage=storage,
        redirect_handler=redirect_handler,
        callback_handler=callback_handler,
    )
    seen = []

    async def log_response(response):
        seen.append(f"{response.status_code} {response.request.method} {response.request.url}")

    http = httpx2.AsyncClient(auth=provider, trust_env=False, event_hooks={"response": [log_response]})
    async with http, streamable_http_client(url, http_client=http) as (read, write):
        async with ClientSession(read, write) as session:
            await session.initialize()
            tools = await session.list_tools()
            names = [t.name for t in tools.tools]
            if "whoami" not in names:
                fail(f"tools {names}")
            result = await session.call_tool("whoami", {})
    for line in seen:
        print(f"   {line}")
    text = result.content[0].text
    identity = json.loads(text)
    print(f"   whoami: {identity}")
    if identity["name"] != USER or "Tools.Call" not in (identity["roles"] or ""):
        fail(f"the MCP server saw {identity}")
    asked = callback.get("asked", {})
    if asked.get("resource") != url:
        fail(f"the authorization request named resource {asked.get('resource')!r}, not {url}")
    print(f"   authorize asked scope={asked.get('scope')!r} resource={asked.get('resource')!r}")
    # The chain the SDK walked, in order: the 401, tollgate's metadata, the issuer's, the token.
    expect = [
        ("401", url),
        ("200", "/.well-known/oauth-protected-resource/mcp"),
        ("200", "/.well-known/openid-configuration"),
        ("200", "/oauth2/v2.0/token"),
    ]
    position = 0
    for line in seen:
        if position < len(expect) and line.startswith(expect[position][0]) and expect[position][1] in line:
            position += 1
    if position < len(expect):
        fail(f"the SDK did not walk the chain {expect}: {seen}")
    if not any(line.startswith("404") and "oauth-authorization-server" in line for line in seen):
        fail(f"expected the SDK to try RFC 8414 metadata first: {seen}")


def refused(url, token_file):
    with open(token_file) as f:
        token = f.read().strip()
    status, headers, body = request(url, data=b"{}", headers={
        "authorization": f"Bearer {token}", "content-type": "application/json",
        "accept": "application/json, text/event-stream"}, method="POST")
    challenge = headers.get("www-authenticate", "")
    if status != 401 or json.loads(body).get("error_description") != "token audience not accepted":
        fail(f"a token for another audience got {status}: {body}")
    if 'resource_metadata="' not in challenge or "invalid_token" not in challenge:
        fail(f"challenge {challenge!r}")
    print(f"   401 {challenge}")


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("free-ports").add_argument("count", type=int)
    sub.add_parser("wait").add_argument("url")
    sub.add_parser("server").add_argument("port", type=int)
    d = sub.add_parser("discover")
    d.add_argument("url")
    d.add_argument("issuer")
    c = sub.add_parser("connect")
    c.add_argument("url")
    c.add_argument("client_id")
    c.add_argument("secret")
    r = sub.add_parser("refused")
    r.add_argument("url")
    r.add_argument("token_file")
    args = parser.parse_args()
    if args.command == "free-ports":
        free_ports(args.count)
    elif args.command == "wait":
        wait(args.url)
    elif args.command == "server":
        server(args.port)
    elif args.command == "discover":
        asyncio.run(discover(args.url, args.issuer))
    elif args.command == "connect":
        asyncio.run(connect(args.url, args.client_id, args.secret))
    elif args.command == "refused":
        refused(args.url, args.token_file)


if __name__ == "__main__":
    main()
