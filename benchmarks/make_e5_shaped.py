"""Write the e5-small-shaped benchmark model: e5-small's exact config, random weights (seed 0), MiniLM's tokenizer.

    python benchmarks/make_e5_shaped.py OUT_DIR [--minilm ../shared/models/all-MiniLM-L6-v2]

The same model the tests build (tests/conftest.py ``e5_shaped_dir``); needs the export extra (torch).
"""

import argparse
import shutil
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from conftest import E5_SMALL_CONFIG, MINILM, TOKENIZER_FILES, build_bert  # noqa: E402


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("out")
    p.add_argument("--minilm", default=str(MINILM), help="folder with the uncased WordPiece tokenizer to copy")
    args = p.parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    build_bert(out, seed=0, **E5_SMALL_CONFIG)
    for name in TOKENIZER_FILES:
        shutil.copy(Path(args.minilm) / name, out / name)
    print(out)


if __name__ == "__main__":
    main()
