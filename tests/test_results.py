"""Result files: strict JSON that keeps inf and nan, read back into the dataclasses."""

from __future__ import annotations

import json
import math


from chessdt.evals.results import from_dict, jsonable





def test_result_json_round_trip_keeps_inf_and_nan() -> None:
    from chessdt.evals.strength import OpponentRow

    row = OpponentRow(label="x", spec="x", anchored=False, elo=math.inf, lo=math.nan, hi=math.inf)
    data = json.loads(json.dumps(jsonable(row)))
    assert data["elo"] == "inf" and data["lo"] is None
    back = from_dict(OpponentRow, data)
    assert back.elo == math.inf and math.isnan(back.lo)
