"""What the command line tells a person about the run: which model and classes are in use, that a
model YAML has random weights, and why a run may have found nothing. No heavy imports."""

from __future__ import annotations

import sys

from ..demo.models import DEFAULT_MODEL, MODEL_INFO
from .terminal import plural, printable

LOWEST_HINT_CONF = 0.01  # the no-detections hint suggests no --conf below this
VAL_SCENES = 32  # = evaluation.validation.default_dataset's scenes: `yolocam val` without --data
COMPARE_SCENES = 16  # = evaluation.compare.compare_methods' scenes: `yolocam val --compare-methods`


def is_model_yaml(model) -> bool:
    return isinstance(model, str) and model.lower().endswith((".yaml", ".yml"))


def model_notes(model_arg, names: dict | None = None, task: str = "detect") -> list[str]:
    """Lines to print before a run: the bundled detector in use (and that it knows only synthetic
    shapes) when `--model` was not given or names a demo model; random weights for a model YAML; that a
    classification model's explanations are image-level."""
    lines = []
    if task == "classify":
        lines.append("a classification model: each image's top classes (--max-det, default 5) get one image-level map "
                     "each, over the centre crop the model sees; the 'box' is the whole image")
    if model_arg is None or model_arg in MODEL_INFO:
        name = model_arg or DEFAULT_MODEL
        what, classes = MODEL_INFO[name]
        default = " (the default; pass --model for your own weights)" if model_arg is None else ""
        lines.append(f"model {name}{default}: {what}; it detects only {', '.join(classes)} and will call "
                     "anything in a real photo one of these")
    elif is_model_yaml(model_arg):
        lines.append(f"model {model_arg} is a model YAML: random weights, so its detections and heatmaps "
                     "mean nothing; pass a trained checkpoint (.pt) to explain a real model")
    elif names:
        shown = ", ".join(str(v) for _, v in sorted(names.items())[:12])
        more = f", ... ({len(names)} classes)" if len(names) > 12 else ""
        lines.append(f"model {model_arg}: classes {shown}{more}")
    return lines


def nothing_found_hint(model_arg, conf: float, classes=None, names: dict | None = None) -> str:
    """Why a run may have found no detection at all, as one line."""
    if conf > LOWEST_HINT_CONF:
        reasons = [f"every score was below --conf {conf:g} (try a lower one, e.g. --conf "
                   f"{max(conf / 5, LOWEST_HINT_CONF):g})"]
    else:  # already lower than anything worth suggesting
        reasons = [f"every score was below --conf {conf:g}, already a low threshold"]
    if classes:
        shown = ", ".join(str(names.get(c, c)) if names else str(c) for c in classes)
        reasons.append(f"--classes keeps only {shown}")
    if model_arg is None or model_arg in MODEL_INFO:
        reasons.append(f"the demo detector knows only {', '.join(MODEL_INFO[model_arg or DEFAULT_MODEL][1])}")
    elif is_model_yaml(model_arg):
        reasons.append("a model YAML has random weights")
    return "no detections; possible reasons: " + "; ".join(reasons)


def val_data_note(args) -> str:
    """What `yolocam val` validates on (or compares the methods on), said before the run starts."""
    if getattr(args, "compare_methods", None) is not None:
        n = args.scenes or COMPARE_SCENES
        methods = args.compare_methods if isinstance(args.compare_methods, list) else []
        what = plural(len(methods), "method") if methods else "the methods"
        unused = " (--data is not used: the scores need the scenes' own labels)" if args.data else ""
        return f"comparing {what} on {plural(n, 'generated scene')}{unused}; progress per method below"
    if args.data:
        return f"validating on the dataset {args.data} (its val split)"
    n = args.scenes or VAL_SCENES
    shown = f", at most {args.max_images} of them" if args.max_images and args.max_images < n else ""
    return (f"validating on {plural(n, 'generated scene')} labelled for the model's task{shown} "
            "(pass --data for your own)")


def note(line: str) -> None:
    print(f"yolocam: {printable(line)}", file=sys.stderr)


def warn_skipped(counts: dict, out) -> None:
    """One warning line per input a run could not use (the first 20), then how many more the manifest lists."""
    for line in counts["error_lines"][:20]:
        print(f"yolocam: warning: skipped {printable(line)}", file=sys.stderr)
    if counts["errors"] > 20:
        print(f"yolocam: warning: ... and {counts['errors'] - 20} more (see {printable(out / 'manifest.json')})",
              file=sys.stderr)
