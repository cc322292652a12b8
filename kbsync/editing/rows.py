"""Token rows for the editor, and a batch layout that puts every row's subject at one column.

Each row (`model.tokens.Row`, built by `model.tokens.encode_row`) is a token sequence with an
``anchor``: the index of the subject's last token. The
aligned batch left-pads each row so that all anchors fall on the same column A, then right-pads:

    row r:  [pad .. pad | prefix tokens of r | subject-last | rest of r | pad .. pad]
             columns 0 .. A-1 (nothing here depends on the edit)   A ........ T-1

so the columns before A are an exact shared "prefix" for key/value caching (upper.py), and the
subject's last token of every row is hidden[:, A].
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from kbsync.errors import TokenizationError
from kbsync.model.tokens import Row


def target_ids(tokenizer, target: str) -> list[int]:
    """Token ids of " target" (the CounterFact convention: a space before the answer)."""
    ids = tokenizer((target if target.startswith(" ") else " " + target), add_special_tokens=False)["input_ids"]
    if not ids:
        raise TokenizationError(f"target {target!r} tokenises to nothing; fix the label")
    return list(ids)


@dataclass
class Aligned:
    input_ids: torch.Tensor  # (B, T)
    attention_mask: torch.Tensor  # (B, T) 1 for real tokens
    position_ids: torch.Tensor  # (B, T) real positions (0 at each row's first token)
    offsets: torch.Tensor  # (B,) left padding of each row: token t sits at column offsets[r] + t
    anchor: int  # column A of every row's subject-last token

    def column(self, row: int, token: int) -> int:
        return int(self.offsets[row]) + token

    def through_anchor(self) -> Aligned:
        """Columns 0..A only: by causality nothing up to the subject's last token sees the rest."""
        end = self.anchor + 1
        return Aligned(self.input_ids[:, :end], self.attention_mask[:, :end], self.position_ids[:, :end],
                       self.offsets, self.anchor)


def align(rows: list[Row], pad_id: int) -> Aligned:
    a = max(r.anchor for r in rows)
    tail = max(len(r.ids) - r.anchor for r in rows)
    b, t = len(rows), a + tail
    ids = torch.full((b, t), pad_id, dtype=torch.long)
    mask = torch.zeros((b, t), dtype=torch.long)
    offsets = torch.tensor([a - r.anchor for r in rows])
    for i, r in enumerate(rows):
        o = int(offsets[i])
        ids[i, o:o + len(r.ids)] = torch.tensor(r.ids)
        mask[i, o:o + len(r.ids)] = 1
    pos = (torch.arange(t)[None, :] - offsets[:, None]).clamp(min=0)  # (B, T)
    return Aligned(ids, mask, pos, offsets, a)
