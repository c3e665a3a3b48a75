"""What ``%lmlist`` shows: registry entries as an HTML table in notebooks, text in terminals."""

from __future__ import annotations

import html
from dataclasses import dataclass

from lmkit.api import Entry

__all__ = ["Listing"]


@dataclass
class Listing:
    """Entries of one or more registries; rich frontends use `_repr_html_`, terminals `repr`."""

    groups: dict[str, list[Entry]]

    def __repr__(self) -> str:
        blocks = []
        for kind, entries in self.groups.items():
            width = max((len(e.name) for e in entries), default=4)
            lines = [f"{kind}:"]
            for e in entries:
                aliases = f" (aliases: {', '.join(e.aliases)})" if e.aliases else ""
                lines.append(f"  {e.name:<{width}}  {e.description}{aliases}  [{e.source}]")
            if not entries:
                lines.append("  (none)")
            blocks.append("\n".join(lines))
        return "\n\n".join(blocks)

    def _repr_html_(self) -> str:
        rows = []
        for kind, entries in self.groups.items():
            for e in entries:
                rows.append(
                    "<tr>" + "".join(f"<td style='text-align:left'>{html.escape(v)}</td>" for v in (
                        kind, e.name, ", ".join(e.aliases), e.description, e.source)) + "</tr>")
        head = "".join(f"<th style='text-align:left'>{h}</th>"
                       for h in ("kind", "name", "aliases", "description", "source"))
        return (f"<table class='lmkit-list'><thead><tr>{head}</tr></thead>"
                f"<tbody>{''.join(rows)}</tbody></table>")
