"""`tracelake ui`: traces, conversations, costs and SQL over the lake, in a browser.

- `server.py`: the HTTP server (standard library), access token, Host / Origin checks, security headers;
- `pages.py`: URL → page, rendered by Jinja2 templates (`templates/`) with autoescaping;
- `lake.py`: which Parquet files a page reads, and the DuckDB cursor it reads them with;
- `trace_list.py`, `trace_detail.py`, `dashboards.py`: what the list, a trace and the dashboards show;
- `sql_console.py`: the read-only DuckDB sandbox of the SQL page;
- `feedback_client.py`: thumbs up / down go to the receiver's `POST /v1/feedback`;
- `static/`: the stylesheet, one script, and uPlot (vendored, see static/vendor/uplot/VENDORED.md).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING

from pipeline.config import Config
from pipeline.config.model import is_loopback, split_endpoint
from pipeline.receiver.http_server import Route

if TYPE_CHECKING:  # the modules themselves load when a UI is built: `import pipeline.ui` stays cheap
    from pipeline.ui.server import UiServer
    from sinks.parquet.layout import Lake

TOKEN_ENV = "TRACELAKE_UI_TOKEN"


class UiSetupError(ValueError):
    pass


def ui_server(
    config: Config,
    *,
    lake: str | Path | Lake | None = None,
    endpoint: str | None = None,
    feedback_route: Route | None = None,
) -> UiServer:
    """The UI over `lake` (a directory or `s3://…`; default: the config's, with its parquet sink's `s3`
    settings), listening on `endpoint` (default: `ui.endpoint`).

    Feedback goes to `feedback_route` when given (inside `tracelake run`: the receiver's own route),
    else over HTTP to the config's receiver (`ui.feedback_url`, else its OTLP/HTTP endpoint)."""
    from pipeline.ui.feedback_client import http_poster, in_process_poster, receiver_feedback_url
    from pipeline.ui.pages import UiApp, UiSettings
    from pipeline.ui.server import UiServer
    from sinks.artifacts.configured import open_stores
    from sinks.artifacts.store import ArtifactStore
    from sinks.parquet.layout import open_lake

    ui = config.raw.ui
    endpoint = endpoint or ui.endpoint
    token = ui.auth_token or os.environ.get(TOKEN_ENV) or None
    if not is_loopback(endpoint) and not token:
        raise UiSetupError(
            f"{endpoint} is not a loopback address: the UI needs a token there (ui.auth_token or ${TOKEN_ENV})"
        )
    if lake is None:
        lake = config.lake()
        stores = open_stores(config.view())
    else:
        lake = open_lake(lake)
        stores = [ArtifactStore(lake.artifact_store, filesystem=lake.fs)]
    if feedback_route is not None:
        post, target = in_process_poster(feedback_route), "this process's receiver"
    elif (url := receiver_feedback_url(config)) is not None:
        post, target = http_poster(url, ui.feedback_token, ui.feedback_ca_file), url
    else:
        post, target = None, ""
    app = UiApp(UiSettings(lake, stores, ui.sql_max_rows, ui.sql_timeout), post, target)
    host, port = split_endpoint(endpoint)
    try:
        server = UiServer(app.handle, host, port, token)
    except OSError:
        app.close()
        raise
    server.on_stop = app.close
    return server
