"""Fleet's HTTP API (`/api/v1`): build it with `build_api(ApiContext(...))`."""

from fleet.api.app import build_api
from fleet.api.context import ApiContext

__all__ = ["ApiContext", "build_api"]
