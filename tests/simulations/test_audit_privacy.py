"""`medfed-sim audit-privacy`: the attacks expose memorised patients, not a class mix."""

import json
import os
import subprocess
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import tomli_w
import torch
from warm_command_lines import run_command_line

from common.checkpoint import save_checkpoint
from common.data.arrays import ImageArrays
from common.data.loading import load_dataset
from common.data.npz_writer import write_npz
from common.errors import ConfigError
from common.federation_job import FederationJob
from common.models import build_model
from simulations.membership_inference import (
    ALL_PATIENTS,
    CALIBRATED_ATTACK,
    COMPOSITION_MATCHED,
    LOSS_ATTACK,
    audit_run,
    patient_means,
    patient_scores,
)
from simulations.simulation_settings import SimulationSettings

SIZE = 16
SLICES = 6


def _patients(rng: np.random.Generator, count: int, first: int, lesion: float) -> ImageArrays:
    """``count`` patients of 6 noise images; each image is class 1 with probability ``lesion``.

    Noise carries no class: only a model that saw an image's label can know it.
    """
    n = SLICES * count
    return ImageArrays(
        images=rng.random((n, 1, SIZE, SIZE), dtype=np.float32),
        labels=(rng.random(n) < lesion).astype(np.int64),
        patients=np.repeat(np.arange(first, first + count), SLICES).astype(np.int64),
    )


def _job(initial_weights: Path | None) -> FederationJob:
    model = {"initial_weights": str(initial_weights)} if initial_weights else {}
    return FederationJob.model_validate(
        {"image_size": SIZE, "privacy": {"enabled": False}, "model": model}
    )


def _untrained() -> torch.nn.Module:
    torch.manual_seed(0)
    return build_model(_job(None).model, 1, 2, (SIZE, SIZE), dp_enabled=False)


def _train(model: torch.nn.Module, data: ImageArrays, steps: int) -> torch.nn.Module:
    images, labels = torch.from_numpy(data.images), torch.from_numpy(data.labels)
    optimizer = torch.optim.Adam(model.parameters(), lr=0.01)
    for _ in range(steps):
        optimizer.zero_grad()
        torch.nn.functional.cross_entropy(model(images), labels).backward()
        optimizer.step()
    return model


def _run_folder(
    run_dir: Path,
    sites: list[ImageArrays],
    test: ImageArrays,
    model: torch.nn.Module,
    initial: torch.nn.Module | None,
) -> Path:
    """A finished run's files: job, settings, the sites' training patients, test set, model.

    ``initial`` is saved as the job's initial weights (the calibrated attack's reference).
    """
    weights = run_dir / "initial.pt" if initial is not None else None
    job = _job(weights)
    if initial is not None and weights is not None:
        save_checkpoint(weights, initial.state_dict(), job, 0)
    empty = test.subset(np.arange(0))
    data = write_npz(run_dir / "data.npz", {"train": sites[0], "val": empty, "test": test},
                     ("a", "b"))  # fmt: skip
    for k, train in enumerate(sites):
        write_npz(run_dir / "sites" / f"site-{k}" / "data.npz",
                  {"train": train, "val": empty, "test": empty}, ("a", "b"))  # fmt: skip
    (run_dir / "job.toml").write_text(tomli_w.dumps(job.to_nested()))
    settings = SimulationSettings(data=data, sites=len(sites))
    (run_dir / "simulation.json").write_text(settings.model_dump_json())
    save_checkpoint(run_dir / "global_model.pt", model.state_dict(), job, 1)
    return run_dir


def _memorised(run_dir: Path, with_initial_weights: bool = True) -> Path:
    """Members' random labels learnt by heart from the initial weights."""
    rng = np.random.default_rng(0)
    sites = [_patients(rng, 10, 0, 0.5), _patients(rng, 10, 100, 0.5)]
    test = _patients(rng, 20, 200, 0.5)
    initial = _untrained()
    model = _train(_untrained(), ImageArrays.concatenate(sites), steps=150)
    return _run_folder(run_dir, sites, test, model, initial if with_initial_weights else None)


