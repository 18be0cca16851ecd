"""A wire-level fake Kubernetes API server (stdlib only) for tandem's end-to-end tests.

Speaks plain HTTP/1.1 on loopback, JSON only; accepts any token unless ``authorization=True``,
which turns on bearer-token authentication and RBAC enforcement (``rbac.py``). See README.md in
this directory for what it covers and what it does not.

In-process use::

    fake = FakeApiServer()            # picks a free port on 127.0.0.1
    fake.start()
    fake.write_kubeconfig(path)
    fake.put({"apiVersion": "v1", "kind": "Service", ...})
    ...
    fake.stop()                       # abrupt: listener and every open connection are closed
    fake.start()                      # same port, same store
    fake.close()
"""

from __future__ import annotations

import base64
import contextlib
import copy
import http.server
import json
import os
import socket
import socketserver
import threading
import time
import uuid
from bisect import bisect_right
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any, Callable, Iterable
from urllib.parse import parse_qs, unquote, urlsplit

try:  # imported as tests.fakeapi.server or fakeapi.server (package), or as a plain module
    from . import rbac
except ImportError:  # pragma: no cover
    import rbac  # type: ignore[no-redef]

# --------------------------------------------------------------------------- resources


@dataclass(frozen=True)
class Resource:
    group: str          # "" for the core group
    version: str
    plural: str
    kind: str
    namespaced: bool = True
    status_subresource: bool = False

    @property
    def api_version(self) -> str:
        return f"{self.group}/{self.version}" if self.group else self.version

    @property
    def key(self) -> tuple[str, str]:
        return (self.group, self.plural)


RESOURCES: list[Resource] = [
    Resource("networking.k8s.io", "v1", "ingresses", "Ingress", True, True),
    Resource("networking.k8s.io", "v1", "ingressclasses", "IngressClass", False),
    Resource("", "v1", "services", "Service", True, True),
    Resource("", "v1", "endpoints", "Endpoints", True),
    Resource("discovery.k8s.io", "v1", "endpointslices", "EndpointSlice", True),
    Resource("", "v1", "secrets", "Secret", True),
    Resource("", "v1", "configmaps", "ConfigMap", True),
    Resource("", "v1", "namespaces", "Namespace", False, True),
    Resource("", "v1", "pods", "Pod", True, True),
    Resource("coordination.k8s.io", "v1", "leases", "Lease", True),
    Resource("events.k8s.io", "v1", "events", "Event", True),
    Resource("", "v1", "events", "Event", True),
    Resource("", "v1", "serviceaccounts", "ServiceAccount", True),
    Resource("rbac.authorization.k8s.io", "v1", "roles", "Role", True),
    Resource("rbac.authorization.k8s.io", "v1", "rolebindings", "RoleBinding", True),
    Resource("rbac.authorization.k8s.io", "v1", "clusterroles", "ClusterRole", False),
    Resource("rbac.authorization.k8s.io", "v1", "clusterrolebindings", "ClusterRoleBinding", False),
]
_BY_KEY = {r.key: r for r in RESOURCES}
_BY_GVK = {(r.api_version, r.kind): r for r in RESOURCES}
_BY_NAME: dict[str, Resource] = {}
for _r in RESOURCES:  # "ingresses", "ingress", "Ingress"; the events.k8s.io Event wins for "events"
    for _n in (_r.plural, _r.kind.lower(), _r.kind):
        _BY_NAME.setdefault(_n, _r)


def resource_for(name_or_obj: str | dict) -> Resource:
    """A Resource from a plural/kind name ("ingresses", "Ingress") or from an object."""
    if isinstance(name_or_obj, dict):
        r = _BY_GVK.get((name_or_obj.get("apiVersion"), name_or_obj.get("kind")))
        if r is None:
            raise KeyError(f"unknown apiVersion/kind {name_or_obj.get('apiVersion')}/{name_or_obj.get('kind')}")
        return r
    if isinstance(name_or_obj, Resource):
        return name_or_obj
    if "/" in name_or_obj:  # "group/plural"
        g, _, p = name_or_obj.rpartition("/")
        return _BY_KEY[("" if g in ("core", "v1") else g, p)]
    return _BY_NAME[name_or_obj]


def now_rfc3339(micro: bool = False) -> str:
    d = datetime.now(timezone.utc)
    return d.strftime("%Y-%m-%dT%H:%M:%S.%fZ") if micro else d.strftime("%Y-%m-%dT%H:%M:%SZ")


# --------------------------------------------------------------------------- helpers


def status_obj(code: int, reason: str, message: str, details: dict | None = None) -> dict:
    s = {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
         "message": message, "reason": reason, "code": code}
    if details:
        s["details"] = details
    return s


class ApiError(Exception):
    def __init__(self, code: int, reason: str, message: str, details: dict | None = None):
        super().__init__(message)
        self.status = status_obj(code, reason, message, details)
        self.code = code


def merge_patch(target: Any, patch: Any) -> Any:
    """RFC 7386 JSON merge patch."""
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    result = dict(target) if isinstance(target, dict) else {}
    for k, v in patch.items():
        if v is None:
            result.pop(k, None)
        else:
            result[k] = merge_patch(result.get(k), v)
    return result


def _ptr(path: str) -> list[str]:
    if path == "":
        return []
    return [p.replace("~1", "/").replace("~0", "~") for p in path.lstrip("/").split("/")]


def json_patch(doc: Any, ops: list[dict]) -> Any:
    """RFC 6902 JSON patch (add, remove, replace, test, copy, move)."""
    doc = copy.deepcopy(doc)

    def parent(path):
        parts = _ptr(path)
        cur = doc
        for p in parts[:-1]:
            cur = cur[int(p)] if isinstance(cur, list) else cur[p]
        return cur, parts[-1]

    def get(path):
        cur = doc
        for p in _ptr(path):
            cur = cur[int(p)] if isinstance(cur, list) else cur[p]
        return cur

    for op in ops:
        kind, path = op["op"], op["path"]
        try:
            if kind == "test":
                if get(path) != op["value"]:
                    raise ApiError(422, "Invalid", f"json patch test failed at {path}")
                continue
            if kind in ("copy", "move"):
                value = copy.deepcopy(get(op["from"]))
                if kind == "move":
                    p, last = parent(op["from"])
                    if isinstance(p, list):
                        p.pop(int(last))
                    else:
                        del p[last]
                kind, op = "add", {"op": "add", "path": path, "value": value}
            if path == "":
                if kind in ("add", "replace"):
                    doc = copy.deepcopy(op["value"])
                    continue
            p, last = parent(path)
            if kind == "add":
                if isinstance(p, list):
                    p.insert(len(p) if last == "-" else int(last), copy.deepcopy(op["value"]))
                else:
                    p[last] = copy.deepcopy(op["value"])
            elif kind == "replace":
                if isinstance(p, list):
                    p[int(last)] = copy.deepcopy(op["value"])
                else:
                    if last not in p:
                        raise KeyError(last)
                    p[last] = copy.deepcopy(op["value"])
            elif kind == "remove":
                if isinstance(p, list):
                    p.pop(int(last))
                else:
                    del p[last]
            else:
                raise ApiError(400, "BadRequest", f"unsupported json patch op {kind}")
        except (KeyError, IndexError, ValueError, TypeError) as e:
            raise ApiError(422, "Invalid", f"json patch {op} failed: {e!r}") from None
    return doc


