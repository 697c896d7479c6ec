"""A self-contained HTML gallery (`OUT/index.html`) of an explanation folder.

One static page, no network: inline CSS and JS, pictures referenced by relative path, so it works
opened straight from the file system. Every image is a section with one card per detection (its
zoomed crop when the folder has crops, else its overlay; a click opens the full overlay; class,
confidence, box); sections of one card sit side by side (a folder of single-box images, `yolocam val`'s worst
cases). Controls: a class filter, sort by confidence (a flat list across
images), a minimum confidence. The URL may preset them: `index.html#class=circle&sort=conf-desc&min=0.5`
(or the same as `?query`). Each card carries `data-name`, `data-conf` and `hidden` when filtered out;
each overlay `<img>` gets `data-loaded="1"` once the browser has decoded it ("error" if it failed).
"""

from __future__ import annotations

import html
import json
from pathlib import Path
from urllib.parse import quote

from ..errors import YolocamError
from .labels import conf_text

LAZY_AFTER = 300  # more detection cards than this: overlays load lazily (big folders stay responsive)

_CSS = """
*{box-sizing:border-box}body{margin:0;font:14px/1.4 system-ui,sans-serif;background:#f4f4f6;color:#222}
header{position:sticky;top:0;z-index:2;background:#20232a;color:#eee;padding:10px 16px}
header h1{margin:0 0 4px;font-size:18px}header .meta{margin:0 0 8px;color:#bbb;font-size:12px}
.controls{display:flex;flex-wrap:wrap;gap:14px;align-items:center}
.controls select,.controls input{font:inherit;padding:2px 4px}
main{padding:12px 16px;display:flex;flex-wrap:wrap;gap:0 14px;align-items:flex-start}main>*{flex:1 1 100%;min-width:0}
main>section.image[data-count="1"]{flex:0 1 250px}section.image,section.errors,section.summary{background:#fff;border-radius:6px;
padding:10px 12px;margin:0 0 14px;box-shadow:0 1px 2px #0002}section h2{margin:0;font-size:15px}
.sub{color:#666;font-size:12px;margin:2px 0 8px;word-break:break-all}
.cards{display:grid;grid-template-columns:repeat(auto-fill,minmax(min(220px,40vw),1fr));gap:10px}
figure.det{margin:0;background:#fafafa;border:1px solid #ddd;border-radius:4px;padding:6px}
figure.det img{display:block;width:100%;height:auto;aspect-ratio:1/1;object-fit:contain;background:#2a2a2a}
figcaption{font-size:12px;margin-top:4px}figcaption .name{font-weight:600}
figcaption .conf{float:right;font-variant-numeric:tabular-nums}.box,.src{color:#555;font-size:11px}.case{color:#a33;font-size:11px}
.none{color:#888;font-style:italic}.errors li{color:#a00;word-break:break-all}
.summary img{max-width:100%;max-height:60vh;width:auto;height:auto}
.legend{display:inline-flex;align-items:center;gap:6px;color:#ddd;font-size:12px}
.legend .bar{display:inline-block;width:110px;height:12px;border:1px solid #000;position:relative}
.legend .bar i{position:absolute;top:-2px;bottom:-2px;width:2px;background:#fff;outline:1px solid #000}
@media (max-width:600px){header{position:static}.controls{gap:6px 12px}main{padding:8px}}section.image .src{display:none}[hidden]{display:none!important}
"""

