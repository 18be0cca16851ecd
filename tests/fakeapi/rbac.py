"""Authentication and RBAC authorization for the fake API server, modelled on kube-apiserver.

Pure functions and small immutable classes, unit-tested in ``test_fake.py``:

- ``UserInfo``, ``service_account_user()``: who a bearer token is (name + groups, as the token
  authenticators produce them: a ServiceAccount is ``system:serviceaccount:<ns>:<name>`` in
  ``system:serviceaccounts``, ``system:serviceaccounts:<ns>`` and ``system:authenticated``).
- ``request_attributes()``: what a request asks for, as the API server's RequestInfoFactory reads
  it from the method and path (verb get/list/watch/create/update/patch/delete/deletecollection,
  API group, resource, subresource, namespace, name — a ``metadata.name`` field selector on a
  list/watch names the object), or a non-resource request (``/version``, ``/healthz``...).
- ``Policy``: Roles, ClusterRoles, RoleBindings and ClusterRoleBindings indexed once;
  ``Policy.authorize()`` answers like the RBAC authorizer (ClusterRoleBindings everywhere,
  RoleBindings only in their namespace whether they point at a Role or a ClusterRole; ``*`` in
  verbs, apiGroups, resources and nonResourceURLs; ``*/subresource``; ``resourceNames``; a rule
  for ``ingresses`` does not cover ``ingresses/status``; aggregated ClusterRoles; bindings to a
  missing role are a denial reason). ``system:masters`` is allowed everything, as the real
  server's privileged-group authorizer does. The bootstrap policy for non-resource URLs
  (``system:public-info-viewer``, ``system:discovery``) is built in unless switched off.
- ``forbidden_status()``: the 403 ``Status`` body, message worded like kube-apiserver's.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Iterable
from urllib.parse import unquote

RBAC_GROUP = "rbac.authorization.k8s.io"
RBAC_KINDS = ("Role", "ClusterRole", "RoleBinding", "ClusterRoleBinding")
AUTHENTICATED = "system:authenticated"
UNAUTHENTICATED = "system:unauthenticated"
MASTERS = "system:masters"


# --------------------------------------------------------------------------- users


@dataclass(frozen=True)
class UserInfo:
    name: str
    groups: tuple[str, ...] = ()

    def __str__(self) -> str:
        return self.name


ANONYMOUS = UserInfo("system:anonymous", (UNAUTHENTICATED,))


def user(name: str, groups: Iterable[str] = ()) -> UserInfo:
    """An authenticated user (``system:authenticated`` is added, as the authenticator does)."""
    gs = tuple(groups)
    return UserInfo(name, gs if AUTHENTICATED in gs else gs + (AUTHENTICATED,))


def service_account_user(namespace: str, name: str) -> UserInfo:
    return UserInfo(f"system:serviceaccount:{namespace}:{name}",
                    ("system:serviceaccounts", f"system:serviceaccounts:{namespace}", AUTHENTICATED))


def parse_service_account_user(username: str) -> tuple[str, str] | None:
    """(namespace, name) of a ``system:serviceaccount:<ns>:<name>`` user name, else None."""
    parts = username.split(":")
    if len(parts) == 4 and parts[0] == "system" and parts[1] == "serviceaccount" and parts[2] and parts[3]:
        return parts[2], parts[3]
    return None


# --------------------------------------------------------------------------- request attributes


@dataclass(frozen=True)
class Attributes:
    """What the authorizer sees of a request (k8s.io/apiserver authorizer.Attributes)."""
    user: UserInfo
    verb: str
    path: str
    resource_request: bool
    api_group: str = ""
    api_version: str = ""
    resource: str = ""
    subresource: str = ""
    namespace: str = ""
    name: str = ""

    @property
    def combined_resource(self) -> str:
        return f"{self.resource}/{self.subresource}" if self.subresource else self.resource

    def describe(self) -> str:
        if not self.resource_request:
            return f"{self.verb} {self.path}"
        where = f" in {self.namespace}" if self.namespace else " (cluster scope)"
        name = f" {self.name}" if self.name else ""
        return f"{self.verb} {self.api_group or 'core'}/{self.combined_resource}{name}{where}"


_TRUE = {"1", "t", "T", "TRUE", "true", "True"}        # Go's strconv.ParseBool
_NAMESPACE_SUBRESOURCES = {"status", "finalize"}
_METHOD_VERBS = {"POST": "create", "GET": "get", "HEAD": "get", "PUT": "update", "PATCH": "patch",
                 "DELETE": "delete"}


def _exact_name(field_selector: str | None) -> str:
    for term in filter(None, (t.strip() for t in (field_selector or "").split(","))):
        if "!=" in term:
            continue
        k, sep, v = term.partition("==") if "==" in term else term.partition("=")
        if sep and k.strip() == "metadata.name" and v.strip() and "/" not in v and v.strip() not in (".", ".."):
            return v.strip()
    return ""


def request_attributes(method: str, path: str, query: dict[str, str], who: UserInfo) -> Attributes:
    """Attributes of a request, read as kube-apiserver's RequestInfoFactory does. ``query`` maps a
    parameter to its (last) value."""
    parts = [unquote(p) for p in path.strip("/").split("/") if p]
    non_resource = Attributes(who, method.lower(), path, False)
    if len(parts) < 3 or parts[0] not in ("api", "apis"):
        return non_resource
    prefix, parts = parts[0], parts[1:]
    group = ""
    if prefix == "apis":
        if len(parts) < 3:
            return non_resource
        group, parts = parts[0], parts[1:]
    version, parts = parts[0], parts[1:]
    verb = _METHOD_VERBS.get(method.upper(), "")
    namespace = ""
    if parts and parts[0] == "namespaces":
        if len(parts) > 1:
            namespace = parts[1]
            if len(parts) > 2 and parts[2] not in _NAMESPACE_SUBRESOURCES:
                parts = parts[2:]
    resource = parts[0] if parts else ""
    name = parts[1] if len(parts) >= 2 else ""
    subresource = parts[2] if len(parts) >= 3 else ""
    if not name and verb == "get":
        verb = "watch" if query.get("watch", "") in _TRUE else "list"
        name = _exact_name(query.get("fieldSelector"))
    if not name and verb == "delete":
        verb = "deletecollection"
    return Attributes(who, verb, path, True, group, version, resource, subresource, namespace, name)


# --------------------------------------------------------------------------- rules


def _verb_matches(rule: dict, verb: str) -> bool:
    verbs = rule.get("verbs") or []
    return "*" in verbs or verb in verbs


def _group_matches(rule: dict, group: str) -> bool:
    groups = rule.get("apiGroups") or []
    return "*" in groups or group in groups


def _resource_matches(rule: dict, combined: str, subresource: str) -> bool:
    for r in rule.get("resources") or []:
        if r == "*" or r == combined:
            return True
        if subresource and r == f"*/{subresource}":
            return True
    return False


def _name_matches(rule: dict, name: str) -> bool:
    names = rule.get("resourceNames") or []
    return not names or name in names


def _url_matches(rule: dict, path: str) -> bool:
    for u in rule.get("nonResourceURLs") or []:
        if u == "*" or u == path or (u.endswith("*") and path.startswith(u[:-1])):
            return True
    return False


def rule_allows(attrs: Attributes, rule: dict) -> bool:
    """One PolicyRule against a request (rbac.RuleAllows)."""
    if attrs.resource_request:
        return (_verb_matches(rule, attrs.verb) and _group_matches(rule, attrs.api_group)
                and _resource_matches(rule, attrs.combined_resource, attrs.subresource)
                and _name_matches(rule, attrs.name))
    return _verb_matches(rule, attrs.verb) and _url_matches(rule, attrs.path)


def _subject_applies(subject: dict, who: UserInfo, binding_namespace: str) -> bool:
    kind = subject.get("kind")
    name = subject.get("name")
    if kind == "User":
        return who.name == name
    if kind == "Group":
        return name in who.groups
    if kind == "ServiceAccount":
        ns = subject.get("namespace") or binding_namespace
        return bool(ns) and who.name == f"system:serviceaccount:{ns}:{name}"
    return False


def _labels_match(selector: dict, labels: dict) -> bool:
    for k, v in (selector.get("matchLabels") or {}).items():
        if labels.get(k) != v:
            return False
    for e in selector.get("matchExpressions") or []:
        k, op, vals = e.get("key"), e.get("operator"), e.get("values") or []
        if op == "In" and labels.get(k) not in vals:
            return False
        if op == "NotIn" and k in labels and labels[k] in vals:
            return False
        if op == "Exists" and k not in labels:
            return False
        if op == "DoesNotExist" and k in labels:
            return False
    return True


def _bootstrap_objects() -> list[dict]:
    """The part of kube-apiserver's bootstrap policy that answers non-resource requests."""
    def crb(name: str, groups: list[str]) -> dict:
        return {"apiVersion": f"{RBAC_GROUP}/v1", "kind": "ClusterRoleBinding", "metadata": {"name": name},
                "roleRef": {"apiGroup": RBAC_GROUP, "kind": "ClusterRole", "name": name},
                "subjects": [{"apiGroup": RBAC_GROUP, "kind": "Group", "name": g} for g in groups]}

    public = ["/healthz", "/livez", "/readyz", "/version", "/version/"]
    discovery = ["/api", "/api/*", "/apis", "/apis/*", "/healthz", "/livez", "/openapi", "/openapi/*",
                 "/readyz", "/version", "/version/"]
    return [
        {"apiVersion": f"{RBAC_GROUP}/v1", "kind": "ClusterRole", "metadata": {"name": "system:public-info-viewer"},
         "rules": [{"nonResourceURLs": public, "verbs": ["get"]}]},
        crb("system:public-info-viewer", [AUTHENTICATED, UNAUTHENTICATED]),
        {"apiVersion": f"{RBAC_GROUP}/v1", "kind": "ClusterRole", "metadata": {"name": "system:discovery"},
         "rules": [{"nonResourceURLs": discovery, "verbs": ["get"]}]},
        crb("system:discovery", [AUTHENTICATED]),
    ]


