// A real OpenID provider (the `oidc-provider` package) against tollgate's browser sign-in,
// driven by tests/interop/oidc_provider.sh:
//
//   NODE_MODULES=DIR node oidc_provider.mjs serve PORT ECHO_PORT APP_URL CLIENT_ID CERT_PEM
//   node oidc_provider.mjs drive APP_URL PROVIDER_URL
//
// `serve` runs the provider on http://127.0.0.1:PORT (authorization code with PKCE S256
// required, refresh tokens, RP-initiated logout, its development login and consent pages) with
// one client that authenticates with private_key_jwt under the public key of CERT_PEM, and an
// echo backend on ECHO_PORT. The provider also answers GET /__events: what it did (grants and
// how the client authenticated, errors, sign-outs), never a token.
//
// `drive` signs in through tollgate at APP_URL over plain HTTP (a cookie jar per host, every
// redirect followed by hand), checks what the backend received, waits for the refresh that the
// provider's 60-second access tokens force, and signs out. Never prints a token, code, cookie
// or assertion.
import { createRequire } from "node:module";
import { X509Certificate, generateKeyPairSync, createHash } from "node:crypto";
import { readFileSync } from "node:fs";
import http from "node:http";
import { pathToFileURL } from "node:url";

const USER = { login: "alice", name: "Alice Interop", preferred_username: "alice@oidc.test" };
// Inside tollgate's 5-minute refresh margin: every access token is refreshed on next use.
const ACCESS_TOKEN_TTL = 60;

function fail(message) {
  console.error(`FAIL: ${message}`);
  process.exit(1);
}

function say(message) {
  console.log(`   ${message}`);
}

// --- serve -----------------------------------------------------------------------------------

async function serve([port, echoPort, app, clientId, certFile]) {
  // oidc-provider is an ES module without "exports": resolve its file from the caller's
  // node_modules (ES modules do not read NODE_PATH) and import it.
  const require = createRequire(`${process.env.NODE_MODULES}/`);
  const { default: Provider } = await import(pathToFileURL(require.resolve("oidc-provider")));

  const cert = new X509Certificate(readFileSync(certFile));
  const clientKey = {
    ...cert.publicKey.export({ format: "jwk" }),
    use: "sig",
    "x5t#S256": createHash("sha256").update(cert.raw).digest("base64url"),
  };
  const signing = generateKeyPairSync("rsa", { modulusLength: 2048 }).privateKey;
  const events = [];
  const issuer = `http://127.0.0.1:${port}`;

  const provider = new Provider(issuer, {
    clients: [
      {
        client_id: clientId,
        token_endpoint_auth_method: "private_key_jwt",
        token_endpoint_auth_signing_alg: "PS256",
        jwks: { keys: [clientKey] },
        grant_types: ["authorization_code", "refresh_token"],
        response_types: ["code"],
        redirect_uris: [`${app}/.auth/login/aad/callback`],
        post_logout_redirect_uris: [`${app}/.auth/logout/complete`],
      },
    ],
    jwks: { keys: [{ ...signing.export({ format: "jwk" }), kid: "interop-1", use: "sig", alg: "RS256" }] },
    cookies: { keys: ["tollgate-interop-cookie-key"] },
    pkce: { methods: ["S256"], required: () => true },
    scopes: ["openid", "profile", "offline_access"],
    claims: { openid: ["sub"], profile: ["name", "preferred_username"] },
    // Put the profile claims in the id_token, as Entra does: tollgate builds the principal from
    // the id_token and never calls userinfo.
    conformIdTokenClaims: false,
    // OpenID Connect Core 11 lets a provider grant offline_access only with prompt=consent;
    // tollgate does not send it (Entra would then ask for consent at every sign-in). The
    // consent page is still shown and accepted; this grants the refresh token with it.
    issueRefreshToken: async (ctx, client) => client.grantTypeAllowed("refresh_token"),
    ttl: { AccessToken: ACCESS_TOKEN_TTL, IdToken: 3600, RefreshToken: 86400 },
    features: {
      devInteractions: { enabled: true },
      rpInitiatedLogout: { enabled: true },
    },
    findAccount: async (ctx, sub) => ({
      accountId: sub,
      claims: async () => ({ sub, name: USER.name, preferred_username: USER.preferred_username }),
    }),
  });

  const clientAuth = (ctx) => ctx.oidc?.client?.clientAuthMethod;
  provider.on("grant.success", (ctx) => {
    const grant = ctx.oidc.params.grant_type;
    events.push({ event: "grant.success", grant, auth: clientAuth(ctx) });
    console.log(`grant ${grant} ok (client authenticated with ${clientAuth(ctx)})`);
  });
  provider.on("grant.error", (ctx, err) => {
    events.push({ event: "grant.error", grant: ctx.oidc?.params?.grant_type, error: err.error, description: err.error_description });
    console.log(`grant ${ctx.oidc?.params?.grant_type} refused: ${err.error} (${err.error_description})`);
  });
  provider.on("authorization.error", (ctx, err) => {
    events.push({ event: "authorization.error", error: err.error, description: err.error_description });
    console.log(`authorization refused: ${err.error} (${err.error_description})`);
  });
  provider.on("end_session.success", () => {
    events.push({ event: "end_session.success" });
    console.log("end session");
  });
  provider.on("server_error", (ctx, err) => console.log(`server error: ${err.message}`));

  provider.use(async (ctx, next) => {
    if (ctx.path === "/__events") {
      ctx.body = events;
      return;
    }
    await next();
  });

  await new Promise((resolve) => provider.listen(Number(port), "127.0.0.1", resolve));
  await new Promise((resolve) => echoServer().listen(Number(echoPort), "127.0.0.1", resolve));
  console.log(`oidc-provider on ${issuer}, echo backend on http://127.0.0.1:${echoPort}`);
}

