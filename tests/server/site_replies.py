"""Legacy fit replies as Flower's workflow hands them to a strategy, for strategy tests."""

import numpy as np
from flwr.common import (
    Code,
    FitRes,
    Parameters,
    Status,
    ndarrays_to_parameters,
    parameters_to_ndarrays,
)
from flwr.server.client_proxy import ClientProxy

from common.model_packing import layout_of, unpack_arrays
from common.update_encoding import encode_update


class SiteProxy(ClientProxy):
    """Only its node id is used by the strategy (the workflow owns the transport)."""

    def get_properties(self, *args, **kwargs): ...  # noqa: ANN002, ANN003, ANN201, D102
    def get_parameters(self, *args, **kwargs): ...  # noqa: ANN002, ANN003, ANN201, D102
    def fit(self, *args, **kwargs): ...  # noqa: ANN002, ANN003, ANN201, D102
    def evaluate(self, *args, **kwargs): ...  # noqa: ANN002, ANN003, ANN201, D102
    def reconnect(self, *args, **kwargs): ...  # noqa: ANN002, ANN003, ANN201, D102


def fit_reply(
    site: int,
    delta: list[np.ndarray],
    examples: int = 50,
    name: str | None = None,
    encoded: bool = True,
) -> tuple[SiteProxy, FitRes]:
    """Site ``site``'s reply carrying ``delta`` for ``examples`` samples (and its name).

    ``encoded``: compressed into one array, as the site's ClientApp sends a plain round's
    delta; otherwise the arrays as given (SecAgg+'s unmasked mean, or a hostile site's bytes).
    """
    metrics = {} if name is None else {"site": name}
    sent = [encode_update(delta)] if encoded else delta
    res = FitRes(Status(Code.OK, ""), ndarrays_to_parameters(sent), examples, metrics)
    proxy = SiteProxy(str(site))
    proxy.node_id = site
    return proxy, res


def model_sent(parameters: Parameters, like: list[np.ndarray]) -> list[np.ndarray]:
    """The global model a strategy sends, unpacked as a site does for a model like ``like``."""
    (packed,) = parameters_to_ndarrays(parameters)
    return unpack_arrays(packed, layout_of(like))
