"""Wire-level fake Kubernetes API server for tandem's end-to-end tests (see README.md)."""

from .server import (RESOURCES, ApiError, FakeApiServer, Request, Resource, Write, merge_patch, json_patch,
                     resource_for, status_obj)

__all__ = ["RESOURCES", "ApiError", "FakeApiServer", "Request", "Resource", "Write", "merge_patch", "json_patch",
           "resource_for", "status_obj"]
