"""The contract scenarios (tests/kube/scenarios.py) against the stand-in; the same run
against a real kube-apiserver in tests/kube_contract/."""

from __future__ import annotations

import asyncio

import pytest

from tests.kube.scenarios import SCENARIOS, Raw
from tests.support.fake_apiserver import FakeApiServer


@pytest.mark.parametrize("name", sorted(SCENARIOS))
def test_scenario_against_the_stand_in(name: str) -> None:
    async def run() -> None:
        async with FakeApiServer() as fake:
            raw = Raw(fake.url, fake.token)
            try:
                await asyncio.wait_for(SCENARIOS[name](raw, "contract"), 30)
            finally:
                await raw.close()

    asyncio.run(run())
