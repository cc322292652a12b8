"""The timeline's charts as server-rendered SVG (pygal): no JavaScript, nothing from a CDN.

pygal takes ~50 ms a chart, so each SVG is cached by what it plots (a page of batches that
has not changed renders from the cache).
"""

from __future__ import annotations

from functools import lru_cache

from pygal import Config, Line, StackedBar
from pygal.style import Style

from kbsync.store.models import Batch

SHARES = (("efficacy", "efficacy"), ("paraphrase", "paraphrase"), ("neighbour", "neighbour"),
          ("efficacy_acc", "greedy accuracy"), ("paraphrase_acc", "greedy paraphrase accuracy"),
          ("held_out_acc", "greedy held-out accuracy"))
STATE_COLOURS = {"verified": "#1a7f37", "rolled_back": "#bf8700", "failed": "#cf222e", "applied": "#1f6feb",
                 "running": "#8c959f"}
STYLE = Style(background="white", plot_background="white", font_family="system-ui, sans-serif",
              colors=("#1f6feb", "#8250df", "#1a7f37", "#bc4c00"), label_font_size=11,
              major_label_font_size=11, legend_font_size=12, title_font_size=14)

# One plotted batch: (label, state, edits, (efficacy, paraphrase, neighbour, greedy accuracies)).
Point = tuple[str, str, int, tuple[float | None, ...]]


def points(batches: list[Batch]) -> tuple[Point, ...]:
    return tuple((f"#{b.id} {b.started_at:%m-%d %H:%M}", b.state, b.n_edits,
                  tuple((b.metrics or {}).get(key) for key, _ in SHARES)) for b in batches)


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
    config.x_labels_major_count = 12
    return config


@lru_cache(maxsize=128)
def shares_chart(plotted: tuple[Point, ...]) -> str:
    """Efficacy, paraphrase and neighbour shares and greedy accuracy per batch, oldest first (SVG)."""
    chart = Line(_config("Checks passed per batch (share)"), range=(0, 1), dots_size=3)
    chart.x_labels = [p[0] for p in plotted]
    for i, (_, name) in enumerate(SHARES):
        chart.add(name, [p[3][i] for p in plotted], allow_interruptions=True)
    return chart.render(is_unicode=True)


@lru_cache(maxsize=128)
def size_chart(plotted: tuple[Point, ...]) -> str:
    """Edits per batch, coloured by how the batch ended, oldest first (SVG)."""
    present = [state for state in STATE_COLOURS if any(p[1] == state for p in plotted)]
    chart = StackedBar(_config("Edits per batch, by outcome", tuple(STATE_COLOURS[s] for s in present)))
    chart.x_labels = [p[0] for p in plotted]
    for state in present:
        chart.add(state.replace("_", " "), [p[2] if p[1] == state else None for p in plotted])
    return chart.render(is_unicode=True)
