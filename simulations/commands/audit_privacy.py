"""`medfed-sim audit-privacy RUN_DIR...`: a membership-inference attack on each run, per patient."""

from pathlib import Path
from typing import Annotated

import typer

from common.cli_support import FormatOption, OutputFormat, configure_logging, emit_json, user_errors
from simulations.membership_inference import LOW_FPR, audit_run

__all__ = ["audit_privacy"]


def audit_privacy(
    run_dirs: Annotated[
        list[Path],
        typer.Argument(help="Run folders of `medfed-sim run` (e.g. with and without DP)."),
    ],
    output: FormatOption = OutputFormat.TEXT,
) -> None:
    """Attack each run's global model: were these patients in the sites' training data?

    A loss-threshold attack at the patient level: members are the simulated sites' training
    patients, non-members the held-out test patients; a patient's score is minus the mean loss
    over their images. Reports the attack's ROC-AUC (0.5 = guessing) and TPR at 1% FPR.
    """
    configure_logging(False)
    with user_errors(output):
        results = [audit_run(run_dir.resolve()) for run_dir in run_dirs]
    if output is OutputFormat.JSON:
        emit_json({"attack": "loss-threshold", "unit": "patient",
                   "runs": [r.to_dict() for r in results]})  # fmt: skip
        return
    typer.echo(
        f"| run | DP | epsilon (unit) | members / non-members | attack ROC-AUC "
        f"| TPR at {LOW_FPR:.0%} FPR | loss members / non-members |"
    )
    typer.echo("|---|---|---|---|---|---|---|")
    for r in results:
        epsilon = f"{r.epsilon:.2f} ({r.unit})" if r.epsilon is not None else "-"
        typer.echo(
            f"| {Path(r.run_dir).name} | {'yes' if r.dp else 'no'} | {epsilon} "
            f"| {r.members} / {r.non_members} | {r.attack_auc:.3f} | {r.tpr_at_1pct_fpr:.3f} "
            f"| {r.member_loss:.3f} / {r.non_member_loss:.3f} |"
        )
