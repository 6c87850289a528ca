"""Chess geometry computed from a batch of boards with tensor ops: attack maps, checks, pins, and
per-move facts such as "the path of this move is blocked".

These are the cheap, exact features a chess engine starts from. The model sees them (the board
embedding adds "attacked by the opponent", "defended by me", "pinned", "in check"), and its move
prior adds a learned weight per move fact (:data:`MOVE_FACTS`), so that "the knight on g1 can go
to f3 unless ..." does not have to be rediscovered from millions of tokens. Nothing here masks a
move: each fact only shifts a logit by a learned amount, and the facts ignore castling rights and
en passant, which a board of piece codes does not carry (the move history does).

Everything works on boards as stored in the shards (:func:`chessdt.tokenizer.board_array`: 64 codes,
0 empty, 1-6 white PNBRQK, 7-12 black) plus the side to move, for any batch shape, on any device.
The per-batch cost is a few (N, 64) x (64, ~1.5k) matmuls, small next to the transformer.
"""

from __future__ import annotations

from functools import lru_cache

import chess
import numpy as np
import torch

from chessdt.tokenizer import all_moves

PAWN, KNIGHT, BISHOP, ROOK, QUEEN, KING = range(6)  # plane index of a piece type
MOVE_FACTS = (
    "blocked",  # a piece stands between from- and to-square (sliders, double pushes, castling path)
    "king_into_attack",  # the king moves to a square the opponent attacks (x-raying the king)
    "check_unresolved",  # in check, a non-king move neither captures the checker nor blocks it
    "pin_broken",  # a pinned piece leaves the line of its pin
    "pawn_push_onto_piece",  # a straight pawn move onto an occupied square
    "pawn_capture_empty",  # a diagonal pawn move onto an empty square (legal only en passant)
    "castle_bad",  # castling out of, through or into check (kept last: it is not in the move code)
)
N_CODES = 768  # packed move codes (see code_facts)
SQUARE_FEATURES = ("attacked", "defended", "pinned")  # per square, from the mover's point of view


