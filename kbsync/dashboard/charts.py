"""The timeline's charts as server-rendered SVG (pygal): no JavaScript, nothing from a CDN."""

from __future__ import annotations

from pygal import Config, Line, StackedBar
from pygal.style import Style

from kbsync.store.models import Batch

SHARES = (("efficacy", "efficacy"), ("paraphrase", "paraphrase"), ("neighbour", "neighbour"),
          ("efficacy_acc", "greedy accuracy"))
STYLE = Style(background="white", plot_background="white", font_family="system-ui, sans-serif",
              colors=("#1f6feb", "#8250df", "#1a7f37", "#bc4c00", "#cf222e"), label_font_size=11,
              major_label_font_size=11, legend_font_size=12, title_font_size=14)


STATE_COLOURS = {"verified": "#1a7f37", "rolled_back": "#bf8700", "failed": "#cf222e", "applied": "#1f6feb",
                 "running": "#8c959f"}


def _config(title: str, colours: tuple[str, ...] = STYLE.colors) -> Config:
    config = Config()
    config.js = []                    # pygal's default fetches its tooltip script from a CDN
    config.style = Style(**{**STYLE.to_dict(), "colors": colours})
    config.title = title
    config.width, config.height = 960, 300
    config.legend_at_bottom = True
    config.x_label_rotation = 30
    config.show_minor_x_labels = False
    config.truncate_label = -1
    config.disable_xml_declaration = True
    return config


def _labels(batches: list[Batch]) -> list[str]:
    return [f"#{b.id} {b.started_at:%m-%d %H:%M}" for b in batches]


def shares_chart(batches: list[Batch]) -> str:
    """Efficacy, paraphrase and neighbour shares and greedy accuracy per batch, oldest first (SVG)."""
    chart = Line(_config("Checks passed per batch (share)"), range=(0, 1), dots_size=3)
    chart.x_labels = _labels(batches)
    chart.x_labels_major_count = 12
    for key, name in SHARES:
        chart.add(name, [b.metrics.get(key) if b.metrics else None for b in batches], allow_interruptions=True)
    return chart.render(is_unicode=True)


def size_chart(batches: list[Batch]) -> str:
    """Edits per batch, split by how the batch ended, oldest first (SVG)."""
    present = [state for state in STATE_COLOURS if any(b.state == state for b in batches)]
    chart = StackedBar(_config("Edits per batch, by outcome", tuple(STATE_COLOURS[s] for s in present)))
    chart.x_labels = _labels(batches)
    chart.x_labels_major_count = 12
    for state in present:
        chart.add(state.replace("_", " "), [b.n_edits if b.state == state else None for b in batches])
    return chart.render(is_unicode=True)
