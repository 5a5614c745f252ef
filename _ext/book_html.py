"""Fixes to the HTML pages the book's theme stack writes (a local Sphinx extension, _config.yml).

1. sphinx-thebe 0.3.1 under Jupyter Book 1 adds its settings script to every page twice; the
   second `const THEBE_JS_URL` is then a console error on every page. Scripts a page would
   include twice are dropped, which changes nothing else.
2. The book reads offline: MathJax, require.js and the Jupyter widget manager would load from
   public CDNs. They are fetched once from the npm registry at pinned versions, checked against
   the registry's sha512, unpacked into `_build/vendor/` with their licences, and served from the
   book's own `_static/vendor/`. Without network and without a cached copy, the build stops with
   a message that says so.
3. Every page links to the same page in the other language's edition (the Chinese one is built
   from zh/ into the English one's zh/ folder).
"""

from __future__ import annotations

import base64
import hashlib
import io
import shutil
import tarfile
import urllib.request
from pathlib import Path

from sphinx.errors import ExtensionError

REGISTRY = "https://registry.npmjs.org"

# npm package -> (version, the registry's sha512 integrity, {path in the package: path in vendor/}).
# A path ending in "/" copies that folder.
VENDOR = {
    "mathjax": (
        "3.2.2",
        "Bt+SSVU8eBG27zChVewOicYs7Xsdt40qm4+UpHyX7k0/O9NliPc+x77k1/FEsPsjKPZGJvtRZM1vO+geW0OhGw==",
        {
            "es5/tex-mml-chtml.js": "mathjax/tex-mml-chtml.js",
            "es5/output/chtml/fonts/woff-v2/": "mathjax/output/chtml/fonts/woff-v2/",
            "es5/input/tex/extensions/": "mathjax/input/tex/extensions/",
            "es5/a11y/": "mathjax/a11y/",
            "es5/ui/": "mathjax/ui/",
            "LICENSE": "mathjax/LICENSE",
        },
    ),
    "requirejs": (
        "2.3.7",
        "DouTG8T1WanGok6Qjg2SXuCMzszOo0eHeH9hDZ5Y4x8Je+9JB38HdTLT4/VA8OaUhBa0JPVHJ0pyBkM1z+pDsw==",
        {"require.js": "require.js", "LICENSE": "require.LICENSE"},
    ),
    "@jupyter-widgets/html-manager": (
        "1.0.6",
        "+Mn+Ra8wyIHrYaUpfmf9A3dsLkt/NuwzPQN8sthdxBD35VV5cOJbpmgMhNR27n/rmP3mKyEe0PWCJrtZrXTXDQ==",
        {"dist/": "widgets/", "LICENSE": "widgets/LICENSE"},
    ),
}
SKIP = (".map", "embed.js", "libembed-amd.js")  # source maps and the bundles the book does not load


def drop_repeated_scripts(app, pagename, templatename, context, doctree) -> None:
    """Keep the first of identical script entries (same file or body, same attributes)."""
    seen, kept = set(), []
    for script in context.get("script_files", []):
        attributes = getattr(script, "attributes", {})
        filename = getattr(script, "filename", script) or ""  # an inline script: None or ""
        key = (str(filename), tuple(sorted(attributes.items())))
        if key not in seen:
            seen.add(key)
            kept.append(script)
    context["script_files"] = _configure_requirejs(kept)


# The widget manager finds its fonts next to the module requirejs loads it as; by default that is
# "@jupyter-widgets/html-manager/dist/" beside the page, which does not exist.
REQUIREJS_CONFIG = (
    "var require = {paths: {'@jupyter-widgets/html-manager/dist': "
    "(document.documentElement.dataset.content_root || '') + '_static/vendor/widgets'}};"
)


def _configure_requirejs(scripts: list) -> list:
    """On a page with widgets, configure requirejs (before it loads) to find the vendored files."""
    from sphinx.builders.html._assets import _JavaScript

    for i, script in enumerate(scripts):
        if str(getattr(script, "filename", "")).endswith("vendor/require.js"):
            return [*scripts[:i], _JavaScript("", body=REQUIREJS_CONFIG), *scripts[i:]]
    return scripts


