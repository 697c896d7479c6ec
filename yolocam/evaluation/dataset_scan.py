"""What ultralytics' dataset scan leaves out of a validation, and whether a dataset fits the model.

ultralytics' `YOLODataset` checks every image and label file once (its label cache) and silently drops
an image whose file or label file is unusable (a malformed line, a class beyond the dataset's `names`,
an unreadable image), with all its labels. `skipped_by_scan(dataset)` counts what the built dataset
left out (images listed minus images kept), and asks ultralytics' own per-image check
(`verify_args`, `result_to_label`) why the first one was dropped. `check_names` refuses a dataset
whose `names` has another number of classes than the model (classes are matched by index; other names
with the same count are said in one warning, `names_warning`).
"""

from __future__ import annotations

import copy
import re
from types import SimpleNamespace

from ..errors import YolocamError

ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")
PREFIX = re.compile(r"^[a-z]+: (?=\S*[/\\])")  # ultralytics' "val: " before a path
NO_SKIPS = {"images": 0, "labels": 0, "first_reason": None}


def plain(text) -> str:
    """`text` on one line, without terminal colour codes (ultralytics colours its prefixes)."""
    return " ".join(ANSI.sub("", str(text)).split())


def listed_images(img_path, fraction: float = 1.0, data=None) -> list[str]:
    """The image files ultralytics lists for `img_path` (a folder, list file or list of them), in its order;
    none found is one `YolocamError` (naming the dataset YAML `data` when given)."""
    from ultralytics.data.base import BaseDataset
    from ultralytics.data.utils import IMG_FORMATS

    try:
        return BaseDataset.get_img_files(SimpleNamespace(prefix="", fraction=fraction), img_path)
    except FileNotFoundError as exc:
        why = plain(exc.__cause__ or exc)
        if why.startswith("No images found"):
            why = f"no image files there ({', '.join(sorted(IMG_FORMATS))})"
        raise YolocamError(f"data: no validation images in {img_path}{_of(data)}: {why}") from None


def _of(data) -> str:
    return f" (from {data})" if data else ""


def count_label_lines(label_file: str) -> int:
    try:
        with open(label_file, encoding="utf-8-sig", errors="replace") as fh:
            return sum(1 for line in fh if line.strip())
    except OSError:
        return 0


def skipped_by_scan(dataset) -> dict:
    """{"images": images dropped by the scan, "labels": label lines lost with them, "first_reason": why the
    first one was dropped (its path and ultralytics' message), None when nothing was}."""
    from ultralytics.data.utils import img2label_paths

    listed = list(getattr(dataset, "label_files", None) or [])
    if len(listed) <= len(dataset.im_files):
        return dict(NO_SKIPS)
    kept = set(dataset.im_files)
    images = [f for f in listed_images(dataset.img_path, getattr(dataset, "fraction", 1.0)) if f not in kept]
    labels = sum(count_label_lines(f) for f in img2label_paths(images))
    return {"images": len(listed) - len(dataset.im_files), "labels": labels,
            "first_reason": _reason(dataset, images[0]) if images else None}


def _reason(dataset, image: str) -> str:
    """ultralytics' own message for `image` (its per-image check run again on that image alone)."""
    from ultralytics.data.utils import img2label_paths

    try:
        probe = copy.copy(dataset)
        probe.prefix, probe.im_files, probe.label_files = "", [image], img2label_paths([image])
        check, args = probe.verify_args()
        message = probe.result_to_label(check(next(iter(args))))[-1]
    except Exception:  # noqa: BLE001 - an ultralytics without these hooks: the count still stands
        message = ""
    return plain(message) or f"{image}: left out by ultralytics' dataset scan"


def no_usable_images(img_path, exc: Exception, data=None) -> YolocamError:
    """ultralytics found images but kept none ("No valid images found ..., then its messages"): one line with
    the count and the first message."""
    lines = [plain(line) for line in ANSI.sub("", str(exc)).splitlines()]
    issues = [PREFIX.sub("", line) for line in lines[1:] if line and not line.startswith("See ")]
    try:
        n = f"{len(listed_images(img_path))} "
    except YolocamError:
        n = ""
    return YolocamError(f"data: none of the {n}validation images in {img_path}{_of(data)} is usable: ultralytics "
                        f"left out every one (first: {issues[0] if issues else plain(exc)})")


def skipped_warning(skipped: dict, kept: int) -> str | None:
    """One line saying what the validation left out, None when nothing was."""
    n = int(skipped.get("images") or 0)
    if not n:
        return None
    labels = int(skipped.get("labels") or 0)
    return (f"ultralytics left out {n} of {n + kept} validation image{'s' if n + kept != 1 else ''} "
            f"({labels} label{'s' if labels != 1 else ''} with them); metrics cover the other {kept}; first: "
            f"{skipped.get('first_reason')}")


def _placeholders(names: dict) -> bool:
    return all(str(v) == str(k) or str(v) == f"class{k}" for k, v in names.items())


def check_names(data_names: dict, model_names: dict, data) -> dict | None:
    """A dataset must name as many classes as the model predicts (one `YolocamError` otherwise); classes are
    matched by index. Returns the dataset's names when they differ from the model's, else None."""
    data_names = {int(k): str(v) for k, v in data_names.items()}
    model_names = {int(k): str(v) for k, v in model_names.items()}
    if len(data_names) != len(model_names):
        raise YolocamError(f"data: {data} names {len(data_names)} class{'es' if len(data_names) != 1 else ''}, the "
                           f"model predicts {len(model_names)}: validate with a dataset whose names are the "
                           f"model's {len(model_names)} classes")
    return None if data_names == model_names else data_names


def names_warning(data_names: dict | None, model_names: dict, data) -> str | None:
    """One line when the dataset and the model both name their classes, differently (None otherwise)."""
    if data_names is None or _placeholders(data_names) or _placeholders(model_names):
        return None
    pairs = [f"{k}: {v!r} -> {model_names.get(k)!r}" for k, v in sorted(data_names.items()) if v != model_names.get(k)]
    return (f"{data} names other classes than the model ({', '.join(pairs[:3])}{', ...' if len(pairs) > 3 else ''}); "
            "classes are matched by index and reported under the model's names")


def val_images(info: dict, data=None) -> list[str]:
    """The validation images of a checked dataset (`check_dataset`; `data`: its YAML, for messages), listed and
    sorted as ultralytics lists them; none is one `YolocamError`."""
    val = info.get("val")
    if not val:
        raise YolocamError(f"data: {data or 'the dataset YAML'} names no 'val' images")
    return listed_images(val, data=data)
