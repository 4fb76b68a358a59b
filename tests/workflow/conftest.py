from __future__ import annotations

import pytest
from workflow_driver import Driver, make_config

from agent.workflow.state import WorkflowConfig


@pytest.fixture
def config() -> WorkflowConfig:
    return make_config()


@pytest.fixture
def driver(config: WorkflowConfig) -> Driver:
    return Driver(config)