def _tarball(name: str, version: str, integrity: str, cache: Path) -> bytes:
    """The package's tarball: from the cache, else from the registry; its sha512 checked."""
    path = cache / f"{name.replace('/', '+')}-{version}.tgz"
    if path.is_file():
        blob = path.read_bytes()
    else:
        url = f"{REGISTRY}/{name}/-/{name.split('/')[-1]}-{version}.tgz"
        try:
            with urllib.request.urlopen(url, timeout=120) as response:
                blob = response.read()
        except OSError as error:
            raise ExtensionError(
                f"cannot fetch {url} ({error}): the book serves {name} {version} itself so that it "
                f"reads offline; build once with network access, or put the file at {path}"
            ) from error
    digest = base64.b64encode(hashlib.sha512(blob).digest()).decode()
    if digest != integrity:
        path.unlink(missing_ok=True)
        raise ExtensionError(f"{name} {version}: sha512 {digest} is not the registry's {integrity}")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(blob)
    return blob


def vendor(static: Path, cache: Path) -> None:
    """Unpack the pinned packages' files into `static`/vendor (once; `cache` keeps the tarballs)."""
    done = cache / f"vendor-{hashlib.sha256(repr(VENDOR).encode()).hexdigest()[:12]}.complete"
    if done.is_file() and (static / "vendor").is_dir():
        return
    shutil.rmtree(static, ignore_errors=True)
    for name, (version, integrity, files) in VENDOR.items():
        blob = _tarball(name, version, integrity, cache)
        with tarfile.open(fileobj=io.BytesIO(blob), mode="r:gz") as tar:
            for member in tar.getmembers():
                inside = member.name.removeprefix("package/")
                if member.isfile() and not inside.endswith(SKIP):
                    target = _target(inside, files)
                    if target is not None:
                        out = static / "vendor" / target
                        out.parent.mkdir(parents=True, exist_ok=True)
                        out.write_bytes(tar.extractfile(member).read())
    done.write_text("ok\n")


def _target(inside: str, files: dict[str, str]) -> str | None:
    """Where a file of the package goes under vendor/, or None if the book does not use it."""
    for source, target in files.items():
        if inside == source:
            return target
        if source.endswith("/") and inside.startswith(source):
            return target + inside[len(source) :]
    return None


def serve_vendored(app, config) -> None:
    """Serve the vendored files as `_static/vendor/`, and point MathJax and myst-nb at them."""
    build = Path(app.outdir).parent  # _build
    static = build / "vendored"
    vendor(static, build / "npm-cache")
    config.html_static_path.append(str(static))
    config.mathjax_path = "vendor/mathjax/tex-mml-chtml.js"
    config.nb_ipywidgets_js = {
        "vendor/require.js": {},
        "vendor/widgets/embed-amd.js": {"data-jupyter-widgets-cdn": "vendor/widgets/"},
    }


def language_switch(app, pagename, templatename, context, doctree) -> None:
    """Link every page to the same page in the other edition (English at /, Chinese at /zh/).

    `python scripts/book_tools.py build` puts the Chinese edition's HTML in the English one's zh/
    folder, so the link is relative and works from any static host and from a downloaded copy.
    """
    if doctree is None or "body" not in context:
        return
    up = "../" * pagename.count("/")
    if (app.config.language or "en").startswith("zh"):
        href, label, lang = f"{up}../{pagename}.html", "English", "en"
    else:
        href, label, lang = f"{up}zh/{pagename}.html", "中文", "zh-CN"
    link = f'<a href="{href}" hreflang="{lang}" lang="{lang}">{label}</a>'
    context["body"] = f'<p class="language-switch">{link}</p>\n' + context["body"]


def setup(app) -> dict:
    app.connect("config-inited", serve_vendored, priority=100)  # before myst-nb reads its config
    app.connect("html-page-context", drop_repeated_scripts)
    app.connect("html-page-context", language_switch)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
