"""The in-process network guard and the routing self-test.

Contract:
- :func:`install_network_guard` refuses, process-wide and irreversibly, every socket that is not
  ``AF_UNIX`` and every name lookup, raising :class:`~scribed.errors.NetworkBlockedError` (an
  ``OSError``, so libraries treat it as "no network").
- Cluster mode: :func:`allow_endpoint` lets exactly one ``(host, port)`` through, the broker's.
  The host is resolved once, there; a later connect may reach only those addresses and that
  port, name lookups are allowed for that host name alone, and ``bind`` stays refused. One
  endpoint per process, for the life of the process. It sees Python-level sockets only; native
  code calling libc directly is stopped by the systemd unit (``PrivateNetwork=``,
  ``RestrictAddressFamilies=``), not here. The audit hook does not survive exec: every
  process that touches audio installs it itself (:func:`scribed.system.harden.harden_process`),
  and hardening refuses to start child processes, which would run unguarded.
- :func:`network_self_test` reads the routing table (sending nothing) and reports.
- :func:`caller_outside` names the code responsible for a refused call (shared with harden).
"""

from __future__ import annotations

import errno
import os
import socket
import sys
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from loguru import logger

from scribed.errors import NetworkBlockedError

# The Hugging Face stack reads these before touching the Hub: forced, never just defaulted.
OFFLINE_ENV = dict.fromkeys(
    ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "HF_HUB_DISABLE_TELEMETRY", "HF_DATASETS_OFFLINE"), "1"
)


_guard_lock = threading.Lock()
_guard_installed = False
_callbacks: list[Callable[[str], None]] = []
_reporting = threading.local()  # set while we log, so a blocked call inside a log sink cannot recurse

_ALLOWED_FAMILIES = frozenset({int(socket.AF_UNIX)})
_INET_FAMILIES = frozenset({int(socket.AF_INET), int(socket.AF_INET6)})


@dataclass(frozen=True)
class Endpoint:
    """The one remote address a cluster process may reach: ``host`` as configured, ``port``, and
    the ``addresses`` it resolved to at start."""

    host: str
    port: int
    addresses: frozenset[str]

    @property
    def families(self) -> frozenset[int]:
        return frozenset(int(socket.AF_INET6 if ":" in a else socket.AF_INET) for a in self.addresses)

    def allows(self, address: object) -> bool:
        """True for a ``(ip, port, ...)`` socket address that is this endpoint."""
        return (isinstance(address, tuple) and len(address) >= 2 and address[1] == self.port
                and str(address[0]) in self.addresses)

    def names(self, host: object) -> bool:
        """True if a name lookup for ``host`` asks for this endpoint (its name or one of its addresses)."""
        if isinstance(host, bytes):
            host = host.decode("ascii", "replace")
        return isinstance(host, str) and (host.lower() == self.host.lower() or host in self.addresses)


_endpoint: Endpoint | None = None
_resolving = threading.local()  # set while allow_endpoint resolves the host itself
# Frames in the standard library (socket, urllib, http.client) or this module are skipped when
# naming the caller: the useful hint is the first third-party or scribed frame.
_STDLIB_DIR = os.path.dirname(socket.__file__) + os.sep
# Known import-time capability probes that catch the error themselves: refused quietly (DEBUG, no
# callback), so a harmless probe does not look like an attempt to phone home on every start.
_QUIET_PROBES = frozenset({("urllib3/util/connection.py", "_has_ipv6")})


def caller_outside(*skip: str) -> tuple[str, str, int]:
    """(last three parts of the file, function, line) of the innermost frame that is neither in
    the standard library nor in one of the files ``skip``: the useful hint for a refused call."""
    frame: Any = sys._getframe(1)
    while frame is not None and frame.f_code.co_filename.startswith((_STDLIB_DIR, __file__, *skip)):
        frame = frame.f_back
    if frame is None:
        return ("?", "?", 0)
    return ("/".join(Path(frame.f_code.co_filename).parts[-3:]), frame.f_code.co_name, frame.f_lineno)


