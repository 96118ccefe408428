"""Browser sign-in in a real headless Chromium over WebDriver, driven by tests/browser/signin.sh.

  free-ports N                  print N free loopback ports
  wait URL                      wait (up to 30 s) until URL answers 200
  echo PORT                     serve the echo backend on 127.0.0.1:PORT until killed
  drive --app URL --dev URL --echo URL --admin URL --role ROLE --dev-log FILE
                                the browser checks (see drive())

The echo backend answers every request with what it received (method, path, headers) as JSON,
inside <pre id="echo"> for a page load; it remembers the method and path of each request
(GET /__seen lists them) and serves an empty page of its own origin at /__page.

Nothing here prints a token, a code, a cookie value or an assertion: failures name the path
of the page (never its query) and what was expected.
"""

import argparse
import base64
import html
import http.server
import json
import os
import re
import socket
import sys
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request

COOKIE = "AppServiceAuthSession"
USER = {"name": "Browser User", "preferred_username": "browser.user@tollgate.dev"}
OTHER_USER = {"name": "Second User", "preferred_username": "second.user@tollgate.dev"}
# tollgate refreshes an access token this close to expiry (session::REFRESH_MARGIN).
REFRESH_MARGIN = 300
WAIT = 20


def fail(message):
    print(f"FAIL: {message}", file=sys.stderr)
    sys.exit(1)


def say(message):
    print(f"   {message}", flush=True)


# --- helpers for the shell script -------------------------------------------------------------


def free_ports(count):
    sockets = [socket.socket() for _ in range(count)]
    for s in sockets:
        s.bind(("127.0.0.1", 0))
    print(" ".join(str(s.getsockname()[1]) for s in sockets))
    for s in sockets:
        s.close()


def request(url):
    """(status, body) of a GET; HTTP errors are answers, not exceptions. No proxy: loopback."""
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    try:
        with opener.open(url, timeout=10) as resp:
            return resp.status, resp.read().decode()
    except urllib.error.HTTPError as err:
        return err.code, err.read().decode()


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


# --- the echo backend ------------------------------------------------------------------------


class Echo(http.server.BaseHTTPRequestHandler):
    seen = []

    def log_message(self, *args):
        # The default log line would be harmless, but headers never go anywhere but the reply.
        pass

    def answer(self):
        length = int(self.headers.get("Content-Length") or 0)
        if length:
            self.rfile.read(length)
        if self.path == "/__seen":
            return self.reply(200, "application/json", json.dumps(Echo.seen))
        if self.path == "/__page":
            return self.reply(200, "text/html", "<!doctype html><title>other origin</title>")
        Echo.seen.append([self.command, self.path])
        seen = {
            "method": self.command,
            "path": self.path,
            "headers": {k.lower(): v for k, v in self.headers.items()},
        }
        text = json.dumps(seen)
        if "text/html" in (self.headers.get("Accept") or ""):
            page = f'<!doctype html><title>echo</title><pre id="echo">{html.escape(text)}</pre>'
            return self.reply(200, "text/html; charset=utf-8", page)
        return self.reply(200, "application/json", text)

    def reply(self, status, content_type, body):
        data = body.encode()
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(data)))
        self.send_header("Cache-Control", "no-store")
        self.end_headers()
        self.wfile.write(data)

    do_GET = do_POST = do_HEAD = do_PUT = do_DELETE = answer


def echo(port):
    http.server.ThreadingHTTPServer(("127.0.0.1", port), Echo).serve_forever()


# --- the browser -----------------------------------------------------------------------------


def start_browser(profile):
    from selenium import webdriver
    from selenium.webdriver.chrome.options import Options
    from selenium.webdriver.chrome.service import Service

    options = Options()
    options.binary_location = os.environ.get("CHROMIUM", "/usr/bin/chromium")
    for arg in (
        "--headless=new",
        # CI runs as root, where Chromium's sandbox cannot start.
        "--no-sandbox",
        "--disable-dev-shm-usage",
        "--disable-gpu",
        "--no-first-run",
        "--no-default-browser-check",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--password-store=basic",
        f"--user-data-dir={profile}",
        # Everything is on loopback: no proxy, whatever the environment says.
        "--no-proxy-server",
    ):
        options.add_argument(arg)
    log = os.environ.get("CHROMEDRIVER_LOG", os.devnull)
    service = Service(
        executable_path=os.environ.get("CHROMEDRIVER", "/usr/bin/chromedriver"), log_output=log
    )
    driver = webdriver.Chrome(service=service, options=options)
    driver.set_page_load_timeout(WAIT)
    driver.set_script_timeout(WAIT)
    return driver