@lru_cache(maxsize=1)
def _tables() -> dict[str, np.ndarray]:
    """Constant geometry: queen-aligned square pairs, what lies between them, piece attacks, and
    each vocabulary move's squares and kind."""
    pairs = [(s, t) for s in range(64) for t in range(64)
             if s != t and (chess.square_file(s) == chess.square_file(t)
                            or chess.square_rank(s) == chess.square_rank(t)
                            or abs(chess.square_file(s) - chess.square_file(t))
                            == abs(chess.square_rank(s) - chess.square_rank(t)))]
    K = len(pairs)
    pair_index = np.full((64, 64), K, dtype=np.int64)  # K = "not aligned" (a zero column)
    between = np.zeros((K + 1, 64), dtype=np.float32)
    orth = np.zeros(K + 1, dtype=np.float32)  # rook-like pair (the padding pair is neither)
    diag = np.zeros(K + 1, dtype=np.float32)  # bishop-like pair
    for k, (s, t) in enumerate(pairs):
        pair_index[s, t] = k
        for sq in chess.SquareSet(chess.between(s, t)):
            between[k, sq] = 1
        orth[k] = float(chess.square_file(s) == chess.square_file(t) or chess.square_rank(s) == chess.square_rank(t))
        diag[k] = 1.0 - orth[k]
    pair_from = np.array([s for s, _ in pairs] + [0])
    king_pairs = np.full((64, 28), K, dtype=np.int64)  # per square: the pairs that end there
    for sq in range(64):
        ending = [k for k, (_, t) in enumerate(pairs) if t == sq]
        king_pairs[sq, : len(ending)] = ending
    pair_to = np.array([t for _, t in pairs] + [0])
    knight = np.zeros((64, 64), dtype=np.float32)
    king = np.zeros((64, 64), dtype=np.float32)
    pawn = np.zeros((2, 64, 64), dtype=np.float32)  # [color][from][attacked]
    for s in range(64):
        for t in chess.SquareSet(chess.BB_KNIGHT_ATTACKS[s]):
            knight[s, t] = 1
        for t in chess.SquareSet(chess.BB_KING_ATTACKS[s]):
            king[s, t] = 1
        for color in (chess.WHITE, chess.BLACK):
            for t in chess.SquareSet(chess.BB_PAWN_ATTACKS[color][s]):
                pawn[0 if color == chess.WHITE else 1, s, t] = 1
    moves = all_moves()
    m_from = np.array([m.from_square for m in moves])
    m_to = np.array([m.to_square for m in moves])
    m_pair = pair_index[m_from, m_to]
    df = np.abs((m_to % 8) - (m_from % 8))
    dr = (m_to // 8) - (m_from // 8)
    castle = np.isin(m_from, [chess.E1, chess.E8]) & (dr == 0) & (df == 2)
    castle_moves = np.flatnonzero(castle)  # e1g1, e1c1, e8g8, e8c8
    castle_path = np.zeros((len(castle_moves), 64), dtype=np.float32)  # squares between king and rook
    for row, i in enumerate(castle_moves):
        rook = int(m_from[i]) + (3 if m_to[i] > m_from[i] else -4)
        for sq in chess.SquareSet(chess.between(int(m_from[i]), rook)):
            castle_path[row, sq] = 1
    castle_mid = (m_from + m_to) // 2  # the square the king passes (used for castle_moves only)
    kind = np.where(df == 0, 1, np.where((df == 1) & (np.abs(dr) == 1), 2, 0))  # straight, one step diagonal
    return {"pair_from": pair_from, "pair_to": pair_to, "king_pairs": king_pairs, "between": between,
            "orth": orth, "diag": diag, "knight": knight, "king": king, "pawn": pawn,
            "move_from": m_from, "move_to": m_to, "move_pair": m_pair, "move_kind_code": (256.0 * kind).astype(np.float32),
            "castle_moves": castle_moves, "castle_path": castle_path, "castle_mid": castle_mid}


class Geometry(torch.nn.Module):
    """Computes :data:`SQUARE_FEATURES` and :data:`MOVE_FACTS` for a batch of boards.

    A module only to carry its constant tables (non-persistent buffers: not in checkpoints) to the
    model's device. It has no parameters and no gradient flows through it.
    """

    # the constant tables of _tables() and between_t, registered as buffers in __init__
    pair_from: torch.Tensor
    pair_to: torch.Tensor
    king_pairs: torch.Tensor
    between: torch.Tensor
    orth: torch.Tensor
    diag: torch.Tensor
    knight: torch.Tensor
    king: torch.Tensor
    pawn: torch.Tensor
    move_from: torch.Tensor
    move_to: torch.Tensor
    move_pair: torch.Tensor
    move_kind_code: torch.Tensor
    castle_moves: torch.Tensor
    castle_path: torch.Tensor
    castle_mid: torch.Tensor
    between_t: torch.Tensor

    def __init__(self) -> None:
        super().__init__()
        for name, value in _tables().items():
            self.register_buffer(name, torch.from_numpy(value), persistent=False)
        self.register_buffer("between_t", self.between.T.contiguous(), persistent=False)

    @torch.no_grad()
    def forward(self, boards: torch.Tensor,
                turn: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """boards (..., 64) codes, turn (...) 0 = white to move, 1 = black.

        Returns square features (..., 64, 3) float 0/1, in_check (...) bool, each move's packed
        code (..., 1968) int32 (its facts are ``code_facts()[code]``: a (N, 1968, 7) float tensor
        would take ~200 MB for a 4k-token batch), and castle_bad (..., 4) float for the castling
        moves ``castle_moves``.
        """
        with torch.autocast(boards.device.type, enabled=False):  # counts and codes stay exact in fp32
            return self._compute(boards, turn)

    def _compute(self, boards: torch.Tensor,
                 turn: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        lead = boards.shape[:-1]
        codes = boards.reshape(-1, 64).long()
        black = turn.reshape(-1, 1).bool()
        N = codes.shape[0]
        white_piece = (codes >= 1) & (codes <= 6)
        own_mask = torch.where(black, (codes >= 7), white_piece)
        opp_mask = (codes > 0) & ~own_mask
        ptype = (codes - 1) % 6  # 0..5 where occupied
        f32 = torch.float32

        def planes(mask: torch.Tensor) -> torch.Tensor:  # (N, 6, 64) one-hot per piece type
            out = torch.zeros(N, 6, 64, dtype=f32, device=codes.device)
            out.scatter_(1, ptype.clamp(min=0).unsqueeze(1), mask.to(f32).unsqueeze(1))
            return out

        own, opp = planes(own_mask), planes(opp_mask)
        occ = (codes > 0).to(f32)
        own_king = own[:, KING]
        has_king = own_king.sum(1) > 0
        king_col = has_king.unsqueeze(1).to(f32)  # (N, 1): 0 on a board without our king
        king_sq = own_king.argmax(1)  # 0 where there is no king (has_king says so)

        # sliders: per aligned pair, pieces strictly between (with our king removed: an attacked
        # king cannot step back along the attacker's line)
        blockers_nk = (occ - own_king) @ self.between_t  # (N, K+1)
        blockers = blockers_nk + self.between_t[king_sq] * king_col
        orth, diag = self.orth, self.diag

        def slider_rays(side: torch.Tensor, clear: torch.Tensor) -> torch.Tensor:  # (N, K+1)
            rq = (side[:, ROOK] + side[:, QUEEN]).index_select(1, self.pair_from)  # float index_select:
            bq = (side[:, BISHOP] + side[:, QUEEN]).index_select(1, self.pair_from)  # fastest CPU gather
            return rq.mul_(orth).add_(bq.mul_(diag)).mul_(clear)

        def attacks(side: torch.Tensor, rays: torch.Tensor, pawns_white: torch.Tensor) -> torch.Tensor:
            sl = torch.zeros(N, 64, dtype=f32, device=codes.device).index_add_(1, self.pair_to[:-1], rays[:, :-1])
            pawns = torch.where(pawns_white, side[:, PAWN] @ self.pawn[0], side[:, PAWN] @ self.pawn[1])
            return (sl + side[:, KNIGHT] @ self.knight + side[:, KING] @ self.king + pawns) > 0

        opp_rays = slider_rays(opp, (blockers_nk == 0).to(f32))
        attacked = attacks(opp, opp_rays, pawns_white=black)  # (N, 64) bool
        defended = attacks(own, slider_rays(own, (blockers == 0).to(f32)), pawns_white=~black)

        # checks and pins look only along the (at most 27) lines that end on our king
        kp = self.king_pairs[king_sq]  # (N, 28) pair ids, padded with the empty pair
        kp_between = self.between[kp]  # (N, 28, 64)
        far = self.pair_from[kp]  # the far end of each line
        slider = ((opp[:, ROOK] + opp[:, QUEEN]).gather(1, far) * self.orth[kp]
                  + (opp[:, BISHOP] + opp[:, QUEEN]).gather(1, far) * self.diag[kp])
        slider = slider * king_col
        own_occ = own.sum(1)
        n_between = torch.bmm(kp_between, occ.unsqueeze(2)).squeeze(2)
        own_between = torch.bmm(kp_between, own_occ.unsqueeze(2)).squeeze(2)
        check_rays = slider * (n_between == 0).to(f32)
        pin_rays = slider * ((n_between == 1) & (own_between == 1)).to(f32)

        def line_squares(rays: torch.Tensor) -> torch.Tensor:  # (N, 64): squares between, and the far end
            between = torch.bmm(rays.unsqueeze(1), kp_between).squeeze(1)
            return between + torch.zeros(N, 64, dtype=f32, device=codes.device).scatter_add_(1, far, rays)

        knight_checkers = opp[:, KNIGHT] * self.knight[king_sq]
        # an opponent pawn checks from where our pawn on the king's square would capture
        pawn_checkers = opp[:, PAWN] * torch.where(black, self.pawn[1][king_sq], self.pawn[0][king_sq])
        n_checkers = check_rays.sum(1) + knight_checkers.sum(1) + pawn_checkers.sum(1)
        resolve = (line_squares(check_rays) + knight_checkers + pawn_checkers) > 0
        in_check = (n_checkers > 0) & has_king
        pin_line = line_squares(pin_rays)
        pinned = (pin_line > 0) & own_mask

        # per-move facts, packed: each is a from-square fact and a to-square fact (or the move's
        # path), so two column gathers of per-square codes give them all
        king_here = own_king * king_col
        from_code = king_here + 2 * pinned.to(f32) + 4 * own[:, PAWN]
        unresolved = in_check.unsqueeze(1) & ((n_checkers > 1).unsqueeze(1) | ~resolve)
        to_code = attacked.to(f32) + 2 * (pin_line == 0).to(f32) + 4 * unresolved.to(f32) + 8 * occ
        code = from_code.index_select(1, self.move_from)  # (N, M), built in place: these are big
        code += (8 * to_code).index_select(1, self.move_to)
        code += blockers.index_select(1, self.move_pair).clamp_(max=1).mul_(128)
        code += self.move_kind_code
        # castling: the path to the rook must be empty, and the king not in, through or into check
        cm = self.castle_moves
        castle = king_here.index_select(1, self.move_from[cm]) > 0  # (N, 4)
        path_blocked = (occ @ self.castle_path.T) > 0
        code[:, cm] = torch.where(castle, code[:, cm] % 128 + 128 * path_blocked.to(f32), code[:, cm])
        castle_bad = castle & (in_check.unsqueeze(1) | attacked.to(f32).index_select(1, self.castle_mid[cm]).bool()
                               | attacked.to(f32).index_select(1, self.move_to[cm]).bool())
        squares = torch.stack([attacked, defended, pinned], dim=-1).to(f32)
        return (squares.view(*lead, 64, len(SQUARE_FEATURES)), in_check.view(lead),
                code.to(torch.int32).view(*lead, code.shape[-1]), castle_bad.to(f32).view(*lead, len(cm)))


def code_facts() -> torch.Tensor:
    """(N_CODES, len(MOVE_FACTS) - 1) float: the facts (all but castle_bad) a move code stands for.

    A code is ``from + 8 * to + 128 * blocked + 256 * kind`` with from-square bits (our king, a
    pinned piece, our pawn), to-square bits (attacked, off the pin line, not resolving a check,
    occupied) and kind 0 other, 1 straight, 2 one step diagonal.
    """
    out = torch.zeros(N_CODES, len(MOVE_FACTS) - 1)
    for c in range(N_CODES):
        king, pinned, pawn = c & 1, c >> 1 & 1, c >> 2 & 1
        attacked, off_line, unresolved, occupied = c >> 3 & 1, c >> 4 & 1, c >> 5 & 1, c >> 6 & 1
        blocked, kind = c >> 7 & 1, c >> 8
        facts = {"blocked": blocked, "king_into_attack": king & attacked,
                 "check_unresolved": (1 - king) & unresolved, "pin_broken": pinned & off_line,
                 "pawn_push_onto_piece": pawn & (kind == 1) & occupied,
                 "pawn_capture_empty": pawn & (kind == 2) & (1 - occupied)}
        out[c] = torch.tensor([facts[f] for f in MOVE_FACTS if f != "castle_bad"], dtype=torch.float32)
    return out
