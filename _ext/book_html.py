"""A fix to the HTML pages the book's theme stack writes (a local Sphinx extension, _config.yml).

sphinx-thebe 0.3.1 under Jupyter Book 1 adds its settings script to every page twice; the second
`const THEBE_JS_URL` declaration is then a console error on every page of the book. The fix drops
any script that a page would include twice, which changes nothing else.
"""

from __future__ import annotations


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
    context["script_files"] = kept


def setup(app) -> dict:
    app.connect("html-page-context", drop_repeated_scripts)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