class Browser:
    def __init__(self, driver, app, dev, echo_url, admin, dev_log_path):
        from selenium.webdriver.support.ui import WebDriverWait

        self.d = driver
        self.app, self.dev, self.echo, self.admin = app, dev, echo_url, admin
        self.dev_log_path = dev_log_path
        self.wait = WebDriverWait(driver, WAIT, poll_frequency=0.1)

    def where(self):
        """The current page's origin and path, never its query (a callback's holds the code)."""
        u = urllib.parse.urlsplit(self.d.current_url)
        return f"{u.scheme}://{u.netloc}{u.path} ({self.d.title!r})"

    def until(self, what, condition):
        from selenium.common.exceptions import TimeoutException

        try:
            return self.wait.until(lambda d: condition())
        except TimeoutException:
            fail(f"waited {WAIT} s for {what}; the browser is at {self.where()}")

    def at(self, url):
        return self.d.current_url == url

    def element(self, element_id):
        from selenium.common.exceptions import NoSuchElementException
        from selenium.webdriver.common.by import By

        try:
            return self.d.find_element(By.ID, element_id)
        except NoSuchElementException:
            return None

    def at_authorize_page(self):
        u = urllib.parse.urlsplit(self.d.current_url)
        return (
            f"{u.scheme}://{u.netloc}" == self.dev
            and u.path.endswith("/oauth2/v2.0/authorize")
            and self.element("sign-in") is not None
        )

    def sign_in(self, user, roles):
        """On the dev provider's page: fill the form and press sign-in."""
        self.until("the dev provider's sign-in page", self.at_authorize_page)
        fields = dict(user, roles=",".join(roles))
        for name, value in fields.items():
            box = self.element(name)
            if box is None:
                fail(f"the sign-in page has no field {name!r}")
            box.clear()
            box.send_keys(value)
        self.element("sign-in").click()

    def echoed(self, url):
        """What the backend received for the page now shown at `url`."""
        self.until(f"the page {urllib.parse.urlsplit(url).path} through tollgate", lambda: (
            self.at(url) and self.element("echo") is not None
        ))
        return json.loads(self.element("echo").get_attribute("textContent"))

    def fetch(self, url, **init):
        """`fetch(url, init)` in the page: {status, body} or {error} when it was blocked."""
        script = """
            const [url, init, done] = arguments;
            fetch(url, init).then(
                async r => done({status: r.status, type: r.type, body: await r.text()}),
                e => done({error: String(e)}));
        """
        return self.d.execute_async_script(script, url, init)

    def session_cookies(self):
        return [c for c in self.d.get_cookies() if re.fullmatch(rf"{COOKIE}\d*", c["name"])]

    def metric(self, name, labels):
        status, text = request(f"{self.admin}/metrics")
        if status != 200:
            fail(f"/metrics answered {status}")
        total = 0.0
        for line in text.splitlines():
            m = re.fullmatch(rf"{name}\{{(.*)\}} (\S+)", line)
            if m and all(f'{k}="{v}"' in m.group(1) for k, v in labels.items()):
                total += float(m.group(2))
        return total

    def backend_count(self, method, path):
        """How many `method path` requests the echo backend has received."""
        status, text = request(f"{self.echo}/__seen")
        if status != 200:
            fail(f"the echo backend's /__seen answered {status}")
        return json.loads(text).count([method, path])

    def backend_saw(self, method, path):
        return self.backend_count(method, path) > 0

    def dev_log(self):
        with open(self.dev_log_path, encoding="utf-8", errors="replace") as f:
            return f.read()


