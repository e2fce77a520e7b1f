"""Information extraction with a regex: the server constrains the output to the pattern, so the
fields always parse (needs constrained decoding on the server: `regex` in sampling_params).

    python examples/regex_extraction.py --url http://127.0.0.1:30000
"""

from __future__ import annotations

import argparse
import re

import lang as sgl

PASSAGE = ("Python 3.12 was released on 2 October 2023. The release added improved error messages "
           "and a per-interpreter GIL.")
VERSION = r"[0-9]\.[0-9]{1,2}"
DATE = r"[0-9]{4}-[0-9]{2}-[0-9]{2}"


@sgl.function
def extract(s, passage):
    s += "Read the passage and fill in the fields.\n\nPassage: " + passage + "\n\n"
    s += "Version: " + sgl.gen("version", max_tokens=8, regex=VERSION, temperature=0) + "\n"
    s += "Release date (YYYY-MM-DD): " + sgl.gen("date", max_tokens=16, regex=DATE, temperature=0) + "\n"
    s += "Feature count: " + sgl.gen_int("features", max_tokens=4, temperature=0)


def main(backend, passage: str = PASSAGE) -> sgl.ProgramState:
    state = extract.run(passage=passage, backend=backend)
    if state.error():
        raise state.error()
    assert re.fullmatch(VERSION, state["version"]) and re.fullmatch(DATE, state["date"])
    print({"version": state["version"], "date": state["date"], "features": int(state["features"])})
    return state


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", default="http://127.0.0.1:30000")
    main(sgl.RuntimeEndpoint(parser.parse_args().url))
