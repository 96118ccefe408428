"""Interop checks for `tollgate dev`, driven by tests/interop/azure_identity.sh.

  free-ports N                 print N free loopback ports
  wait URL                     wait (up to 30 s) until URL answers 200
  get URL BODY                 GET URL and require 200 with exactly BODY
  token --mode M --proxy URL   get tokens with the real azure-identity ManagedIdentityCredential
                               (and DefaultAzureCredential), check their claims, and check that
                               tollgate at URL accepts them and refuses no token / a forged one
  entra --proxy URL            the same with ClientSecretCredential and WorkloadIdentityCredential
                               against `tollgate dev`'s Entra-like token endpoint over https
                               (AZURE_AUTHORITY_HOST, the dev CA in REQUESTS_CA_BUNDLE, ...)

The environment (App Service or IMDS style) is whatever the caller passes: this file never
sets it. It never prints a token.
"""

import argparse
import base64
import json
import socket
import sys
import time
import urllib.error
import urllib.request

DEV_ISSUER = "http://127.0.0.1:8079/"
SCOPE = "api://tollgate-dev/.default"
AUDIENCE = "api://tollgate-dev"
USER_ASSIGNED = "c0ffee00-0000-4000-8000-0000000000a1"


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


def request(url, headers=None):
    """(status, headers, body) of a GET; HTTP errors are answers, not exceptions."""
    req = urllib.request.Request(url, headers=headers or {})
    # No proxy: everything here is on loopback.
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    try:
        with opener.open(req, timeout=10) as resp:
            return resp.status, resp.headers, resp.read().decode()
    except urllib.error.HTTPError as err:
        return err.code, err.headers, err.read().decode()


def wait(url):
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            if request(url)[0] == 200:
                return
        except OSError:
            pass
        time.sleep(0.2)
    fail(f"{url} did not answer 200 within 30 s")


def get(url, body):
    status, _, text = request(url)
    if status != 200 or text != body:
        fail(f"GET {url}: {status} {text!r}, expected 200 {body!r}")
    print(f"  GET {url}: 200 (through tollgate egress and inbound)")


def claims_of(token):
    payload = token.split(".")[1]
    return json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))


def check_token(label, token, expires_on, want_appid, role):
    claims = claims_of(token)
    want = {"iss": DEV_ISSUER, "aud": AUDIENCE, "idtyp": "app", "appid": want_appid}
    for name, value in want.items():
        if claims.get(name) != value:
            fail(f"{label}: claim {name} is {claims.get(name)!r}, expected {value!r}")
    if role not in claims.get("roles", []):
        fail(f"{label}: roles {claims.get('roles')!r} lack {role!r}")
    # App Service gives expires_on, IMDS expires_in: both must land on the token's exp.
    if abs(expires_on - claims["exp"]) > 5:
        fail(f"{label}: expires_on {expires_on} but exp {claims['exp']}")
    lifetime = expires_on - int(time.time())
    print(f"  {label}: token for {claims['aud']} (appid {claims['appid']}), expires in {lifetime}s")


def check_proxy(label, proxy, token):
    status, _, body = request(proxy, {"Authorization": f"Bearer {token}"})
    if status != 200:
        fail(f"{label}: tollgate answered {status} to the token: {body}")
    status, headers, _ = request(proxy)
    challenge = headers.get("WWW-Authenticate", "")
    if status != 401 or challenge != 'Bearer realm="tollgate"':
        fail(f"{label}: no token: {status} {challenge!r}, expected 401 with a bare challenge")
    head, payload, signature = token.split(".")
    forged = ".".join([head, payload, ("A" if signature[0] != "A" else "B") + signature[1:]])
    status, headers, _ = request(proxy, {"Authorization": f"Bearer {forged}"})
    if status != 401 or 'error="invalid_token"' not in headers.get("WWW-Authenticate", ""):
        fail(f"{label}: a forged signature got {status}, expected 401 invalid_token")
    print(f"  {label}: tollgate accepts it (200); no token 401; forged signature 401")


def token(mode, proxy, role):
    from azure.identity import DefaultAzureCredential, ManagedIdentityCredential

    system = "d3e7d3e7-0000-4000-8000-0000000000c1"
    cases = [
        ("ManagedIdentityCredential()", ManagedIdentityCredential(), system),
        (
            f"ManagedIdentityCredential(client_id={USER_ASSIGNED})",
            ManagedIdentityCredential(client_id=USER_ASSIGNED),
            USER_ASSIGNED,
        ),
        ("DefaultAzureCredential()", DefaultAzureCredential(), system),
    ]
    print(f"{mode}:")
    for label, credential, appid in cases:
        with credential:
            access = credential.get_token(SCOPE)
        check_token(label, access.token, access.expires_on, appid, role)
        check_proxy(label, proxy, access.token)


def entra(proxy, role):
    """ClientSecretCredential and WorkloadIdentityCredential from the environment the caller
    passes (AZURE_AUTHORITY_HOST https, AZURE_TENANT_ID, AZURE_CLIENT_ID, AZURE_CLIENT_SECRET,
    AZURE_FEDERATED_TOKEN_FILE, the dev CA). MSAL asks login.microsoftonline.com to vouch for
    any other authority host unless instance discovery is off."""
    import os

    from azure.identity import ClientSecretCredential, WorkloadIdentityCredential

    env = os.environ
    web_client = env["AZURE_CLIENT_ID"]
    cases = [
        (
            "ClientSecretCredential",
            ClientSecretCredential(
                env["AZURE_TENANT_ID"],
                web_client,
                env["AZURE_CLIENT_SECRET"],
                disable_instance_discovery=True,
            ),
            "1",
        ),
        (
            "WorkloadIdentityCredential",
            WorkloadIdentityCredential(disable_instance_discovery=True),
            "2",
        ),
    ]
    print(f"entra (token endpoint {env['AZURE_AUTHORITY_HOST']}):")
    for label, credential, acr in cases:
        with credential:
            access = credential.get_token(SCOPE)
        check_token(label, access.token, access.expires_on, web_client, role)
        if claims_of(access.token).get("appidacr") != acr:
            fail(f"{label}: appidacr {claims_of(access.token).get('appidacr')!r}, expected {acr!r}")
        check_proxy(label, proxy, access.token)


def main():
    parser = argparse.ArgumentParser()
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("free-ports").add_argument("count", type=int)
    sub.add_parser("wait").add_argument("url")
    g = sub.add_parser("get")
    g.add_argument("url")
    g.add_argument("body")
    t = sub.add_parser("token")
    t.add_argument("--mode", required=True, choices=["app_service", "imds"])
    t.add_argument("--proxy", required=True)
    t.add_argument("--role", required=True)
    e = sub.add_parser("entra")
    e.add_argument("--proxy", required=True)
    e.add_argument("--role", required=True)
    args = parser.parse_args()
    if args.command == "free-ports":
        free_ports(args.count)
    elif args.command == "wait":
        wait(args.url)
    elif args.command == "get":
        get(args.url, args.body)
    elif args.command == "entra":
        entra(args.proxy, args.role)
    else:
        token(args.mode, args.proxy, args.role)


if __name__ == "__main__":
    main()
