#!/usr/bin/env python3
"""A real client from another gRPC stack (Python grpcio) against a running cccgate gateway.

It generates its stubs from proto/cccgate/v1/*.proto with grpc_tools.protoc into a temporary
directory at run time (no generated Python is checked in), then checks, over a channel to the
public plane (and one to the admin plane, `--admin-target`, for Admin):

  * health: Check("") and Check("cccgate.v1.ListingCheck") answer SERVING;
  * Admin.GetStatus: the snapshot in force is the one the facts were computed on;
  * reflection: ListServices names cccgate.v1.ListingCheck and grpc.health.v1.Health, and the file that defines cccgate.v1.ListingCheck describes its
    three methods (reflection v1 first, v1alpha if the server has only that);
  * Check: every listing of the facts file gets its expected decision, reason and certificate;
    every bad listing fails with INVALID_ARGUMENT naming the field; min_snapshot_sequence above
    the snapshot in force gives FAILED_PRECONDITION; a request setting `listings` is refused;
  * CheckBatch: one result per listing, in order, with an error entry for each bad one;
  * CheckStream: lock-step, one request at a time (a single `listing`, several `listings`, a bad
    one alone, then good ones again): one response per request, mirroring its shape, carrying
    listing ids, error entries for bad items, and the stream going on after them.

The expected verdicts come from a JSON facts file written by the Rust side
(tests/gateway_python.rs), which decides them with cccgate_core::check against the very snapshot
the server serves:

  {"snapshot": {"sequence": 7, "content_id": "<32 hex>"},
   "cases": [{"listing": {<Listing fields>},
              "expect": {"decision": "DECISION_ALLOW", "reason": "REASON_CERTIFICATE_VALID",
                         "certificate": null | {"number": ..., "status": "CERTIFICATE_STATUS_VALID",
                                                "product_code": ..., "producer": ...,
                                                "expiry_date": ...}}}],
   "bad": [{"listing": {<Listing fields>}, "field": "product_code"}]}

Enum values are the proto's names. Exit status: 0 when every check passed, 1 when any failed
(each failure is printed with what was expected and what came back), 2 when the client could
not start (missing modules, stubs that do not compile, unreadable facts).

  python3 tests/python/client_test.py --target 127.0.0.1:50051 --facts facts.json
"""

import argparse
import importlib
import importlib.resources
import json
import os
import queue
import sys
import tempfile
import traceback

REQUIREMENTS = "python3 -m pip install -r tests/python/requirements.txt"

try:
    import grpc
    from grpc_health.v1 import health_pb2, health_pb2_grpc
    from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc
    from grpc_tools import protoc
    from google.protobuf import descriptor_pb2, text_format
except ImportError as e:  # pragma: no cover - environment check
    print(f"client_test.py: cannot import the grpc modules ({e}); run: {REQUIREMENTS}",
          file=sys.stderr)
    sys.exit(2)

REPO_ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
SERVICE = "cccgate.v1.ListingCheck"
REQUIRED_SERVICES = ("cccgate.v1.ListingCheck", "grpc.health.v1.Health")
LISTING_FIELDS = ("listing_id", "merchant_id", "product_code", "certificate_number", "model",
                  "event_time")


def short(message):
    """A protobuf message on one line, non-ASCII text as is."""
    return "{" + text_format.MessageToString(message, as_one_line=True, as_utf8=True) + "}"


class SetupError(Exception):
    """The client could not get as far as talking to the server."""


def generate_stubs(proto_dir, out_dir):
    """Compiles every .proto under proto_dir/cccgate/v1 and imports the generated modules."""
    src = os.path.join(proto_dir, "cccgate", "v1")
    try:
        protos = sorted(f for f in os.listdir(src) if f.endswith(".proto"))
    except OSError as e:
        raise SetupError(f"cannot list {src}: {e}") from e
    if not protos:
        raise SetupError(f"no .proto file in {src}")
    well_known = str(importlib.resources.files("grpc_tools") / "_proto")
    args = ["grpc_tools.protoc", f"-I{proto_dir}", f"-I{well_known}",
            f"--python_out={out_dir}", f"--grpc_python_out={out_dir}"]
    args += [os.path.join("cccgate", "v1", p) for p in protos]
    # protoc resolves the file arguments against the -I roots, so run it from proto_dir.
    cwd = os.getcwd()
    try:
        os.chdir(proto_dir)
        rc = protoc.main(args)
    finally:
        os.chdir(cwd)
    if rc != 0:
        raise SetupError(f"grpc_tools.protoc failed (exit {rc}) on {', '.join(protos)} in {src}")
    for pkg in ("cccgate", os.path.join("cccgate", "v1")):
        open(os.path.join(out_dir, pkg, "__init__.py"), "a").close()
    sys.path.insert(0, out_dir)
    pb2 = importlib.import_module("cccgate.v1.cccgate_pb2")
    pb2_grpc = importlib.import_module("cccgate.v1.cccgate_pb2_grpc")
    return pb2, pb2_grpc


