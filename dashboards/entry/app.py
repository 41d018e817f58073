"""The Streamlit entry point of ``twin dashboard`` and ``twin up``: it runs ``dashboards/app.py``.

It lives in a directory of its own because Streamlit treats a main script with a ``pages/``
directory beside it as a multipage app of the first kind, where a page's URL runs that page's
file alone, without the main script: past the sign-in that ``dashboards/app.py`` puts in front
of every page. From here the main script runs on every request and picks the page itself."""

import runpy
from pathlib import Path

runpy.run_path(str(Path(__file__).resolve().parent.parent / "app.py"), run_name="__main__")
