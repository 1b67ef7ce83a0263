"""Legacy fit replies as Flower's workflow hands them to a strategy, for strategy tests."""

import numpy as np
from flwr.common import Code, FitRes, Status, ndarrays_to_parameters
from flwr.server.client_proxy import ClientProxy


class SiteProxy(ClientProxy):
    """Only its node id is used by the strategy (the workflow owns the transport)."""

    def get_properties(self, *args, **kwargs): ...  # noqa: ANN002, ANN003, ANN201, D102
    def get_parameters(self, *args, **kwargs): ...  # noqa: ANN002, ANN003, ANN201, D102
    def fit(self, *args, **kwargs): ...  # noqa: ANN002, ANN003, ANN201, D102
    def evaluate(self, *args, **kwargs): ...  # noqa: ANN002, ANN003, ANN201, D102
    def reconnect(self, *args, **kwargs): ...  # noqa: ANN002, ANN003, ANN201, D102


def fit_reply(
    site: int, delta: list[np.ndarray], examples: int = 50, name: str | None = None
) -> tuple[SiteProxy, FitRes]:
    """Site ``site``'s reply carrying ``delta`` for ``examples`` samples (and its name)."""
    metrics = {} if name is None else {"site": name}
    res = FitRes(Status(Code.OK, ""), ndarrays_to_parameters(delta), examples, metrics)
    proxy = SiteProxy(str(site))
    proxy.node_id = site
    return proxy, res