class Checks:
    """Collects the outcome of every check; a failure never stops the ones after it."""

    def __init__(self):
        self.passed = 0
        self.failed = []

    def run(self, name, fn):
        try:
            problems = fn() or []
        except grpc.RpcError as e:
            problems = [f"RPC failed: {e.code().name}: {e.details()}"]
        except Exception:  # a bug in this client or an unexpected answer shape
            problems = ["raised:\n" + traceback.format_exc()]
        if problems:
            self.failed.append(name)
            print(f"FAIL {name}")
            for p in problems:
                print(f"       {p}")
        else:
            self.passed += 1
            print(f"ok   {name}")


class Client:
    def __init__(self, channel, admin_channel, pb2, pb2_grpc, facts, timeout):
        self.channel = channel
        self.pb2 = pb2
        self.stub = pb2_grpc.ListingCheckStub(channel)
        self.admin = pb2_grpc.AdminStub(admin_channel)
        self.reflection_path = None
        self.timeout = timeout
        self.sequence = int(facts["snapshot"]["sequence"])
        self.content_id = facts["snapshot"]["content_id"]
        self.cases = facts["cases"]
        self.bad = facts["bad"]
        if not self.cases or not self.bad:
            raise SetupError("the facts file needs at least one case and one bad listing")

    # ---- helpers -------------------------------------------------------------------------

    def listing(self, fields):
        unknown = set(fields) - set(LISTING_FIELDS)
        if unknown:
            raise SetupError(f"unknown listing fields in the facts file: {sorted(unknown)}")
        return self.pb2.Listing(**fields)

    def name(self, enum, value):
        try:
            return enum.Name(value)
        except ValueError:
            return f"<unknown {value}>"

    def snapshot_problems(self, where, response):
        out = []
        if response.snapshot_sequence != self.sequence:
            out.append(f"{where}: snapshot_sequence {response.snapshot_sequence}, "
                       f"expected {self.sequence}")
        if response.snapshot_content_id != self.content_id:
            out.append(f"{where}: snapshot_content_id {response.snapshot_content_id!r}, "
                       f"expected {self.content_id!r}")
        return out

    def verdict_problems(self, where, result, case):
        """What differs between a ListingResult and the expected verdict of a case."""
        pb2 = self.pb2
        want = case["expect"]
        want_id = case["listing"].get("listing_id", "")
        where = f"{where} listing {want_id!r}"
        out = []
        if result.listing_id != want_id:
            # Out of order or mixed up: the rest of the comparison would only add noise.
            return [f"{where}: got the result of listing {result.listing_id!r}: {short(result)}"]
        if result.WhichOneof("outcome") != "verdict":
            return out + [f"{where}: expected a verdict, got {short(result)}"]
        v = result.verdict
        got = (self.name(pb2.Decision, v.decision), self.name(pb2.Reason, v.reason))
        if got != (want["decision"], want["reason"]):
            out.append(f"{where}: got {got[0]}/{got[1]}, expected "
                       f"{want['decision']}/{want['reason']}")
        if v.snapshot_sequence != self.sequence:
            out.append(f"{where}: verdict.snapshot_sequence {v.snapshot_sequence}, "
                       f"expected {self.sequence}")
        cert = want.get("certificate")
        if cert is None:
            if v.HasField("certificate"):
                out.append(f"{where}: unexpected certificate {short(v.certificate)}")
        elif not v.HasField("certificate"):
            out.append(f"{where}: no certificate, expected {cert}")
        else:
            c = v.certificate
            got_cert = {"number": c.number,
                        "status": self.name(pb2.CertificateStatus, c.status),
                        "product_code": c.product_code, "producer": c.producer,
                        "expiry_date": c.expiry_date}
            for k, w in cert.items():
                if got_cert.get(k) != w:
                    out.append(f"{where}: certificate.{k} {got_cert.get(k)!r}, expected {w!r}")
        return out

    def error_problems(self, where, result, bad):
        want_id = bad["listing"].get("listing_id", "")
        where = f"{where} bad listing {want_id!r}"
        if result.listing_id != want_id:
            return [f"{where}: got the result of listing {result.listing_id!r}: {short(result)}"]
        if result.WhichOneof("outcome") != "error":
            return [f"{where}: expected an error entry for field {bad['field']!r}, got "
                    f"{short(result)}"]
        if result.error.field != bad["field"]:
            return [f"{where}: error.field {result.error.field!r}, expected {bad['field']!r} "
                    f"(message {result.error.message!r})"]
        if not result.error.message:
            return [f"{where}: error entry has an empty message"]
        return []

    def item_problems(self, where, result, item):
        kind, fact = item
        if kind == "case":
            return self.verdict_problems(where, result, fact)
        return self.error_problems(where, result, fact)

    def expect_status(self, where, code, call):
        try:
            call()
        except grpc.RpcError as e:
            if e.code() != code:
                return [f"{where}: status {e.code().name} ({e.details()!r}), expected {code.name}"]
            return []
        return [f"{where}: succeeded, expected {code.name}"]

    # ---- health and reflection -----------------------------------------------------------

    def health(self):
        stub = health_pb2_grpc.HealthStub(self.channel)
        out = []
        for service in ("", SERVICE):
            r = stub.Check(health_pb2.HealthCheckRequest(service=service), timeout=self.timeout)
            status = health_pb2.HealthCheckResponse.ServingStatus.Name(r.status)
            if r.status != health_pb2.HealthCheckResponse.SERVING:
                out.append(f"health of {service!r}: {status}, expected SERVING")
        return out

    def reflection_call(self, request):
        """One reflection request, over v1 if the server has it, else v1alpha.

        grpcio-reflection ships only the v1alpha messages; v1's are the same messages under
        another package, so the v1alpha classes serialise v1 requests byte for byte.
        """
        last = None
        for path in ("/grpc.reflection.v1.ServerReflection/ServerReflectionInfo",
                     "/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo"):
            call = self.channel.stream_stream(
                path,
                request_serializer=reflection_pb2.ServerReflectionRequest.SerializeToString,
                response_deserializer=reflection_pb2.ServerReflectionResponse.FromString)
            try:
                responses = list(call(iter([request]), timeout=self.timeout))
                self.reflection_path = path
                return path, responses
            except grpc.RpcError as e:
                if e.code() != grpc.StatusCode.UNIMPLEMENTED:
                    raise
                last = e
        raise last

    def reflection_services(self):
        path, responses = self.reflection_call(
            reflection_pb2.ServerReflectionRequest(list_services=""))
        if len(responses) != 1:
            return [f"{path}: {len(responses)} responses to one list_services request"]
        names = {s.name for s in responses[0].list_services_response.service}
        missing = [s for s in REQUIRED_SERVICES if s not in names]
        if missing:
            return [f"{path}: ListServices lacks {missing}; it lists {sorted(names)}"]
        return []

    def reflection_descriptor(self):
        path, responses = self.reflection_call(
            reflection_pb2.ServerReflectionRequest(file_containing_symbol=SERVICE))
        if len(responses) != 1 or not responses[0].HasField("file_descriptor_response"):
            return [f"{path}: no file descriptor for {SERVICE}: "
                    f"{[short(r) for r in responses]}"]
        methods = {}
        for raw in responses[0].file_descriptor_response.file_descriptor_proto:
            fd = descriptor_pb2.FileDescriptorProto.FromString(raw)
            for svc in fd.service:
                if f"{fd.package}.{svc.name}" == SERVICE:
                    methods = {m.name: (m.client_streaming, m.server_streaming)
                               for m in svc.method}
        want = {"Check": (False, False), "CheckBatch": (False, False),
                "CheckStream": (True, True)}
        if any(methods.get(k) != v for k, v in want.items()):
            return [f"{path}: {SERVICE} methods (client_streaming, server_streaming) are "
                    f"{methods}, expected at least {want}"]
        return []

    def admin_status(self):
        s = self.admin.GetStatus(self.pb2.GetStatusRequest(), timeout=self.timeout)
        if not s.HasField("snapshot"):
            return ["Admin.GetStatus: no snapshot in force"]
        got = (s.snapshot.sequence, s.snapshot.content_id)
        if got != (self.sequence, self.content_id):
            return [f"Admin.GetStatus: snapshot {got}, the facts were computed on "
                    f"{(self.sequence, self.content_id)}"]
        return []

    # ---- ListingCheck --------------------------------------------------------------------

    def check_cases(self):
        out = []
        for case in self.cases:
            req = self.pb2.CheckRequest(listing=self.listing(case["listing"]))
            resp = self.stub.Check(req, timeout=self.timeout)
            where = "Check"
            if len(resp.results) != 0:
                out.append(f"{where}: {len(resp.results)} entries in results, expected none")
            out += self.snapshot_problems(where, resp)
            out += self.verdict_problems(where, resp.result, case)
        return out

    def check_bad(self):
        out = []
        for bad in self.bad:
            req = self.pb2.CheckRequest(listing=self.listing(bad["listing"]))
            where = f"Check of bad listing {bad['listing'].get('listing_id', '')!r}"
            try:
                self.stub.Check(req, timeout=self.timeout)
                out.append(f"{where}: succeeded, expected INVALID_ARGUMENT")
            except grpc.RpcError as e:
                if e.code() != grpc.StatusCode.INVALID_ARGUMENT:
                    out.append(f"{where}: {e.code().name} ({e.details()!r}), "
                               f"expected INVALID_ARGUMENT")
                elif bad["field"] not in (e.details() or ""):
                    out.append(f"{where}: message {e.details()!r} does not name the field "
                               f"{bad['field']!r}")
        return out

    def check_min_sequence(self):
        listing = self.listing(self.cases[0]["listing"])
        out = self.expect_status(
            f"Check with min_snapshot_sequence {self.sequence + 1}",
            grpc.StatusCode.FAILED_PRECONDITION,
            lambda: self.stub.Check(self.pb2.CheckRequest(
                listing=listing, min_snapshot_sequence=self.sequence + 1), timeout=self.timeout))
        resp = self.stub.Check(self.pb2.CheckRequest(
            listing=listing, min_snapshot_sequence=self.sequence), timeout=self.timeout)
        out += self.verdict_problems(f"Check with min_snapshot_sequence {self.sequence}",
                                     resp.result, self.cases[0])
        return out

    def check_refuses_listings(self):
        listing = self.listing(self.cases[0]["listing"])
        return self.expect_status(
            "Check with `listings` set", grpc.StatusCode.INVALID_ARGUMENT,
            lambda: self.stub.Check(self.pb2.CheckRequest(listing=listing, listings=[listing]),
                                    timeout=self.timeout))

    def mixed_items(self):
        """Every case and every bad listing, the bad ones spread among the good ones."""
        items = [("case", c) for c in self.cases]
        step = max(1, len(items) // (len(self.bad) + 1))
        for i, bad in enumerate(self.bad):
            items.insert(min(len(items), (i + 1) * step + i), ("bad", bad))
        return items

    def check_batch(self):
        items = self.mixed_items()
        req = self.pb2.CheckBatchRequest(listings=[self.listing(f["listing"]) for _, f in items])
        resp = self.stub.CheckBatch(req, timeout=self.timeout)
        out = self.snapshot_problems("CheckBatch", resp)
        if len(resp.results) != len(items):
            return out + [f"CheckBatch: {len(resp.results)} results for {len(items)} listings"]
        for i, (result, item) in enumerate(zip(resp.results, items)):
            out += self.item_problems(f"CheckBatch[{i}]", result, item)
        return out

    def check_stream(self):
        """Lock-step: each request is sent only after the previous response came back, so the
        server must answer per message (not at the end of the stream) and go on after errors."""
        pb2 = self.pb2
        items = self.mixed_items()
        cases = [("case", c) for c in self.cases]
        bads = [("bad", b) for b in self.bad]
        # (request, expected items, True when the request used `listing`)
        plan = [
            (cases[0], True),
            (items, False),          # several listings, bad ones among them
            (bads[0], True),         # a bad listing alone: an error entry, the stream goes on
            (cases[-1], True),
            (cases, False),
        ]
        requests = queue.Queue()

        def request_iter():
            while True:
                r = requests.get()
                if r is None:
                    return
                yield r

        responses = self.stub.CheckStream(request_iter(), timeout=self.timeout)
        out = []
        try:
            for n, (what, single) in enumerate(plan):
                where = f"CheckStream message {n}"
                if single:
                    requests.put(pb2.CheckRequest(listing=self.listing(what[1]["listing"])))
                else:
                    requests.put(pb2.CheckRequest(
                        listings=[self.listing(f["listing"]) for _, f in what]))
                try:
                    resp = next(responses)
                except StopIteration:
                    return out + [f"{where}: the stream ended instead of answering"]
                out += self.snapshot_problems(where, resp)
                if single:
                    if not resp.HasField("result") or len(resp.results) != 0:
                        out.append(f"{where}: answer to `listing` should fill `result` only; "
                                   f"got result={resp.HasField('result')}, "
                                   f"{len(resp.results)} results")
                        continue
                    out += self.item_problems(where, resp.result, what)
                else:
                    if resp.HasField("result") or len(resp.results) != len(what):
                        out.append(f"{where}: answer to {len(what)} `listings` should fill "
                                   f"`results` only; got result={resp.HasField('result')}, "
                                   f"{len(resp.results)} results")
                        continue
                    for i, (result, item) in enumerate(zip(resp.results, what)):
                        out += self.item_problems(f"{where} results[{i}]", result, item)
        finally:
            requests.put(None)
        rest = list(responses)
        if rest:
            out.append(f"CheckStream: {len(rest)} responses after the last request")
        if responses.code() != grpc.StatusCode.OK:
            out.append(f"CheckStream ended with {responses.code().name}: {responses.details()}")
        return out


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--target", required=True, help="host:port of the gateway, e.g. "
                        "127.0.0.1:50051")
    parser.add_argument("--admin-target", default=None, help="host:port of the gateway's "
                        "admin plane (default: --target)")
    parser.add_argument("--facts", required=True, help="JSON file of listings and the verdicts "
                        "expected for them (see the module doc)")
    parser.add_argument("--proto-dir", default=os.path.join(REPO_ROOT, "proto"),
                        help="root of the .proto files (default: the repository's proto/)")
    parser.add_argument("--timeout", type=float, default=10.0, help="seconds per RPC")
    args = parser.parse_args()

    try:
        with open(args.facts, encoding="utf-8") as f:
            facts = json.load(f)
    except (OSError, ValueError) as e:
        print(f"client_test.py: cannot read the facts file {args.facts}: {e}", file=sys.stderr)
        return 2

    with tempfile.TemporaryDirectory(prefix="cccgate-pystubs-") as out_dir:
        try:
            pb2, pb2_grpc = generate_stubs(os.path.abspath(args.proto_dir), out_dir)
        except (SetupError, ImportError) as e:
            print(f"client_test.py: cannot generate the stubs: {e}", file=sys.stderr)
            return 2
        with grpc.insecure_channel(args.target) as channel, \
                grpc.insecure_channel(args.admin_target or args.target) as admin_channel:
            try:
                grpc.channel_ready_future(channel).result(timeout=args.timeout)
            except grpc.FutureTimeoutError:
                print(f"client_test.py: no gRPC server at {args.target} within "
                      f"{args.timeout}s", file=sys.stderr)
                return 2
            try:
                client = Client(channel, admin_channel, pb2, pb2_grpc, facts, args.timeout)
            except (SetupError, KeyError, TypeError, ValueError) as e:
                print(f"client_test.py: bad facts file {args.facts}: {e!r}", file=sys.stderr)
                return 2
            checks = Checks()
            checks.run("health: overall and cccgate.v1.ListingCheck are SERVING", client.health)
            checks.run("reflection: ListServices names ListingCheck and Health",
                       client.reflection_services)
            checks.run("reflection: the descriptor of cccgate.v1.ListingCheck",
                       client.reflection_descriptor)
            checks.run("Admin.GetStatus: the snapshot in force is the facts' snapshot",
                       client.admin_status)
            checks.run(f"Check: {len(client.cases)} listings get their expected verdicts",
                       client.check_cases)
            checks.run(f"Check: {len(client.bad)} bad listings get INVALID_ARGUMENT naming "
                       "the field", client.check_bad)
            checks.run("Check: min_snapshot_sequence above the snapshot is FAILED_PRECONDITION",
                       client.check_min_sequence)
            checks.run("Check: a request with `listings` is INVALID_ARGUMENT",
                       client.check_refuses_listings)
            checks.run("CheckBatch: every result in order, error entries for bad listings",
                       client.check_batch)
            checks.run("CheckStream: one response per message, errors inline, stream goes on",
                       client.check_stream)

    if client.reflection_path:
        print(f"(reflection answered on {client.reflection_path})")
    print(f"python grpcio client against {args.target}: {checks.passed} checks passed, "
          f"{len(checks.failed)} failed")
    if checks.failed:
        print("failed: " + "; ".join(checks.failed))
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
