"""Multi-hop question answering with parallel branches.

The program splits a question into sub-questions, answers them concurrently in forks of one state
(their shared prefix is prefilled once), then writes the final answer from the gathered facts.

    python examples/multi_hop_qa.py --url http://127.0.0.1:30000
"""

from __future__ import annotations

import argparse

import lang as sgl

NUM_HOPS = 2


@sgl.function
def multi_hop_qa(s, question):
    s += "Question: " + question + "\n"
    s += "Break the question into simpler questions.\n"
    for i in range(NUM_HOPS):
        s += f"Sub-question {i + 1}:" + sgl.gen(f"sub_{i}", max_tokens=12, stop="\n", temperature=0) + "\n"
    forks = s.fork(NUM_HOPS)
    for i, f in enumerate(forks):
        f += f"Answer to sub-question {i + 1}:" + sgl.gen("fact", max_tokens=12, stop="\n", temperature=0)
    facts = [f["fact"] for f in forks]
    forks.join()
    s += "Facts:\n" + "".join(f"- {fact.strip()}\n" for fact in facts)
    s += "Final answer:" + sgl.gen("answer", max_tokens=24, stop="\n", temperature=0)


def main(backend) -> sgl.ProgramState:
    state = multi_hop_qa.run(question="Which module reads CSV files, and how do you open a file for it?",
                             backend=backend)
    if state.error():
        raise state.error()
    for i in range(NUM_HOPS):
        print(f"sub-question {i + 1}: {state[f'sub_{i}'].strip()}  ->  {state['fact'][i].strip()}")
    print("answer:", state["answer"].strip())
    return state


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", default="http://127.0.0.1:30000")
    main(sgl.RuntimeEndpoint(parser.parse_args().url))
