"""Flower ClientApp of a hospital site: wiring only (read config, call common, build the reply)."""

import logging
import math

import torch
from flwr.app import ArrayRecord, Context, Message, MetricRecord, RecordDict
from flwr.clientapp import ClientApp

from client.privacy_state import restore_privacy_state, store_privacy_state
from client.site_data import load_site_data, output_names
from common import message_keys as keys
from common.config import JobConfig
from common.local_training import train_local_round
from common.models import build_model
from common.tasks.registry import task_for

__all__ = ["app", "create_client_app"]

logger = logging.getLogger(__name__)


def _job(fixed: JobConfig | None, context: Context) -> JobConfig:
    return fixed if fixed is not None else JobConfig.from_flat(context.run_config)


def _model_with_global_weights(
    job: JobConfig, msg: Message, data_shape: tuple[int, ...]
) -> torch.nn.Module:
    in_channels, height, width = data_shape
    num_classes = int(msg.content[keys.CONFIG][keys.NUM_CLASSES])
    model = build_model(job.model, in_channels, num_classes, (height, width), job.privacy.enabled)
    model.load_state_dict(msg.content[keys.ARRAYS].to_torch_state_dict())
    return model


def create_client_app(job: JobConfig | None = None) -> ClientApp:
    """ClientApp for ``job``; with None the job is read from Flower's run config."""
    app = ClientApp()

    @app.train()
    def train(msg: Message, context: Context) -> Message:
        config = _job(job, context)
        site_id, data = load_site_data(config, context.node_config)
        server_round = int(msg.content[keys.CONFIG][keys.SERVER_ROUND])
        model = _model_with_global_weights(config, msg, data.train.images.shape[1:])
        update = train_local_round(
            model,
            data.train,
            config,
            seed=config.seed * 100_003 + server_round * 1_009 + site_id,
            privacy_state=restore_privacy_state(context),
            proximal_mu=float(msg.content[keys.CONFIG].get(keys.PROXIMAL_MU, 0.0)),
        )
        metrics: dict[str, int | float] = {
            keys.NUM_EXAMPLES: update.num_examples,
            keys.SITE_ID: site_id,
            keys.TRAIN_LOSS: update.loss,
            keys.STEPS: update.steps,
        }
        if update.privacy_state is not None and update.epsilon is not None:
            store_privacy_state(context, update.privacy_state)
            metrics[keys.EPSILON] = update.epsilon
            metrics[keys.DELTA] = config.privacy.target_delta
            metrics[keys.NOISE_MULTIPLIER] = update.privacy_state.noise_multiplier
        logger.info("site %d round %d: %s", site_id, server_round, metrics)
        content = RecordDict(
            {keys.ARRAYS: ArrayRecord(update.state_dict), keys.METRICS: MetricRecord(metrics)}
        )
        return Message(content=content, reply_to=msg)

    @app.evaluate()
    def evaluate_global_model(msg: Message, context: Context) -> Message:
        config = _job(job, context)
        site_id, data = load_site_data(config, context.node_config)
        model = _model_with_global_weights(config, msg, data.val.images.shape[1:])
        if len(data.val) > 0:
            results = task_for(config.task).evaluate(model, data.val, output_names(config))
            results[keys.EVAL_LOSS] = results.pop("loss")
        else:
            results = {keys.EVAL_LOSS: math.nan}
        metrics = {keys.NUM_EXAMPLES: len(data.val), keys.SITE_ID: site_id, **results}
        return Message(content=RecordDict({keys.METRICS: MetricRecord(metrics)}), reply_to=msg)

    return app


#: The ClientApp named in pyproject.toml, configured by Flower's run config.
app = create_client_app()
