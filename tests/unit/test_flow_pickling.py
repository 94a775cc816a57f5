"""Each served flow reaches its run's process by value (cloudpickle: the module's name for the
function is the Flow object, not the function), with only the globals its code names; the types
its parameters are checked against must come along too."""

from __future__ import annotations

import cloudpickle
import pytest
from prefect.exceptions import ParameterTypeError

from deployments.serve import served_flows


@pytest.mark.parametrize("flow", [flow for flow, _ in served_flows()], ids=lambda f: f.name)
def test_a_served_flow_checks_its_parameters_after_the_trip_to_its_process(flow: object) -> None:
    arrived = cloudpickle.loads(cloudpickle.dumps(flow))
    try:
        arrived.validate_parameters({})  # type: ignore[attr-defined]
    except ParameterTypeError:
        pass  # a required parameter is missing: the check ran, as it should
