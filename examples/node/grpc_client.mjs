// A Node.js gRPC client of cccgate, with @grpc/grpc-js and @grpc/proto-loader (no protoc, no
// generated code): Check each listing, then CheckBatch them all.
//
//   cd examples/node && npm ci
//   node grpc_client.mjs 127.0.0.1:50051 listings.json [--token TOKEN]
//
// listings.json is a JSON array of listings (camelCase or proto names). Prints one JSON
// object: {"check": [CheckResponse...], "batch": CheckBatchResponse}, enums as names and
// uint64 as strings (the proto3 JSON mapping). A failed call prints {"error": {code, details}}
// in its place.
import { readFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import grpc from '@grpc/grpc-js';
import protoLoader from '@grpc/proto-loader';

const here = dirname(fileURLToPath(import.meta.url));
const [target, file, ...rest] = process.argv.slice(2);
if (!target || !file) {
  console.error('usage: node grpc_client.mjs HOST:PORT listings.json [--token TOKEN]');
  process.exit(2);
}
const token = rest[0] === '--token' ? rest[1] : undefined;

const definition = protoLoader.loadSync(join(here, '../../proto/cccgate/v1/cccgate.proto'), {
  keepCase: false, longs: String, enums: String, defaults: false, oneofs: true,
});
const { cccgate } = grpc.loadPackageDefinition(definition);
const client = new cccgate.v1.ListingCheck(target, grpc.credentials.createInsecure());
const metadata = new grpc.Metadata();
if (token) metadata.set('authorization', `Bearer ${token}`);

const call = (method, request) =>
  new Promise((resolve) => {
    client[method](request, metadata, { deadline: Date.now() + 10_000 }, (err, response) => {
      resolve(err ? { error: { code: grpc.status[err.code], details: err.details } } : response);
    });
  });

// proto-loader objects take lowerCamelCase names: accept the .proto's names too, as the
// gateway's HTTP/JSON does.
const camel = (o) => Object.fromEntries(
  Object.entries(o).map(([k, v]) => [k.replace(/_([a-z])/g, (_, c) => c.toUpperCase()), v]));
const listings = JSON.parse(readFileSync(file, 'utf8')).map(camel);
const check = [];
for (const listing of listings) check.push(await call('check', { listing }));
const batch = await call('checkBatch', { listings });
console.log(JSON.stringify({ check, batch }));
client.close();
