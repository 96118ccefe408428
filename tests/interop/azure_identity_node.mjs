// The real Node.js @azure/identity against `tollgate dev`, driven by
// tests/interop/azure_identity.sh (the same checks as azure_identity.py's `token`):
//
//   NODE_MODULES=DIR node azure_identity_node.mjs MODE PROXY_URL ROLE
//
// gets tokens with ManagedIdentityCredential (system- and user-assigned) and
// DefaultAzureCredential from whatever environment the caller passes (App Service or IMDS
// style), checks their claims, and checks that tollgate at PROXY_URL accepts them. Under IMDS,
// msal-node asks for /metadata/identity/oauth2/token/ (with a trailing slash). MODE `entra`:
// ClientSecretCredential and WorkloadIdentityCredential against the dev token endpoint over
// https (AZURE_AUTHORITY_HOST, NODE_EXTRA_CA_CERTS, ...). Never prints a token.
import { createRequire } from "node:module";

// From the node_modules the caller names (ES modules do not read NODE_PATH).
const require = createRequire(`${process.env.NODE_MODULES}/`);
const {
  ClientSecretCredential,
  DefaultAzureCredential,
  ManagedIdentityCredential,
  WorkloadIdentityCredential,
} = require("@azure/identity");

const [mode, proxy, role] = process.argv.slice(2);
const SCOPE = "api://tollgate-dev/.default";
const AUDIENCE = "api://tollgate-dev";
const DEV_ISSUER = "http://127.0.0.1:8079/";
const SYSTEM = "d3e7d3e7-0000-4000-8000-0000000000c1";
const USER_ASSIGNED = "c0ffee00-0000-4000-8000-0000000000a1";

function fail(message) {
  console.error(`FAIL: ${message}`);
  process.exit(1);
}

function claimsOf(token) {
  return JSON.parse(Buffer.from(token.split(".")[1], "base64url").toString("utf8"));
}

async function check(label, credential, appid) {
  let access;
  try {
    access = await credential.getToken(SCOPE);
  } catch (e) {
    fail(`${label}: ${e.name}: ${String(e.message).split("\n")[0]}`);
  }
  const claims = claimsOf(access.token);
  const want = { iss: DEV_ISSUER, aud: AUDIENCE, idtyp: "app", appid };
  for (const [name, value] of Object.entries(want)) {
    if (claims[name] !== value) fail(`${label}: claim ${name} is ${claims[name]}, expected ${value}`);
  }
  if (!(claims.roles || []).includes(role)) fail(`${label}: roles lack ${role}`);
  // expiresOnTimestamp is milliseconds; both protocols must land on the token's exp.
  if (Math.abs(access.expiresOnTimestamp / 1000 - claims.exp) > 5) {
    fail(`${label}: expiresOnTimestamp ${access.expiresOnTimestamp} but exp ${claims.exp}`);
  }
  const answer = await fetch(proxy, { headers: { authorization: `Bearer ${access.token}` } });
  if (answer.status !== 200) fail(`${label}: tollgate answered ${answer.status}`);
  console.log(`  ${label}: token for ${claims.aud} (appid ${claims.appid}); tollgate accepts it (200)`);
}

console.log(`${mode} (Node @azure/identity):`);
if (mode === "entra") {
  // msal-node asks login.microsoftonline.com to vouch for any other authority host unless
  // instance discovery is off.
  const env = process.env;
  const options = { disableInstanceDiscovery: true };
  await check(
    "ClientSecretCredential",
    new ClientSecretCredential(env.AZURE_TENANT_ID, env.AZURE_CLIENT_ID, env.AZURE_CLIENT_SECRET, options),
    env.AZURE_CLIENT_ID,
  );
  await check("WorkloadIdentityCredential", new WorkloadIdentityCredential(options), env.AZURE_CLIENT_ID);
  process.exit(0);
}
await check("ManagedIdentityCredential()", new ManagedIdentityCredential(), SYSTEM);
await check(
  `ManagedIdentityCredential({clientId: ${USER_ASSIGNED}})`,
  new ManagedIdentityCredential({ clientId: USER_ASSIGNED }),
  USER_ASSIGNED,
);
await check("DefaultAzureCredential()", new DefaultAzureCredential(), SYSTEM);
