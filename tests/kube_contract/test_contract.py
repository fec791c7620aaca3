"""tests/kube/scenarios.py against a real kube-apiserver + etcd (see conftest.py): the
stand-in (tests/support/fake_apiserver.py) must behave like this in every scenario."""

from __future__ import annotations

import asyncio
import uuid

import pytest

from tests.kube.scenarios import SCENARIOS, Raw
from tests.kube_contract.conftest import ADMIN_TOKEN


@pytest.mark.parametrize("name", sorted(SCENARIOS))
def test_scenario_against_kube_apiserver(apiserver: str, name: str) -> None:
    async def run() -> None:
        raw = Raw(apiserver, ADMIN_TOKEN)
        try:
            namespace = f"contract-{uuid.uuid4().hex[:8]}"
            await asyncio.wait_for(SCENARIOS[name](raw, namespace), 60)
        finally:
            await raw.close()

    asyncio.run(run())