def _class_biased(run_dir: Path) -> Path:
    """A model that never saw a member but learnt that most images are class 0.

    Members are mostly lesion-free patients, non-members mostly not: a loss that is lower on
    class 0 tells them apart without any membership.
    """
    rng = np.random.default_rng(1)
    sites = [_patients(rng, 60, 0, 0.25), _patients(rng, 60, 100, 0.25)]
    test = _patients(rng, 120, 200, 0.55)
    other_data = _patients(rng, 40, 1000, 0.1)  # public data: not the hospitals'
    model = _train(_untrained(), other_data, steps=40)
    return _run_folder(run_dir, sites, test, model, _untrained())


def test_patient_score_is_minus_the_mean_loss_of_its_images() -> None:
    scores = patient_scores(np.array([1.0, 3.0, 0.5]), np.array([4, 4, 9]))
    assert scores.tolist() == [-2.0, -0.5]
    assert patient_scores(np.array([1.0, 2.0]), None).tolist() == [-1.0, -2.0]
    one_hot = np.array([[1.0, 0.0], [0.0, 1.0], [0.0, 1.0]])
    assert patient_means(one_hot, np.array([4, 4, 9])).tolist() == [[0.5, 0.5], [0.0, 1.0]]


def test_a_memorising_model_is_exposed_by_every_attack(tmp_path: Path) -> None:
    audit = audit_run(_memorised(tmp_path / "overfit"))
    assert (audit.members, audit.non_members) == (20, 20)
    assert audit.member_loss < audit.non_member_loss
    assert audit.reference == str(tmp_path / "overfit" / "initial.pt")
    for attack in (LOSS_ATTACK, CALIBRATED_ATTACK):
        for evaluation in (ALL_PATIENTS, COMPOSITION_MATCHED):
            figures = audit.attack(attack, evaluation)
            assert figures.auc > 0.9 and figures.tpr_at_low_fpr > 0.3, (attack, evaluation)
            assert figures.auc - 0.5 > 3 * figures.standard_error
    assert audit.attack(CALIBRATED_ATTACK).members == 20


def test_a_class_bias_is_not_taken_for_membership_once_matched(tmp_path: Path) -> None:
    """The plain loss attack scores the class mix; the matched evaluations score about 0.5."""
    audit = audit_run(_class_biased(tmp_path / "biased"))
    assert audit.member_mix[1] < 0.35 < 0.45 < audit.non_member_mix[1]  # lesion shares
    assert audit.attack(LOSS_ATTACK).auc > 0.75
    # The reference (the untrained start) has no class bias: calibration alone keeps it.
    assert audit.attack(CALIBRATED_ATTACK).auc > 0.75
    for attack in (LOSS_ATTACK, CALIBRATED_ATTACK):
        matched = audit.attack(attack, COMPOSITION_MATCHED)
        assert abs(matched.auc - 0.5) < 2 * matched.standard_error, attack
        assert matched.standard_error < 0.1
        assert matched.non_members < audit.non_members  # mixes no member has are left out


def test_without_a_reference_only_the_loss_attack_runs(tmp_path: Path) -> None:
    run = _memorised(tmp_path / "run", with_initial_weights=False)
    audit = audit_run(run)
    assert audit.reference is None
    assert {a.attack for a in audit.attacks} == {LOSS_ATTACK}
    with pytest.raises(KeyError):
        audit.attack(CALIBRATED_ATTACK)
    # a reference given for the run: the calibrated attack runs against it
    save_checkpoint(tmp_path / "ref.pt", _untrained().state_dict(), _job(None), 0)
    calibrated = audit_run(run, reference=tmp_path / "ref.pt").attack(CALIBRATED_ATTACK)
    assert calibrated.auc > 0.9


def test_a_diverged_model_is_refused_by_name(tmp_path: Path) -> None:
    rng = np.random.default_rng(2)
    model = _untrained()
    with torch.no_grad():
        next(model.parameters()).fill_(float("nan"))
    run = _run_folder(tmp_path / "run", [_patients(rng, 3, 0, 0.5)], _patients(rng, 3, 9, 0.5),
                      model, initial=None)  # fmt: skip
    with pytest.raises(ConfigError, match="not finite on 18 of 18 images") as refused:
        audit_run(run)
    assert refused.value.source == str(run / "global_model.pt")


def _medfed_sim(*args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "COLUMNS": "200"}
    return run_command_line("medfed-sim", "audit-privacy", *args, timeout=120, env=env)


