"""The HTML page of `dvc plots show`, viewable offline.

DVC's page loads vega, vega-lite and vega-embed from a CDN, so without internet (CI, an air-gapped cluster) it
shows nothing. This template inlines the three from vl-convert's bundle (a PyPI wheel, no download at run time);
`dvc plots show --html-template <it>` uses it (`make plots`).
"""

from __future__ import annotations

from pathlib import Path

from dltorch.io import atomic_path

# No {scripts} placeholder: DVC would put its CDN <script> tags there. {plot_divs} is where DVC puts the plots.
PAGE = """<!DOCTYPE html>
<html>
<head>
<meta charset="utf-8">
<title>DVC plots</title>
<script>{bundle}</script>
<style>table {{ border-spacing: 15px; }}</style>
</head>
<body>
{{plot_divs}}
</body>
</html>
"""


def write_offline_template(path: Path) -> Path:
    import vl_convert

    bundle = vl_convert.javascript_bundle()
    if "{plot_divs}" in bundle or "</script" in bundle:
        raise ValueError("the vega bundle contains text that would break the page template")
    with atomic_path(path) as tmp:
        tmp.write_text(PAGE.format(bundle=bundle), encoding="utf-8")
    return path
