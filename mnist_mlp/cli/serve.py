"""``mlp serve``: the draw-a-digit page."""

from __future__ import annotations

from pathlib import Path

import click

from .common import CONTEXT, data_dir_option, fail, model_option, threads_option


@click.command(context_settings=CONTEXT)
@model_option
@click.option("--host", default="127.0.0.1",
              help="Address to listen on; anything but loopback lets others on the network "
                   "use it.")
@click.option("--port", type=click.IntRange(0, 65535), default=8000,
              help="Port to listen on (0: any free port).")
@click.option("--samples", type=click.Path(file_okay=False, path_type=Path), default=None,
              metavar="DIR", help="Folder the page's corrections go to (DIR/<class>/), for "
                                  "teaching. Default: NAME.samples/ beside the model.")
@data_dir_option
@threads_option
@click.option("--open", "open_browser", is_flag=True, help="Open the page in a browser.")
def serve(models: tuple[Path, ...], host: str, port: int, samples: Path | None, source,
          open_browser: bool) -> None:
    """Serve a page to draw digits on, watch the network read them and see why, correct
    it and teach it (its dataset from --data-dir is replayed while teaching); Ctrl-C stops it."""
    import signal

    from ..checkpoint import CheckpointError
    from ..serve import DigitApp
    from ..server import DigitServer, is_loopback

    try:
        app = DigitApp.load(list(models), note=lambda line: click.echo(line, err=True),
                            samples=samples, source=source)
    except CheckpointError as exc:
        raise fail(exc) from None
    except OSError as exc:                    # the samples folder cannot be read
        raise fail(f"{exc.filename}: {exc.strerror or exc}") from None
    try:
        server = DigitServer(app, host, port)
    except OSError as exc:
        raise fail(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from None
    if not is_loopback(host):
        click.echo(f"Warning: listening on {host}: anyone who can reach this machine on the "
                   "network can use this page.", err=True)
    click.echo(f"serving {', '.join(map(str, models))} at {server.url} (Ctrl-C stops)")
    if open_browser:
        import webbrowser

        webbrowser.open(server.url)
    server.serve_forever(stop_on=(signal.SIGINT, signal.SIGTERM), on_stop=app.close)
    app.wait()