_JS = r"""
(function () {
  var cards = Array.prototype.slice.call(document.querySelectorAll('figure.det'));
  var sections = Array.prototype.slice.call(document.querySelectorAll('section.image'));
  var flat = document.getElementById('flat');
  var cls = document.getElementById('class-filter');
  var sort = document.getElementById('sort');
  var minc = document.getElementById('min-conf');
  var count = document.getElementById('count');
  function num(el, key) { return parseFloat(el.dataset[key]); }
  function readUrl() {
    var q = new URLSearchParams(location.search), h = new URLSearchParams(location.hash.replace(/^#/, ''));
    function get(k) { return h.has(k) ? h.get(k) : q.get(k); }
    var c = get('class');
    if (c !== null) {
      var match = Array.prototype.filter.call(cls.options, function (o) {
        return o.value === c || o.dataset.cls === c; });
      if (!match.length) {  // an unknown class: keep it, it shows no cards
        var o = document.createElement('option'); o.value = c; o.textContent = c + ' (0)'; cls.appendChild(o);
        match = [o];
      }
      cls.value = match[0].value;
    }
    var s = get('sort');
    if (s !== null && Array.prototype.some.call(sort.options, function (o) { return o.value === s; })) sort.value = s;
    var m = get('min');
    if (m !== null && !isNaN(parseFloat(m))) minc.value = m;
  }
  function apply() {
    var want = cls.value, mc = parseFloat(minc.value) || 0, shown = 0;
    cards.forEach(function (c) {
      var ok = (!want || c.dataset.name === want) && num(c, 'conf') >= mc;
      c.hidden = !ok; c.dataset.visible = ok ? '1' : '0'; if (ok) shown++;
    });
    var filtering = !!want || mc > 0;
    if (sort.value === 'image') {
      cards.slice().sort(function (a, b) { return num(a, 'order') - num(b, 'order'); }).forEach(function (c) {
        document.getElementById('cards-' + c.dataset.image).appendChild(c); });
      flat.hidden = true;
      sections.forEach(function (s) {
        s.hidden = filtering && !s.querySelector('figure.det[data-visible="1"]'); });
    } else {
      var dir = sort.value === 'conf-asc' ? 1 : -1;
      cards.slice().sort(function (a, b) {
        return dir * (num(a, 'conf') - num(b, 'conf')) || num(a, 'order') - num(b, 'order');
      }).forEach(function (c) { flat.appendChild(c); });
      flat.hidden = false;
      sections.forEach(function (s) { s.hidden = true; });
    }
    count.textContent = shown + ' of ' + cards.length + (cards.length === 1 ? ' detection' : ' detections') + ' shown';
    document.body.dataset.filter = want; document.body.dataset.sort = sort.value;
    document.body.dataset.shown = String(shown);
  }
  function onControl() {
    apply();
    var p = new URLSearchParams();
    if (cls.value) p.set('class', cls.value);
    if (sort.value !== 'image') p.set('sort', sort.value);
    if (parseFloat(minc.value) > 0) p.set('min', minc.value);
    try { history.replaceState(null, '', '#' + p.toString()); } catch (e) { /* some file:// pages refuse */ }
  }
  cls.addEventListener('change', onControl); sort.addEventListener('change', onControl);
  minc.addEventListener('input', onControl);
  window.addEventListener('hashchange', function () { readUrl(); apply(); });
  readUrl(); apply();
  document.body.dataset.ready = '1';
})();
"""


def _esc(value) -> str:
    return html.escape(str(value), quote=True)


def _url(rel: str) -> str:
    return _esc(quote(rel.replace("\\", "/"), safe="/"))


def _picture(img: dict, det: dict) -> tuple[str, int, int]:
    """(relative path, width, height) of a card's picture: the detection's zoomed crop when the
    folder has one (box plus context, see `render.box_crop`), else its full overlay."""
    if det.get("crop"):
        from .render import CROP_SIDE, crop_region

        x1, y1, x2, y2 = crop_region((img["height"], img["width"]), det["box"])
        gain = CROP_SIDE / max(x2 - x1, y2 - y1, 1)
        return det["crop"], max(round((x2 - x1) * gain), 1), max(round((y2 - y1) * gain), 1)
    return det["overlay"], img["width"], img["height"]


def plural(n: int, noun: str) -> str:
    """`1 image`, `2 images`."""
    return f"{n} {noun}{'' if n == 1 else 's'}"


def level_text(level, strides=None) -> str:
    """A head level as a person reads it: `P3 (stride 8)` from the model's `strides` (the manifest's), else
    `head level 0`."""
    if not isinstance(level, int) or level < 0:
        return "head level ?"
    if isinstance(strides, list) and level < len(strides):
        stride = int(strides[level])
        if stride > 0 and stride & (stride - 1) == 0:
            return f"P{stride.bit_length() - 1} (stride {stride})"
        return f"stride {stride}"
    return f"head level {level}"