def _family(family: Any) -> str:
    try:
        return socket.AddressFamily(family).name
    except ValueError:
        return f"family {family}"


def _refuse(detail: str) -> None:
    """Log and report one blocked attempt (unless a known probe), then raise NetworkBlockedError."""
    if not getattr(_reporting, "active", False):
        _reporting.active = True
        try:
            where = caller_outside(__file__)
            detail = f"{detail} (from {where[0]}:{where[2]})"
            if where[:2] in _QUIET_PROBES:
                logger.debug("network blocked (probe): {}", detail)
            else:
                logger.warning("network blocked: {}", detail)
                for callback in list(_callbacks):
                    try:
                        callback(detail)
                    except Exception as exc:  # a broken callback must not un-block the network
                        logger.debug("network guard callback failed: {!r}", exc)
        finally:
            _reporting.active = False
    raise NetworkBlockedError(errno.ENETUNREACH, f"network access blocked by scribed: {detail}")


def _on_new(args: tuple[Any, ...]) -> None:
    # -1 means "family from fileno=": unknown here, so checked again at connect/bind/send.
    if args[1] == -1 or args[1] in _ALLOWED_FAMILIES:
        return
    if _endpoint is not None and args[1] in _endpoint.families:
        return  # a socket alone reaches nothing: where it connects or sends is checked below
    _refuse(f"socket({_family(args[1])})")


def _on_use(event: str) -> Callable[[tuple[Any, ...]], None]:
    def check(args: tuple[Any, ...]) -> None:
        family = getattr(args[0], "family", None)
        if family in _ALLOWED_FAMILIES:
            return
        # sendmsg without an address goes where the (checked) connect went.
        if (_endpoint is not None and family in _INET_FAMILIES and event != "bind"
                and (_endpoint.allows(args[1]) or (event == "sendmsg" and args[1] is None))):
            return
        _refuse(f"{event} {_family(family)} {args[1]!r}")  # the address says where a library tried to go

    return check


def _on_lookup(event: str) -> Callable[[tuple[Any, ...]], None]:
    def check(args: tuple[Any, ...]) -> None:
        if getattr(_resolving, "active", False):
            return
        if event == "getaddrinfo" and _endpoint is not None and _endpoint.names(args[0]):
            return  # the broker's own name (reconnects, TLS): that one query is the allowed one
        _refuse(f"{event} {args[0]!r}")  # DNS queries leave the machine too

    return check


def _on_url(args: tuple[Any, ...]) -> None:
    parts = urlsplit(str(args[0]))
    if parts.scheme not in ("file", "data", ""):  # only scheme://host: a query may be private
        _refuse(f"urllib request to {parts.scheme}://{parts.hostname}")


_HANDLERS: dict[str, Callable[[tuple[Any, ...]], None]] = {
    "socket.__new__": _on_new,
    **{f"socket.{e}": _on_use(e) for e in ("connect", "bind", "sendto", "sendmsg")},
    **{f"socket.{e}": _on_lookup(e) for e in ("getaddrinfo", "gethostbyname", "gethostbyaddr", "getnameinfo")},
    "urllib.Request": _on_url,
    "http.client.connect": lambda args: _refuse(f"http connection to {args[1]}:{args[2]}"),
}


def _audit_hook(event: str, args: tuple[Any, ...]) -> None:
    # Runs for every audited event in the process (opens, imports...): one dict lookup when idle.
    handler = _HANDLERS.get(event)
    if handler is not None:
        handler(args)


def install_network_guard(on_block: Callable[[str], None] | None = None) -> None:
    """Block all non-AF_UNIX networking in this process from now on (idempotent, irreversible).

    Every refused attempt is logged as ``network blocked: ...`` at WARNING and passed to each
    ``on_block`` callback registered so far (a later call only adds its callback). Also forces the
    Hugging Face libraries offline through their environment variables.
    """
    global _guard_installed
    os.environ.update(OFFLINE_ENV)
    with _guard_lock:
        if on_block is not None and on_block not in _callbacks:
            _callbacks.append(on_block)
        if not _guard_installed:
            sys.addaudithook(_audit_hook)
            _guard_installed = True
            logger.debug("network guard installed (only AF_UNIX sockets allowed)")