@pytest.mark.parametrize("output", ["text", "json"])
def test_the_command_reports_each_attack_of_each_run(tmp_path: Path, output: str) -> None:
    run = _memorised(tmp_path / "run")
    if output == "text":  # the second folder is not a run: named
        result = _medfed_sim(str(run), str(tmp_path / "nowhere"))
        assert result.returncode == 2 and "nowhere" in result.stderr, result.stderr
    else:  # a reference that is not there: named, with the option
        result = _medfed_sim(
            str(run), "--reference", str(tmp_path / "missing.pt"), "--format", output
        )
        assert result.returncode == 2, result.stderr
        message = json.loads(result.stdout)["error"]["message"]
        assert "--reference" in message and "missing.pt" in message
    result = _medfed_sim(str(run), "--format", output)
    assert result.returncode == 0, result.stderr
    if output == "json":
        (row,) = json.loads(result.stdout)["runs"]
        assert row["members"] == 20 and row["dp"] is False
        attacks = {(a["attack"], a["evaluation"]): a for a in row["attacks"]}
        assert set(attacks) == {
            (attack, evaluation)
            for attack in (LOSS_ATTACK, CALIBRATED_ATTACK)
            for evaluation in (ALL_PATIENTS, COMPOSITION_MATCHED)
        }
        assert {"auc", "standard_error", "tpr_at_low_fpr", "non_members"} <= set(
            attacks[(CALIBRATED_ATTACK, ALL_PATIENTS)]
        )
    else:
        assert "| calibrated | all | 20 / 20 (20) |" in result.stdout
        assert result.stdout.count("| run | no | - |") == 4  # 2 attacks x 2 evaluations
        assert f"reference {run / 'initial.pt'}" in result.stdout


def _non_member_data(path: Path, parts: list[ImageArrays]) -> Path:
    """``parts`` as the train, val and test splits of an .npz given for the non-members."""
    splits = dict(zip(("train", "val", "test"), parts, strict=True))
    return write_npz(path, splits, ("a", "b"))


def test_given_non_members_replace_the_test_split_with_every_patient(tmp_path: Path) -> None:
    run = _memorised(tmp_path / "run")
    rng = np.random.default_rng(5)
    fresh = [_patients(rng, 15, 0, 0.5), _patients(rng, 10, 50, 0.5), _patients(rng, 5, 90, 0.5)]
    given = _non_member_data(tmp_path / "fresh.npz", fresh)
    audit = audit_run(run, non_members=given)
    assert (audit.members, audit.non_members) == (20, 30)  # every split's patients
    assert audit.non_member_source == f"every patient of {given}"
    assert audit.attack(LOSS_ATTACK).auc > 0.9  # memorised members still stand out
    assert audit_run(run).non_member_source.startswith("test split of ")


def test_non_members_sharing_an_image_with_the_members_are_refused(tmp_path: Path) -> None:
    run = _memorised(tmp_path / "run")
    rng = np.random.default_rng(6)
    members = load_dataset(run / "sites" / "site-1" / "data.npz").train
    assert members.patients is not None
    one_member = members.subset(np.flatnonzero(members.patients == members.patients[0]))
    mixed = _non_member_data(
        tmp_path / "mixed.npz", [_patients(rng, 4, 0, 0.5), one_member, _patients(rng, 2, 9, 0.5)]
    )
    with pytest.raises(ConfigError, match=f"{SLICES} of its {7 * SLICES} images are members'"):
        audit_run(run, non_members=mixed)
    other = _patients(rng, 3, 0, 0.5)
    wider = replace(other, images=np.zeros((len(other), 1, SIZE, SIZE + 2), dtype=np.float32))
    with pytest.raises(ConfigError, match="differ from the members'") as refused:
        audit_run(run, non_members=_non_member_data(tmp_path / "wide.npz", [wider] * 3))
    assert refused.value.source == str(tmp_path / "wide.npz")


def test_the_command_names_where_the_non_members_came_from(tmp_path: Path) -> None:
    run = _memorised(tmp_path / "run")
    rng = np.random.default_rng(7)
    given = _non_member_data(tmp_path / "fresh.npz", [_patients(rng, 4, 0, 0.5)] * 3)
    result = _medfed_sim(str(run), "--non-members", str(given))
    assert result.returncode == 0, result.stderr
    assert f"non-members: every patient of {given}" in result.stdout
    assert "| loss | all | 20 / 12 (12) |" in result.stdout
    refused = _medfed_sim(str(run), "--non-members", str(run / "sites" / "site-0" / "data.npz"))
    assert refused.returncode == 2 and "members' training images" in refused.stderr
