"""`medfed-sim audit-privacy RUN_DIR...`: membership-inference attacks on each run, per patient."""

from pathlib import Path
from typing import Annotated

import typer

from common.cli_support import FormatOption, OutputFormat, configure_logging, emit_json, user_errors
from simulations.membership_inference import LOW_FPR, AuditResult, audit_run

__all__ = ["audit_privacy"]


def _rows(result: AuditResult) -> list[str]:
    epsilon = f"{result.epsilon:.2f} ({result.unit})" if result.epsilon is not None else "-"
    losses = f"{result.member_loss:.3f} / {result.non_member_loss:.3f}"
    rows = []
    for attack in result.attacks:
        f = attack.figures
        rows.append(
            f"| {Path(result.run_dir).name} | {'yes' if result.dp else 'no'} | {epsilon} "
            f"| {attack.attack} | {attack.evaluation} "
            f"| {f.members} / {f.non_members} ({f.effective_non_members:.0f}) "
            f"| {f.auc:.3f} | {f.standard_error:.3f} | {f.tpr_at_low_fpr:.3f} | {losses} |"
        )
    return rows


def _shares(mix: tuple[float, ...]) -> str:
    return " / ".join(f"{share:.3f}" for share in mix)


def audit_privacy(
    run_dirs: Annotated[
        list[Path],
        typer.Argument(help="Run folders of `medfed-sim run` (e.g. with and without DP)."),
    ],
    reference: Annotated[
        Path | None,
        typer.Option(
            help="Checkpoint of the job's network that never saw the hospitals' patients (e.g. "
            "`medfed-sim pretrain` on other data): the calibrated attack's reference for every "
            "run. Default: each run's initial weights (model.initial_weights); a run without "
            "either gets the loss attack only.",
        ),
    ] = None,
    non_members: Annotated[
        Path | None,
        typer.Option(
            "--non-members",
            help="Data of patients no site trained on, prepared like the run's data (a cache "
            "folder, a folder of site caches or an .npz; e.g. fresh patients of the same "
            "hospitals): every split of it is the non-members of every run. Refused when it "
            "shares an image with the members or was prepared differently. Default: each "
            "run's test split.",
        ),
    ] = None,
    output: FormatOption = OutputFormat.TEXT,
) -> None:
    """Attack each run's global model: were these patients in the sites' training data?

    Members are the simulated sites' training patients, non-members the held-out test
    patients or every patient of --non-members. Two scores per patient: `loss` (minus the
    mean loss over their images) and `calibrated` (the reference model's mean loss minus the
    run's: difficulty calibration, Watson et al. ICLR 2022), each on all patients and
    class-mix matched (non-members reweighted to the members' mix of classes, so a model
    that never saw the members scores about 0.5). Reports ROC-AUC (0.5 = guessing), its
    Hanley-McNeil standard error, and TPR at 1% FPR; members / non-members (effective
    non-members) are the patients compared.
    """
    configure_logging(False)
    with user_errors(output):
        results = [audit_run(run_dir.resolve(), reference, non_members) for run_dir in run_dirs]
    if output is OutputFormat.JSON:
        emit_json({"unit": "patient", "low_fpr": LOW_FPR,
                   "runs": [r.to_dict() for r in results]})  # fmt: skip
        return
    typer.echo(
        "| run | DP | epsilon (unit) | attack | evaluation | members / non-members (effective) "
        f"| ROC-AUC | standard error | TPR at {LOW_FPR:.0%} FPR | loss members / non-members |"
    )
    typer.echo("|---|---|---|---|---|---|---|---|---|---|")
    for result in results:
        for row in _rows(result):
            typer.echo(row)
    typer.echo("")
    for result in results:
        typer.echo(
            f"{Path(result.run_dir).name}: share of images per class, members "
            f"{_shares(result.member_mix)}, non-members {_shares(result.non_member_mix)}; "
            f"reference {result.reference or '- (no calibrated attack)'}; "
            f"non-members: {result.non_member_source}"
        )
