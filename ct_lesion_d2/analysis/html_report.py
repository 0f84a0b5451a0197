"""One self-contained HTML page per scan: summary, slice table and the analysis figures.

Images are embedded as ``data:`` URIs and the style sheet is inline, so the page can be mailed
or archived on its own; it loads nothing from the network.
"""

import base64
import html
import io
import json

import numpy as np
from PIL import Image

from .report_sections import header_html, lesion_table_html, orientation_html

__all__ = ["png_bytes", "render_scan_html"]

_STYLE = """
body { font-family: sans-serif; margin: 1.5em; color: #222; }
table { border-collapse: collapse; margin: 0.5em 0 1.5em; font-size: 0.9em; }
th, td { border: 1px solid #ccc; padding: 0.25em 0.6em; text-align: right; }
th { background: #f0f0f0; }
table.overview td { text-align: left; }
td.name, th.name { text-align: left; }
tr.lesion td { background: #fff4e5; }
.orientation { color: #a40; }
.note { color: #555; font-size: 0.9em; max-width: 60em; }
figure { margin: 1em 0 2em; }
figure img { max-width: 100%; border: 1px solid #ddd; }
"""


def png_bytes(image):
    """PNG encoding of an RGB or grey uint8 array."""
    buffer = io.BytesIO()
    Image.fromarray(np.asarray(image, dtype=np.uint8)).save(buffer, format="PNG")
    return buffer.getvalue()


def _img(data, alt):
    encoded = base64.b64encode(data).decode("ascii")
    return f'<img alt="{html.escape(alt)}" src="data:image/png;base64,{encoded}">'


def _fmt(value, digits=3):
    if value is None:
        return "&ndash;"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return html.escape(str(value))


def _rows(pairs):
    return "".join(f'<tr><th class="name">{html.escape(k)}</th><td>{v}</td></tr>' for k, v in pairs)


def _orientation(scan):
    """The sides of the pictures in words, or what is unknown (``scan.image_sides``)."""
    sides = scan.get("image_sides")
    if not sides:
        scale = "" if scan.get("spacing_mm") else "; no pixel spacing either: no scale bar"
        return f"unknown (not in the input): no orientation letters in the figures{scale}"
    words = ", ".join(f"{k}: {html.escape(sides[k])}" for k in ("left", "right", "top", "bottom"))
    radiological = sides["left"] == "R" and sides["top"] == "A"
    view = " (radiological view: the patient's right on the image's left)" if radiological else ""
    return f"image sides {words}{view}"


def render_scan_html(report, figures):
    """The HTML page of one scan report.

    Args:
        report (dict): from :func:`ct_lesion_d2.analysis.build_scan_report`.
        figures (dict[int, list[tuple[str, bytes]]]): slice index -> (caption, PNG bytes).

    Returns:
        str: the page.
    """
    scan, summary = report["scan"], report["summary"]
    title = f"Lesion report: {scan['source']}"
    spacing = scan["spacing_mm"]
    scan_class = summary.get("scan_class")
    overview = [
        ("slices", _fmt(summary["num_slices"])),
        ("size (height x width)", f"{scan['height']} x {scan['width']}"),
        ("input", html.escape(scan["input_units"])),
        ("pixel spacing (mm)", _fmt(" x ".join(f"{v:.3f}" for v in spacing) if spacing else None)),
        ("image orientation", _orientation(scan)),
        ("lesions (connected regions)", _fmt(summary["lesion_count"])),
        ("lesion volume (mL)", _fmt(summary.get("lesion_volume_ml"), 3)),
        ("detected instances", _fmt(summary.get("detection_count"))),
        ("lesion area (pixels)", _fmt(summary["lesion_area_px"])),
        ("lesion area (mm²)", _fmt(summary["lesion_area_mm2"], 1)),
        (
            "slices with lesions",
            f"{summary['slices_with_lesions']} "
            f"({100 * summary['fraction_slices_with_lesions']:.1f}%)",
        ),
    ]
    if scan_class is not None:
        probs = ", ".join(
            f"{html.escape(k)} {v:.3f}" for k, v in scan_class["probabilities"].items()
        )
        overview += [
            ("scan class", f"<b>{html.escape(scan_class['class'])}</b>"),
            ("scan class probabilities", probs),
            ("aggregation rule", html.escape(f"{scan_class['rule']}: {scan_class['description']}")),
        ]
    else:
        overview.append(("scan class", html.escape(summary["scan_class_note"])))

    names = report["image_classes"] or []
    head = "".join(f"<th>{html.escape(n)}</th>" for n in names)
    rows = []
    for s in report["slices"]:
        probs = (
            "".join(f"<td>{_fmt(s['class_probabilities'][n])}</td>" for n in names)
            if s["class_probabilities"]
            else ""
        )
        css = ' class="lesion"' if s["lesion_count"] else ""
        link = (
            f'<a href="#slice-{s["index"]}">{s["index"]}</a>'
            if s["index"] in figures
            else s["index"]
        )
        rows.append(
            f"<tr{css}><td>{link}</td><td class='name'>{html.escape(s['name'])}</td>"
            f"<td>{s['lesion_count']}</td>"
            f"<td>{', '.join(map(str, s.get('lesion_ids', []))) or '&ndash;'}</td>"
            f"<td>{s['lesion_area_px']}</td>"
            f"<td>{_fmt(s['lesion_area_mm2'], 1)}</td>"
            f"<td>{_fmt(s['predicted_class'])}</td>{probs}</tr>"
        )
    sections = []
    for index in sorted(figures):
        name = report["slices"][index]["name"]
        images = "".join(
            f"<figure>{_img(data, caption)}<figcaption>{html.escape(caption)}</figcaption></figure>"
            for caption, data in figures[index]
        )
        sections.append(f'<h3 id="slice-{index}">Slice {index}: {html.escape(name)}</h3>{images}')
    missing = len(report["slices"]) - len(figures)
    settings = html.escape(json.dumps(report["settings"], indent=1))
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>{html.escape(title)}</title>
<style>{_STYLE}</style></head><body>
<h1>{html.escape(title)}</h1>
{orientation_html(report)}
<p class="note">Research software output (ct-lesion-d2); not a medical device and not a
diagnosis.</p>
{header_html(report)}
<h2>Scan</h2><table class="overview">{_rows(overview)}</table>
{lesion_table_html(report)}
<h2>Slices</h2>
<table><tr><th>#</th><th class="name">slice</th><th>lesions</th><th>lesion ids</th>
<th>area (px)</th><th>area (mm&sup2;)</th><th>class</th>{head}</tr>{"".join(rows)}</table>
<h2>Slice figures</h2>
<p class="note">Each slice: the lesions of the table above (connected regions of the union of
the predicted masks), filled semi-transparent in one colour scale, their score (the highest
confidence of the instances in them; colour bar beside the picture, from the confidence threshold
to 1), each labelled with its lesion id; orientation letters on the four sides and a scale bar
where the input gives orientation and pixel spacing (else the picture says what is unknown).
Beside it, at the same size, the mask probability (the sigmoid of the 28 x 28 mask logits of
every instance pasted into its box, the largest kept; the white line is the mask threshold), then
the ground truth when known and the classifier's class scores; then the RoI confidence histogram
and RoI area against confidence, for the top 16 RoIs and the whole ranked batch.
{f"Figures of {missing} slices are not included (see --max-panels)." if missing else ""}</p>
{"".join(sections)}
<h2>Settings</h2><pre>{settings}</pre>
</body></html>
"""