def legend_html() -> str:
    """What the heat colours mean (as the pictures' `render.heat_legend`): a colour bar and a line."""
    from .render import HEAT_SHARE, LEGEND_TEXT, OUTLINE_SHARE, SHOWN_ALPHA, blend_heatmap

    import numpy as np

    ramp = np.linspace(1.0 - HEAT_SHARE, 1.0, 6, dtype=np.float32)[None]
    colours = blend_heatmap(np.full((1, 6, 3), 128, np.uint8), ramp, SHOWN_ALPHA, floor=1.0 - HEAT_SHARE - 1e-3)[0]
    stops = ",".join(f"rgb({r},{g},{b})" for b, g, r in colours.tolist())
    tick = (HEAT_SHARE - OUTLINE_SHARE) / HEAT_SHARE * 100
    return (f'<span class="legend" id="legend"><span class="bar" style="background:linear-gradient(90deg,{stops})">'
            f'<i style="left:{tick:.0f}%"></i></span>{_esc(LEGEND_TEXT)}</span>')


def _card(i: int, img: dict, det: dict, order: int, lazy: bool, strides=None) -> str:
    box = ", ".join(f"{v:.1f}" for v in det["box"])
    loading = ' loading="lazy"' if lazy else ""
    case = f'<br><span class="case">{_esc(det["case"])}</span>' if det.get("case") else ""
    src, w, h = _picture(img, det)
    full = (f' · <a class="full" href="{_url(det["overlay"])}" title="the whole image with this box\'s heat">'
            "full image</a>") if det.get("crop") else ""
    return (
        f'<figure class="det" id="det-{i}-{det["index"]}" data-image="{i}" data-index="{det["index"]}" '
        f'data-cls="{int(det["cls"])}" data-name="{_esc(det["name"])}" data-conf="{det["conf"]:.6f}" '
        f'data-order="{order}" data-visible="1">'
        f'<a href="{_url(det["overlay"])}"><img src="{_url(src)}" width="{w}" '
        f'height="{h}" alt="{_esc(det["name"])} {conf_text(det["conf"])}"{loading} '
        "onload=\"this.dataset.loaded='1'\" onerror=\"this.dataset.loaded='error'\"></a>"
        f'<figcaption><span class="name">{_esc(det["name"])}</span> <span class="conf">{conf_text(det["conf"], 3)}</span>'
        f'<br><span class="box">#{det["index"]} box [{box}] · {level_text(det.get("level"), strides)}{full}</span>'
        + (f'<br><span class="track" data-track="{int(det["track"])}">track #{int(det["track"])}</span>'
           if isinstance(det.get("track"), int) else "") +
        f'<br><span class="src">{_esc(img["stem"])}</span>{case}</figcaption></figure>'
    )


def _section(i: int, img: dict, first_order: int, lazy: bool, strides=None) -> str:
    dets = img.get("detections", [])
    cards = "".join(_card(i, img, d, first_order + k, lazy, strides) for k, d in enumerate(dets))
    none = "" if dets else '<p class="none">no detections</p>'
    return (
        f'<section class="image" id="img-{i}" data-stem="{_esc(img["stem"])}" data-count="{len(dets)}">'
        f'<h2>{_esc(img["stem"])}</h2><p class="sub">{_esc(img.get("path") or "(array)")} · '
        f'{img["width"]}×{img["height"]} · {plural(len(dets), "detection")}</p>'
        f'{none}<div class="cards" id="cards-{i}">{cards}</div></section>'
    )


def _tracks_html(manifest: dict) -> str:
    """Videos explained with tracks (`output/video.py`): one section per video with each track's strip of crops."""
    parts = []
    for video in manifest.get("videos") or []:
        strips = video.get("strips") if isinstance(video, dict) else None
        if not strips:
            continue
        rows = "".join(f'<figure class="strip" data-track="{int(s["track"])}"><img src="{_url(s["picture"])}" '
                       f'alt="track {int(s["track"])}" style="max-width:100%" onload="this.dataset.loaded=\'1\'">'
                       f'</figure>' for s in strips)
        parts.append(f'<section class="summary tracks"><h2>Tracks of {_esc(video.get("stem"))}</h2>'
                     f'<p class="sub">{_esc(video.get("path"))} · {plural(len(strips), "track")} · '
                     f'<a href="{_url(video.get("tracks") or "")}">tracks.csv</a></p>{rows}</section>')
    return "".join(parts)