def _lookup(obj: dict, dotted: str) -> Any:
    cur: Any = obj
    for part in dotted.split("."):
        if not isinstance(cur, dict):
            return None
        cur = cur.get(part)
    return cur


def parse_field_selector(sel: str | None) -> list[tuple[str, str, str]]:
    out = []
    for term in filter(None, (sel or "").split(",")):
        if "!=" in term:
            k, v = term.split("!=", 1)
            out.append((k.strip(), "!=", v.strip()))
        elif "==" in term:
            k, v = term.split("==", 1)
            out.append((k.strip(), "=", v.strip()))
        elif "=" in term:
            k, v = term.split("=", 1)
            out.append((k.strip(), "=", v.strip()))
        else:
            raise ApiError(400, "BadRequest", f"invalid field selector term {term!r}")
    return out


def parse_label_selector(sel: str | None) -> list[tuple[str, str, str | None]]:
    """Equality-based terms and bare existence (`k`, `!k`); set-based terms are not supported."""
    out: list[tuple[str, str, str | None]] = []
    for term in filter(None, (t.strip() for t in (sel or "").split(","))):
        if " in " in term or " notin " in term:
            raise ApiError(400, "BadRequest", f"set-based label selectors are not supported by the fake: {term!r}")
        if "!=" in term:
            k, v = term.split("!=", 1)
            out.append((k.strip(), "!=", v.strip()))
        elif "=" in term:
            k, v = term.split("==", 1) if "==" in term else term.split("=", 1)
            out.append((k.strip(), "=", v.strip()))
        elif term.startswith("!"):
            out.append((term[1:].strip(), "!exists", None))
        else:
            out.append((term, "exists", None))
    return out


def selectors_match(obj: dict | None, fsel: list, lsel: list) -> bool:
    if obj is None:
        return False
    for k, op, v in fsel:
        actual = _lookup(obj, k)
        actual = "" if actual is None else str(actual)
        if (actual == v) != (op == "="):
            return False
    labels = (obj.get("metadata") or {}).get("labels") or {}
    for k, op, v in lsel:
        if op == "exists" and k not in labels:
            return False
        if op == "!exists" and k in labels:
            return False
        if op == "=" and labels.get(k) != v:
            return False
        if op == "!=" and labels.get(k) == v:
            return False
    return True


# --------------------------------------------------------------------------- store records


@dataclass
class Stored:
    obj: dict
    raw: bytes  # the object's JSON, rendered once per write


@dataclass
class WatchRecord:
    rv: int
    rkey: tuple[str, str]
    namespace: str
    type: str           # ADDED / MODIFIED / DELETED
    obj: dict
    raw: bytes
    prev: dict | None   # previous state, for selector transitions


@dataclass
class Write:
    """One recorded write request (status writes, events, leases, everything)."""
    time: float
    method: str
    path: str
    query: str
    resource: str
    namespace: str
    name: str
    subresource: str
    client: str          # bearer token, or /__client/<id> path prefix, or ""
    user_agent: str
    content_type: str
    body: Any
    code: int
    result: Any = None

    @property
    def is_status(self) -> bool:
        return self.subresource == "status"


@dataclass
class Request:
    """One request as received (``code`` is filled in when the answer is sent; 0 meanwhile)."""
    time: float
    method: str
    path: str            # path?query, without the /__client/<id> prefix
    client: str
    user_agent: str
    code: int = 0
    # What the request asks for, as the authorizer reads it (filled in for every API request,
    # whether authorization is on or not; empty for /__fake/ control requests):
    user: str = ""       # authenticated user name ("" if authorization is off and no token is known)
    verb: str = ""       # get, list, watch, create, update, patch, delete, deletecollection; or the
                         # lower-case method of a non-resource request (/version: "get")
    api_group: str = ""
    resource: str = ""   # plural, "" for a non-resource request
    subresource: str = ""
    namespace: str = ""
    name: str = ""
    authz: str = ""      # "allowed", "denied", "unauthenticated"; "" when authorization is off

    @property
    def is_watch(self) -> bool:
        return "watch=true" in self.path or "watch=1" in self.path

    @property
    def resource_path(self) -> str:
        return self.path.split("?", 1)[0]


@dataclass
class Denial:
    """A request refused by authentication (401) or authorization (403)."""
    time: float
    code: int            # 401 or 403
    client: str
    user: str
    groups: list
    method: str
    path: str            # path?query, without the /__client/<id> prefix
    verb: str
    api_group: str
    resource: str        # plural, "" for a non-resource request
    subresource: str
    namespace: str
    name: str
    message: str         # the Status message the client got

    @property
    def combined_resource(self) -> str:
        return f"{self.resource}/{self.subresource}" if self.subresource else self.resource


@dataclass
class _Fault:
    remaining: int
    code: int
    match: Callable[[str, str], bool] | None
    close: bool = False


# --------------------------------------------------------------------------- the server


