"""The preprocessing contract: what `medfed-site prepare` did to the images a model sees.

Written into the site cache (``preprocessing.json`` beside ``dataset.npz``), carried by the job
(its optional ``[preprocessing]`` table) and so by every checkpoint, refused by a site whose
cache differs, and replayed by ``medfed predict``. ``sha256`` covers the fields that change
what the network sees; the software versions are recorded but never compared.

``format_version`` says which cache format prepare wrote (:data:`FORMAT_VERSION`). It is
neither hashed nor compared, so every contract keeps its hash; it is checked on its own where a
contract enters from a file: a cache whose contract lacks it or holds an older one is refused
(:func:`stale_format`), as is a checkpoint trained on such caches.
"""

import hashlib
import json
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any, Literal, get_args

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from common.atomic_file import replaced_atomically
from common.data.colour import ChannelRule, channel_count
from common.data.intensity import PERCENTILES, WINDOW_PRESETS
from common.errors import DataFormatError

__all__ = [
    "CONTRACT_FILE",
    "FORMAT_VERSION",
    "MISSING_SEQUENCE_CHOICES",
    "MissingSequence",
    "PreprocessingContract",
    "SoftwareVersions",
    "read_contract_beside",
    "stale_format",
    "write_contract",
]

#: The contract's file in a cache folder (and beside a simulated site's data.npz).
CONTRACT_FILE = "preprocessing.json"
#: The cache format prepare writes now: raise it whenever prepare's output changes (the
#: Makefile's cache markers depend on this file, so the demos prepare again). Contracts written
#: before formats were numbered have none (read as 0). 1: 3D volumes stored in their masks'
#: axis order (caches before it stored the images permuted against the masks).
FORMAT_VERSION = 1
#: Fields recorded for the record only: not hashed, not compared.
_UNHASHED = frozenset({"versions", "sha256", "format_version"})
_PACKAGES = ("medfed", "pydicom", "monai", "highdicom")
#: Fields added after contracts were first written, with their defaults (see hashed_fields).
_LATER_DEFAULTS = {
    "channel_names": "",
    "registration": "none",
    "colour": "grey",
    "missing_sequence": "skip",
    "presence_channels": False,
}
#: What ``--missing-sequence`` does with a study lacking one of the ``--sequences``.
MissingSequence = Literal["skip", "zeros"]
MISSING_SEQUENCE_CHOICES: tuple[MissingSequence, ...] = get_args(MissingSequence)


