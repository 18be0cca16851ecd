"""The fake Kubernetes API server's own unit tests (tests/fakeapi/test_fake.py), collected here
too so the default e2e run (`pytest tests/e2e`) covers them. No Rust binary involved."""

import api_support  # noqa: F401  (puts tests/ on sys.path)
from fakeapi.test_fake import *  # noqa: F401,F403