class _HttpServer(http.server.ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 128

    def __init__(self, addr, handler, fake: "FakeApiServer"):
        self.fake = fake
        super().__init__(addr, handler)


class FakeApiServer:
    """The fake API server: an in-memory store, watch history, and the HTTP front end."""

    def __init__(self, port: int = 0, host: str = "127.0.0.1", *, history_limit: int = 10_000,
                 bookmark_interval: float = 1.0, watch_timeout_cap: float | None = None,
                 record_requests: bool = True, authorization: bool = False,
                 rbac_objects: Iterable[dict] = (), tokens: dict[str, Any] | None = None,
                 bootstrap_policy: bool = True):
        """``authorization=True``: every API request is authenticated by its bearer token (see
        ``add_token``/``add_service_account_token``; unknown token → 401, no token → anonymous) and
        authorized by RBAC from the Role/ClusterRole/RoleBinding/ClusterRoleBinding objects in the
        store (``rbac_objects`` — and any other object in that list — are put there at
        construction; later changes take effect at the next request).
        ``tokens`` maps a token to a ``UserInfo`` or to ``"system:serviceaccount:<ns>:<name>"``.
        ``bootstrap_policy``: the built-in rules letting any user get /version, /healthz..."""
        self.host = host
        self.port = port
        self.history_limit = history_limit
        self.bookmark_interval = bookmark_interval
        self.watch_timeout_cap = watch_timeout_cap
        self.record_requests = record_requests
        self._cond = threading.Condition(threading.RLock())
        self._rv = 1
        self._objects: dict[tuple[str, str], dict[tuple[str, str], Stored]] = {r.key: {} for r in RESOURCES}
        self._history: list[WatchRecord] = []
        self._history_rvs: list[int] = []
        self._floor = 0              # history holds every event with rv > floor; older RVs get 410
        self._writes: list[Write] = []
        self._requests: list[Request] = []
        self._faults: list[_Fault] = []
        self._list_delays: dict[tuple[str, str], float] = {}
        self._watch_gen = 0          # bumped by stop(): open watches are dropped
        self._server: _HttpServer | None = None
        self._thread: threading.Thread | None = None
        self._conns: set[socket.socket] = set()
        self._conns_lock = threading.Lock()
        self._open_watches: dict[int, tuple[str, str, str]] = {}
        self._watch_ids = 0
        self.running = False
        self.authorization = authorization
        self.bootstrap_policy = bootstrap_policy
        self._tokens: dict[str, rbac.UserInfo] = {}
        self._policy: rbac.Policy | None = None
        self._denials: list[Denial] = []
        for tok, who in (tokens or {}).items():
            self.add_token(tok, who)
        self.put_many(rbac_objects)

    # ------------------------------------------------------------------ lifecycle

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def start(self) -> "FakeApiServer":
        if self.running:
            return self
        srv = _HttpServer((self.host, self.port), _Handler, self)
        self.port = srv.server_address[1]
        self._server = srv
        self._thread = threading.Thread(target=srv.serve_forever, kwargs={"poll_interval": 0.05},
                                        name=f"fakeapi-{self.port}", daemon=True)
        self.running = True
        self._thread.start()
        return self

    def stop(self) -> None:
        """Simulate an API server kill: close the listener and every open connection abruptly."""
        srv, self._server = self._server, None
        self.running = False
        with self._cond:
            self._watch_gen += 1
            self._cond.notify_all()
        if srv is not None:
            srv.shutdown()
            srv.server_close()
        with self._conns_lock:
            conns = list(self._conns)
            self._conns.clear()
        for c in conns:
            with contextlib.suppress(OSError):
                c.shutdown(socket.SHUT_RDWR)
            with contextlib.suppress(OSError):
                c.close()
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None

    close = stop

    def __enter__(self) -> "FakeApiServer":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    def kubeconfig(self, token: str = "x", namespace: str = "default", client_id: str | None = None) -> dict:
        """A kubeconfig dict. ``client_id`` puts a /__client/<id> prefix in the server URL, so the
        fake can tell clients apart even if they share a token and a User-Agent."""
        server = self.url + (f"/__client/{client_id}" if client_id else "")
        return {"apiVersion": "v1", "kind": "Config",
                "clusters": [{"name": "fake", "cluster": {"server": server}}],
                "users": [{"name": "u", "user": {"token": token}}],
                "contexts": [{"name": "c", "context": {"cluster": "fake", "user": "u", "namespace": namespace}}],
                "current-context": "c", "preferences": {}}

    def write_kubeconfig(self, path, **kw) -> str:
        # JSON is valid YAML; kube-rs reads either. Written aside and renamed in: two processes
        # started one after the other share a path, and the first may be reading it while the
        # second's rewrite would otherwise have truncated it.
        tmp = f"{path}.{os.getpid()}.{threading.get_ident()}.tmp"
        with open(tmp, "w") as f:
            json.dump(self.kubeconfig(**kw), f, indent=2)
        os.replace(tmp, path)
        return str(path)

    # ------------------------------------------------------------------ store (internal, lock held)

    @property
    def resource_version(self) -> int:
        with self._cond:
            return self._rv

    def _emit(self, r: Resource, ns: str, etype: str, obj: dict, raw: bytes, prev: dict | None) -> None:
        rec = WatchRecord(self._rv, r.key, ns, etype, obj, raw, prev)
        if r.group == rbac.RBAC_GROUP:
            self._policy = None  # rebuilt on the next authorization
        self._history.append(rec)
        self._history_rvs.append(rec.rv)
        if len(self._history) > self.history_limit * 1.25:
            drop = len(self._history) - self.history_limit
            self._floor = max(self._floor, self._history[drop - 1].rv)
            del self._history[:drop]
            del self._history_rvs[:drop]
        self._cond.notify_all()

    def _store_write(self, r: Resource, ns: str, name: str, obj: dict, *, create: bool | None = None,
                     keep_status: bool = False, only_status: bool = False,
                     expect_rv: str | None = None) -> tuple[dict, bool]:
        """Create or update; returns (stored object, created?). Lock must be held."""
        table = self._objects[r.key]
        k = (ns, name)
        old = table.get(k)
        if create is True and old is not None:
            raise ApiError(409, "AlreadyExists", f'{r.plural}.{r.group or "core"} "{name}" already exists',
                           {"name": name, "group": r.group, "kind": r.plural})
        if create is False and old is None:
            raise ApiError(404, "NotFound", f'{r.plural}.{r.group or "core"} "{name}" not found',
                           {"name": name, "group": r.group, "kind": r.plural})
        if old is not None and expect_rv and expect_rv != old.obj["metadata"].get("resourceVersion"):
            raise ApiError(409, "Conflict",
                           f'Operation cannot be fulfilled on {r.plural}.{r.group or "core"} "{name}": '
                           "the object has been modified; please apply your changes to the latest version and try again",
                           {"name": name, "group": r.group, "kind": r.plural})
        new = copy.deepcopy(obj)
        new["apiVersion"] = r.api_version
        new["kind"] = r.kind
        meta = new.setdefault("metadata", {})
        meta["name"] = name
        if r.namespaced:
            meta["namespace"] = ns
        else:
            meta.pop("namespace", None)
        if old is not None:
            ometa = old.obj["metadata"]
            meta["uid"] = ometa.get("uid")
            meta["creationTimestamp"] = ometa.get("creationTimestamp")
            gen = ometa.get("generation", 1)
            if only_status:
                new = copy.deepcopy(old.obj)
                if "status" in obj:
                    new["status"] = copy.deepcopy(obj["status"])
                else:
                    new.pop("status", None)
                meta = new["metadata"]
            elif keep_status:
                if "status" in old.obj:
                    new["status"] = copy.deepcopy(old.obj["status"])
                else:
                    new.pop("status", None)
            if not only_status and new.get("spec") != old.obj.get("spec"):
                gen += 1
            meta["generation"] = gen
            meta["resourceVersion"] = ometa.get("resourceVersion")
            meta.pop("deletionTimestamp", None)
            meta.pop("managedFields", None)
            if new == old.obj:  # a no-op write does not bump the RV nor emit an event (as the real one)
                return copy.deepcopy(old.obj), False
        else:
            meta.setdefault("uid", str(uuid.uuid4()))
            meta.setdefault("creationTimestamp", now_rfc3339())
            meta["generation"] = 1
            if only_status:
                raise ApiError(404, "NotFound", f'{r.plural} "{name}" not found')
        meta.pop("deletionTimestamp", None)
        meta.pop("managedFields", None)
        self._rv += 1
        meta["resourceVersion"] = str(self._rv)
        raw = json.dumps(new, separators=(",", ":")).encode()
        table[k] = Stored(new, raw)
        self._emit(r, ns, "ADDED" if old is None else "MODIFIED", new, raw, old.obj if old else None)
        return copy.deepcopy(new), old is None

    def _store_delete(self, r: Resource, ns: str, name: str) -> dict:
        table = self._objects[r.key]
        old = table.pop((ns, name), None)
        if old is None:
            raise ApiError(404, "NotFound", f'{r.plural}.{r.group or "core"} "{name}" not found',
                           {"name": name, "group": r.group, "kind": r.plural})
        self._rv += 1
        obj = copy.deepcopy(old.obj)
        obj["metadata"]["resourceVersion"] = str(self._rv)
        raw = json.dumps(obj, separators=(",", ":")).encode()
        self._emit(r, ns, "DELETED", obj, raw, old.obj)
        return obj

    @staticmethod
    def _ns_name(r: Resource, obj: dict, namespace: str | None = None) -> tuple[str, str]:
        meta = obj.get("metadata") or {}
        name = meta.get("name")
        if not name:
            raise ApiError(422, "Invalid", "metadata.name is required")
        ns = (namespace or meta.get("namespace") or "default") if r.namespaced else ""
        return ns, name

    # ------------------------------------------------------------------ control API (tests)

    def put(self, obj: dict, namespace: str | None = None) -> dict:
        """Create or replace an object, bumping the RV and emitting a watch event (no event if
        nothing changed). Like ``kubectl apply``, an object without a ``status`` key keeps the
        stored status of a resource with a status subresource; a ``status`` key replaces it."""
        r = resource_for(obj)
        with self._cond:
            ns, name = self._ns_name(r, obj, namespace)
            return self._store_write(r, ns, name, obj, keep_status=r.status_subresource and "status" not in obj)[0]

    def put_many(self, objs: Iterable[dict]) -> int:
        n = 0
        with self._cond:
            for obj in objs:
                if obj is None:
                    continue
                if obj.get("kind", "").endswith("List") and "items" in obj:
                    n += self.put_many(obj["items"])
                    continue
                r = resource_for(obj)
                ns, name = self._ns_name(r, obj)
                self._store_write(r, ns, name, obj, keep_status=r.status_subresource and "status" not in obj)
                n += 1
        return n

    def apply_yaml(self, text: str) -> int:
        import yaml  # only for manifests given as YAML text

        return self.put_many(d for d in yaml.safe_load_all(text) if d)

    def load_dir(self, directory) -> int:
        import os

        n = 0
        for root, _dirs, files in os.walk(directory):
            for f in sorted(files):
                if f.endswith((".yaml", ".yml", ".json")):
                    with open(os.path.join(root, f)) as fh:
                        n += self.apply_yaml(fh.read())
        return n

    def patch(self, kind: str, name: str, patch: dict, namespace: str = "default", *, status: bool = False) -> dict:
        r = resource_for(kind)
        with self._cond:
            ns = namespace if r.namespaced else ""
            old = self._objects[r.key].get((ns, name))
            if old is None:
                raise KeyError(f"{kind} {ns}/{name} not found")
            return self._store_write(r, ns, name, merge_patch(old.obj, patch), only_status=status)[0]

    def delete(self, kind: str | dict, name: str | None = None, namespace: str = "default") -> dict | None:
        if isinstance(kind, dict):
            r = resource_for(kind)
            ns, name = self._ns_name(r, kind)
        else:
            r = resource_for(kind)
            ns = namespace if r.namespaced else ""
        with self._cond:
            try:
                return self._store_delete(r, ns, name)
            except ApiError:
                return None

    def get(self, kind: str, name: str, namespace: str = "default") -> dict | None:
        r = resource_for(kind)
        with self._cond:
            s = self._objects[r.key].get((namespace if r.namespaced else "", name))
            return copy.deepcopy(s.obj) if s else None

    def list(self, kind: str, namespace: str | None = None) -> list[dict]:
        r = resource_for(kind)
        with self._cond:
            return [copy.deepcopy(s.obj) for (ns, _), s in sorted(self._objects[r.key].items())
                    if namespace is None or ns == namespace]

    def count(self, kind: str) -> int:
        with self._cond:
            return len(self._objects[resource_for(kind).key])

    def lease(self, name: str, namespace: str = "default") -> dict | None:
        return self.get("leases", name, namespace)

    def events(self, namespace: str | None = None, *, involved: str | None = None) -> list[dict]:
        """Stored Events (events.k8s.io/v1 and core v1). ``involved``: only those whose regarding /
        involvedObject name equals it."""
        out = self.list(resource_for("events.k8s.io/events"), namespace) + self.list(resource_for("core/events"), namespace)
        if involved is not None:
            out = [e for e in out if ((e.get("regarding") or e.get("involvedObject") or {}).get("name") == involved)]
        return out

    def writes(self, *, method: str | None = None, resource: str | None = None, name: str | None = None,
               namespace: str | None = None, subresource: str | None = None,
               since: float | None = None) -> list[Write]:
        with self._cond:
            ws = list(self._writes)
        return [w for w in ws
                if (method is None or w.method == method)
                and (resource is None or w.resource == resource)
                and (name is None or w.name == name)
                and (namespace is None or w.namespace == namespace)
                and (subresource is None or w.subresource == subresource)
                and (since is None or w.time >= since)]

    def status_writes(self, name: str | None = None, namespace: str | None = None, *,
                      since: float | None = None, resource: str = "ingresses", successful: bool = True) -> list[Write]:
        """Every write to ``<resource>/{name}/status`` (time, client, user agent, body, result)."""
        return [w for w in self.writes(resource=resource, name=name, namespace=namespace,
                                       subresource="status", since=since)
                if not successful or 200 <= w.code < 300]

    def status_write_counts(self, **kw) -> dict[str, int]:
        counts: dict[str, int] = {}
        for w in self.status_writes(**kw):
            key = f"{w.namespace}/{w.name}"
            counts[key] = counts.get(key, 0) + 1
        return counts

    def requests(self, *, method: str | None = None, contains: str | None = None,
                 watch: bool | None = None, resource: str | None = None, user: str | None = None,
                 client: str | None = None) -> list[Request]:
        """Requests received so far (also those still being answered, with code 0).
        ``resource``: a plural ("secrets") or plural/subresource ("ingresses/status")."""
        with self._cond:
            rs = list(self._requests)
        return [r for r in rs if (method is None or r.method == method)
                and (contains is None or contains in r.path)
                and (watch is None or r.is_watch == watch)
                and (resource is None or r.resource == resource
                     or (r.subresource and f"{r.resource}/{r.subresource}" == resource))
                and (user is None or r.user == user)
                and (client is None or r.client == client)]

    def clear_log(self) -> None:
        with self._cond:
            self._writes.clear()
            self._requests.clear()
            self._denials.clear()

    # ------------------------------------------------------------------ authentication / RBAC

    def add_token(self, token: str, who: "rbac.UserInfo | str", groups: Iterable[str] = ()) -> str:
        """Make ``token`` authenticate as ``who``: a ``UserInfo`` (groups as given), a
        ``system:serviceaccount:<ns>:<name>`` name (the ServiceAccount's groups; the request is 401
        while that ServiceAccount object is not in the store, as for a real SA token), or any
        other user name (``groups`` + ``system:authenticated``). Returns the token."""
        if isinstance(who, str):
            sa = rbac.parse_service_account_user(who)
            who = rbac.service_account_user(*sa) if sa else rbac.user(who, groups)
        with self._cond:
            self._tokens[token] = who
        return token

    def add_service_account_token(self, namespace: str, name: str, token: str | None = None) -> str:
        """A token for ServiceAccount ``namespace/name`` (default ``sa:<ns>:<name>``)."""
        return self.add_token(token or f"sa:{namespace}:{name}", f"system:serviceaccount:{namespace}:{name}")

    def set_authorization(self, on: bool = True) -> None:
        with self._cond:
            self.authorization = on

    def policy(self) -> "rbac.Policy":
        """The RBAC policy in force: the store's RBAC objects (+ the bootstrap rules)."""
        with self._cond:
            if self._policy is None:
                objs = [s.obj for r in RESOURCES if r.group == rbac.RBAC_GROUP
                        for s in self._objects[r.key].values()]
                self._policy = rbac.Policy.from_objects(objs, bootstrap=self.bootstrap_policy)
            return self._policy

    def can(self, who: "rbac.UserInfo | str", verb: str, resource: str, namespace: str = "",
            name: str = "", *, group: str | None = None) -> bool:
        """``kubectl auth can-i`` against the current policy. ``resource``: a plural, optionally
        with a subresource ("ingresses/status"); ``group`` defaults to that of the fake's resource
        of that name (``events`` → events.k8s.io; pass ``group=""`` for core Events)."""
        if isinstance(who, str):
            sa = rbac.parse_service_account_user(who)
            who = rbac.service_account_user(*sa) if sa else rbac.user(who)
        plural, _, sub = resource.partition("/")
        if group is None:
            group = resource_for(plural).group
        attrs = rbac.Attributes(who, verb, "", True, group, "v1", plural, sub, namespace, name)
        return self.policy().authorize(attrs).allowed

    def authenticate(self, authorization_header: str) -> "rbac.UserInfo | None":
        """The user of an ``Authorization`` header: None for an unknown or invalid token
        (→ 401), anonymous without a bearer token."""
        if not authorization_header:
            return rbac.ANONYMOUS
        if not authorization_header.lower().startswith("bearer "):
            return None
        with self._cond:
            who = self._tokens.get(authorization_header[7:].strip())
            if who is None:
                return None
            sa = rbac.parse_service_account_user(who.name)
            if sa and self.authorization and (sa[0], sa[1]) not in self._objects[("", "serviceaccounts")]:
                return None
            return who

    def denials(self, *, user: str | None = None, resource: str | None = None, verb: str | None = None,
                since: float | None = None) -> list[Denial]:
        """Requests refused with 401/403 so far (only when authorization is on)."""
        with self._cond:
            ds = list(self._denials)
        return [d for d in ds if (user is None or d.user == user) and (since is None or d.time >= since)
                and (resource is None or d.resource == resource or d.combined_resource == resource)
                and (verb is None or d.verb == verb)]

    def expire_watches(self) -> None:
        """Compact the history: open watches end with an ERROR 410 event and any watch resumed from
        a resourceVersion older than now gets 410 too (forcing a relist)."""
        with self._cond:
            self._rv += 1                  # a compaction tick without an event
            self._floor = self._rv
            self._history.clear()
            self._history_rvs.clear()
            self._cond.notify_all()

    def fail_requests(self, n: int, code: int = 500, match: str | Callable[[str, str], bool] | None = None,
                      close: bool = False) -> None:
        """The next ``n`` requests (matching ``match``: a substring of the path, or a predicate on
        (method, path)) get ``code`` with a Status body, or (``close=True``) a closed connection."""
        if isinstance(match, str):
            sub = match
            match = lambda m, p: sub in p  # noqa: E731
        with self._cond:
            self._faults.append(_Fault(n, code, match, close))

    def delay_list(self, kind: str, seconds: float) -> None:
        """Delay every LIST response of ``kind`` by ``seconds`` (0 removes the delay)."""
        r = resource_for(kind)
        with self._cond:
            if seconds > 0:
                self._list_delays[r.key] = seconds
            else:
                self._list_delays.pop(r.key, None)

    def open_watches(self, kind: str | None = None) -> int:
        with self._cond:
            if kind is None:
                return len(self._open_watches)
            r = resource_for(kind)
            return sum(1 for v in self._open_watches.values() if v[0] == r.plural and v[1] == r.group)

    def wait_watches(self, kinds: Iterable[str], n: int = 1, timeout: float = 30.0) -> None:
        """Block until each kind has at least ``n`` open watches."""
        deadline = time.monotonic() + timeout
        kinds = list(kinds)
        while True:
            missing = [k for k in kinds if self.open_watches(k) < n]
            if not missing:
                return
            if time.monotonic() > deadline:
                raise AssertionError(f"no {n} open watch(es) for {missing} after {timeout}s")
            time.sleep(0.02)

    # ------------------------------------------------------------------ request handling helpers

    def _take_fault(self, method: str, path: str) -> _Fault | None:
        with self._cond:
            for f in self._faults:
                if f.remaining > 0 and (f.match is None or f.match(method, path)):
                    f.remaining -= 1
                    if f.remaining == 0:
                        self._faults.remove(f)
                    return f
        return None

    def _record(self, w: Write) -> None:
        with self._cond:
            self._writes.append(w)

    def _list(self, r: Resource, ns: str | None, q: dict) -> bytes:
        fsel = parse_field_selector(q.get("fieldSelector"))
        lsel = parse_label_selector(q.get("labelSelector"))
        limit = int(q.get("limit") or 0)
        cont = q.get("continue") or ""
        delay = self._list_delays.get(r.key)
        if delay:
            time.sleep(delay)
        start_after: tuple[str, str] | None = None
        with self._cond:
            list_rv = self._rv
            if cont:
                try:
                    tok = json.loads(base64.urlsafe_b64decode(cont.encode()))
                    list_rv = int(tok["rv"])
                    start_after = (tok["ns"], tok["name"])
                except Exception:  # noqa: BLE001
                    raise ApiError(400, "BadRequest", "invalid continue token") from None
                if list_rv < self._floor:
                    raise ApiError(410, "Expired", "The provided continue parameter is too old to display a "
                                   "consistent list result. You can start a new list without the continue parameter.")
            items = sorted(self._objects[r.key].items())
            chosen: list[bytes] = []
            next_tok = None
            for k, s in items:
                if ns is not None and k[0] != ns:
                    continue
                if start_after is not None and k <= start_after:
                    continue
                if (fsel or lsel) and not selectors_match(s.obj, fsel, lsel):
                    continue
                if limit and len(chosen) >= limit:
                    next_tok = base64.urlsafe_b64encode(json.dumps(
                        {"rv": list_rv, "ns": last[0], "name": last[1]}).encode()).decode()
                    break
                chosen.append(s.raw)
                last = k
        meta: dict = {"resourceVersion": str(list_rv)}
        if next_tok:
            meta["continue"] = next_tok
        head = json.dumps({"kind": f"{r.kind}List", "apiVersion": r.api_version, "metadata": meta},
                          separators=(",", ":")).encode()
        return head[:-1] + b',"items":[' + b",".join(chosen) + b"]}"


# --------------------------------------------------------------------------- HTTP handler


def _parse_path(path: str) -> tuple[Resource, str | None, str | None, str] | None:
    """(resource, namespace or None, name or None, subresource or '') for an API path."""
    parts = [unquote(p) for p in path.strip("/").split("/")]
    if len(parts) >= 2 and parts[0] == "api" and parts[1] == "v1":
        group, rest = "", parts[2:]
    elif len(parts) >= 3 and parts[0] == "apis":
        group, rest = parts[1], parts[3:]
        if parts[2] != "v1":
            return None
    else:
        return None
    ns = None
    if len(rest) >= 3 and rest[0] == "namespaces":
        ns, rest = rest[1], rest[2:]
    if not rest or len(rest) > 3:
        return None
    r = _BY_KEY.get((group, rest[0]))
    if r is None:
        return None
    name = rest[1] if len(rest) >= 2 else None
    sub = rest[2] if len(rest) == 3 else ""
    if ns is not None and not r.namespaced:
        return None
    return r, ns, name, sub


class _Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "fake-kube-apiserver/0.1"
    disable_nagle_algorithm = True
    server: _HttpServer

    # -- connection tracking (for abrupt stop)
    def setup(self) -> None:
        super().setup()
        with self.server.fake._conns_lock:
            self.server.fake._conns.add(self.connection)
        if not self.server.fake.running:
            with contextlib.suppress(OSError):
                self.connection.shutdown(socket.SHUT_RDWR)

    def finish(self) -> None:
        with contextlib.suppress(OSError):
            super().finish()
        with self.server.fake._conns_lock:
            self.server.fake._conns.discard(self.connection)

    def log_message(self, format: str, *args) -> None:  # noqa: A002 - quiet
        pass

    # -- plumbing
    def _body(self) -> bytes:
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            out = b""
            while True:
                size = int(self.rfile.readline().strip().split(b";")[0], 16)
                if size == 0:
                    self.rfile.readline()
                    return out
                out += self.rfile.read(size)
                self.rfile.readline()
        n = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(n) if n else b""

    def _send(self, code: int, body: bytes | dict, ctype: str = "application/json") -> None:
        if isinstance(body, dict):
            body = json.dumps(body, separators=(",", ":")).encode()
        self._code = code
        self.send_response(code)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Audit-Id", str(uuid.uuid4()))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _client(self) -> tuple[str, str]:
        """(client id, path without the /__client/<id> prefix)."""
        path = self.path
        cid = ""
        if path.startswith("/__client/"):
            rest = path[len("/__client/"):]
            cid, _, tail = rest.partition("/")
            path = "/" + tail
        auth = self.headers.get("Authorization", "")
        if not cid and auth.lower().startswith("bearer "):
            cid = auth[7:].strip()
        return cid, path

    def do_GET(self) -> None:
        self._dispatch("GET")

    def do_POST(self) -> None:
        self._dispatch("POST")

    def do_PUT(self) -> None:
        self._dispatch("PUT")

    def do_PATCH(self) -> None:
        self._dispatch("PATCH")

    def do_DELETE(self) -> None:
        self._dispatch("DELETE")

    def _dispatch(self, method: str) -> None:
        fake = self.server.fake
        self._code = 0
        client, full = self._client()
        split = urlsplit(full)
        path, query = split.path, split.query
        q = {k: v[-1] for k, v in parse_qs(query, keep_blank_values=True).items()}
        body = b""
        req = Request(time.time(), method, full, client, self.headers.get("User-Agent", ""))
        control = path.startswith("/__fake/")
        who: rbac.UserInfo | None = None
        attrs: rbac.Attributes | None = None
        if not control:
            who = fake.authenticate(self.headers.get("Authorization", ""))
            attrs = rbac.request_attributes(method, path, q, who or rbac.ANONYMOUS)
            req.user = who.name if who is not None and (fake.authorization or who is not rbac.ANONYMOUS) else ""
            req.verb, req.api_group, req.resource = attrs.verb, attrs.api_group, attrs.resource
            req.subresource, req.namespace, req.name = attrs.subresource, attrs.namespace, attrs.name
        if fake.record_requests and not control:
            with fake._cond:
                fake._requests.append(req)
        try:
            body = self._body()
            fault = fake._take_fault(method, path)
            if fault is not None:
                if fault.close:
                    self.close_connection = True
                    with contextlib.suppress(OSError):
                        self.connection.shutdown(socket.SHUT_RDWR)
                    return
                raise ApiError(fault.code, "InternalError" if fault.code >= 500 else "BadRequest",
                               f"injected failure ({fault.code})")
            if attrs is not None and fake.authorization:
                self._authorize(who, attrs, req, method, full, client)
            if control:
                self._control(method, path, q, body)
            elif path in ("/version", "/version/"):
                self._send(200, {"major": "1", "minor": "33", "gitVersion": "v1.33.0-fake",
                                 "platform": "linux/amd64"})
            elif path in ("/healthz", "/readyz", "/livez"):
                self._send(200, b"ok", "text/plain")
            else:
                self._api(method, path, query, q, body, client)
        except ApiError as e:
            self._send(e.code, e.status)
        except (BrokenPipeError, ConnectionResetError, OSError):
            self.close_connection = True
        except Exception as e:  # noqa: BLE001
            with contextlib.suppress(OSError):
                self._send(500, status_obj(500, "InternalError", f"fake api server error: {e!r}"))
        finally:
            req.code = self._code or 599

    # -- authentication and authorization (only when the fake's authorization is on)
    def _authorize(self, who: "rbac.UserInfo | None", attrs: "rbac.Attributes", req: Request, method: str,
                   full: str, client: str) -> None:
        fake = self.server.fake
        if who is None:
            status, groups, req.authz = rbac.unauthorized_status(), [], "unauthenticated"
        else:
            decision = fake.policy().authorize(attrs)
            if decision.allowed:
                req.authz = "allowed"
                return
            status, groups, req.authz = rbac.forbidden_status(attrs, decision.reason), list(who.groups), "denied"
        d = Denial(time.time(), status["code"], client, who.name if who else "", groups, method, full,
                   attrs.verb, attrs.api_group, attrs.resource, attrs.subresource, attrs.namespace, attrs.name,
                   status["message"])
        with fake._cond:
            fake._denials.append(d)
        e = ApiError(status["code"], status["reason"], status["message"])
        e.status = status
        raise e

    # -- control endpoints
    def _control(self, method: str, path: str, q: dict, body: bytes) -> None:
        fake = self.server.fake
        op = path[len("/__fake/"):].strip("/")
        if op == "objects" and method in ("POST", "PUT"):
            text = body.decode()
            try:
                docs = json.loads(text)
                n = fake.put_many(docs if isinstance(docs, list) else [docs])
            except ValueError:
                n = fake.apply_yaml(text)
            self._send(200, {"applied": n, "resourceVersion": str(fake.resource_version)})
        elif op.startswith("objects/") and method == "DELETE":
            parts = op.split("/")[1:]
            kind, name, ns = (parts[0], parts[-1], parts[1] if len(parts) == 3 else "default")
            self._send(200 if fake.delete(kind, name, ns) else 404, {})
        elif op == "writes":
            ws = fake.writes(subresource=q.get("subresource"), resource=q.get("resource"))
            self._send(200, {"items": [w.__dict__ for w in ws]})
        elif op == "status-writes":
            self._send(200, {"items": [w.__dict__ for w in fake.status_writes()]})
        elif op == "events":
            self._send(200, {"items": fake.events()})
        elif op == "requests":
            self._send(200, {"items": [r.__dict__ for r in fake.requests()]})
        elif op == "denials":
            self._send(200, {"items": [d.__dict__ for d in fake.denials()]})
        elif op == "expire-watches" and method == "POST":
            fake.expire_watches()
            self._send(200, {})
        elif op == "fail-requests" and method == "POST":
            fake.fail_requests(int(q.get("n", "1")), int(q.get("code", "500")), q.get("match") or None,
                               q.get("close") == "true")
            self._send(200, {})
        elif op == "delay-list" and method == "POST":
            fake.delay_list(q["resource"], float(q.get("seconds", "0")))
            self._send(200, {})
        elif op == "outage" and method == "POST":
            secs = float(q.get("seconds", "2"))
            self._send(200, {"outage": secs})
            self.close_connection = True

            def outage():
                time.sleep(0.05)
                fake.stop()
                time.sleep(secs)
                fake.start()

            threading.Thread(target=outage, daemon=True).start()
        else:
            raise ApiError(404, "NotFound", f"unknown control endpoint {method} {path}")

    # -- the API proper
    def _api(self, method: str, path: str, query: str, q: dict, body: bytes, client: str) -> None:
        fake = self.server.fake
        parsed = _parse_path(path)
        if parsed is None:
            raise ApiError(404, "NotFound", "the server could not find the requested resource")
        r, ns, name, sub = parsed
        if sub and sub != "status":
            raise ApiError(404, "NotFound", f"subresource {sub} not supported by the fake")
        if sub == "status" and not r.status_subresource:
            raise ApiError(404, "NotFound", f"{r.plural} has no status subresource")
        if r.namespaced and name is not None and ns is None:
            raise ApiError(404, "NotFound", "the server could not find the requested resource")
        ns_eff = (ns or "") if r.namespaced else ""

        if method == "GET" and name is None:
            if q.get("watch") in ("true", "1"):
                self._watch(r, ns, q)
            else:
                self._send(200, fake._list(r, ns, q))
            return
        if method == "GET":
            with fake._cond:
                s = fake._objects[r.key].get((ns_eff, name))
                raw = s.raw if s else None
            if raw is None:
                raise ApiError(404, "NotFound", f'{r.plural}.{r.group or "core"} "{name}" not found',
                               {"name": name, "group": r.group, "kind": r.plural})
            self._send(200, raw)
            return

        ctype = (self.headers.get("Content-Type") or "application/json").split(";")[0].strip()
        rec = Write(time.time(), method, path, query, r.plural, ns_eff, name or "", sub, client,
                    self.headers.get("User-Agent", ""), ctype, None, 0)
        try:
            if body:
                try:
                    rec.body = json.loads(body)
                except ValueError:
                    if ctype == "application/apply-patch+yaml":
                        import yaml

                        rec.body = yaml.safe_load(body)
                    else:
                        raise ApiError(400, "BadRequest", "request body is not valid JSON") from None
            code, result = self._write(r, ns_eff, name, sub, method, ctype, copy.deepcopy(rec.body), q)
        except ApiError as e:
            rec.code, rec.result = e.code, e.status
            fake._record(rec)  # recorded before the client sees the answer
            raise
        rec.code, rec.result = code, result
        fake._record(rec)
        self._send(code, result)

    def _write(self, r: Resource, ns: str, name: str | None, sub: str, method: str, ctype: str,
               body: Any, q: dict) -> tuple[int, dict]:
        fake = self.server.fake
        dry = bool(q.get("dryRun"))
        with fake._cond:
            if method == "POST":
                if name is not None:
                    raise ApiError(405, "MethodNotAllowed", "POST to a named object is not allowed")
                if not isinstance(body, dict):
                    raise ApiError(400, "BadRequest", "body must be an object")
                meta = body.setdefault("metadata", {})
                if not meta.get("name") and meta.get("generateName"):
                    meta["name"] = meta["generateName"] + uuid.uuid4().hex[:5]
                bns = meta.get("namespace")
                if r.namespaced and bns and bns != ns:
                    raise ApiError(400, "BadRequest", "the namespace of the provided object does not match "
                                   "the namespace sent on the request")
                _, oname = fake._ns_name(r, body, ns or None)
                body["metadata"].pop("resourceVersion", None)
                if dry:
                    return 201, body
                return 201, fake._store_write(r, ns, oname, body, create=True)[0]
            if name is None:
                if method == "DELETE":
                    raise ApiError(405, "MethodNotAllowed", "deletecollection is not supported by the fake")
                raise ApiError(405, "MethodNotAllowed", f"{method} on a collection")
            if method == "DELETE":
                if dry:
                    s = fake._objects[r.key].get((ns, name))
                    if s is None:
                        raise ApiError(404, "NotFound", f'{r.plural} "{name}" not found')
                    return 200, copy.deepcopy(s.obj)
                return 200, fake._store_delete(r, ns, name)
            old = fake._objects[r.key].get((ns, name))
            if method == "PUT":
                if not isinstance(body, dict):
                    raise ApiError(400, "BadRequest", "body must be an object")
                bname = (body.get("metadata") or {}).get("name")
                if bname and bname != name:
                    raise ApiError(400, "BadRequest", "the name of the object does not match the name on the URL")
                expect = (body.get("metadata") or {}).get("resourceVersion") or None
                if dry:
                    return 200, body
                obj, _ = fake._store_write(r, ns, name, body, create=False, expect_rv=expect,
                                           keep_status=r.status_subresource and not sub,
                                           only_status=sub == "status")
                return 200, obj
            if method == "PATCH":
                if ctype == "application/json-patch+json":
                    if old is None:
                        raise ApiError(404, "NotFound", f'{r.plural} "{name}" not found')
                    merged = json_patch(old.obj, body if isinstance(body, list) else [])
                    expect = None
                elif ctype in ("application/merge-patch+json", "application/strategic-merge-patch+json",
                               "application/apply-patch+yaml", "application/json"):
                    if not isinstance(body, dict):
                        raise ApiError(400, "BadRequest", "patch body must be an object")
                    if old is None and ctype != "application/apply-patch+yaml":
                        raise ApiError(404, "NotFound", f'{r.plural}.{r.group or "core"} "{name}" not found',
                                       {"name": name, "group": r.group, "kind": r.plural})
                    expect = (body.get("metadata") or {}).get("resourceVersion") or None
                    merged = merge_patch(old.obj if old else {}, body)
                else:
                    raise ApiError(415, "UnsupportedMediaType", f"the body of the request was in an unknown format: {ctype}")
                if dry:
                    return 200, merged
                if old is None:  # server-side apply creating the object
                    merged.setdefault("metadata", {})["name"] = name
                    return 201, fake._store_write(r, ns, name, merged, create=True)[0]
                obj, _ = fake._store_write(r, ns, name, merged, create=False, expect_rv=expect,
                                           keep_status=r.status_subresource and not sub,
                                           only_status=sub == "status")
                return 200, obj
        raise ApiError(405, "MethodNotAllowed", f"{method} not supported")

    # -- watch
    def _watch(self, r: Resource, ns: str | None, q: dict) -> None:
        fake = self.server.fake
        fsel = parse_field_selector(q.get("fieldSelector"))
        lsel = parse_label_selector(q.get("labelSelector"))
        bookmarks = q.get("allowWatchBookmarks") in ("true", "1")
        timeout = float(q.get("timeoutSeconds") or 1800)
        if fake.watch_timeout_cap:
            timeout = min(timeout, fake.watch_timeout_cap)
        rv_param = q.get("resourceVersion") or ""
        deadline = time.monotonic() + timeout

        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Transfer-Encoding", "chunked")
        self.send_header("Cache-Control", "no-cache, private")
        self.end_headers()
        self._code = 200
        sock = self.connection

        def chunk(data: bytes) -> None:
            sock.sendall(b"%x\r\n" % len(data) + data + b"\r\n")

        def line(etype: str, raw: bytes) -> bytes:
            return b'{"type":"' + etype.encode() + b'","object":' + raw + b"}\n"

        def bookmark(rv: int) -> bytes:
            return line("BOOKMARK", json.dumps({"kind": r.kind, "apiVersion": r.api_version,
                                                "metadata": {"resourceVersion": str(rv)}},
                                               separators=(",", ":")).encode())

        gone = line("ERROR", json.dumps(status_obj(410, "Expired", "too old resource version"),
                                        separators=(",", ":")).encode())

        with fake._cond:
            fake._watch_ids += 1
            wid = fake._watch_ids
            fake._open_watches[wid] = (r.plural, r.group, ns or "")
            gen = fake._watch_gen
        try:
            initial: list[bytes] = []
            with fake._cond:
                if rv_param in ("", "0"):
                    pos_rv = fake._rv
                    for (ons, _), s in sorted(fake._objects[r.key].items()):
                        if (ns is None or ons == ns) and (not (fsel or lsel) or selectors_match(s.obj, fsel, lsel)):
                            initial.append(line("ADDED", s.raw))
                else:
                    try:
                        pos_rv = int(rv_param)
                    except ValueError:
                        raise ApiError(400, "BadRequest", f"invalid resourceVersion {rv_param!r}") from None
                    if pos_rv < fake._floor:
                        initial = [gone]
                        pos_rv = -1
            if initial:
                chunk(b"".join(initial))
            if pos_rv < 0:
                sock.sendall(b"0\r\n\r\n")
                return
            last_sent = time.monotonic()
            while True:
                out: list[bytes] = []
                with fake._cond:
                    if fake._watch_gen != gen or not fake.running:
                        # API server killed: drop the connection without the terminating chunk.
                        self.close_connection = True
                        with contextlib.suppress(OSError):
                            sock.shutdown(socket.SHUT_RDWR)
                        return
                    if pos_rv < fake._floor:  # compacted (expire_watches) or history overflow
                        out.append(gone)
                        pos_rv = -1
                    else:
                        i = bisect_right(fake._history_rvs, pos_rv)
                        hist = fake._history
                        for rec in hist[i:]:
                            if rec.rkey != r.key or (ns is not None and rec.namespace != ns):
                                continue
                            if fsel or lsel:
                                now_m = rec.type != "DELETED" and selectors_match(rec.obj, fsel, lsel)
                                was_m = selectors_match(rec.prev, fsel, lsel)
                                if rec.type == "DELETED":
                                    etype = "DELETED" if was_m else None
                                elif now_m:
                                    etype = "ADDED" if not was_m else rec.type
                                else:
                                    etype = "DELETED" if was_m else None
                                if etype:
                                    out.append(line(etype, rec.raw))
                            else:
                                out.append(line(rec.type, rec.raw))
                        pos_rv = fake._rv
                        if not out:
                            now = time.monotonic()
                            if now >= deadline:
                                break
                            if bookmarks and now - last_sent >= fake.bookmark_interval:
                                out.append(bookmark(pos_rv))
                            else:
                                wait = min(deadline - now, max(0.01, fake.bookmark_interval - (now - last_sent)))
                                fake._cond.wait(timeout=wait)
                                continue
                if out:
                    # Batches are split so a single chunk stays reasonably small.
                    for j in range(0, len(out), 200):
                        chunk(b"".join(out[j:j + 200]))
                    last_sent = time.monotonic()
                if pos_rv < 0:
                    break
            sock.sendall(b"0\r\n\r\n")
        except ApiError as e:
            with contextlib.suppress(OSError):
                chunk(line("ERROR", json.dumps(e.status).encode()))
                sock.sendall(b"0\r\n\r\n")
        except OSError:
            self.close_connection = True
        finally:
            with fake._cond:
                fake._open_watches.pop(wid, None)
