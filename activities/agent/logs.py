"""The agent's log, streamed to the boot server while it runs, with every known secret redacted.

`LogShipper` is a logging handler: `emit` only appends to a bounded queue (oldest lines dropped
and counted when the boot server is away), and a daemon thread POSTs batches of lines to
`<boot server>/agent-log/<host id>?boot=<boot id>`. A failed POST keeps the batch and backs off;
a batch the boot server refuses (4xx) is dropped and counted, not retried forever; the thread
survives any error of its own. Nothing here ever raises into the agent or blocks it on the
network. The same thread tails the init's own log (`/run/metalflow/init.log`: module loading,
DHCP, what it started) so the boot server has the whole boot, not only the Python part.

`Redactor` is what keeps secrets out: every line (console and boot server alike) goes through
`RedactingFormatter`, which replaces the values registered with `Redactor.add` (the config
drive's URL and its user data, once the agent holds them) and credentials embedded in URLs,
Authorization headers and token-like query parameters.
"""

from __future__ import annotations

import collections
import http.client
import logging
import re
import threading
import time
import urllib.error
import urllib.request
import uuid
from pathlib import Path

REDACTED = "[redacted]"
MIN_SECRET_LEN = 6  # shorter values would redact ordinary words
INIT_LOG = Path("/run/metalflow/init.log")
# One log record's most: a larger one (a dumped inventory, a huge traceback) is cut, so no line can
# exceed what the boot server takes in one POST (worker/agent_logs.py MAX_POST_BYTES, 256 KiB).
MAX_LINE_BYTES = 16 << 10

_URL_USERINFO = re.compile(r"(?i)\b([a-z][a-z0-9+.-]*://)[^/\s@]+@")
_AUTH_HEADER = re.compile(
    r"(?i)\b(authorization|proxy-authorization)([\"']?\s*[:=]\s*[\"']?)(bearer |basic )?[^\s\"',}]+"
)
_TOKEN_PARAM = re.compile(
    r"(?i)([?&;](?:token|access_token|auth|password|passwd|secret|sig|signature|x-amz-signature|"
    r"x-amz-credential|x-amz-security-token)=)[^&\s\"']+"
)
_KERNEL_TOKEN = re.compile(r"\b(metalflow\.token=)\S+")  # the agent token on a PXE boot's command line
_WORD_SPLIT = re.compile(r"[\s\"'=:,;]+")
_PLAIN_WORD = re.compile(r"^[A-Za-z#_-]+$")


class Redactor:
    """The secret values this process holds, and the rules that hide them in text."""

    def __init__(self) -> None:
        self._values: set[str] = set()
        self._lock = threading.Lock()

    def add(self, value: str | bytes | None) -> None:
        """Hide VALUE from every log line from now on: the whole of it, each of its lines, and each
        word in it that looks like a credential (8 characters or more, not only letters: tokens,
        passwords, keys; ordinary words such as `runcmd` or `kubeadm` stay readable)."""
        if value is None:
            return
        text = value.decode(errors="replace") if isinstance(value, bytes) else value
        candidates = {text.strip(), *(line.strip() for line in text.splitlines())}
        candidates |= {w for w in _WORD_SPLIT.split(text) if len(w) >= 8 and not _PLAIN_WORD.match(w)}
        with self._lock:
            self._values |= {c for c in candidates if len(c) >= MIN_SECRET_LEN}

    def redact(self, text: str) -> str:
        with self._lock:
            values = sorted(self._values, key=len, reverse=True)
        for value in values:
            if value in text:
                text = text.replace(value, REDACTED)
        text = _URL_USERINFO.sub(rf"\1{REDACTED}@", text)
        text = _AUTH_HEADER.sub(rf"\1\2\3{REDACTED}", text)
        text = _KERNEL_TOKEN.sub(rf"\1{REDACTED}", text)
        return _TOKEN_PARAM.sub(rf"\1{REDACTED}", text)


# One per process: the activities register what they fetch, the handlers read it.
REDACTOR = Redactor()


class RedactingFormatter(logging.Formatter):
    """A formatter whose whole output (message, arguments, traceback) is redacted."""

    def __init__(self, fmt: str | None = None, redactor: Redactor = REDACTOR) -> None:
        super().__init__(fmt)
        self.redactor = redactor

    def format(self, record: logging.LogRecord) -> str:
        return self.redactor.redact(super().format(record))