def check_identity(seen, user, role):
    h = seen["headers"]
    name = h.get("x-ms-client-principal-name")
    if name != user["preferred_username"]:
        fail(f"X-MS-CLIENT-PRINCIPAL-NAME is {name!r}, expected {user['preferred_username']!r}")
    principal = json.loads(base64.b64decode(h.get("x-ms-client-principal", "")))
    claims = principal.get("claims", [])
    if not any(c.get("val") == user["preferred_username"] for c in claims):
        fail("X-MS-CLIENT-PRINCIPAL has no claim with the user name")
    if not any(c.get("val") == user["name"] for c in claims):
        fail("X-MS-CLIENT-PRINCIPAL has no claim with the display name")
    # App Service's default ("legacy claims") keeps the short name `roles` for app roles.
    if role and not any(c.get("typ") == "roles" and c.get("val") == role for c in claims):
        fail(f"X-MS-CLIENT-PRINCIPAL has no roles claim {role!r}")
    for header in ("x-ms-token-aad-access-token", "x-ms-token-aad-id-token"):
        if not h.get(header):
            fail(f"the backend got no {header}")
    if h["x-ms-token-aad-id-token"].count(".") != 2:
        fail("X-MS-TOKEN-AAD-ID-TOKEN is not a JWT")
    for cookie in h.get("cookie", "").split(";"):
        if cookie.strip().startswith(COOKIE):
            fail("the backend received tollgate's session cookie")
    return principal


def expires_in(seen):
    """Seconds until the access token expires, from X-MS-TOKEN-AAD-EXPIRES-ON."""
    text = seen["headers"].get("x-ms-token-aad-expires-on", "")
    m = re.fullmatch(r"(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d)(\.\d+)?Z", text)
    if not m:
        fail(f"X-MS-TOKEN-AAD-EXPIRES-ON is not a UTC time: {text!r}")
    at = time.mktime(time.strptime(m.group(1), "%Y-%m-%dT%H:%M:%S")) - time.timezone
    return at - time.time()


def drive(args):
    with tempfile.TemporaryDirectory(prefix="tollgate-chromium-") as profile:
        driver = start_browser(profile)
        try:
            run(Browser(driver, args.app, args.dev, args.echo, args.admin, args.dev_log), args.role)
        finally:
            driver.quit()


