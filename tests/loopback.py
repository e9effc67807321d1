"""The loopback HTTP server the fake KFP and Kubernetes API servers share: a free port on
127.0.0.1, threads per request, started and stopped as a context manager."""
import threading
from http.server import ThreadingHTTPServer


class LoopbackServer:
    """Mixin: ``self._serve(handler_class)`` in ``__post_init__``; the handler finds the fake as ``server.fake``."""

    def _serve(self, handler_class) -> None:
        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), handler_class)
        self._httpd.daemon_threads = True
        self._httpd.fake = self
        # Polled every 0.05 s: shutdown() waits for the next poll.
        self._thread = threading.Thread(target=self._httpd.serve_forever, args=(0.05,), daemon=True)

    @property
    def url(self) -> str:
        host, port = self._httpd.server_address[:2]
        return f"http://{host}:{port}"

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc_info):
        self._httpd.shutdown()
        self._httpd.server_close()