// The backend: every request answered with what it received.
function echoServer() {
  return http.createServer((req, res) => {
    req.resume();
    req.on("end", () => {
      const body = JSON.stringify({ method: req.method, path: req.url, headers: req.headers });
      res.writeHead(200, { "content-type": "application/json", "cache-control": "no-store" });
      res.end(body);
    });
  });
}

// --- drive -----------------------------------------------------------------------------------

// Cookies per host:port, as a browser keeps them (no expiry handling beyond Max-Age=0).
class Jar {
  constructor() {
    this.hosts = new Map();
  }
  header(url) {
    const jar = this.hosts.get(new URL(url).host);
    return jar ? [...jar].map(([k, v]) => `${k}=${v}`).join("; ") : "";
  }
  store(url, setCookies) {
    const host = new URL(url).host;
    const jar = this.hosts.get(host) ?? new Map();
    for (const line of setCookies) {
      const [pair, ...attrs] = line.split(";");
      const eq = pair.indexOf("=");
      const name = pair.slice(0, eq).trim();
      const gone = attrs.some((a) => /^\s*max-age=0\s*$/i.test(a) || /^\s*expires=.*1970/i.test(a));
      if (gone) jar.delete(name);
      else jar.set(name, pair.slice(eq + 1).trim());
    }
    this.hosts.set(host, jar);
  }
  names(url) {
    return [...(this.hosts.get(new URL(url).host)?.keys() ?? [])];
  }
}

const jar = new Jar();

// Where a URL points, without its query (which may hold a code or state).
const where = (url) => {
  const u = new URL(url);
  return `${u.origin}${u.pathname}`;
};

// One request over node:http (fetch would add `Sec-Fetch-Mode: cors` to every request, and a
// page load is `navigate`), with the jar's cookies for the URL's host.
function send(url, { method = "GET", form, accept = "text/html" } = {}) {
  const headers = { accept, "sec-fetch-mode": accept === "text/html" ? "navigate" : "cors" };
  const cookie = jar.header(url);
  if (cookie) headers.cookie = cookie;
  let body;
  if (form) {
    body = new URLSearchParams(form).toString();
    headers["content-type"] = "application/x-www-form-urlencoded";
    headers["content-length"] = Buffer.byteLength(body);
  }
  return new Promise((resolve, reject) => {
    const req = http.request(url, { method, headers }, (res) => {
      const chunks = [];
      res.on("data", (c) => chunks.push(c));
      res.on("end", () => {
        jar.store(url, res.headers["set-cookie"] ?? []);
        const location = res.headers.location;
        resolve({
          url,
          status: res.statusCode,
          location: location ? new URL(location, url).toString() : null,
          text: Buffer.concat(chunks).toString("utf8"),
        });
      });
    });
    req.on("error", reject);
    req.end(body);
  });
}

