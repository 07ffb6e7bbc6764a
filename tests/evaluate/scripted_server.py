"""A real HTTP server on 127.0.0.1 (an ephemeral port) that answers each route from a script: a list of
replies given in order, the last one repeated. Every request is recorded (method, path, JSON body)."""

import json
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


@dataclass
class Reply:
    status: int = 200
    body: Any = None  # a JSON value, or bytes sent as they are
    headers: dict[str, str] = field(default_factory=dict)
    delay_s: float = 0.0


Route = list[Reply] | Callable[[dict], Reply]


class ScriptedServer:
    def __init__(self, routes: dict[tuple[str, str], Route]) -> None:
        self.routes = {key: (list(value) if isinstance(value, list) else value) for key, value in routes.items()}
        self.requests: list[tuple[str, str, Any]] = []
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: object) -> None:
                pass

            def _answer(self, method: str) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(length) if length else b""
                body = json.loads(raw) if raw else None
                server.requests.append((method, self.path, body))
                route = server.routes.get((method, self.path))
                if route is None:
                    reply = Reply(404, {"detail": "Not Found"})
                elif callable(route):
                    reply = route(body)
                else:
                    reply = route.pop(0) if len(route) > 1 else route[0]
                time.sleep(reply.delay_s)
                data = reply.body if isinstance(reply.body, bytes) else json.dumps(reply.body).encode()
                self.send_response(reply.status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                for key, value in reply.headers.items():
                    self.send_header(key, value)
                self.end_headers()
                self.wfile.write(data)

            def do_GET(self) -> None:
                self._answer("GET")

            def do_POST(self) -> None:
                self._answer("POST")

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def posts(self, path: str) -> list[Any]:
        return [body for method, p, body in self.requests if method == "POST" and p == path]

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()

    def __enter__(self) -> "ScriptedServer":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def models(*ids: str) -> Reply:
    return Reply(200, {"object": "list", "data": [{"id": i, "object": "model"} for i in ids]})


def chat_reply(text: str) -> Reply:
    choice = {"index": 0, "finish_reason": "stop", "message": {"role": "assistant", "content": text}}
    return Reply(200, {"object": "chat.completion", "choices": [choice]})


def openai_error(status: int, kind: str, message: str) -> Reply:
    return Reply(status, {"error": {"message": message, "type": kind, "param": None, "code": status}})


def closed_port_url() -> str:
    """The URL of a port nothing listens on (bound, then released)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"http://127.0.0.1:{port}/v1"
