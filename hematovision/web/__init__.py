"""The web app's pieces: one module per tab, the shared model store, errors and style.

``app.py`` (the entry point Hugging Face Spaces runs) assembles the page from
these modules; this package may import Gradio, the rest of ``hematovision``
may not (tests/test_imports.py).

- ``models``: the models the app serves, listed from the models folder
  (:func:`hematovision.registry.list_models`), loaded once; a lab model dropped
  in the folder (or written by the Review tab's adapt button) is picked up by
  :meth:`ModelStore.refresh` without code changes.
- ``errors``: the handlers' error boundary (:func:`user_errors`) and the refusals
  of requests Gradio checks before a handler runs.
- ``files``: uploads (only files in Gradio's upload folder are opened) and outputs.
- ``classify_tab``, ``view3d_tab``, ``morphology_tab``, ``batch_tab``,
  ``review_tab``, ``about_tab``: each has its public handlers (their docstrings
  are the API and MCP descriptions) and a ``build()`` that lays out the tab and
  returns its components. ``review_*`` modules hold the Review tab's logic.
- ``style``: theme, CSS and the Review tab's keyboard shortcuts.

To add a tab: a ``<name>_tab.py`` with its handlers and ``build()``, then one
line in ``app.py``'s ``gr.Tabs()``. Research use only; not a diagnostic device.
"""
