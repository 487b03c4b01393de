"""MkDocs hook: the configuration page's reference tables come from the config schema itself
(``proctor.cluster.config_docs.reference_markdown``), so a key added to the code is documented on the
next build and a key without a description fails the test suite."""

MARKER = "<!-- config-reference -->"


def on_page_markdown(markdown, page, config, files):
    if MARKER not in markdown:
        return markdown
    from proctor.cluster.config_docs import reference_markdown

    return markdown.replace(MARKER, reference_markdown())
