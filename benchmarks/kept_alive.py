"""POSTs over one kept-alive http.client connection to a loopback server.

The standard library's client costs less per request than httpx, so what is left of a round trip is
more the server's own; translate_throughput and embed_latency (`--client http.client`) both post
through it.
"""

from __future__ import annotations

from http.client import HTTPConnection, RemoteDisconnected


class KeptAlive:
    """One connection to 127.0.0.1:`port`, reopened once when the server has closed it."""

    def __init__(self, port: int, headers: dict[str, str] | None = None, name: str = "") -> None:
        self.port = port
        self.headers = headers or {}
        self.name = name  # named in errors
        self.connection: HTTPConnection | None = None

    def post(self, url: str, body: bytes, headers: dict[str, str]) -> bytes:
        """The answer's body; RuntimeError unless it is a 200."""
        for attempt in (1, 2):  # uvicorn closes a connection idle for 5 s: open a new one once
            if self.connection is None:
                self.connection = HTTPConnection("127.0.0.1", self.port, timeout=300)
            try:
                self.connection.request("POST", url, body=body, headers={**self.headers, **headers})
                response = self.connection.getresponse()
                break
            except (BrokenPipeError, ConnectionResetError, RemoteDisconnected):
                self.connection.close()
                self.connection = None
                if attempt == 2:
                    raise
        answer = response.read()
        if response.status != 200:
            raise RuntimeError(f"{self.name} {url}: {response.status} {answer[:300]!r}".lstrip())
        return answer

    def close(self) -> None:
        if self.connection is not None:
            self.connection.close()
            self.connection = None