class _Frozen(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class SoftwareVersions(_Frozen):
    """Versions of the packages that prepared the data ("" when not installed)."""

    medfed: str = ""
    pydicom: str = ""
    monai: str = ""
    highdicom: str = ""

    @classmethod
    def installed(cls) -> "SoftwareVersions":
        """The versions installed in this environment."""

        def of(package: str) -> str:
            try:
                return version(package)
            except PackageNotFoundError:
                return ""

        return cls(**{package: of(package) for package in _PACKAGES})


class PreprocessingContract(_Frozen):
    """How images were normalised and resampled, and what they are labelled with.

    Flower's run config holds no lists and no None: names are comma-separated, and an unset
    ``spacing_mm`` is left out of job.toml and the run config.
    """

    #: 'auto' (CT: ``ct_window``, other modalities: percentile scaling), 'percentile', or a
    #: CT window preset (common.data.intensity.WINDOW_PRESETS).
    window: str = "auto"
    #: The CT window preset under window 'auto'; "" otherwise (it is not used then).
    ct_window: str = "soft-tissue"
    #: Percentile scaling maps these percentiles of each series (or volume) to 0 and 1.
    percentile_low: float = Field(PERCENTILES[0], ge=0, le=100)
    percentile_high: float = Field(PERCENTILES[1], ge=0, le=100)
    #: In-plane pixel spacing (mm) after resampling; None: resized without physical scaling.
    spacing_mm: float | None = Field(None, gt=0, allow_inf_nan=False)
    #: Side of the square output images (pixels).
    size: int = Field(64, ge=1)
    channels: int = Field(1, ge=1)
    #: Channel names in order (``--sequences``), comma-separated; "" for one unnamed channel.
    channel_names: str = ""
    #: What the series were registered to: "none", "atlas:<rigid|affine>" or
    #: "reference:<rigid|affine>:<sha256 prefix of the reference file>".
    registration: str = "none"
    #: A study lacking one of the sequences: "skip" (left out) or "zeros" (that channel all 0).
    missing_sequence: MissingSequence = "skip"
    #: Under ``missing_sequence`` "zeros": one mask channel per sequence after the image
    #: channels, in ``channel_names`` order, 1 where the study has that sequence and 0 where
    #: it was zero-filled (``channels`` is then twice the number of names).
    presence_channels: bool = False
    #: Colour rule (common.data.colour): grey, rgb, r, g or b; ``channels`` follows from it
    #: except under grey, whose channels may be stacked grey images.
    colour: ChannelRule = "grey"
    #: 2: slices are the samples; 3: each series is one volume of ``size``^3 voxels.
    dims: Literal[2, 3] = 2
    task: Literal["classification", "segmentation"] = "classification"
    #: Image classes, comma-separated, in label order.
    class_names: str = ""
    #: Segmentation: mask classes, comma-separated, background first; "" for classification.
    segment_names: str = ""
    versions: SoftwareVersions = SoftwareVersions()
    #: The cache format (:data:`FORMAT_VERSION`); a contract made in this medfed has the
    #: current one, a file without it is refused where it is read (:func:`stale_format`).
    format_version: int = Field(FORMAT_VERSION, ge=0)
    #: SHA-256 of the hashed fields; filled in when absent, refused when it does not match.
    sha256: str = ""

    @model_validator(mode="before")
    @classmethod
    def _ct_window_only_under_auto(cls, raw: Any) -> Any:
        if isinstance(raw, dict) and raw.get("window", "auto") != "auto":
            return {**raw, "ct_window": ""}
        return raw

    @model_validator(mode="after")
    def _check_and_hash(self) -> "PreprocessingContract":
        windows = ("auto", "percentile", *WINDOW_PRESETS)
        if self.window not in windows:
            raise ValueError(f"window {self.window!r} is not one of {list(windows)}")
        if self.window == "auto" and self.ct_window not in WINDOW_PRESETS:
            raise ValueError(f"ct_window {self.ct_window!r} is not one of {list(WINDOW_PRESETS)}")
        # grey images may still be stacked into several channels (e.g. one per MR sequence)
        if self.colour != "grey" and self.channels != channel_count(self.colour):
            raise ValueError(f"channels {self.channels} do not match colour {self.colour!r}")
        if self.presence_channels:
            names = len(self.channel_names.split(",")) if self.channel_names else 0
            if self.missing_sequence != "zeros" or self.channels != 2 * names:
                raise ValueError(
                    f"presence_channels needs missing_sequence 'zeros' and 2 channels per name "
                    f"(channels {self.channels}, channel_names {self.channel_names!r})"
                )
        if self.percentile_low >= self.percentile_high:
            raise ValueError(
                f"percentile_low {self.percentile_low} must be below {self.percentile_high}"
            )
        digest = self.digest()
        if self.sha256 and self.sha256 != digest:
            raise ValueError(f"sha256 {self.sha256} does not match the contract's fields")
        object.__setattr__(self, "sha256", digest)  # frozen: set once, while validating
        return self

    def hashed_fields(self) -> dict[str, Any]:
        """The fields that change what the network sees (everything but versions and hash).

        Fields added later are left out while they hold their default, so that a contract
        written before them keeps its hash.
        """
        fields = self.model_dump(mode="json", exclude=set(_UNHASHED))
        for name, default in _LATER_DEFAULTS.items():
            if fields.get(name) == default:
                del fields[name]
        return fields

    def digest(self) -> str:
        """SHA-256 of :meth:`hashed_fields` as canonical JSON."""
        canonical = json.dumps(self.hashed_fields(), sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(canonical.encode()).hexdigest()

    def differences(self, found: "PreprocessingContract | None") -> list[str]:
        """``field: expected X, found Y`` for each hashed field where ``found`` differs."""
        if found is None:
            return ["no preprocessing record (prepared by an older medfed: prepare it again)"]
        mine = {**_LATER_DEFAULTS, **self.hashed_fields()}
        theirs = {**_LATER_DEFAULTS, **found.hashed_fields()}
        keys = sorted(mine.keys() | theirs.keys(), key=list(type(self).model_fields).index)
        return [
            f"{key}: expected {mine.get(key)!r}, found {theirs.get(key)!r}"
            for key in keys
            if mine.get(key) != theirs.get(key)
        ]


def write_contract(folder: Path, contract: PreprocessingContract) -> Path:
    """Write ``folder/preprocessing.json`` atomically; returns its path."""
    path = folder / CONTRACT_FILE
    with replaced_atomically(path) as partial:
        partial.write_text(contract.model_dump_json(indent=2) + "\n", encoding="utf-8")
    return path


def stale_format(raw: Any) -> str | None:
    """Why a contract as stored (parsed JSON) is of an older cache format; None if it is not.

    A stored contract without ``format_version`` was written before formats were numbered.
    """
    if not isinstance(raw, dict):
        return None  # not a contract at all: validation says why
    found = raw.get("format_version", 0)
    if not isinstance(found, int) or isinstance(found, bool) or found >= FORMAT_VERSION:
        return None  # current, or not a number: validation says why
    written = f"format {found}" if "format_version" in raw else "no format version"
    return (
        f"prepared by an older medfed ({written}; this medfed reads format {FORMAT_VERSION}, "
        "whose 3D volumes are stored in their masks' axis order)"
    )


def read_contract_beside(data: Path) -> PreprocessingContract | None:
    """The contract of a cache folder, or of the .npz file beside it; None when there is none.

    Raises:
        DataFormatError: The file exists but is not a valid contract (or was edited: its hash
            does not match), naming it; or it is of an older cache format, naming the cache
            folder and saying to prepare it again.
    """
    folder = data if data.is_dir() else data.parent
    path = folder / CONTRACT_FILE
    if not path.is_file():
        return None
    try:
        raw = json.loads(path.read_bytes())
    except ValueError as exc:
        raise DataFormatError(path, f"not a valid preprocessing contract ({exc})") from None
    stale = stale_format(raw)
    if stale is not None:
        raise DataFormatError(folder, f"{stale}: prepare it again with medfed-site prepare")
    try:
        return PreprocessingContract.model_validate(raw)
    except ValidationError as exc:
        reasons = "; ".join(
            f"{'.'.join(map(str, e['loc'])) or 'contract'}: {e['msg']}" for e in exc.errors()
        )
        raise DataFormatError(path, f"not a valid preprocessing contract ({reasons})") from None