// Follows redirects from `url` until a response that is not one; every hop's URL is recorded.
async function follow(url, options, hops = []) {
  let reply = await send(url, options);
  hops.push(url);
  for (let i = 0; reply.location && i < 20; i++) {
    hops.push(reply.location);
    reply = await send(reply.location);
  }
  if (reply.location) fail(`more than 20 redirects from ${where(url)}`);
  return reply;
}

// The one form of a page of the provider: its action and inputs (hidden ones with values).
function form(page) {
  const action = page.text.match(/<form[^>]*action="([^"]*)"/)?.[1];
  if (!action) fail(`no form at ${where(page.url)}`);
  const fields = {};
  for (const [, tag] of page.text.matchAll(/<input([^>]*)>/g)) {
    const name = tag.match(/name="([^"]*)"/)?.[1];
    if (name) fields[name] = tag.match(/value="([^"]*)"/)?.[1] ?? "";
  }
  return { action: new URL(action.replace(/&amp;/g, "&"), page.url).toString(), fields };
}

async function events(provider) {
  return JSON.parse((await send(`${provider}/__events`, { accept: "application/json" })).text);
}

function echoed(reply, what) {
  if (reply.status !== 200) fail(`${what}: ${reply.status} at ${where(reply.url)}`);
  return JSON.parse(reply.text);
}