def run(b, role):
    def refreshes(result):
        return b.metric("tollgate_session_refresh_total", {"result": result})

    def csrf_refusals():
        return b.metric("tollgate_auth_failures_total", {"reason": "csrf"})

    print("== sign in: the app → the provider's page → back where the browser started")
    start = f"{b.app}/hello?from=browser"
    b.d.get(start)
    b.sign_in(USER, [role])
    seen = b.echoed(start)
    principal = check_identity(seen, USER, role)
    say(f"backend got {USER['preferred_username']} with role {role} "
        f"({len(principal['claims'])} claims) and both token headers")
    if expires_in(seen) >= REFRESH_MARGIN:
        fail("the access token outlives the refresh margin: is tollgate dev's --lifetime short?")

    print("== the session cookie is HttpOnly")
    cookies = b.session_cookies()
    if not cookies:
        fail(f"the browser holds no {COOKIE} cookie")
    for c in cookies:
        if not c.get("httpOnly"):
            fail(f"{c['name']} is not HttpOnly")
        if c.get("sameSite") != "Lax":
            fail(f"{c['name']} is SameSite={c.get('sameSite')}, expected Lax")
    if COOKIE in b.d.execute_script("return document.cookie"):
        fail(f"document.cookie shows {COOKIE}")
    say(f"{len(cookies)} chunk(s), HttpOnly, SameSite=Lax; document.cookie does not show them")

    print("== fetch() from the page, same origin")
    r = b.fetch("/api/orders")
    if r.get("status") != 200:
        fail(f"fetch GET /api/orders: {r.get('status', r.get('error'))}")
    if json.loads(r["body"])["headers"].get("x-ms-client-principal-name") != USER["preferred_username"]:
        fail("fetch GET /api/orders reached the backend without the user")
    r = b.fetch("/admin/report")
    if r.get("status") != 200:
        fail(f"fetch GET /admin/report (needs {role}): {r.get('status', r.get('error'))}")
    r = b.fetch("/api/orders", method="POST", body="order=1", headers={"Content-Type": "text/plain"})
    if r.get("status") != 200 or not b.backend_saw("POST", "/api/orders"):
        fail(f"a same-origin fetch POST: {r.get('status', r.get('error'))}")
    say("GET /api/orders, GET /admin/report and POST /api/orders: 200 with the user")

    print("== a POST from another origin with the cookie is refused (CSRF)")
    b.d.get(f"{b.echo}/__page")
    b.until("the other origin's page", lambda: b.d.title == "other origin")
    before = csrf_refusals()
    blocked = b.fetch(f"{b.app}/api/transfer", method="POST", body="to=mallory",
                      credentials="include", headers={"Content-Type": "text/plain"})
    if "error" not in blocked:
        fail(f"a cross-origin fetch POST was readable: {blocked.get('status')}")
    opaque = b.fetch(f"{b.app}/api/transfer", method="POST", body="to=mallory",
                     credentials="include", mode="no-cors")
    if opaque.get("type") != "opaque":
        fail(f"the no-cors POST answered {opaque.get('type', opaque.get('error'))}, not opaque")
    # Both POSTs were sent with the cookie (127.0.0.1 on another port is the same site, so
    # SameSite=Lax lets it through): tollgate's CSRF check is what refused them.
    b.until("two CSRF refusals in tollgate_auth_failures_total",
            lambda: csrf_refusals() >= before + 2)
    if b.backend_saw("POST", "/api/transfer"):
        fail("the backend received a cross-origin POST")
    say("2 cross-origin POSTs: 403 csrf at tollgate, nothing reached the backend")

    print("== refresh")
    b.d.get(f"{b.app}/hello")
    b.echoed(f"{b.app}/hello")
    # tollgate dev's access tokens live less than the refresh margin: requests refresh them
    # (the first one after sign-in already did), with no /.auth/refresh yet.
    if refreshes("success") < 1:
        fail("no request refreshed the access token within 5 minutes of its expiry")
    if refreshes("failed") > 0:
        fail("a refresh failed")
    say(f"requests refreshed the access token by themselves ({refreshes('success'):.0f} grants)")
    r = b.fetch("/.auth/refresh")
    if r.get("status") != 200:
        fail(f"/.auth/refresh: {r.get('status', r.get('error'))}")
    r = b.fetch("/api/after-refresh")
    if r.get("status") != 200:
        fail(f"after /.auth/refresh: {r.get('status', r.get('error'))}")
    b.d.refresh()
    check_identity(b.echoed(f"{b.app}/hello"), USER, role)
    say("/.auth/refresh: 200; fetch and page loads still carry the user")

    print("== logout: the provider's end-session endpoint, then back to the app")
    done = f"{b.app}/.auth/logout/complete"
    b.d.get(f"{b.app}/.auth/logout?post_logout_redirect_uri=/.auth/logout/complete")
    b.until("the signed-out page", lambda: b.at(done))
    # The browser passed through tollgate dev's end-session endpoint on its way back.
    b.until("tollgate dev's log of the sign-out", lambda: "back to the app" in b.dev_log())
    if b.session_cookies():
        fail("session cookies are left after logout")
    say("tollgate dev ended the session and sent the browser back; every session cookie gone")

    print("== after logout the app sends the browser to sign in again")
    b.d.get(f"{b.app}/admin/report")
    b.until("the dev provider's sign-in page", b.at_authorize_page)
    b.sign_in(OTHER_USER, [])
    b.until("the app after the second sign-in", lambda: b.d.current_url.startswith(b.app))
    admin_before = b.backend_count("GET", "/admin/report")
    r = b.fetch("/admin/report")
    if r.get("status") != 403 or b.backend_count("GET", "/admin/report") != admin_before:
        fail(f"/admin/report for a user without {role}: {r.get('status', r.get('error'))}")
    b.d.get(f"{b.app}/hello")
    check_identity(b.echoed(f"{b.app}/hello"), OTHER_USER, None)
    say(f"signed in again as {OTHER_USER['preferred_username']}: /admin 403, /hello 200")


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("free-ports").add_argument("count", type=int)
    sub.add_parser("wait").add_argument("url")
    sub.add_parser("echo").add_argument("port", type=int)
    d = sub.add_parser("drive")
    for flag in ("--app", "--dev", "--echo", "--admin", "--role", "--dev-log"):
        d.add_argument(flag, required=True)
    args = parser.parse_args()
    if args.command == "free-ports":
        free_ports(args.count)
    elif args.command == "wait":
        wait(args.url)
    elif args.command == "echo":
        echo(args.port)
    else:
        drive(args)


if __name__ == "__main__":
    main()