def boot_id(proc: Path = Path("/proc/sys/kernel/random/boot_id")) -> str:
    """The kernel's id for this boot (a restarted agent keeps appending to the same log)."""
    try:
        return proc.read_text().strip() or uuid.uuid4().hex
    except OSError:
        return uuid.uuid4().hex


class LogShipper(logging.Handler):
    """Batches formatted lines to URL (the boot server's agent-log endpoint for this host).

    Memory is bounded by `max_lines` and `max_bytes`: when both the queue is full and the boot
    server is away, the oldest lines go and a count of them is sent in their place.
    """

    def __init__(
        self,
        url: str,
        boot: str,
        *,
        redactor: Redactor = REDACTOR,
        init_log: Path | None = INIT_LOG,
        interval: float = 1.0,
        max_lines: int = 5000,
        max_bytes: int = 1 << 20,
        batch_bytes: int = 64 << 10,
        timeout: float = 10.0,
        max_backoff: float = 10.0,
    ) -> None:
        super().__init__()
        self.setFormatter(RedactingFormatter("%(asctime)s %(levelname)s %(name)s: %(message)s", redactor))
        self.redactor = redactor
        self.url = f"{url.rstrip('/')}?boot={boot}"
        self.init_log = init_log
        self.interval, self.timeout, self.max_backoff = interval, timeout, max_backoff
        self.max_lines, self.max_bytes, self.batch_bytes = max_lines, max_bytes, batch_bytes
        self._queue: collections.deque[tuple[int, str]] = collections.deque()
        self._seq = 0
        self._queued_bytes = 0
        self._dropped = 0
        self._cond = threading.Condition()
        self._stopping = False
        self._init_offset = self._load_init_offset()
        self.sent_lines = 0
        self.failed_posts = 0
        self.refused_posts = 0
        self._thread = threading.Thread(target=self._run, name="agent-log-shipper", daemon=True)
        self._thread.start()

    # --- producer side: never blocks on the network, never raises
    def emit(self, record: logging.LogRecord) -> None:
        try:
            self.put(self.format(record))
        except Exception:
            self.handleError(record)

    def put(self, line: str) -> None:
        line = line.replace("\r", "").replace("\n", "\n    ")  # one record, one entry
        data = line.encode()
        if len(data) > MAX_LINE_BYTES:
            cut = len(data) - MAX_LINE_BYTES
            line = data[:MAX_LINE_BYTES].decode(errors="ignore") + f" [agent-log: {cut} bytes cut]"
        line += "\n"
        size = len(line.encode())
        with self._cond:
            self._seq += 1
            self._queue.append((self._seq, line))
            self._queued_bytes += size
            while len(self._queue) > self.max_lines or self._queued_bytes > self.max_bytes:
                self._queued_bytes -= len(self._queue.popleft()[1].encode())
                self._dropped += 1
            if self._queued_bytes >= self.batch_bytes:
                self._cond.notify()

    # --- the shipping thread
    def _take_batch(self) -> tuple[list[str], int, int]:
        with self._cond:
            batch: list[str] = []
            size = last = 0
            for seq, line in self._queue:
                if batch and size + len(line.encode()) > self.batch_bytes:
                    break
                batch.append(line)
                size += len(line.encode())
                last = seq
            return batch, last, self._dropped

    def _ack(self, last: int, sent: int, dropped: int) -> None:
        with self._cond:  # the lines sent only: some may have been dropped meanwhile, newer ones added
            while self._queue and self._queue[0][0] <= last:
                self._queued_bytes -= len(self._queue.popleft()[1].encode())
            self._dropped -= dropped
            self.sent_lines += sent
            self._cond.notify_all()  # drain() waits for this

    def drain(self, timeout: float = 20.0) -> bool:
        """Send what is queued now and wait (at most TIMEOUT seconds) until the boot server took
        it: an activity that ends with the host rebooting (the config drive written, then the
        BMC reboots it into its OS) would otherwise lose its last lines. True when all went."""
        deadline = time.monotonic() + timeout
        with self._cond:
            upto = self._queue[-1][0] if self._queue else 0
            self._cond.notify_all()
            while self._queue and self._queue[0][0] <= upto:
                left = deadline - time.monotonic()
                if left <= 0 or self._stopping:
                    return False
                self._cond.wait(timeout=min(left, 0.5))
        return True

    def _post(self, body: bytes) -> bool | None:
        """True: taken. False: try again later (boot server away, slow, 5xx, 408, 429).
        None: refused for good (another 4xx): resending the same batch cannot help."""
        req = urllib.request.Request(
            self.url, data=body, method="POST", headers={"Content-Type": "text/plain; charset=utf-8"}
        )
        try:
            with urllib.request.urlopen(req, timeout=self.timeout) as resp:
                return 200 <= resp.status < 300
        except urllib.error.HTTPError as err:
            return None if 400 <= err.code < 500 and err.code not in (408, 429) else False
        except (OSError, ValueError, http.client.HTTPException):
            return False

    def _tail_init_log(self) -> None:
        """New lines of the init's log since the last look (the offset survives agent restarts)."""
        if self.init_log is None:
            return
        try:
            with self.init_log.open("rb") as f:
                f.seek(self._init_offset)
                data = f.read(self.batch_bytes)
        except OSError:
            return
        end = data.rfind(b"\n") + 1
        if end == 0:
            return
        for line in data[:end].decode(errors="replace").splitlines():
            self.put(self.redactor.redact(f"init: {line}"))
        self._init_offset += end
        try:
            self.init_log.with_suffix(".shipped").write_text(str(self._init_offset))
        except OSError:
            pass

    def _load_init_offset(self) -> int:
        if self.init_log is None:
            return 0
        try:
            return int(self.init_log.with_suffix(".shipped").read_text())
        except (OSError, ValueError):
            return 0

    def _run(self) -> None:
        backoff = self.interval
        while True:
            with self._cond:
                if not self._stopping:
                    self._cond.wait(timeout=backoff)
                stopping = self._stopping
            try:
                self._tail_init_log()
                sent = self._flush_once()
            except Exception:  # a dead shipper would lose every later line, silently
                sent = False
            if sent:
                backoff = self.interval
            else:
                self.failed_posts += 1
                backoff = min(self.max_backoff, backoff * 2)
            if stopping:
                return

    def _flush_once(self) -> bool:
        """Send everything queued, batch by batch; False when the boot server did not take it."""
        while True:
            batch, last, dropped = self._take_batch()
            if not batch and not dropped:
                return True
            head = (
                f"[agent-log: {dropped} lines dropped: the boot server was away or refused them]\n"
                if dropped
                else ""
            )
            taken = self._post((head + "".join(batch)).encode())
            if taken is False:
                return False
            if taken is None:  # refused for good: count it with the dropped, go on with the rest
                self._ack(last, 0, dropped)
                with self._cond:
                    self._dropped += len(batch)
                self.refused_posts += 1
                continue
            self._ack(last, len(batch), dropped)

    def flush(self) -> None:
        with self._cond:
            self._cond.notify()

    def close(self, wait: float = 2.0) -> None:
        """Stop the thread after one last attempt, waiting at most WAIT seconds."""
        with self._cond:
            self._stopping = True
            self._cond.notify()
        self._thread.join(timeout=wait)
        super().close()

    def pending(self) -> int:
        with self._cond:
            return len(self._queue)


_INSTALLED: list[LogShipper] = []


def drain_installed(timeout: float = 20.0) -> bool:
    """drain() the shipper `install` set up, if any (the agent's activities call it as they end).
    What could not be sent is said on the console, the one log a reboot does not take away."""
    ok = True
    for shipper in _INSTALLED:
        if not shipper.drain(timeout):
            ok = False
            logging.getLogger(__name__).warning(
                "agent log: %d lines not taken by the boot server in %.0fs (%d failed POSTs)",
                shipper.pending(),
                timeout,
                shipper.failed_posts,
            )
    return ok


def install(url: str | None, boot: str | None = None, level: int = logging.INFO) -> LogShipper | None:
    """Redact every handler of the root logger (the console's too) and, with URL, ship to it."""
    root = logging.getLogger()
    for handler in root.handlers:
        fmt = handler.formatter._fmt if handler.formatter else None
        handler.setFormatter(RedactingFormatter(fmt))
    if not url:
        return None
    shipper = LogShipper(url, boot or boot_id())
    shipper.setLevel(level)
    root.addHandler(shipper)
    _INSTALLED.append(shipper)
    return shipper
