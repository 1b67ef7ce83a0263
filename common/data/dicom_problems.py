"""Why a DICOM file is not used: a damaged file told apart from a readable non-image object.

Every reason starts with its kind, so a reader (and docs/site-data.md's table) can sort them:
``damaged:`` (the file is broken: ask for a new export), ``not an image:`` (a valid object
that holds no image to train on: ignore it), ``refused:`` (a site limit), and the file-access
reasons of common.data.site_files. Reasons name structures and sizes, never a tag value or an
absolute path (folder names can hold patient identifiers).
"""

import re

import pydicom
from pydicom.uid import UID, JPEG2000TransferSyntaxes

__all__ = [
    "TRUNCATED_PIXELS",
    "decode_error_reason",
    "error_text",
    "jpeg2000_problem",
    "missing_image_reason",
]

#: Reason for an image file whose pixel data the file ends inside of.
TRUNCATED_PIXELS = "damaged: the file ends inside its compressed pixel data (truncated)"

_DIRECTORY = "1.2.840.10008.1.3.10"
_SOP_CLASS = 0x00080016
_PATH_IN_TEXT = re.compile(r"(?: in file)? ['\"]?/[^\s'\"]+['\"]?")
_SHORT_PIXELS = re.compile(r"less than expected \((\d+) vs (\d+) bytes\)")
_NO_PIXELS = "no 'Pixel Data'"


def _sop_class(ds: pydicom.Dataset) -> UID | None:
    """The object's SOP class, from its file meta or (without one) its data set."""
    meta = getattr(ds, "file_meta", None)
    uid = meta.get("MediaStorageSOPClassUID") if meta is not None else None
    if not uid and _SOP_CLASS in ds:
        uid = ds[_SOP_CLASS].value
    return UID(str(uid)) if uid else None


def missing_image_reason(ds: pydicom.Dataset) -> str:
    """Why a readable file without image elements (no Rows) is not used.

    A file whose SOP class is an image storage class but whose data set stops before its image
    elements is damaged (a header cut short or broken by a corrupted length); a DICOMDIR, a
    structured report or a plan is a valid object that holds no image.
    """
    sop_class = _sop_class(ds)
    name = ""
    if sop_class is not None:
        name = sop_class.name if sop_class.name != sop_class else f"SOP class {sop_class}"
    if sop_class == _DIRECTORY:
        return "not an image: DICOMDIR (a media directory, it lists the other files)"
    if sop_class is not None and "Image Storage" not in name:
        return f"not an image: {name}"
    if len(ds) == 0:
        if len(getattr(ds, "file_meta", None) or ()) == 0:
            return "damaged: the file ends after its DICM preamble (no file meta, no data set)"
        return "damaged: the file ends after its file meta (no data set: truncated)"
    if sop_class is None:
        return "not an image: a DICOM object without a SOP class or image elements"
    return (
        f"damaged: {name} object whose header stops before its image elements "
        "(truncated or corrupted header)"
    )


def _without_paths(text: str) -> str:
    """``text`` without absolute paths (pydicom names the file it read in some messages)."""
    return _PATH_IN_TEXT.sub("", text)


def error_text(exc: Exception) -> str:
    """``Type: message`` of an error, its lines joined and absolute paths removed."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    text = _without_paths("; ".join(lines))
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def decode_error_reason(exc: Exception, compressed: bool = False) -> str:
    """The full reason a pixel decoding error gives (sizes, syntaxes; never a tag value).

    Multi-line decoder messages (pydicom lists each plugin's failure on its own line) are
    joined, so the cause is kept; absolute paths are removed.
    """
    detail = error_text(exc)
    if isinstance(exc, AttributeError) and _NO_PIXELS in detail:
        return "damaged: image header without pixel data (the file ends or breaks before it)"
    short = _SHORT_PIXELS.search(detail)
    if short is not None:
        found, expected = short.groups()
        return (
            f"damaged: pixel data shorter than its header declares ({found} of {expected} "
            "bytes): the file was cut"
        )
    if compressed:
        return f"damaged: compressed pixel data corrupted, the decoder failed ({detail})"
    return f"damaged: pixel data not decodable ({detail})"


def _codestream_problem(stream: bytes, rows: int, columns: int) -> str | None:
    """Structural faults of one JPEG 2000 codestream (J2K) that decoders pass over silently."""
    body = stream.rstrip(b"\x00\xff")  # fragments are padded to an even length (0x00, 0xFF)
    if body[4:8] == b"jP  ":  # a JP2 file wrapped around the codestream: not walked here
        return None
    if body[:4] != b"\xff\x4f\xff\x51":
        return "it does not start with the SOC and SIZ markers"
    if body[-2:] != b"\xff\xd9":
        return "it does not end with the EOC marker (cut or overwritten)"
    size = int.from_bytes(body[4:6], "big")  # Lsiz
    xsiz, ysiz, xosiz, yosiz = (
        int.from_bytes(body[8 + 4 * i : 12 + 4 * i], "big") for i in range(4)
    )
    if (ysiz - yosiz, xsiz - xosiz) != (rows, columns):
        return (
            f"its size {ysiz - yosiz} x {xsiz - xosiz} differs from the header's {rows} x {columns}"
        )
    position = 4 + size  # after SIZ: walk the main header to the first tile-part (SOT)
    while position + 2 <= len(body):
        marker = body[position : position + 2]
        if marker == b"\xff\x90":  # SOT: Psot is the tile-part's length, SOT to its end
            psot = int.from_bytes(body[position + 6 : position + 10], "big")
            if psot == 0:  # the last tile-part runs to EOC
                return None
            position += psot
            continue
        if marker == b"\xff\xd9":
            return None if position == len(body) - 2 else "data follows its EOC marker"
        if marker[:1] != b"\xff" or marker[1:] < b"\x4f":
            return "a marker segment length disagrees with the data (corrupted header)"
        position += 2 + int.from_bytes(body[position + 2 : position + 4], "big")
    return "its tile-part lengths (Psot) disagree with the fragment length"


def jpeg2000_problem(ds: pydicom.Dataset) -> str | None:
    """Why a JPEG 2000 image's encapsulated data are damaged, when its structure tells.

    OpenJPEG decodes a codestream with corrupted markers or tile-part lengths without an error
    (issue 19: 26% of one file's pixels differed); the marker structure is checked here. A
    byte changed inside the entropy-coded data itself is not detectable (no checksum).
    """
    syntax = getattr(getattr(ds, "file_meta", None), "TransferSyntaxUID", None)
    if syntax not in JPEG2000TransferSyntaxes or "PixelData" not in ds:
        return None
    frames = int(ds.get("NumberOfFrames", 1) or 1)
    try:
        streams = list(pydicom.encaps.generate_frames(ds.PixelData, number_of_frames=frames))
    except Exception as exc:  # pydicom raises ValueError and others on broken items
        return decode_error_reason(exc, compressed=True)
    for stream in streams:
        problem = _codestream_problem(stream, int(ds.Rows), int(ds.Columns))
        if problem is not None:
            return f"damaged: JPEG 2000 pixel data corrupted ({problem})"
    return None
