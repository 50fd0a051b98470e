"""Rebuild this folder from the reference data (shared/reference/authors-nets/, built by the authors' code).

Kept: every state_dict key/shape/kind of the released configurations (keys_*.tsv, trimmed to those columns),
the parameter counts, and the fixtures' outputs with the level t of each case. Not kept: the fixtures' weights
and inputs, which tests regenerate from the fixtures' own recipes (seeded fills); ``fill_sha256`` is the
checksum of the regenerated weights (strbench.fid_weights.state_dict_sha256), checked here against the fixture.

    python tests/golden/authors_nets/extract.py /work/shared/reference/authors-nets
"""
import json
import shutil
import sys
from pathlib import Path

import torch

HERE = Path(__file__).resolve().parent
STEMS = ("texture", "structure", "irsde_inpainting", "discriminator")


def main(ref: Path) -> None:
    sys.path.insert(0, str(HERE.parents[2]))
    sys.path.insert(0, str(HERE.parents[1]))
    from strbench.fid_weights import state_dict_sha256
    from helpers import deterministic_fill  # the fixtures' recipe

    golden = {}
    for stem in STEMS:
        rows = [ln.split("\t") for ln in (ref / f"keys_{stem}.tsv").read_text().splitlines() if ln]
        head = next(r for r in rows if r[0] == "idx")
        cols = [head.index(c) for c in ("key", "shape", "kind")]
        out = [rows[0][0]] + ["\t".join(r[c] for c in cols) for r in rows if r[0].isdigit()]
        (HERE / f"keys_{stem}.tsv").write_text("\n".join([out[0], "key\tshape\tkind"] + out[1:]) + "\n")
        fx = torch.load(ref / f"fixture_{stem}_tiny.pt", weights_only=True)
        fill = deterministic_fill(fx["state_dict"])
        assert all(torch.equal(fill[k], v) for k, v in fx["state_dict"].items()), stem
        cases = []
        for case in [fx] + list(fx["extras"]):
            inp = case["inputs"]
            x = inp["x_t"] if stem == "discriminator" else inp["xt"]
            t = inp["t"]
            cases.append({"shape": list(x.shape), "t": t if isinstance(t, int) else t.tolist(),
                          "t_is_int": isinstance(t, int), "output": case["output"].clone()})
        golden[stem] = {"config": {k: fx["config"][k] for k in ("nf", "depth", "ngf", "t_emb_dim", "in_nc")
                                   if k in fx["config"]},
                        "fill_sha256": state_dict_sha256(fill), "cases": cases}
    torch.save(golden, HERE / "fixture_outputs.pt")
    shutil.copyfile(ref / "param_counts.json", HERE / "param_counts.json")
    print(json.dumps({s: len(g["cases"]) for s, g in golden.items()}))


if __name__ == "__main__":
    main(Path(sys.argv[1]))
