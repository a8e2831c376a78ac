from pydantic import Field

from .base import Section


class DashboardConfig(Section):
    enabled: bool = True
    host: str = "127.0.0.1"
    port: int = Field(0, ge=0, le=65535, description="0 picks a free port")
    token: str | None = Field(None, description="required for control actions; None disables them")