def render_gallery(manifest: dict, summary: str | None = None) -> str:
    """The gallery page for `manifest` as one HTML string (`summary`: a picture shown on top, relative path)."""
    if not isinstance(manifest, dict) or not isinstance(manifest.get("images"), list):
        raise YolocamError(f"gallery: expected a manifest dict with an 'images' list, got {type(manifest).__name__}")
    images, errors = manifest["images"], manifest.get("errors", [])
    n_dets = sum(len(img.get("detections", [])) for img in images)
    lazy = n_dets > LAZY_AFTER
    classes: dict[str, tuple[int, int]] = {}
    for img in images:
        for d in img.get("detections", []):
            cls, n = classes.get(d["name"], (int(d["cls"]), 0))
            classes[d["name"]] = (cls, n + 1)
    options = "".join(f'<option value="{_esc(name)}" data-cls="{cls}">{_esc(name)} ({n})</option>'
                      for name, (cls, n) in sorted(classes.items(), key=lambda kv: (kv[1][0], kv[0])))
    sections, order = [], 0
    for i, img in enumerate(images):
        sections.append(_section(i, img, order, lazy, manifest.get("strides")))
        order += len(img.get("detections", []))
    err_html = ""
    if errors:
        items = "".join(f"<li>{_esc(e.get('path'))}: {_esc(e.get('error'))}</li>" for e in errors)
        err_html = f'<section class="errors" id="errors"><h2>Errors ({len(errors)})</h2><ul>{items}</ul></section>'
    summary_html = (f'<section class="summary"><h2>Summary</h2><img src="{_url(summary)}" alt="summary" '
                    "onload=\"this.dataset.loaded='1'\"></section>") if summary else ""
    layers = manifest.get("layers")
    layers = ",".join(map(str, layers)) if isinstance(layers, list) else layers
    meta = " · ".join(f"{k}: {_esc(v)}" for k, v in (("model", manifest.get("model")), ("method", manifest.get(
        "method")), ("target", manifest.get("target")), ("layers", layers)) if v)
    title = f"yolocam · {manifest.get('method') or 'explanations'}"
    counts = " · ".join((plural(len(images), "image"), plural(n_dets, "detection"), plural(len(errors), "error")))
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width,initial-scale=1">
<title>{_esc(title)}</title><style>{_CSS}</style></head>
<body data-images="{len(images)}" data-detections="{n_dets}" data-errors="{len(errors)}">
<header><h1>yolocam gallery</h1>
<p class="meta">{meta} · {counts}</p>
<div class="controls">
<label>Class <select id="class-filter"><option value="">all classes</option>{options}</select></label>
<label>Sort <select id="sort"><option value="image">by image</option>
<option value="conf-desc">confidence, highest first</option><option value="conf-asc">confidence, lowest first</option>
</select></label>
<label>Min confidence <input id="min-conf" type="number" min="0" max="1" step="0.05" value="0"></label>
<span id="count"></span>{legend_html()}</div></header>
<main>{summary_html}{_tracks_html(manifest)}{err_html}<section class="cards" id="flat" hidden></section>
{"".join(sections)}</main>
<script>{_JS}</script>
</body></html>
"""


def write_gallery(out_dir, manifest: dict | None = None) -> Path:
    """Write `OUT/index.html` for `manifest` (read from `OUT/manifest.json` when None); returns its path."""
    from .files import atomic_write_bytes

    out = Path(out_dir)
    if manifest is None:
        try:
            manifest = json.loads((out / "manifest.json").read_text())
        except (OSError, ValueError) as exc:
            raise YolocamError(f"gallery: expected a readable manifest.json in {out}, got {exc}") from None
    summary = "summary.png" if (out / "summary.png").is_file() else None
    path = out / "index.html"
    atomic_write_bytes(path, render_gallery(manifest, summary).encode("utf-8"))
    return path