async function drive([app, provider]) {
  const discovery = JSON.parse(
    (await send(`${provider}/.well-known/openid-configuration`, { accept: "application/json" })).text,
  );

  console.log("== sign in: tollgate → oidc-provider's login and consent pages → callback");
  const hops = [];
  let page = await follow(`${app}/hello?from=node`, {}, hops);
  if (!hops.some((h) => h.startsWith(discovery.authorization_endpoint))) {
    fail(`tollgate did not send the browser to ${discovery.authorization_endpoint}`);
  }
  const authorize = new URL(hops.find((h) => h.startsWith(discovery.authorization_endpoint)));
  if (authorize.searchParams.get("code_challenge_method") !== "S256") fail("no PKCE S256 at /authorize");
  for (const prompt of ["login", "consent"]) {
    if (!page.url.startsWith(`${provider}/interaction/`)) {
      fail(`expected the ${prompt} page, got ${page.status} at ${where(page.url)}`);
    }
    const { action, fields } = form(page);
    if (fields.prompt !== prompt) fail(`expected the ${prompt} form, got ${fields.prompt}`);
    if (prompt === "login") Object.assign(fields, { login: USER.login, password: "any" });
    const before = hops.length;
    page = await follow(action, { method: "POST", form: fields }, hops);
    say(`${prompt} page submitted (${hops.length - before} redirects)`);
  }
  const landed = new URL(page.url);
  if (`${landed.origin}${landed.pathname}${landed.search}` !== `${app}/hello?from=node`) {
    fail(`the sign-in ended at ${where(page.url)} (${page.status}), not ${app}/hello`);
  }
  if (!hops.some((h) => h.startsWith(`${app}/.auth/login/aad/callback`))) fail("no callback");

  console.log("== the backend sees the provider's user");
  const seen = echoed(page, "the page after sign-in").headers;
  const grants = await events(provider);
  const idToken = seen["x-ms-token-aad-id-token"] ?? "";
  const sub = JSON.parse(Buffer.from(idToken.split(".")[1] ?? "", "base64url").toString() || "{}").sub;
  if (!sub) fail("the backend got no id_token with a sub");
  if (seen["x-ms-client-principal-id"] !== sub) {
    fail(`X-MS-CLIENT-PRINCIPAL-ID is ${seen["x-ms-client-principal-id"]}, not the provider's sub`);
  }
  if (sub !== USER.login) fail(`sub is ${sub}, not ${USER.login}`);
  if (seen["x-ms-client-principal-name"] !== USER.preferred_username) {
    fail(`X-MS-CLIENT-PRINCIPAL-NAME is ${seen["x-ms-client-principal-name"]}`);
  }
  if (!seen["x-ms-token-aad-access-token"]) fail("no X-MS-TOKEN-AAD-ACCESS-TOKEN");
  const code = grants.filter((e) => e.event === "grant.success" && e.grant === "authorization_code");
  if (code.length !== 1 || code[0].auth !== "private_key_jwt") {
    fail(`expected one authorization_code grant with private_key_jwt: ${JSON.stringify(grants)}`);
  }
  say(`sub ${sub}, ${USER.preferred_username}; the code was redeemed with private_key_jwt`);

  console.log("== refresh: the 60-second access token is refreshed on use");
  const refreshed = () =>
    grants.filter((e) => e.event === "grant.success" && e.grant === "refresh_token" && e.auth === "private_key_jwt");
  // The request above already found its access token inside the refresh margin.
  const after = echoed(await send(`${app}/api/orders`, { accept: "application/json" }), "a request after sign-in");
  grants.splice(0, grants.length, ...(await events(provider)));
  // tollgate asks for its configured scopes first; this provider granted no offline_access
  // (see issueRefreshToken), refuses the wider scope, and grants the refresh without one.
  const narrowed = grants.filter((e) => e.event === "grant.error" && e.grant === "refresh_token" && e.error === "invalid_scope");
  const errors = grants.filter((e) => e.event.endsWith(".error") && !narrowed.includes(e));
  if (errors.length) fail(`the provider refused: ${JSON.stringify(errors)}`);
  if (refreshed().length < 1) fail(`no refresh_token grant with private_key_jwt: ${JSON.stringify(grants)}`);
  if (narrowed.length > refreshed().length) fail("a refresh refused for its scope was not sent again");
  // The refresh brought a new id_token: the user's claims must have come with it.
  if (after.headers["x-ms-client-principal-id"] !== sub) fail("the request after refresh lost the user");
  if (after.headers["x-ms-client-principal-name"] !== USER.preferred_username) {
    fail("the request after refresh lost the user's name");
  }
  const renew = await send(`${app}/.auth/refresh`, { accept: "application/json" });
  if (renew.status !== 200) fail(`/.auth/refresh: ${renew.status}`);
  say(`${refreshed().length} refresh_token grant(s) with private_key_jwt (${narrowed.length} first refused for ` +
    "offline_access, then sent without scope); requests still pass");

  console.log("== logout: tollgate → the provider's end_session_endpoint → back");
  const out = await send(`${app}/.auth/logout?post_logout_redirect_uri=/.auth/logout/complete`);
  if (out.status !== 302 || !out.location?.startsWith(discovery.end_session_endpoint)) {
    fail(`/.auth/logout: ${out.status} to ${out.location && where(out.location)}, not ${discovery.end_session_endpoint}`);
  }
  if (jar.names(app).some((n) => n.startsWith("AppServiceAuthSession"))) fail("session cookies left");
  let confirm = await follow(out.location);
  const { action, fields } = form(confirm);
  confirm = await follow(action, { method: "POST", form: { ...fields, logout: "yes" } });
  if (confirm.url !== `${app}/.auth/logout/complete` || confirm.status !== 200) {
    fail(`the sign-out ended at ${where(confirm.url)} (${confirm.status})`);
  }
  if (!(await events(provider)).some((e) => e.event === "end_session.success")) fail("no end session");
  const again = await send(`${app}/hello`);
  if (again.status !== 302 || !again.location.includes("/.auth/login/aad")) {
    fail(`after logout /hello answered ${again.status}, not the sign-in redirect`);
  }
  say("the provider ended its session and sent the browser back; the app asks for sign-in again");
}

const [mode, ...args] = process.argv.slice(2);
if (mode === "serve") await serve(args);
else if (mode === "drive") await drive(args);
else fail(`unknown mode ${mode}`);