def network_guard_active() -> bool:
    return _guard_installed


def allow_endpoint(host: str, port: int) -> Endpoint:
    """Let this process reach exactly ``host``:``port`` over TCP from now on (cluster mode's broker).

    Resolves ``host`` here, once, even under the guard (an IP address resolves to itself); the
    addresses found are the only ones a later connect may reach. Idempotent for the same endpoint;
    a different one raises ValueError (one broker per process). Raises OSError (``socket.gaierror``)
    if the name does not resolve. Works before or after :func:`install_network_guard`.
    """
    global _endpoint
    with _guard_lock:
        if _endpoint is not None:
            if (_endpoint.host, _endpoint.port) == (host, port):
                return _endpoint
            raise ValueError(f"the network guard already allows {_endpoint.host}:{_endpoint.port}; "
                             f"a second endpoint ({host}:{port}) is refused")
        _resolving.active = True
        try:
            infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
        finally:
            _resolving.active = False
        _endpoint = Endpoint(host, int(port), frozenset(str(info[4][0]) for info in infos))
    logger.debug("network guard: {}:{} ({}) may be reached", host, port, ", ".join(sorted(_endpoint.addresses)))
    return _endpoint


def allowed_endpoint() -> Endpoint | None:
    """The endpoint :func:`allow_endpoint` let through, if any."""
    return _endpoint


@dataclass(frozen=True)
class NetworkReport:
    """What :func:`network_self_test` found. ``reachable``: a route leaves this machine."""

    guard_active: bool
    reachable: bool
    detail: str


_RTF_UP, _RTF_REJECT, _RTF_LOCAL = 0x0001, 0x0200, 0x80000000
# (file, header lines, iface column, flags column); ipv6_route also lists our own addresses
# (RTF_LOCAL) and multicast (ff00::/8), which lead nowhere.
_ROUTE_TABLES = (("/proc/net/route", 1, 0, 3), ("/proc/net/ipv6_route", 0, 9, 8))


def _off_host_routes() -> set[str] | None:
    """Interfaces with a usable route off this host (in our network namespace); None: unknown."""
    ifaces: set[str] = set()
    for table, header, iface, flags_at in _ROUTE_TABLES:
        try:
            with open(table, encoding="ascii") as fh:
                rows = [line.split() for line in fh.readlines()[header:]]
            for row in rows:
                flags = int(row[flags_at], 16)
                usable = flags & _RTF_UP and not flags & (_RTF_REJECT | _RTF_LOCAL)
                multicast = table.endswith("ipv6_route") and row[0].startswith("ff")
                if row[iface] != "lo" and usable and not multicast:
                    ifaces.add(row[iface])
        except FileNotFoundError:
            if table.endswith("ipv6_route"):
                continue  # no IPv6 in this kernel
            return None
        except (OSError, ValueError, IndexError):
            return None
    return ifaces


def network_self_test() -> NetworkReport:
    """Report the guard state and whether any route leaves this machine. Sends no packet."""
    guard = network_guard_active()
    ifaces = _off_host_routes()
    if ifaces is None:
        reachable, where = True, "routes unknown (cannot read /proc/net/route)"
    elif ifaces:
        reachable, where = True, f"routes off this machine via {', '.join(sorted(ifaces))}"
    else:
        reachable, where = False, "no route off this machine"
    state = "blocked in-process" if guard else "NOT blocked in-process"
    if guard and _endpoint is not None:
        state += f" except the broker {_endpoint.host}:{_endpoint.port}"
    return NetworkReport(guard_active=guard, reachable=reachable, detail=f"network: {state}; {where}")


