"""The dashboard in a container reads the network from its environment, or says what is wrong."""

from __future__ import annotations

import pytest

from deploy.dashboard import document_from_env
from shared.errors import InvalidArgument

ENV = {
    "CELLBANK_DELIVERY_ENDPOINTS": "LON=lon-delivery:50051,MAN=man-delivery:50051",
    "CELLBANK_OPERATOR_TOKEN": "op-alice",
    "CELLBANK_KAFKA_BOOTSTRAP": "kafka:9092",
}


def test_the_network_comes_from_the_environment() -> None:
    assert document_from_env(ENV) == {
        "sites": {
            "LON": {"delivery": "lon-delivery:50051"},
            "MAN": {"delivery": "man-delivery:50051"},
        },
        "operator_token": "op-alice",
        "kafka": "kafka:9092",
    }


@pytest.mark.parametrize(
    "name", ["CELLBANK_DELIVERY_ENDPOINTS", "CELLBANK_OPERATOR_TOKEN", "CELLBANK_KAFKA_BOOTSTRAP"]
)
def test_a_missing_setting_is_named(name: str) -> None:
    with pytest.raises(ValueError, match=name):
        document_from_env({k: v for k, v in ENV.items() if k != name})


def test_a_malformed_endpoint_is_named_with_the_rule() -> None:
    with pytest.raises(InvalidArgument, match=r"CELLBANK_DELIVERY_ENDPOINTS.*SITE=host:port"):
        document_from_env(ENV | {"CELLBANK_DELIVERY_ENDPOINTS": "LON=nohostport"})
