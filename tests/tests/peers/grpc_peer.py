"""A gRPC peer for kernel_http2: `server PORT LOG` serves demo.Greeter with
generic handlers (no generated code) and an interceptor that writes one line
per call, `method code`, to LOG: the server's own record. `client PORT N`
makes N rounds of calls: Hello (unary), Stream (server streaming, 5
messages), Fail (answers UNAVAILABLE) and, every 5th round, Big (a 1 MiB
response, so the trailers follow a large DATA frame)."""
import sys
import threading
from concurrent import futures

import grpc

SERVICE = "demo.Greeter"
BIG = b"x" * (1 << 20)


def ident(b):
    return b


class Log(grpc.ServerInterceptor):
    def __init__(self, path):
        self.f = open(path, "a", buffering=1)
        self.lock = threading.Lock()

    def record(self, method, code):
        with self.lock:
            self.f.write(f"{method} {code}\n")

    def intercept_service(self, continuation, details):
        handler = continuation(details)
        if handler is None:
            return None
        method = details.method.rsplit("/", 1)[-1]
        log = self

        def code_of(ctx):
            c = ctx.code()
            return 0 if c is None else c.value[0]

        if handler.unary_unary:
            inner = handler.unary_unary

            def unary(req, ctx):
                try:
                    out = inner(req, ctx)
                except Exception:
                    log.record(method, code_of(ctx) or 2)
                    raise
                log.record(method, code_of(ctx))
                return out

            return grpc.unary_unary_rpc_method_handler(
                unary, request_deserializer=ident, response_serializer=ident
            )
        if handler.unary_stream:
            inner_s = handler.unary_stream

            def stream(req, ctx):
                try:
                    yield from inner_s(req, ctx)
                except Exception:
                    log.record(method, code_of(ctx) or 2)
                    raise
                log.record(method, code_of(ctx))

            return grpc.unary_stream_rpc_method_handler(
                stream, request_deserializer=ident, response_serializer=ident
            )
        return handler


def hello(req, ctx):
    return b"hello " + req


def stream(req, ctx):
    for i in range(5):
        yield b"part %d" % i


def fail(req, ctx):
    ctx.abort(grpc.StatusCode.UNAVAILABLE, "down for the test")


def big(req, ctx):
    return BIG


def serve(port, log):
    server = grpc.server(
        futures.ThreadPoolExecutor(max_workers=4), interceptors=[Log(log)]
    )
    u = lambda f: grpc.unary_unary_rpc_method_handler(
        f, request_deserializer=ident, response_serializer=ident
    )
    handlers = {
        "Hello": u(hello),
        "Fail": u(fail),
        "Big": u(big),
        "Stream": grpc.unary_stream_rpc_method_handler(
            stream, request_deserializer=ident, response_serializer=ident
        ),
    }
    server.add_generic_rpc_handlers(
        (grpc.method_handlers_generic_handler(SERVICE, handlers),)
    )
    server.add_insecure_port(f"127.0.0.1:{port}")
    server.start()
    print("ready", flush=True)
    server.wait_for_termination()


def client(port, rounds):
    opts = [("grpc.max_receive_message_length", 4 << 20)]
    with grpc.insecure_channel(f"127.0.0.1:{port}", options=opts) as ch:
        call = lambda m: ch.unary_unary(
            f"/{SERVICE}/{m}", request_serializer=ident, response_deserializer=ident
        )
        streaming = ch.unary_stream(
            f"/{SERVICE}/Stream", request_serializer=ident, response_deserializer=ident
        )
        for i in range(rounds):
            call("Hello")(b"world", timeout=10)
            assert len(list(streaming(b"s", timeout=10))) == 5
            try:
                call("Fail")(b"f", timeout=10)
                raise SystemExit("Fail did not fail")
            except grpc.RpcError as e:
                assert e.code() == grpc.StatusCode.UNAVAILABLE, e.code()
            if i % 5 == 0:
                assert len(call("Big")(b"b", timeout=10)) == len(BIG)


if __name__ == "__main__":
    if sys.argv[1] == "server":
        serve(int(sys.argv[2]), sys.argv[3])
    else:
        client(int(sys.argv[2]), int(sys.argv[3]))
