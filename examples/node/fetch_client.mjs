// An HTTP/JSON client of cccgate with Node's built-in fetch (no dependency): POST /v1/check
// for each listing, then POST /v1/check:batch with them all.
//
//   node fetch_client.mjs http://127.0.0.1:50051 listings.json [--token TOKEN]
//
// Prints one JSON object: {"check": [{status, body}...], "batch": {status, body}}, where body
// is the gateway's proto3 JSON answer or its error {"code", "message", "field"}.
import { readFileSync } from 'node:fs';

const [base, file, ...rest] = process.argv.slice(2);
if (!base || !file) {
  console.error('usage: node fetch_client.mjs http://HOST:PORT listings.json [--token TOKEN]');
  process.exit(2);
}
const token = rest[0] === '--token' ? rest[1] : undefined;
const headers = { 'content-type': 'application/json' };
if (token) headers.authorization = `Bearer ${token}`;

async function post(path, body) {
  const response = await fetch(new URL(path, base), {
    method: 'POST', headers, body: JSON.stringify(body), signal: AbortSignal.timeout(10_000),
  });
  return { status: response.status, body: await response.json() };
}

const listings = JSON.parse(readFileSync(file, 'utf8'));
const check = [];
for (const listing of listings) check.push(await post('/v1/check', { listing }));
const batch = await post('/v1/check:batch', { listings });
console.log(JSON.stringify({ check, batch }));