@dataclass(frozen=True)
class Decision:
    allowed: bool
    reason: str = ""      # denial reason (RBAC errors such as a binding to a missing role)
    by: str = ""          # which binding/role/rule allowed it (for test diagnostics)


@dataclass
class Policy:
    """RBAC objects indexed for authorization. Build with ``Policy.from_objects(objs)``."""
    cluster_roles: dict[str, dict] = field(default_factory=dict)
    roles: dict[tuple[str, str], dict] = field(default_factory=dict)
    cluster_role_bindings: list[dict] = field(default_factory=list)
    role_bindings: dict[str, list[dict]] = field(default_factory=dict)

    @classmethod
    def from_objects(cls, objects: Iterable[dict], *, bootstrap: bool = True) -> "Policy":
        p = cls()
        objs = [o for o in objects if o and (o.get("apiVersion") or "").startswith(RBAC_GROUP + "/")
                and o.get("kind") in RBAC_KINDS]
        if bootstrap:
            objs = _bootstrap_objects() + objs
        for o in objs:
            meta = o.get("metadata") or {}
            name, ns = meta.get("name", ""), meta.get("namespace") or "default"
            kind = o["kind"]
            if kind == "ClusterRole":
                p.cluster_roles[name] = o
            elif kind == "Role":
                p.roles[(ns, name)] = o
            elif kind == "ClusterRoleBinding":
                p.cluster_role_bindings.append(o)
            else:
                p.role_bindings.setdefault(ns, []).append(o)
        return p

    def cluster_role_rules(self, name: str) -> list[dict] | None:
        role = self.cluster_roles.get(name)
        if role is None:
            return None
        rules = list(role.get("rules") or [])
        agg = role.get("aggregationRule")
        if agg:  # what the aggregation controller would have written into .rules
            for other_name, other in sorted(self.cluster_roles.items()):
                if other_name == name:
                    continue
                labels = (other.get("metadata") or {}).get("labels") or {}
                if any(_labels_match(sel, labels) for sel in agg.get("clusterRoleSelectors") or []):
                    rules += [r for r in other.get("rules") or [] if r not in rules]
        return rules

    def _role_ref_rules(self, ref: dict, binding_namespace: str) -> tuple[list[dict], str]:
        kind, name = (ref or {}).get("kind"), (ref or {}).get("name", "")
        if kind == "ClusterRole":
            rules = self.cluster_role_rules(name)
            return (rules, "") if rules is not None else ([], f'clusterrole.rbac.authorization.k8s.io "{name}" not found')
        if kind == "Role" and binding_namespace:
            role = self.roles.get((binding_namespace, name))
            return ((role.get("rules") or []), "") if role is not None else \
                ([], f'role.rbac.authorization.k8s.io "{name}" not found')
        return [], f"unsupported role reference kind: {kind!r}"

    def authorize(self, attrs: Attributes) -> Decision:
        if MASTERS in attrs.user.groups:
            return Decision(True, by=f"group {MASTERS}")
        errors: list[str] = []
        bindings: list[tuple[dict, str]] = [(b, "") for b in self.cluster_role_bindings]
        if attrs.namespace:
            bindings += [(b, attrs.namespace) for b in self.role_bindings.get(attrs.namespace, [])]
        for b, bns in bindings:
            if not any(_subject_applies(s, attrs.user, bns) for s in b.get("subjects") or []):
                continue
            rules, err = self._role_ref_rules(b.get("roleRef") or {}, bns)
            if err:
                errors.append(err)
                continue
            for i, rule in enumerate(rules):
                if rule_allows(attrs, rule):
                    bname = (b.get("metadata") or {}).get("name", "")
                    ref = b.get("roleRef") or {}
                    where = f"RoleBinding {bns}/{bname}" if bns else f"ClusterRoleBinding {bname}"
                    return Decision(True, by=f"{where} of {ref.get('kind')} {ref.get('name')} rule {i}")
        reason = ""
        if errors:
            reason = "RBAC: " + (errors[0] if len(errors) == 1 else "[" + ", ".join(errors) + "]")
        return Decision(False, reason)


