"""Benchmark: bytes of a site's real fit and evaluate replies over the float32 model, by part.

Usage: .venv/bin/python bench/upload_bytes.py [--data PATH] [--task classification]
       [--model cnn] [--update-precision float32|float16]
Runs one plain-FedAvg round of the site's training client (SiteClient, DP off) on the data,
compresses the delta as the site's ClientApp does (common.update_encoding), converts the reply
as Flower's legacy ClientApp does (fitres_to_recorddict) and serialises it with Flower's serde
(recorddict_to_proto), then prints the bytes of each part over 4 bytes per model parameter (the
job's update_precision: float16 halves the arrays). Flower's HTTP
framing, polling and acknowledgements are not counted here (bench/secagg_overhead.py measures
the whole traffic of a deployment).
"""

import argparse
import tempfile
from pathlib import Path

import numpy as np
from flwr.app import Context, RecordDict
from flwr.common import Code, FitRes, Status, ndarrays_to_parameters
from flwr.compat.common.recorddict_compat import fitres_to_recorddict

from client.flower_internals import recorddict_to_proto
from client.site_client import SiteClient
from client.site_limits import SiteLimits
from common import message_keys as keys
from common.config import UPDATE_PRECISIONS
from common.data.loading import load_dataset
from common.federation_job import FederationJob
from common.model_packing import pack_arrays
from common.models import build_model
from common.tasks.registry import task_for
from common.update_encoding import encode_update
from simulations.synthetic_lesions import write_synthetic_lesions


def _size(records: RecordDict) -> int:
    return len(recorddict_to_proto(records).SerializeToString())


def main() -> None:
    """Run one round and print the reply's bytes by part."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=None)
    parser.add_argument("--task", default="classification")
    parser.add_argument("--model", default=None, help="default: the task's default network")
    parser.add_argument("--update-precision", choices=UPDATE_PRECISIONS, default="float32")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as scratch:
        data = args.data or write_synthetic_lesions(
            Path(scratch) / "lesions.npz", n_train=64, n_val=32, n_test=8
        )
        splits = load_dataset(data)
        outputs = len(task_for(args.task).output_names(splits))
        job = FederationJob.model_validate(
            {
                "task": args.task,
                "rounds": 1,
                "image_size": splits.image_size[0],
                "in_channels": splits.in_channels,
                "num_classes": outputs,
                "model": {"name": args.model} if args.model else {},
                "privacy": {"enabled": False},
                "secure_aggregation": {"enabled": False},  # a plain round's reply
                "update_precision": args.update_precision,
            }
        )
        model = build_model(job.model, splits.in_channels, outputs, splits.image_size, False)
        start = [t.numpy().copy() for t in model.state_dict().values()]
        context = Context(run_id=1, node_id=1, node_config={}, state=RecordDict(), run_config={})
        limits = SiteLimits(
            data=data, name="hospital-a", max_epsilon=10.0, require_dp=False,
            require_secure_aggregation=False,
        )  # fmt: skip
        client = SiteClient(context, seed_for_round=lambda _round: 0, job=job, limits=limits)
        delta, examples, metrics = client.fit([pack_arrays(start)], {keys.SERVER_ROUND: 1})
    model_bytes = 4 * sum(int(np.prod(a.shape)) for a in start)
    ok = Status(code=Code.OK, message="Success")
    sent = [encode_update(delta)]  # what the site's ClientApp sends in a plain round
    raw_reply = fitres_to_recorddict(
        FitRes(ok, ndarrays_to_parameters(delta), examples, metrics), False
    )
    full = fitres_to_recorddict(FitRes(ok, ndarrays_to_parameters(sent), examples, metrics), False)
    arrays_only = RecordDict({"fitres.parameters": raw_reply.array_records["fitres.parameters"]})
    raw = sum(d.nbytes for d in delta)
    print(
        f"data={data} task={job.task} model={job.model.name}: {len(start)} arrays, "
        f"{model_bytes} bytes as float32; update_precision={job.update_precision}, "
        f"delta dtypes {sorted({str(d.dtype) for d in delta})}"
    )
    rows = [
        ("delta values alone (raw)", raw),
        ("arrays as Flower serialises them (np.save per array, ArrayRecord)", _size(arrays_only)),
        ("whole fit reply, arrays uncompressed (before 2026-11-30)", _size(raw_reply)),
        ("delta byte-shuffled and deflated (one array)", sent[0].nbytes),
        ("whole fit reply as the site sends it (compressed delta, metrics, status)", _size(full)),
    ]
    for name, size in rows:
        print(f"{name}: {size} bytes = {size / model_bytes:.4f}x the float32 model")


if __name__ == "__main__":
    main()
