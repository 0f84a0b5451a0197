"""Sections of the HTML report a reader needs first: the header (model card, thresholds, date,
version, input handling) and the per-lesion table. :func:`render_scan_html` places them."""

import html

__all__ = ["header_html", "lesion_table_html", "orientation_html"]


def _fmt(value, digits=3):
    if value is None:
        return "&ndash;"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return html.escape(str(value))


def _slice_range(slices):
    if not slices:
        return "&ndash;"
    if len(slices) == 1:
        return str(slices[0])
    contiguous = slices == list(range(slices[0], slices[-1] + 1))
    return f"{slices[0]}&ndash;{slices[-1]}" if contiguous else ", ".join(map(str, slices))


def lesion_table_html(report):
    """The per-lesion table: id, slices, area, volume, mean and max score of its instances.

    Args:
        report (dict): from :func:`ct_lesion_d2.analysis.build_scan_report`.

    Returns:
        str: an HTML fragment (heading, note and table).
    """
    summary, lesions = report["summary"], report["lesions"]
    note = html.escape(summary["lesion_count_note"])
    if not lesions:
        return f'<h2>Lesions</h2><p class="note">No lesion found. {note}.</p>'
    rows = "".join(
        f"<tr><td>{x['id']}</td><td>{_slice_range(x['slices'])}</td><td>{x['area_px']}</td>"
        f"<td>{_fmt(x['area_mm2'], 1)}</td><td>{_fmt(x['max_slice_area_mm2'], 1)}</td>"
        f"<td>{_fmt(x['volume_ml'], 3)}</td><td>{_fmt(x['mean_score'], 2)}</td>"
        f"<td>{_fmt(x['max_score'], 2)}</td><td>{x['num_instances']}</td></tr>"
        for x in lesions
    )
    return (
        f"<h2>Lesions ({len(lesions)})</h2><p class='note'>{note}; scores are those of the "
        "predicted instances overlapping each lesion.</p>"
        "<table><tr><th>id</th><th>slices</th><th>area (px)</th><th>area (mm&sup2;)</th>"
        "<th>largest slice area (mm&sup2;)</th><th>volume (mL)</th><th>mean score</th>"
        f"<th>max score</th><th>instances</th></tr>{rows}</table>"
    )


def orientation_html(report):
    """The line on top of the page for input that was not read as axial slices: resampled to
    axial slices from a coronal or sagittal volume, or run as stored (``--accept-non-axial``).

    Args:
        report (dict): from :func:`ct_lesion_d2.analysis.build_scan_report`; reads ``scan``.

    Returns:
        str: an HTML paragraph, or "" for axial input.
    """
    scan = report["scan"]
    if scan.get("not_axial"):
        text = (
            f"Not axial: the input is {scan['not_axial']}, run as stored on request "
            "(--accept-non-axial); the model is trained on axial slices."
        )
    elif scan.get("resampled_from"):
        text = (
            f"Resampled to axial slices from a {scan['resampled_from']} input; spacing from the "
            "volume's, masks exported on the input's grid (see input below)."
        )
    else:
        return ""
    return f'<p class="orientation"><b>{html.escape(text)}</b></p>'


def _units(scan):
    if scan.get("input_units") == "HU":
        return "Hounsfield units (DICOM rescale or NIfTI values), windowed as the model expects"
    return scan.get("input_units")


def header_html(report):
    """The lines above everything else: model card, thresholds, input handling, date, version.

    Args:
        report (dict): from :func:`ct_lesion_d2.analysis.build_scan_report`; reads
            ``settings`` (``model_card``, thresholds, version, ``created``) and ``scan``.

    Returns:
        str: an HTML fragment (a definition table).
    """
    settings, scan = report.get("settings") or {}, report["scan"]
    card = settings.get("model_card") or {}
    model = card.get("name") or (settings.get("segmenter") or {}).get("config_file")
    data = card.get("training_data")
    lines = [
        (
            "model",
            f"{_fmt(model)}; weights {_fmt(card.get('weights_file'))} "
            f"(sha256 {_fmt(card.get('weights_sha256', '')[:16] or None)})",
        ),
        (
            "trained on",
            _fmt(", ".join(data) if data else "not recorded in the checkpoint"),
        ),
        (
            "thresholds",
            f"lesion confidence &ge; {_fmt(settings.get('confidence_threshold'), 2)}, "
            f"mask probability &ge; {_fmt(settings.get('mask_threshold'), 2)}",
        ),
        ("input", _fmt("; ".join(scan.get("input_notes") or []) or _units(scan))),
        (
            "created",
            f"{_fmt(settings.get('created'))} by ct-lesion-d2 "
            f"{_fmt(settings.get('ct_lesion_d2_version'))}",
        ),
    ]
    rows = "".join(f'<tr><th class="name">{k}</th><td>{v}</td></tr>' for k, v in lines)
    return f'<table class="overview header">{rows}</table>'