# --------------------------------------------------------------------------- answers


def forbidden_message(attrs: Attributes, reason: str = "") -> str:
    """kube-apiserver's wording (responsewriters.forbiddenMessage + errors.NewForbidden)."""
    who = attrs.user.name
    if not attrs.resource_request:
        msg = f'User "{who}" cannot {attrs.verb} path "{attrs.path}"'
    elif attrs.namespace:
        msg = (f'User "{who}" cannot {attrs.verb} resource "{attrs.combined_resource}" in API group '
               f'"{attrs.api_group}" in the namespace "{attrs.namespace}"')
    else:
        msg = (f'User "{who}" cannot {attrs.verb} resource "{attrs.combined_resource}" in API group '
               f'"{attrs.api_group}" at the cluster scope')
    if reason:
        msg += ": " + reason
    if not attrs.resource_request or not attrs.resource:
        return f"forbidden: {msg}"
    qualified = f"{attrs.resource}.{attrs.api_group}" if attrs.api_group else attrs.resource
    if attrs.name:
        return f'{qualified} "{attrs.name}" is forbidden: {msg}'
    return f"{qualified} is forbidden: {msg}"


def forbidden_status(attrs: Attributes, reason: str = "") -> dict:
    details: dict = {"kind": attrs.resource} if attrs.resource_request and attrs.resource else {}
    if details:
        if attrs.api_group:
            details["group"] = attrs.api_group
        if attrs.name:
            details["name"] = attrs.name
    s = {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
         "message": forbidden_message(attrs, reason), "reason": "Forbidden", "code": 403}
    if details:
        s["details"] = details
    return s


def unauthorized_status() -> dict:
    return {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
            "message": "Unauthorized", "reason": "Unauthorized", "code": 401}
