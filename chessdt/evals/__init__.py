"""Evaluators: move legality, strength by prompted rating, opening variety.

Each evaluator is a library function that returns a frozen result dataclass (with `to_dict`,
`save` and `format`, :mod:`chessdt.evals.results`) and never prints. What is evaluated is a
:class:`~chessdt.evals.subject.Subject`: the model prompted at a rating (played in batches through
the KV cache) or any :class:`~chessdt.play.players.Player` (played one move at a time), so other
experiments (RL fine-tuning, filtered imitation, a quantilizer) can be measured with the same code.

Results go to ``<run_dir>/eval/{legality,strength,openings}.json`` by default, next to the game
logs (``*_games.jsonl``); ``chessdt report RUN_DIR`` turns them into ``report.md`` with plots.
"""
