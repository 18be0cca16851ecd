"""Wire-level fake Kubernetes API server for tandem's end-to-end tests (see README.md)."""

from . import rbac
from .rbac import Policy, UserInfo, service_account_user
from .server import (RESOURCES, ApiError, Denial, FakeApiServer, Request, Resource, Write, merge_patch,
                     json_patch, resource_for, status_obj)

__all__ = ["RESOURCES", "ApiError", "Denial", "FakeApiServer", "Policy", "Request", "Resource", "UserInfo",
           "Write", "merge_patch", "json_patch", "rbac", "resource_for", "service_account_user", "status_obj"]
